"""Model search: covariate screening and many fits at once.

:mod:`.screening` ranks eta-covariate relationships of a fit before any refit; :mod:`.sweep`
runs many fits in parallel on Dask distributed (a local cluster by default), saving each as it
ends so that a rerun resumes.
"""

from nlmebayes.search.screening import covariate_screening
from nlmebayes.search.sweep import Sweep, sweep

__all__ = ["covariate_screening", "sweep", "Sweep"]
