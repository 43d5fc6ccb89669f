"""Model-averaged predictions: a mixture of the models' predictive draws, weighted by stacking.

Given stacking weights (:func:`~nlmebayes.diagnostics.comparison.stacking_weights`, by default) each
model contributes its share of the draws, allocated by largest remainder so that the counts sum
to ``draws`` exactly; the rows of :func:`~nlmebayes.simulation.predict` are stacked along ``draw``
with a ``model`` coordinate saying which model made each row. Summaries of the result (quantiles
over ``draw``) are those of the mixture distribution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from nlmebayes.data import EventData

__all__ = ["model_average", "allocate_draws"]


def allocate_draws(weights, draws: int) -> np.ndarray:
    """Split ``draws`` by ``weights`` (largest remainder): integer counts that sum to ``draws``.

    Examples
    --------
    >>> allocate_draws([0.62, 0.31, 0.07], 10).tolist()
    [6, 3, 1]
    """
    w = np.asarray(weights, dtype=float)
    if np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {w.tolist()}")
    share = w / w.sum() * draws
    n = np.floor(share).astype(int)
    n[np.argsort(-(share - n), kind="stable")[: draws - n.sum()]] += 1
    return n


def model_average(
    results,
    design: EventData,
    weights=None,
    *,
    draws: int = 200,
    seed: int | None = 0,
    **predict_kwargs,
) -> xr.Dataset:
    """Predictions at ``design`` mixed over models by their weights.

    Parameters
    ----------
    results : dict name -> FitResult or list of FitResult
    design : EventData
    weights : dict or Series name -> weight, optional
        Default: the stacking weights of ``results``.
    draws : int
        Rows in all.
    seed : int, optional
        Seeds each model's :func:`~nlmebayes.simulation.predict` (offset per model).
    **predict_kwargs
        ``level``, ``residual``, ... of :func:`~nlmebayes.simulation.predict`.

    Returns
    -------
    xarray.Dataset
        ``ipred`` (and ``dv``) and the individual parameters every model has, dims ``(draw, ...)``;
        ``model`` (draw) names the model of each row; ``attrs["weights"]`` the weights used.

    Examples
    --------
    >>> avg = model_average({"base": base_fit, "wt": wt_fit}, design, draws=400)  # doctest: +SKIP
    >>> avg["ipred"].quantile([0.05, 0.5, 0.95], "draw")  # doctest: +SKIP
    """
    from nlmebayes.diagnostics.comparison import stacking_weights
    from nlmebayes.simulation.predict import predict

    if not isinstance(results, dict):
        results = {r.spec.name: r for r in results}
    w = stacking_weights(results) if weights is None else pd.Series(dict(weights))
    w = w.reindex(list(results)).fillna(0.0)
    counts = allocate_draws(w.to_numpy(), draws)
    parts = []
    for k, (name, n) in enumerate(zip(results, counts, strict=True)):
        if n == 0:
            continue
        s = None if seed is None else seed + k
        p = predict(results[name], design, draws=int(n), seed=s, **predict_kwargs)
        parts.append(p.assign_coords(model=("draw", [name] * int(n))))
    common = set.intersection(*[set(p.data_vars) for p in parts])
    out = xr.concat([p[sorted(common)] for p in parts], dim="draw", join="exact")
    out = out.assign_coords(draw=np.arange(out.sizes["draw"]))
    out.attrs.update(parts[0].attrs)
    out.attrs["weights"] = {n: float(v) for n, v in w.items()}
    return out
