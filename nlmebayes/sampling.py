"""Samplers: NUTS (nutpie by default, PyMC's own as an option) and a fast posterior mode."""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import xarray as xr
from pytensor.graph.replace import graph_replace, vectorize_graph

from nlmebayes.builder import build_model, compile_settings
from nlmebayes.data import EventData
from nlmebayes.identifiability import design_warnings
from nlmebayes.ofv import (
    ConditionalModel,
    PopulationValues,
    marginal_likelihood,
    marginal_loglik_draws,
    unsupported,
)
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
    design = design_warnings(spec, model.nlme_data)
    for w in design:
        warnings.warn(w, stacklevel=2)
    progressbar = _interactive() if progressbar is None else progressbar
    t0 = time.perf_counter()
    # Sample the bare density; deterministics and the pointwise log-likelihood follow for all
    # draws in one vectorised evaluation (cheaper than compiling them into the sampler). nutpie is
    # called directly: pm.sample would also build PyMC's own step methods (gradients included)
    # before handing over. Graph-building stack traces are switched off: they cost ~10% of the
    # compile time and only serve PyTensor's error messages.
    bare = build_model(spec, data, deterministics=False)
    with pytensor.config.change_flags(traceback__limit=0), compile_settings():
        if sampler == "nutpie":
            import nutpie

            compiled = nutpie.compile_pymc_model(bare)
            idata = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, cores=cores,
                                  seed=seed, save_warmup=False, progress_bar=progressbar,
                                  target_accept=target_accept)
        else:
            with bare:
                idata = pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed,
                                  target_accept=target_accept, progressbar=progressbar,
                                  cores=cores, compute_convergence_checks=False)
    wall = time.perf_counter() - t0
    _add_derived(model, idata)
    with model:
        if posterior_predictive:
            pm.sample_posterior_predictive(idata, extend_inferencedata=True, random_seed=seed,
                                           progressbar=False)
    idata.attrs["nlmebayes_sampler"] = sampler
    idata.attrs["nlmebayes_sampling_seconds"] = wall
    idata.attrs["nlmebayes_seed"] = -1 if seed is None else int(seed)
    idata.attrs["nlmebayes_design_warnings"] = "\n".join(design)
    result = FitResult.from_sampling(idata, spec, model.nlme_data)
    if diagnostics or marginal_loo:
        why = unsupported(spec, result.data)
        if why:
            warnings.warn(f"OFV, EBEs, CWRES/NPDE and the marginal LOO are skipped: the marginal "
                          f"likelihood does not handle {why} yet", stacklevel=2)
            result.idata.attrs["nlmebayes_marginal_skipped"] = why
        else:
            add_marginal(result, marginal_loo=marginal_loo, n_sim=n_sim, seed=seed)
    return result


def _add_derived(model: pm.Model, idata: xr.DataTree, chunk: int = 1000) -> None:
    """Add the model's deterministics to ``posterior`` and the per-observation log-likelihood of
    ``DV`` as the ``log_likelihood`` group, evaluated for every draw from the free variables.

    The graph is vectorised over draws (``vectorize_graph``) and compiled once in FAST_COMPILE
    mode; draws go through in chunks to bound memory.
    """
    post = idata["posterior"].to_dataset()
    free = list(model.free_RVs)
    dv = model["DV"]
    dets = list(model.deterministics)
    outs = dets + [pm.logp(dv, model.rvs_to_values[dv])]
    single = [rv.type(name=rv.name) for rv in free]
    outs = graph_replace(outs, dict(zip(free, single, strict=True)), strict=False)
    batch = [pt.tensor(name=v.name, dtype=v.dtype, shape=(None, *v.type.shape)) for v in single]
    outs = vectorize_graph(outs, dict(zip(single, batch, strict=True)))
    with compile_settings():
        fn = pytensor.function(batch, outs, mode="FAST_COMPILE", on_unused_input="ignore")
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    flat = [post[rv.name].values.reshape(n_chain * n_draw, *post[rv.name].shape[2:]) for rv in free]
    pieces = [fn(*[x[i:i + chunk] for x in flat]) for i in range(0, n_chain * n_draw, chunk)]
    values = [np.concatenate([p[j] for p in pieces]) for j in range(len(outs))]
    coords = {"chain": post["chain"], "draw": post["draw"]}

    def as_da(name, arr):
        dims = model.named_vars_to_dims.get(name, ())
        dims = list(dims) + [f"{name}_dim_{i}" for i in range(len(dims), arr.ndim - 1)]
        c = dict(coords) | {d: list(model.coords[d]) for d in dims if d in model.coords}
        return xr.DataArray(arr.reshape(n_chain, n_draw, *arr.shape[1:]),
                            dims=("chain", "draw", *dims), coords=c)

    new = {d.name: as_da(d.name, v) for d, v in zip(dets, values, strict=False)}
    idata["posterior"] = xr.DataTree(post.assign(new))
    idata["log_likelihood"] = xr.DataTree(xr.Dataset({"DV": as_da("DV", values[-1])}))
    if "observed_data" not in idata.children:
        y = np.asarray(model.rvs_to_values[dv].data)
        idata["observed_data"] = xr.DataTree(xr.Dataset({"DV": ("obs", y)},
                                                        coords={"obs": list(model.coords["obs"])}))


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
    with model, compile_settings():
        point = pm.find_MAP(method="L-BFGS-B", random_seed=seed, progressbar=False,
                            maxeval=maxeval)
    point = {k: np.asarray(v) for k, v in point.items()}
    return MapResult(point=point, spec=spec, data=model.nlme_data)
