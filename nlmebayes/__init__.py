"""nlmebayes: Bayesian nonlinear mixed-effects (population PK/PD) modelling on PyMC.

Data flow: :mod:`nlmebayes.data` (event records) -> :mod:`nlmebayes.model` (spec, graph
builder) with :mod:`nlmebayes.pk` (structural models) -> :mod:`nlmebayes.inference` (NUTS) ->
:mod:`nlmebayes.results` -> :mod:`nlmebayes.diagnostics` and :mod:`nlmebayes.report`.
``import nlmebayes`` loads the spec and data layers only; PyMC loads on first use of the rest.
"""

from importlib.metadata import PackageNotFoundError, version

from nlmebayes.data import DataError, EventData, read_nonmem
from nlmebayes.model.spec import (
    IIV,
    IOV,
    ODE,
    ClosedForm,
    Covariate,
    CovariateCandidates,
    Level,
    ModelSpec,
    Observations,
    Outcome,
    Parameter,
    Prior,
    ResidualError,
)

__all__ = [
    "DataError",
    "EventData",
    "read_nonmem",
    "IIV",
    "IOV",
    "Level",
    "ODE",
    "ClosedForm",
    "Outcome",
    "Covariate",
    "CovariateCandidates",
    "ModelSpec",
    "Observations",
    "Parameter",
    "Prior",
    "ResidualError",
    "informative_priors",
    "build_model",
    "fit",
    "map_estimate",
    "FitResult",
    "datasets",
]

try:
    # Single source: the version in pyproject.toml, as installed.
    __version__ = version("nlmebayes")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

# Names loaded on first use, and the module that holds each: the backend imports PyMC.
_LAZY = {
    "build_model": "nlmebayes.model.builder",
    "informative_priors": "nlmebayes.model.informative",
    "fit": "nlmebayes.inference",
    "map_estimate": "nlmebayes.inference",
    "FitResult": "nlmebayes.results",
    "datasets": None,
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'nlmebayes' has no attribute {name!r}")
    import importlib

    if _LAZY[name] is None:
        return importlib.import_module(f"nlmebayes.{name}")
    return getattr(importlib.import_module(_LAZY[name]), name)
