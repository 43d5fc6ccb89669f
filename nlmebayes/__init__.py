"""nlmebayes: Bayesian nonlinear mixed-effects (population PK/PD) modelling on PyMC."""

from nlmebayes.data import DataError, EventData, read_nonmem

__all__ = ["DataError", "EventData", "read_nonmem"]
__version__ = "0.1.0"
