"""Prediction bands of regimens, and target attainment by regimen and stratum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from nlmebayes.plots._base import BAND, OUTER_Q, PRED, attach, new_figure

__all__ = ["prediction_plot", "target_attainment_plot"]


def prediction_plot(
    predictions: xr.Dataset | dict[str, xr.Dataset],
    *,
    var: str = "ipred",
    target: tuple[float | None, float | None] | None = None,
    log: bool = False,
):
    """Median and 5-95% / 25-75% bands over time, one panel per output, one colour per regimen.

    Parameters
    ----------
    predictions : Dataset or mapping label -> Dataset
        From :func:`~nlmebayes.simulation.predict` or :meth:`~nlmebayes.simulation.Forecast.predict`;
        quantiles are over draws and subjects pooled.
    var : str
        ``ipred`` or ``dv``.
    target : (low, high), optional
        A target range to shade (either end may be None).
    log : bool
        Log y axis.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["bands"]``: regimen, output, time and the five quantiles.

    Examples
    --------
    >>> fig = prediction_plot({"q12h": p12, "q24h": p24}, target=(10, 20))  # doctest: +SKIP
    """
    sets = {"": predictions} if isinstance(predictions, xr.Dataset) else dict(predictions)
    outputs = [str(o) for o in next(iter(sets.values()))["output"].values]
    fig, axes = new_figure(1, len(outputs), panel=(5.0, 3.4))
    colours = [PRED, "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    rows = []
    for j, out in enumerate(outputs):
        ax = axes[0, j]
        for i, (label, ds) in enumerate(sets.items()):
            da = ds[var].sel(output=out)
            q = da.quantile([0.05, 0.25, 0.5, 0.75, 0.95], dim=["draw", "subject"], skipna=True).values
            t = ds["time"].values
            c = colours[i % len(colours)]
            ax.fill_between(t, q[0], q[4], color=c, alpha=0.15, lw=0)
            ax.fill_between(t, q[1], q[3], color=c, alpha=0.25, lw=0)
            ax.plot(t, q[2], color=c, lw=1.5, label=label or None)
            rows.append(
                pd.DataFrame(
                    {"regimen": label, "output": out, "time": t, **dict(zip(OUTER_Q, q, strict=True))}
                )
            )
        if target is not None:
            lo, hi = target
            ax.axhspan(
                lo if lo is not None else 0, hi if hi is not None else ax.get_ylim()[1], color=BAND, alpha=0.3
            )
        ax.set_xlabel("time")
        ax.set_ylabel(out if len(outputs) > 1 else "concentration")
        if log:
            ax.set_yscale("log")
        if len(sets) > 1:
            ax.legend(fontsize=8)
    return attach(fig, bands=pd.concat(rows, ignore_index=True))


def target_attainment_plot(table: pd.DataFrame, *, title: str | None = None):
    """Probability of target attainment with its credible interval, by regimen (and stratum).

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`~nlmebayes.simulation.target_attainment`.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["attainment"]``: the table plotted.

    Examples
    --------
    >>> tab = target_attainment(metrics, "Ctrough >= 15", by={"WGT": [0, 1.5, 5]})  # doctest: +SKIP
    >>> fig = target_attainment_plot(tab)  # doctest: +SKIP
    """
    tab = table.copy()
    if "regimen" not in tab:
        tab["regimen"] = ""
    if "stratum" not in tab:
        tab["stratum"] = "all"
    regimens = list(pd.unique(tab["regimen"]))
    strata = list(pd.unique(tab["stratum"]))
    fig, axes = new_figure(1, 1, panel=(max(5.0, 1.2 * len(regimens) * len(strata) ** 0.5), 3.4))
    ax = axes[0, 0]
    width = 0.8 / len(strata)
    x = np.arange(len(regimens))
    for k, s in enumerate(strata):
        sub = tab[tab["stratum"] == s].set_index("regimen").reindex(regimens)
        pos = x - 0.4 + width * (k + 0.5)
        # the mean may lie outside the equal-tailed interval of a skewed share (mostly 0): clip
        err = np.clip(
            np.vstack([sub["probability"] - sub["lower"], sub["upper"] - sub["probability"]]), 0, None
        )
        ax.bar(pos, sub["probability"], width, yerr=err, capsize=3, label=s if len(strata) > 1 else None)
    ax.set_xticks(x, regimens, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability of target attainment")
    if title:
        ax.set_title(title)
    if len(strata) > 1:
        ax.legend(fontsize=8)
    return attach(fig, attainment=tab)
