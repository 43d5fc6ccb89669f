"""The model.

A declarative spec (:mod:`.spec`, PyMC-free, TOML) and the builder that turns it into a PyMC graph
(:mod:`.builder`, with :mod:`.likelihood` and :mod:`.priors`); :mod:`.informative` sets priors
from a previous analysis.

``import nlmebayes.model`` stays light: the PyMC side loads on first use of
:func:`build_model` / :class:`BuiltModel`.
"""

from nlmebayes.model.informative import informative_priors
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
    "IIV",
    "IOV",
    "ODE",
    "ClosedForm",
    "Outcome",
    "Covariate",
    "CovariateCandidates",
    "Level",
    "ModelSpec",
    "Observations",
    "Parameter",
    "Prior",
    "ResidualError",
    "informative_priors",
    "BuiltModel",
    "build_model",
    "select_observations",
]


def __getattr__(name):
    # The builder imports PyMC: load it on first use only.
    if name in ("build_model", "BuiltModel"):
        from nlmebayes.model import builder

        return getattr(builder, name)
    if name == "select_observations":
        from nlmebayes.model.select import select_observations

        return select_observations
    raise AttributeError(f"module 'nlmebayes.model' has no attribute {name!r}")
