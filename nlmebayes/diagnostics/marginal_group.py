"""The ``marginal`` group of a fit.

EBEs, OFV/AIC/BIC and residuals at one population vector, and optionally the per-draw marginal log-likelihood
for the marginal LOO.
"""

from __future__ import annotations

import xarray as xr

from nlmebayes.diagnostics.conditional import ConditionalModel
from nlmebayes.diagnostics.importance import marginal_loglik_draws
from nlmebayes.diagnostics.ofv import OFVMethod, marginal_likelihood
from nlmebayes.diagnostics.population import PopulationValues
from nlmebayes.diagnostics.residuals import residuals

__all__ = ["add_marginal"]


def add_marginal(
    result,
    *,
    stat: str = "median",
    method: OFVMethod = "focei",
    marginal_loo: bool = False,
    n_sim: int = 1000,
    seed: int | None = 0,
):
    """Add the ``marginal`` group to ``result`` in place (and return it).

    The EBEs, the OFV and the residuals are evaluated at the posterior ``stat`` of the
    population parameters; with ``marginal_loo`` the group ``log_likelihood_marginal`` is added
    too.

    Parameters
    ----------
    result : FitResult
        A fit whose model the marginal likelihood supports.
    stat : {"median", "mean"}
        Posterior summary the population vector is taken at.
    method : {"focei", "laplace", "importance"}
        Approximation of the marginal likelihood.
    marginal_loo : bool
        Also integrate the etas out per posterior draw (importance sampling).
    n_sim : int
        Simulated data sets for NPDE.
    seed : int, optional
        Seeds NPDE and importance sampling.

    Returns
    -------
    FitResult
        ``result`` itself.

    Examples
    --------
    >>> add_marginal(result, method="laplace")  # doctest: +SKIP
    >>> result.idata["marginal"].attrs["ofv"]  # doctest: +SKIP
    """
    spec, data = result.spec, result.data
    cm = ConditionalModel(spec, data)
    post = result.posterior
    pv = PopulationValues.from_posterior(post, spec, stat)
    mg = marginal_likelihood(spec, data, pv, method=method, conditional=cm)
    ds = mg.to_dataset(spec, post["subject"].values).merge(residuals(mg, cm, n_sim=n_sim, seed=seed))
    ds.attrs["evaluated_at"] = f"posterior {stat}"
    result.idata["marginal"] = xr.DataTree(ds)
    if marginal_loo:
        ll = marginal_loglik_draws(post, spec, cm, seed=seed)
        result.idata["log_likelihood_marginal"] = xr.DataTree(xr.Dataset({"subject": ll}, attrs=ll.attrs))
    return result
