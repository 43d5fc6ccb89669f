"""Derived quantities after sampling.

The model's deterministics and the per-observation log-likelihood, for all draws at once (one vectorised,
compiled evaluation, not per draw in the sampler).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import xarray as xr
from pytensor.graph.replace import graph_replace

from nlmebayes.model.compile import batched_function

__all__ = ["add_derived", "evaluate_draws"]


def evaluate_draws(model: pm.Model, outputs: list, post: xr.Dataset, chunk: int = 1000) -> list:
    """``outputs`` (graphs in ``model``'s free variables) for every draw of ``post``.

    The graph is vectorised over draws and compiled once in FAST_COMPILE mode
    (:func:`~nlmebayes.model.compile.batched_function`); draws go through in chunks of ``chunk``
    to bound memory. Returns one array per output, ``(chain * draw, ...)``.
    """
    free = list(model.free_RVs)
    # Random variables cannot be graph inputs: stand-ins of the same type take their place.
    single = [rv.type(name=rv.name) for rv in free]
    outs = graph_replace(outputs, dict(zip(free, single, strict=True)), strict=False)
    fn = batched_function(single, outs, mode="FAST_COMPILE")
    n = post.sizes["chain"] * post.sizes["draw"]
    flat = [post[rv.name].values.reshape(n, *post[rv.name].shape[2:]) for rv in free]
    pieces = [fn(*[x[i : i + chunk] for x in flat]) for i in range(0, n, chunk)]
    return [np.concatenate([p[j] for p in pieces]) for j in range(len(outputs))]


def add_derived(model: pm.Model, idata: xr.DataTree, chunk: int = 1000) -> None:
    """Add the deterministics to ``posterior`` and the ``log_likelihood`` group of ``DV``.

    All draws are evaluated at once by :func:`evaluate_draws`. ``observed_data`` is added when
    missing.

    Parameters
    ----------
    model : pymc.Model
        The full model (with deterministics) the draws come from.
    idata : xarray.DataTree
        Sampler output with a ``posterior`` group of the free variables; changed in place.
    chunk : int
        Draws per compiled call.
    """
    post = idata["posterior"].to_dataset()
    dv = model["DV"]
    dets = list(model.deterministics)
    values = evaluate_draws(model, dets + [pm.logp(dv, model.rvs_to_values[dv])], post, chunk)
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    coords = {"chain": post["chain"], "draw": post["draw"]}

    def as_da(name, arr):
        dims = model.named_vars_to_dims.get(name, ())
        dims = list(dims) + [f"{name}_dim_{i}" for i in range(len(dims), arr.ndim - 1)]
        c = dict(coords) | {d: list(model.coords[d]) for d in dims if d in model.coords}
        return xr.DataArray(
            arr.reshape(n_chain, n_draw, *arr.shape[1:]), dims=("chain", "draw", *dims), coords=c
        )

    new = {d.name: as_da(d.name, v) for d, v in zip(dets, values, strict=False)}
    idata["posterior"] = xr.DataTree(post.assign(new))
    idata["log_likelihood"] = xr.DataTree(xr.Dataset({"DV": as_da("DV", values[-1])}))
    if "observed_data" not in idata.children:
        y = np.asarray(model.rvs_to_values[dv].data)
        idata["observed_data"] = xr.DataTree(
            xr.Dataset({"DV": ("obs", y)}, coords={"obs": list(model.coords["obs"])})
        )
