"""Prediction from the posterior at a design: typical, new-subject or fitted-subject level.

:func:`predict` evaluates one compiled :class:`~.predictive.Predictor` for a batch of posterior draws
at a time (no Python loop over subjects or draws) and returns the predictions on a grid
``(draw, subject, time, output)``, which is what regimen comparison, exposure metrics and target
attainment work on. :func:`prediction_summary` gives quantiles over draws (and subjects).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from nlmebayes.data import EventData, id_label
from nlmebayes.simulation.predictive import (
    Z_PREFIX,
    Predictor,
    _matched_z,
    _stacked,
    draw_indices,
    n_samples,
    posterior_median,
)

__all__ = ["predict", "prediction_summary", "Level", "to_grid"]

Level = Literal["typical", "population", "individual"]

#: Values held in memory per compiled call (pairs x draws): bounds the batch size.
BATCH_VALUES = 4_000_000
#: Above this much work (dose-observation pairs x draws) the predictor is compiled with the C
#: backend: compiling takes ~6 s instead of ~0.5 s, evaluating a third of the time (1-cpt oral,
#: 378,000 pairs: 8-11 ms per draw vs 27 ms).
C_BACKEND_WORK = 200_000_000


def predict(
    result,
    design: EventData,
    *,
    level: Level = "population",
    residual: bool = False,
    draws: int | None = 200,
    uncertainty: bool = True,
    seed: int | None = 0,
    predictor: Predictor | None = None,
) -> xr.Dataset:
    """Predictions of a fitted model at ``design``, one row per posterior draw.

    Parameters
    ----------
    result : FitResult
    design : EventData
        Doses, covariates and observation records to predict at, e.g. from
        :func:`~nlmebayes.simulation.regimen_design`.
    level : {"typical", "population", "individual"}
        ``typical``: every random effect 0 (PRED, with the subject's covariates);
        ``population``: new subjects, etas (kappas, group effects) drawn from each draw's Omega
        (pi, level SDs); ``individual``: the fitted subjects' own posterior etas (the design's
        subjects must be fitted ones; new occasions get new kappas).
    residual : bool
        Add residual error: ``dv`` beside ``ipred``.
    draws : int or None
        Posterior draws used (chains pooled, without replacement when there are enough);
        None: all.
    uncertainty : bool
        False: population parameters at their posterior median in every row (no parameter
        uncertainty; rows then differ only by random effects and residuals).
    seed : int, optional
        Seeds the choice of draws, the random effects and the residuals.
    predictor : Predictor, optional
        A compiled predictor of this design and spec, to reuse.

    Returns
    -------
    xarray.Dataset
        ``ipred`` (and ``dv``) with dims ``(draw, subject, time, output)``, NaN where the design
        has no record; the individual parameters (``CL``, ``V``, ...; before IOV) with dims
        ``(draw, subject)``; ``posterior_draw`` (draw): the posterior sample each row used; the
        subjects' time-constant covariates as coordinates on ``subject``.

    Examples
    --------
    >>> from nlmebayes.simulation import Regimen, grid, regimen_design
    >>> plan = Regimen(320, every=12, doses=5)
    >>> d = regimen_design(result.spec, plan, grid(0, 72, 1), 200)  # doctest: +SKIP
    >>> p = predict(result, d, level="population", draws=100)  # doctest: +SKIP
    >>> p["ipred"].dims  # doctest: +SKIP
    ('draw', 'subject', 'time', 'output')
    """
    if level not in ("typical", "population", "individual"):
        raise ValueError(f"level must be 'typical', 'population' or 'individual', got {level!r}")
    n = n_samples(result) if draws is None else draws
    work = n * max(len(design.pair_obs), design.n_obs)
    pred = predictor or Predictor(
        result.spec, design, mode="FAST_RUN" if work > C_BACKEND_WORK else "FAST_COMPILE"
    )
    rng = np.random.default_rng(seed)
    idx = draw_indices(result, n, seed)
    batch = max(1, BATCH_VALUES // max(len(pred.data.pair_obs), pred.data.n_obs, 1))
    out = {"ipred": []} | ({"dv": []} if residual else {})
    params = {p: [] for p in pred.parameter_names}
    # without parameter uncertainty: the medians, computed once for all batches
    medians = (
        {}
        if uncertainty
        else {k: posterior_median(result, k) for k in pred.names if not k.startswith(Z_PREFIX)}
    )
    for i in range(0, n, batch):
        values = _level_values(result, pred, idx[i : i + batch], rng, level, medians)
        got = pred.replicate(values, rng) if residual else pred(values)
        for k in out:
            out[k].append(got[k])
        for p in params:
            params[p].append(got["parameters"][p])
    ds = to_grid(pred.data, {k: np.concatenate(v) for k, v in out.items()})
    ds = ds.assign({p: (("draw", "subject"), np.concatenate(v)) for p, v in params.items()})
    ds = ds.assign(posterior_draw=("draw", idx if uncertainty else np.full(n, -1)))
    ds.attrs.update(level=level, residual=int(residual), uncertainty=int(uncertainty))
    return ds


def _level_values(result, pred: Predictor, idx, rng, level: str, medians: dict) -> dict:
    """Free-variable values of the predictor for the draws ``idx`` at ``level``.

    Population variables come from the draws, or are ``medians`` when given.
    """
    values = {}
    for name in pred.names:
        if name.startswith(Z_PREFIX):
            shape = (len(idx), *pred.shapes[name])
            if level == "typical":
                values[name] = np.zeros(shape)
            elif level == "population":
                values[name] = rng.standard_normal(shape)
            else:
                values[name] = _matched_z(result, pred, name, idx, rng)
        elif name in medians:
            values[name] = np.broadcast_to(medians[name], (len(idx), *np.shape(medians[name])))
        else:
            values[name] = _stacked(result, name, idx)
    return values


def to_grid(data: EventData, arrays: dict) -> xr.Dataset:
    """Per-observation arrays ``(batch, n_obs)`` on the grid ``(draw, subject, time, output)``.

    Raises ValueError when a subject has two records of one output at one time.
    """
    times, t_pos = np.unique(data.obs_time, return_inverse=True)
    outputs, o_pos = np.unique(data.obs_output.astype(str), return_inverse=True)
    s_pos = data.obs_subject
    flat = (s_pos * len(times) + t_pos) * len(outputs) + o_pos
    if len(np.unique(flat)) != len(flat):
        raise ValueError(f"{data.source}: a subject has two observation records of one output at one time")
    shape = (data.n_subjects, len(times), len(outputs))
    variables = {}
    for k, a in arrays.items():
        grid = np.full((a.shape[0], int(np.prod(shape))), np.nan)
        grid[:, flat] = a
        variables[k] = (("draw", "subject", "time", "output"), grid.reshape(a.shape[0], *shape))
    coords = {
        "draw": np.arange(next(iter(arrays.values())).shape[0]),
        "subject": [str(id_label(v)) for v in data.ids],
        "time": times,
        "output": list(outputs),
    }
    covs = data.subject_covariates(data.constant_covariates()) if data.covariate_names else pd.DataFrame()
    for c in covs.columns:
        coords[c] = ("subject", covs[c].to_numpy())
    return xr.Dataset(variables, coords=coords)


def prediction_summary(
    pred: xr.Dataset,
    var: str = "ipred",
    quantiles=(0.05, 0.5, 0.95),
    over=("draw", "subject"),
) -> xr.DataArray:
    """Quantiles of ``pred[var]`` over ``over`` (default draws and subjects pooled).

    ``over=("draw",)`` gives each subject's band.

    Examples
    --------
    >>> s = prediction_summary(p, quantiles=(0.05, 0.5, 0.95))  # doctest: +SKIP
    >>> s.dims  # doctest: +SKIP
    ('quantile', 'time', 'output')
    """
    return pred[var].quantile(list(quantiles), dim=list(over), skipna=True)
