"""Goodness-of-fit panels: DV vs PRED/IPRED, CWRES, IWRES and NPDE, one panel set per output."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from nlmebayes.diagnostics.vpc import time_after_dose
from nlmebayes.plots._base import BLQ, OBS, attach, identity_line, lowess, new_figure, output_labels

__all__ = ["gof_data", "gof"]


def gof_data(result) -> pd.DataFrame:
    """One row per observation: ID, TIME, TAD, DV, PRED, IPRED, IWRES, CWRES, NPDE, BLQ, output.

    IPRED is the posterior median of the individual prediction; PRED, IWRES, CWRES and NPDE come from
    the ``marginal`` group (at the posterior median of the population parameters, NONMEM's
    definitions). Without that group (models the marginal likelihood does not handle yet) PRED is
    computed here and the residual columns are NaN.

    Examples
    --------
    >>> gof_data(result)[["DV", "PRED", "IPRED", "CWRES"]].head()  # doctest: +SKIP
    """
    data = result.data
    ipred = result.posterior["ipred"].median(("chain", "draw")).values
    nan = np.full(data.n_obs, np.nan)
    if "marginal" in result.idata.children:
        mg = result.idata["marginal"].to_dataset()
        pred = np.exp(mg["pred"].values) if mg.attrs.get("scale") == "log" else mg["pred"].values
        iwres, cwres, npde = mg["iwres"].values, mg["cwres"].values, mg["npde"].values
    else:
        from nlmebayes.simulation.predictive import population_prediction

        pred, iwres, cwres, npde = population_prediction(result), nan, nan, nan
    blq = np.zeros(data.n_obs, bool) if data.obs_cens is None else data.obs_cens != 0
    return pd.DataFrame(
        {
            "ID": data.ids[data.obs_subject],
            "TIME": data.obs_time,
            "TAD": time_after_dose(data),
            "DV": data.obs_dv,
            "PRED": pred,
            "IPRED": ipred,
            "IWRES": iwres,
            "CWRES": cwres,
            "NPDE": npde,
            "BLQ": blq,
            "output": output_labels(data),
        }
    )


#: (y, x) of each panel; "qq" and "hist" are the NPDE distribution panels.
PANELS = [
    ("DV", "PRED"),
    ("DV", "IPRED"),
    ("CWRES", "TIME"),
    ("CWRES", "TAD"),
    ("CWRES", "PRED"),
    ("IWRES", "IPRED"),
    ("|IWRES|", "IPRED"),
    ("NPDE", "qq"),
    ("NPDE", "hist"),
]


def gof(result, *, log: bool = False, outputs=None):
    """Goodness-of-fit panels (3 x 3 per output), as xpose and Pirana draw them.

    Scatter with a LOWESS smoother; identity lines on DV vs PRED/IPRED, zero lines on residuals;
    censored observations (BLQ) in orange; an NPDE QQ plot against N(0, 1) and a histogram with its
    density.

    Parameters
    ----------
    result : FitResult
    log : bool
        Log-log axes for DV vs PRED and DV vs IPRED.
    outputs : sequence of str, optional
        Outputs (DVID) to draw; default all.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["gof"]`` holds :func:`gof_data`.

    Examples
    --------
    >>> fig = gof(result, log=True)  # doctest: +SKIP
    >>> fig.savefig("gof.png")  # doctest: +SKIP
    """
    df = gof_data(result)
    outputs = list(pd.unique(df["output"])) if outputs is None else [str(o) for o in outputs]
    fig, axes = new_figure(3 * len(outputs), 3)
    for k, out in enumerate(outputs):
        sub = df[df["output"] == out]
        for i, (y, x) in enumerate(PANELS):
            ax = axes[3 * k + i // 3, i % 3]
            _panel(ax, sub, y, x, log)
            if len(outputs) > 1:
                ax.set_title(f"output {out}", fontsize=8, loc="left")
    return attach(fig, gof=df)


def _panel(ax, df: pd.DataFrame, y: str, x: str, log: bool) -> None:
    if x == "qq":
        v = np.sort(df["NPDE"].dropna().to_numpy())
        theo = stats.norm.ppf((np.arange(1, len(v) + 1) - 0.5) / max(len(v), 1))
        ax.scatter(theo, v, s=8, color=OBS)
        identity_line(ax)
        ax.set(xlabel="N(0, 1) quantiles", ylabel="NPDE quantiles")
        return
    if x == "hist":
        v = df["NPDE"].dropna().to_numpy()
        if len(v):
            ax.hist(v, bins="auto", density=True, color="#cccccc", edgecolor="white")
            g = np.linspace(-4, 4, 200)
            ax.plot(g, stats.norm.pdf(g), color="grey", ls="--")
        ax.set(xlabel="NPDE", ylabel="density")
        return
    yv = df["IWRES"].abs() if y == "|IWRES|" else df[y]
    xv, blq = df[x].to_numpy(), df["BLQ"].to_numpy()
    ax.scatter(xv[~blq], yv.to_numpy()[~blq], s=8, color=OBS, alpha=0.7, label="observed")
    if blq.any():
        ax.scatter(xv[blq], yv.to_numpy()[blq], s=14, marker="x", color=BLQ, label="BLQ")
        ax.legend(fontsize=7)
    gx, gy = lowess(xv[~blq], yv.to_numpy()[~blq])
    ax.plot(gx, gy, color="#d62728", lw=1.5)
    if y == "DV":
        if log:
            ax.set(xscale="log", yscale="log")
        identity_line(ax)
    elif y != "|IWRES|":
        ax.axhline(0, color="grey", lw=1, ls="--")
    if yv.isna().all():
        ax.text(0.5, 0.5, "not available for this model", transform=ax.transAxes, ha="center", fontsize=8)
    ax.set(xlabel=x, ylabel=y)
