"""Individual fits: observations, posterior IPRED curve with its credible band, PRED, dose times."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes.data.conditions import format_id
from nlmebayes.plots._base import BAND, BLQ, IPRED, OBS, PRED, attach, new_figure, output_labels

__all__ = ["individual_data", "individual_fits", "individual_fit_pages"]


def individual_data(
    result, *, ids=None, n_points: int = 120, ci: float = 0.9, n: int = 200, seed: int | None = 0
) -> pd.DataFrame:
    """IPRED band and PRED of each subject on a dense time grid.

    The fitted subjects' posterior draws (all variables of a draw together) give IPRED at every
    grid time; the band is its central ``ci`` interval over ``n`` draws, the curve its median. PRED
    is the typical-value prediction (etas 0, the subject's covariates).

    Returns
    -------
    DataFrame
        ID, TIME, output, IPRED (median), IPRED_lo, IPRED_hi, PRED.
    """
    from nlmebayes.simulation.design import dense_design
    from nlmebayes.simulation.predictive import Predictor, population_prediction, posterior_predictive

    data = result.data
    grid = dense_design(_subset(data, ids), n_points=n_points)
    pred = Predictor(result.spec, grid)
    sims = posterior_predictive(result, design=grid, n=n, seed=seed, new_subjects=False, predictor=pred)
    a = (1 - ci) / 2
    lo, med, hi = np.quantile(sims["ipred"].values, [a, 0.5, 1 - a], axis=0)
    return pd.DataFrame(
        {
            "ID": grid.ids[grid.obs_subject],
            "TIME": grid.obs_time,
            "output": output_labels(grid),
            "IPRED": med,
            "IPRED_lo": lo,
            "IPRED_hi": hi,
            "PRED": population_prediction(result, grid, predictor=pred),
        }
    )


def _subset(data, ids):
    """The data of the subjects ``ids`` (all when None); their order is the fit's."""
    if ids is None:
        return data
    from nlmebayes.data import read_nonmem

    want = {str(format_id(i)) for i in ids}
    df = data.input_frame()
    keep = df["ID"].map(lambda v: str(format_id(v))).isin(want)
    if not keep.any():
        raise ValueError(f"no subject among ids {sorted(want)}")
    return read_nonmem(df[keep].reset_index(drop=True), source=data.source)


def individual_fits(
    result,
    *,
    ids=None,
    page: int = 0,
    per_page: int = 12,
    ncols: int = 4,
    output=None,
    log: bool = False,
    curves: pd.DataFrame | None = None,
    **kwargs,
):
    """Individual fits, ``per_page`` subjects per figure.

    Observations (BLQ in orange at the LLOQ), posterior-median IPRED on a dense grid with its
    credible band, PRED dashed, dose times as ticks on the time axis.

    Parameters
    ----------
    result : FitResult
    ids : sequence, optional
        Subjects to draw (default all, in data order).
    page : int
        Which page of ``per_page`` subjects.
    per_page, ncols : int
        Subjects per figure and panels per row.
    output : str, optional
        Output (DVID) to draw; default the first.
    log : bool
        Log concentration axis.
    curves : DataFrame, optional
        :func:`individual_data` computed before (all pages at once).
    **kwargs
        Passed to :func:`individual_data` (``n_points``, ``ci``, ``n``, ``seed``).

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data`` holds ``curves`` and ``observations`` of the subjects drawn;
        ``fig.nlme_pages`` is the number of pages.

    Examples
    --------
    >>> fig = individual_fits(result, ids=[1, 2, 3])  # doctest: +SKIP
    """
    data = result.data
    all_ids = [format_id(i) for i in data.ids]
    chosen = all_ids if ids is None else [format_id(i) for i in ids]
    pages = max(1, -(-len(chosen) // per_page))
    if not 0 <= page < pages:
        raise ValueError(f"page must be in 0..{pages - 1}")
    show = chosen[page * per_page : (page + 1) * per_page]
    if curves is None:
        curves = individual_data(result, ids=show, **kwargs)
    obs = _observations(data)
    output = str(output) if output is not None else obs["output"].iloc[0]
    nrows = -(-len(show) // ncols)
    fig, axes = new_figure(nrows, min(ncols, len(show)), panel=(3.0, 2.4), sharex=False)
    for ax in axes.flat[len(show) :]:
        ax.set_visible(False)
    for ax, sid in zip(axes.flat, show, strict=False):
        c = curves[(curves["ID"].map(format_id) == sid) & (curves["output"] == output)]
        o = obs[(obs["ID"].map(format_id) == sid) & (obs["output"] == output)]
        _subject_panel(ax, sid, c, o, data, log)
    fig.nlme_pages = pages  # type: ignore[attr-defined]
    keep = curves["ID"].map(format_id).isin(show)
    return attach(fig, curves=curves[keep], observations=obs[obs["ID"].map(format_id).isin(show)])


def _observations(data) -> pd.DataFrame:
    blq = np.zeros(data.n_obs, bool) if data.obs_cens is None else data.obs_cens != 0
    return pd.DataFrame(
        {
            "ID": data.ids[data.obs_subject],
            "TIME": data.obs_time,
            "DV": data.obs_dv,
            "BLQ": blq,
            "output": output_labels(data),
        }
    )


def _subject_panel(ax, sid, c: pd.DataFrame, o: pd.DataFrame, data, log: bool) -> None:
    ax.fill_between(c["TIME"], c["IPRED_lo"], c["IPRED_hi"], color=BAND, alpha=0.6, lw=0, label="90% CrI")
    ax.plot(c["TIME"], c["IPRED"], color=IPRED, lw=1.5, label="IPRED")
    ax.plot(c["TIME"], c["PRED"], color=PRED, lw=1, ls="--", label="PRED")
    ok = ~o["BLQ"].to_numpy()
    ax.scatter(o["TIME"][ok], o["DV"][ok], s=12, color=OBS, zorder=3, label="DV")
    if (~ok).any():
        ax.scatter(o["TIME"][~ok], o["DV"][~ok], s=16, marker="x", color=BLQ, zorder=3, label="BLQ")
    s = np.flatnonzero(data.ids == _id_value(data, sid))
    doses = data.dose_time[data.dose_subject == s[0]] if len(s) else []
    ax.plot(doses, np.zeros(len(doses)), "|", color="black", ms=10, transform=ax.get_xaxis_transform())
    if log:
        ax.set_yscale("log")
    ax.set_title(f"ID {sid}", fontsize=9)
    ax.set(xlabel="TIME", ylabel="DV")


def _id_value(data, sid):
    for v in data.ids:
        if format_id(v) == sid:
            return v
    return None


def individual_fit_pages(result, *, ids=None, per_page: int = 12, **kwargs) -> list:
    """Every page of :func:`individual_fits` (the curves computed once for all subjects)."""
    curves_kw = {k: kwargs.pop(k) for k in ("n_points", "ci", "n", "seed") if k in kwargs}
    curves = individual_data(result, ids=ids, **curves_kw)
    first = individual_fits(result, ids=ids, page=0, per_page=per_page, curves=curves, **kwargs)
    rest = [
        individual_fits(result, ids=ids, page=p, per_page=per_page, curves=curves, **kwargs)
        for p in range(1, first.nlme_pages)
    ]
    return [first, *rest]
