"""Plots of a fit, on matplotlib.

Every function takes a :class:`~nlmebayes.results.FitResult` (the prior predictive check takes the
spec and data; the prediction plots what :mod:`nlmebayes.simulation` returns), returns a
:class:`matplotlib.figure.Figure` without showing it (Agg-safe, no pyplot state for our own
figures), and keeps the plotted numbers as tidy DataFrames in ``fig.nlme_data``.
Nothing here rebuilds the sampler's graph: simulations go through :mod:`nlmebayes.simulation`.

- :func:`gof`: DV vs PRED/IPRED, CWRES vs TIME/TAD/PRED, IWRES, NPDE
- :func:`individual_fits`: observations, IPRED band on a dense grid, PRED, doses
- :func:`eta_distributions`: EBE / posterior-mean etas against N(0, omega^2), shrinkage
- :func:`eta_covariates`: etas against covariates (scatter + smoother, boxplots)
- :func:`eta_pairs`: eta against eta
- :func:`vpc_plot`: VPC, pcVPC, censored VPC, stratified
- :func:`km_vpc_plot`: Kaplan-Meier VPC of a time-to-event outcome
- :func:`shrinkage_plot`: no pooling -> partial pooling -> population, per subject
- :func:`prior_predictive_plot`: prior predictive bands over the data
- :func:`prediction_plot`: prediction bands of regimens (from :func:`nlmebayes.simulation.predict`)
- :func:`target_attainment_plot`: probability of target attainment by regimen and stratum
- :func:`candidate_effects_plot`, :func:`selection_path_plot`: the full covariate model's effects
  and the projection selection's elpd path
- :func:`prior_posterior`: prior vs posterior of each population parameter
- :func:`trace_plot`, :func:`rank_plot`, :func:`pair_plot`: MCMC (ArviZ)
"""

from nlmebayes.plots.covariates import candidate_effects_plot, selection_path_plot
from nlmebayes.plots.eta import eta_covariates, eta_distributions, eta_pairs
from nlmebayes.plots.gof import gof
from nlmebayes.plots.individual import individual_fit_pages, individual_fits
from nlmebayes.plots.mcmc import pair_plot, rank_plot, trace_plot
from nlmebayes.plots.prediction import prediction_plot, target_attainment_plot
from nlmebayes.plots.prior import prior_posterior, prior_predictive_plot
from nlmebayes.plots.shrinkage import shrinkage_plot
from nlmebayes.plots.vpc import km_vpc_plot, vpc_plot

__all__ = [
    "gof",
    "candidate_effects_plot",
    "selection_path_plot",
    "individual_fits",
    "individual_fit_pages",
    "eta_distributions",
    "eta_covariates",
    "eta_pairs",
    "vpc_plot",
    "km_vpc_plot",
    "shrinkage_plot",
    "prior_predictive_plot",
    "prediction_plot",
    "target_attainment_plot",
    "prior_posterior",
    "trace_plot",
    "rank_plot",
    "pair_plot",
]
