"""Exposure metrics of predicted curves and the probability of reaching a target.

:func:`exposure` computes, per draw, subject and output, the metrics a dosing decision is made on
(AUC, average, peak, trough, time above a threshold) over a time window of a prediction from
:func:`~nlmebayes.simulation.predict`, the way non-compartmental analysis does: AUC by the
linear-up/log-down trapezoidal rule (exact for a mono-exponential decline, so an IV bolus's AUC
over a dosing interval and its extrapolation to infinity are exact up to rounding), AUC to infinity
by adding ``C_last / lambda_z`` with ``lambda_z`` from a log-linear fit to the window's last
three points. Cmax and Tmax are the grid's: their accuracy is the grid's resolution.

:func:`target_attainment` turns a condition on those metrics into the probability of reaching it,
per regimen and covariate stratum, with its posterior uncertainty: for every posterior draw the
fraction of (virtual) subjects that reach the target, then the mean and a credible interval of that
fraction over draws.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["exposure", "target_attainment", "METRICS"]

#: The metrics :func:`exposure` returns (``AUC_inf`` with ``extrapolate=True``, ``T_above``
#: with a threshold).
METRICS = ("AUC", "Cavg", "Cmax", "Tmax", "Cmin", "Ctrough", "AUC_inf", "T_above")


def exposure(
    pred: xr.Dataset,
    *,
    start: float | None = None,
    end: float | None = None,
    var: str = "ipred",
    threshold: float | None = None,
    extrapolate: bool = False,
) -> xr.Dataset:
    """Exposure metrics over ``[start, end]`` of each predicted curve.

    Parameters
    ----------
    pred : xarray.Dataset
        From :func:`~nlmebayes.simulation.predict` (dims draw, subject, time, output).
    start, end : float, optional
        The window (inclusive; default the whole grid). For a dosing interval at steady state,
        the dose time and the next dose time (or the end of a steady-state interval).
    var : str
        ``ipred`` (default) or ``dv`` (with residual error).
    threshold : float, optional
        Also compute ``T_above``, the time above it (linear interpolation between grid points).
    extrapolate : bool
        Also compute ``AUC_inf``: AUC from ``start`` to infinity (after a single dose).

    Returns
    -------
    xarray.Dataset
        ``AUC``, ``Cavg`` (AUC / window length), ``Cmax``, ``Tmax``, ``Cmin``, ``Ctrough`` (the
        value at the window's end), and ``AUC_inf``, ``T_above`` when asked, each with dims
        (draw, subject, output); the subject coordinates (covariates) are kept.

    Examples
    --------
    >>> m = exposure(p, start=48, end=60, threshold=4.0)  # doctest: +SKIP
    >>> float(m["Ctrough"].median())  # doctest: +SKIP
    3.1
    """
    times = pred["time"].values
    lo = times.min() if start is None else start
    hi = times.max() if end is None else end
    keep = (times >= lo - 1e-12) & (times <= hi + 1e-12)
    if keep.sum() < 2:
        raise ValueError(f"the window [{lo}, {hi}] holds fewer than two prediction times")
    t = times[keep]
    c = pred[var].isel(time=np.flatnonzero(keep)).transpose(..., "time").values
    dims = pred[var].dims[:-2] + pred[var].dims[-1:]  # (draw, subject, output)
    auc = _auc(t, c)
    metrics = {
        "AUC": auc,
        "Cavg": auc / (t[-1] - t[0]),
        "Cmax": np.nanmax(c, axis=-1),
        "Tmax": t[np.nanargmax(np.where(np.isnan(c), -np.inf, c), axis=-1)],
        "Cmin": np.nanmin(c, axis=-1),
        "Ctrough": c[..., -1],
    }
    if extrapolate:
        metrics["AUC_inf"] = auc + _tail(t, c)
    if threshold is not None:
        metrics["T_above"] = _time_above(t, c, threshold)
    coords = {k: v for k, v in pred.coords.items() if "time" not in v.dims}
    ds = xr.Dataset({k: (dims, v) for k, v in metrics.items()}, coords=coords)
    ds.attrs.update(start=float(t[0]), end=float(t[-1]), var=var)
    return ds


def _auc(t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Linear-up/log-down trapezoidal AUC along the last axis."""
    dt = np.diff(t)
    c0, c1 = c[..., :-1], c[..., 1:]
    linear = 0.5 * (c0 + c1) * dt
    with np.errstate(divide="ignore", invalid="ignore"):
        log_down = (c0 - c1) * dt / np.log(c0 / c1)
    down = (c1 < c0) & (c1 > 0)
    return np.sum(np.where(down, log_down, linear), axis=-1)


def _tail(t: np.ndarray, c: np.ndarray, points: int = 3) -> np.ndarray:
    """``C_last / lambda_z``, lambda_z from a log-linear fit to the last ``points`` values."""
    tt = t[-points:] - t[-points:].mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        logc = np.log(c[..., -points:])
    slope = np.sum((logc - logc.mean(axis=-1, keepdims=True)) * tt, axis=-1) / np.sum(tt * tt)
    lam = -slope
    return np.where(lam > 0, c[..., -1] / lam, np.nan)


def _time_above(t: np.ndarray, c: np.ndarray, threshold: float) -> np.ndarray:
    """Time spent above ``threshold``, crossings found by linear interpolation."""
    dt = np.diff(t)
    a, b = c[..., :-1] - threshold, c[..., 1:] - threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(a > 0, a / (a - b), -a / (b - a))  # fraction of the step above
    frac = np.where((a > 0) & (b > 0), 1.0, np.where((a <= 0) & (b <= 0), 0.0, crossing))
    return np.sum(frac * dt, axis=-1)


def target_attainment(
    metrics: xr.Dataset | Mapping[str, xr.Dataset],
    condition: str | Callable[[xr.Dataset], xr.DataArray],
    *,
    by: Mapping[str, object] | str | None = None,
    output: str | None = None,
    prob: float = 0.9,
) -> pd.DataFrame:
    """Probability of reaching a target, per regimen (and covariate stratum), with uncertainty.

    Parameters
    ----------
    metrics : Dataset or mapping label -> Dataset
        From :func:`exposure`, one per regimen.
    condition : str or callable
        On the metrics, e.g. ``"Ctrough >= 10"`` or ``"(AUC >= 300) & (AUC <= 600)"``, or a
        function of the metrics Dataset returning a boolean DataArray.
    by : str or mapping, optional
        Stratify by a subject covariate: a column name (its values as strata) or
        ``{column: bin edges}`` (e.g. ``{"WGT": [0, 1, 2, 5]}``: strata 0-1, 1-2, 2-5, each
        including its upper edge, the first also its lower one).
    output : str, optional
        The model output (default: the only one).
    prob : float
        Width of the credible interval of the probability.

    Returns
    -------
    pandas.DataFrame
        One row per regimen (and stratum): ``probability`` (posterior mean of the fraction of
        subjects reaching the target), ``lower``, ``upper`` (equal-tailed interval over draws),
        ``subjects``.

    Examples
    --------
    >>> by_weight = {"WGT": [0, 1.5, 5]}
    >>> target_attainment({"5 mg/kg": m5, "10 mg/kg": m10}, "Ctrough >= 10", by=by_weight)  # doctest: +SKIP
    """
    sets = {"": metrics} if isinstance(metrics, xr.Dataset) else dict(metrics)
    rows = []
    for label, ds in sets.items():
        ds = _one_output(ds, output)
        hit = _evaluate(condition, ds).transpose("draw", "subject").values.astype(float)
        for stratum, mask in _strata(ds, by):
            frac = hit[:, mask].mean(axis=1)
            a = (1 - prob) / 2
            rows.append(
                {
                    "regimen": label,
                    "stratum": stratum,
                    "probability": float(frac.mean()),
                    "lower": float(np.quantile(frac, a)),
                    "upper": float(np.quantile(frac, 1 - a)),
                    "subjects": int(mask.sum()),
                }
            )
    out = pd.DataFrame(rows)
    if by is None:
        out = out.drop(columns="stratum")
    if isinstance(metrics, xr.Dataset):
        out = out.drop(columns="regimen")
    return out


def _one_output(ds: xr.Dataset, output: str | None) -> xr.Dataset:
    if "output" not in ds.dims:
        return ds
    names = [str(o) for o in ds["output"].values]
    if output is None:
        if len(names) > 1:
            raise ValueError(f"the model has outputs {names}: choose one with output=")
        output = names[0]
    return ds.sel(output=output)


def _evaluate(condition, ds: xr.Dataset) -> xr.DataArray:
    if callable(condition):
        return condition(ds)
    names = {k: ds[k] for k in ds.data_vars}
    try:
        return eval(condition, {"__builtins__": {}}, names)  # the user's own expression on metrics
    except NameError as e:
        raise ValueError(f"condition {condition!r}: {e}; metrics are {list(names)}") from None


def _strata(ds: xr.Dataset, by) -> list[tuple[str, np.ndarray]]:
    n = ds.sizes["subject"]
    if by is None:
        return [("all", np.ones(n, bool))]
    col, edges = (by, None) if isinstance(by, str) else next(iter(dict(by).items()))
    if col not in ds.coords:
        raise ValueError(f"no subject covariate {col!r} to stratify by; have {list(ds.coords)}")
    values = ds[col].values
    if edges is None:
        labels = values.astype(str)
        order = sorted(pd.unique(labels))
    else:
        edges = np.asarray(edges, dtype=float)
        k = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, len(edges) - 2)  # (lo, hi]
        k = np.where(values == edges[0], 0, k)
        names = [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        outside = (values < edges[0]) | (values > edges[-1])
        if outside.any():
            raise ValueError(
                f"{col} values {np.unique(values[outside])[:5]} lie outside the bins {edges.tolist()}"
            )
        labels = np.asarray(names, dtype=object)[k]
        order = [n for n in names if (labels == n).any()]
    return [(f"{col} {lab}", labels == lab) for lab in order]
