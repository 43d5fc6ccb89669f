"""nlmebayes: Bayesian nonlinear mixed-effects (population PK/PD) modelling on PyMC."""

from nlmebayes.data import DataError, EventData, read_nonmem
from nlmebayes.spec import IIV, IOV, ODE, Covariate, Level, ModelSpec, Parameter, Prior, ResidualError

__all__ = [
    "DataError", "EventData", "read_nonmem",
    "IIV", "IOV", "Level", "ODE", "Covariate", "ModelSpec", "Parameter", "Prior", "ResidualError",
    "build_model", "fit", "map", "FitResult",
]
__version__ = "0.1.0"


def __getattr__(name):
    # The spec and data layers stay importable without PyMC; the backend loads on first use.
    if name == "build_model":
        from nlmebayes.builder import build_model

        return build_model
    if name in ("fit", "map"):
        from nlmebayes import sampling

        return getattr(sampling, name)
    if name == "FitResult":
        from nlmebayes.results import FitResult

        return FitResult
    raise AttributeError(f"module 'nlmebayes' has no attribute {name!r}")
