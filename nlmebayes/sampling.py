"""Samplers: NUTS (nutpie by default, PyMC's own as an option) and a fast posterior mode."""

from __future__ import annotations

import sys
import time

import numpy as np
import pymc as pm
import xarray as xr

from nlmebayes.builder import build_model
from nlmebayes.data import EventData
from nlmebayes.ofv import ConditionalModel, PopulationValues, marginal_likelihood, marginal_loglik_draws
from nlmebayes.residuals import residuals
from nlmebayes.results import FitResult, MapResult
from nlmebayes.spec import ModelSpec

__all__ = ["fit", "map", "add_marginal"]


def _interactive() -> bool:
    """True in a terminal or notebook session (progress bars), False in scripts and CI."""
    return bool(getattr(sys, "ps1", None)) or "ipykernel" in sys.modules


def fit(
    spec: ModelSpec,
    data: EventData,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    sampler: str = "nutpie",
    target_accept: float = 0.8,
    posterior_predictive: bool = False,
    progressbar: bool | None = None,
    cores: int | None = None,
    diagnostics: bool = True,
    marginal_loo: bool = False,
    n_sim: int = 1000,
) -> FitResult:
    """Sample the posterior of ``spec`` given ``data`` with NUTS.

    Parameters
    ----------
    spec : ModelSpec
    data : EventData
    draws, tune, chains : int
        Draws kept per chain, warm-up draws per chain, number of chains.
    seed : int, optional
        Seeds the sampler and posterior predictive draws; the same seed gives the same draws.
    sampler : {"nutpie", "pymc"}
        nutpie (compiled with numba, the default) or PyMC's NUTS.
    target_accept : float
    posterior_predictive : bool
        Also draw replicated data (group ``posterior_predictive``).
    progressbar : bool, optional
        Default: shown in interactive sessions only.
    diagnostics : bool
        At the posterior median of the population parameters, compute the EBEs, the FOCE-I OFV
        (AIC, BIC) and the residuals PRED, IPRED, IWRES, CWRES, NPDE (group ``marginal``, see
        :mod:`nlmebayes.ofv` and :mod:`nlmebayes.residuals`; about a second for small data).
    marginal_loo : bool
        Also integrate the etas out per posterior draw by importance sampling (group
        ``log_likelihood_marginal``), for the marginal leave-one-subject-out LOO.
    n_sim : int
        Simulated data sets for NPDE.

    Returns
    -------
    FitResult
        Posterior, sample stats, log-likelihood per observation, observed and constant data,
        together with the spec and the data.
    """
    if sampler not in ("nutpie", "pymc"):
        raise ValueError(f"sampler must be 'nutpie' or 'pymc', got {sampler!r}")
    model = build_model(spec, data)
    progressbar = _interactive() if progressbar is None else progressbar
    t0 = time.perf_counter()
    with model:
        idata = pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed,
                          nuts_sampler=sampler, target_accept=target_accept,
                          progressbar=progressbar, cores=cores, compute_convergence_checks=False)
        wall = time.perf_counter() - t0
        pm.compute_log_likelihood(idata, progressbar=False)
        if posterior_predictive:
            pm.sample_posterior_predictive(idata, extend_inferencedata=True, random_seed=seed,
                                           progressbar=False)
    idata.attrs["nlmebayes_sampler"] = sampler
    idata.attrs["nlmebayes_sampling_seconds"] = wall
    idata.attrs["nlmebayes_seed"] = -1 if seed is None else int(seed)
    result = FitResult.from_sampling(idata, spec, model.nlme_data)
    if diagnostics or marginal_loo:
        add_marginal(result, marginal_loo=marginal_loo, n_sim=n_sim, seed=seed)
    return result


def add_marginal(result: FitResult, *, stat: str = "median", method: str = "focei",
                 marginal_loo: bool = False, n_sim: int = 1000, seed: int | None = 0) -> FitResult:
    """Add the ``marginal`` group (EBEs, OFV, residuals at the posterior ``stat`` of the population
    parameters) and, with ``marginal_loo``, ``log_likelihood_marginal`` to ``result`` in place."""
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


def map(spec: ModelSpec, data: EventData, *, seed: int | None = 0, maxeval: int = 5000) -> MapResult:  # noqa: A001
    """Posterior mode of all free variables (etas included) by L-BFGS: quick looks and inits.

    The joint mode over typical values and etas is not the marginal (FOCE) estimate: omegas are
    biased low when data per subject are sparse. Use it for starting values and checks.
    """
    model = build_model(spec, data)
    with model:
        point = pm.find_MAP(method="L-BFGS-B", random_seed=seed, progressbar=False,
                            maxeval=maxeval)
    point = {k: np.asarray(v) for k, v in point.items()}
    return MapResult(point=point, spec=spec, data=model.nlme_data)
