"""Drawing a VPC (pcVPC, censored VPC): observed percentiles over the simulated percentiles' intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes.plots._base import OBS, attach, new_figure

__all__ = ["vpc_plot", "km_vpc_plot"]

#: Band colours of the simulated 5th/95th (outer) and 50th (median) percentiles' intervals.
OUTER, MIDDLE = "#9ecae1", "#fc9272"


def vpc_plot(result=None, *, check=None, log: bool = False, show_obs: bool = True, **kwargs):
    """Visual predictive check.

    Per stratum: observations (points), observed percentiles (lines: median solid, outer dashed),
    the interval of each simulated percentile (shaded: red for the median, blue for the outer ones).
    With censoring, a second row compares the observed BLQ fraction per bin with the simulated
    fractions' interval.

    Parameters
    ----------
    result : FitResult, optional
        The fit; the VPC is computed with :func:`nlmebayes.diagnostics.vpc.vpc` and ``kwargs``
        (``n``, ``seed``, ``x``, ``bins``, ``stratify``, ``pred_corr``, ``var_corr``, ``lloq``...).
    check : VPC, optional
        A VPC computed before (then ``result`` is not needed).
    log : bool
        Log y axis.
    show_obs : bool
        Draw the observations.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data``: ``percentiles``, ``censored`` (when computed) and ``observations``.

    Examples
    --------
    >>> fig = vpc_plot(result, pred_corr=True, n=500)  # doctest: +SKIP
    """
    if check is None:
        from nlmebayes.diagnostics.vpc import vpc

        check = vpc(result, **kwargs)
    pct, cen, obs = check.percentiles, check.censored, check.observations
    strata = list(pd.unique(pct["stratum"]))
    rows = 2 if cen is not None else 1
    fig, axes = new_figure(rows, len(strata), panel=(4.6, 3.4))
    for j, s in enumerate(strata):
        ax = axes[0, j]
        o = obs[obs["stratum"] == s]
        if show_obs:
            ok = ~o["blq"].to_numpy()
            ax.scatter(o["x"][ok], o["dv"][ok], s=6, color=OBS, alpha=0.35, zorder=1)
        _percentile_bands(ax, pct[pct["stratum"] == s])
        if log:
            ax.set_yscale("log")
        if check.settings.get("lloq") is not None:
            ax.axhline(check.settings["lloq"], color="grey", ls=":", lw=1)
        kind = "pcVPC" if check.settings.get("pred_corr") else "VPC"
        ax.set_title(f"{kind} {s}" if len(strata) > 1 else kind, fontsize=9)
        ax.set(
            xlabel="time after dose" if check.settings.get("x") == "tad" else "time",
            ylabel="prediction-corrected DV" if check.settings.get("pred_corr") else "DV",
        )
        if cen is not None:
            _censored_panel(axes[1, j], cen[cen["stratum"] == s])
    tables = dict(percentiles=pct, observations=obs)
    if cen is not None:
        tables["censored"] = cen
    return attach(fig, **tables)


def _percentile_bands(ax, pct: pd.DataFrame) -> None:
    for q, sub in pct.groupby("quantile"):
        sub = sub.sort_values("x")
        middle = np.isclose(q, 0.5)
        ax.fill_between(
            sub["x"],
            sub["sim_lo"],
            sub["sim_hi"],
            color=MIDDLE if middle else OUTER,
            alpha=0.5,
            lw=0,
            zorder=0,
        )
        ax.plot(
            sub["x"],
            sub["observed"],
            color="#b2182b" if middle else "#2166ac",
            ls="-" if middle else "--",
            lw=1.6,
            zorder=2,
        )


def _censored_panel(ax, cen: pd.DataFrame) -> None:
    cen = cen.sort_values("x")
    ax.fill_between(cen["x"], cen["sim_lo"], cen["sim_hi"], color=OUTER, alpha=0.5, lw=0)
    ax.plot(cen["x"], cen["sim_median"], color="#2166ac", lw=1, ls="--")
    ax.plot(cen["x"], cen["observed"], color="#b2182b", marker="o", ms=3, lw=1.5)
    ax.set(xlabel="time", ylabel="fraction BLQ", ylim=(-0.02, 1.02))


def km_vpc_plot(result=None, *, check=None, **kwargs):
    """Kaplan-Meier VPC of a time-to-event outcome.

    The observed survival curve over the band of the simulated curves (5th-95th percentile) and
    their median.

    Parameters
    ----------
    result : FitResult, optional
        The fit; the check is computed with :func:`nlmebayes.diagnostics.km_vpc.km_vpc` and ``kwargs``.
    check : KaplanMeierVPC, optional
        A check computed before.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["survival"]``: the plotted table.

    Examples
    --------
    >>> fig = km_vpc_plot(result, n=200)  # doctest: +SKIP
    """
    if check is None:
        from nlmebayes.diagnostics.km_vpc import km_vpc

        check = km_vpc(result, **kwargs)
    tab = check.table
    fig, axes = new_figure(1, 1, panel=(4.8, 3.4))
    ax = axes[0, 0]
    ax.fill_between(tab["time"], tab["sim_lo"], tab["sim_hi"], step="post", color=OUTER, alpha=0.6, lw=0)
    ax.step(
        tab["time"], tab["sim_median"], where="post", color="#3182bd", lw=1, ls="--", label="simulated median"
    )
    ax.step(
        tab["time"], tab["observed"], where="post", color="black", lw=1.5, label="observed (Kaplan-Meier)"
    )
    ax.set(
        xlabel="time",
        ylabel="survival",
        ylim=(-0.02, 1.02),
        title=f"Kaplan-Meier VPC ({check.n_sim} replicates)",
    )
    ax.legend(fontsize=8, frameon=False)
    return attach(fig, survival=tab)
