"""Model search: covariate screening, the full covariate model and its selection, many fits at once.

:mod:`.screening` ranks eta-covariate relationships of a fit before any refit;
:mod:`.covariate_model` puts every candidate effect in one model under a horseshoe prior and
:mod:`.projection` selects a submodel from it by projection; :mod:`.scm` is stepwise covariate
modelling for comparison; :mod:`.sweep` runs many fits in
parallel on Dask distributed (a local cluster by default), saving each as it ends so that a rerun
resumes.
"""

from nlmebayes.search.covariate_model import candidate_effects, full_covariate_model
from nlmebayes.search.projection import CovariateSelection, select_covariates
from nlmebayes.search.scm import SCMResult, scm
from nlmebayes.search.screening import covariate_screening
from nlmebayes.search.sweep import Sweep, sweep

__all__ = [
    "covariate_screening",
    "full_covariate_model",
    "candidate_effects",
    "select_covariates",
    "CovariateSelection",
    "scm",
    "SCMResult",
    "sweep",
    "Sweep",
]
