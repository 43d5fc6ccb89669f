"""What every plot shares: a pyplot-free Figure, the numbers behind it, a smoother, reference lines."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["new_figure", "attach", "lowess", "identity_line", "output_labels"]

#: Colours used across plots: observations, predictions, simulation bands, BLQ records.
OBS, PRED, IPRED, BAND, BLQ = "#333333", "#1f77b4", "#d62728", "#9ecae1", "#ff7f0e"
#: Column names of the 5/25/50/75/95% quantiles in band tables.
OUTER_Q = ("q05", "q25", "q50", "q75", "q95")


def new_figure(nrows: int, ncols: int, panel=(3.4, 2.9), **kwargs) -> tuple[Figure, np.ndarray]:
    """A Figure with a grid of axes, made without pyplot.

    No global figure manager is involved, so nothing is shown or kept alive, and it works with any
    backend (Agg in scripts and CI).
    """
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def attach(fig: Figure, **tables: pd.DataFrame) -> Figure:
    """Keep the plotted numbers on the figure as ``fig.nlme_data`` (name -> tidy DataFrame)."""
    fig.nlme_data = dict(getattr(fig, "nlme_data", {}), **tables)  # type: ignore[attr-defined]
    return fig


def lowess(x, y, frac: float = 2 / 3, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Locally linear smoother (tricube weights over the nearest ``frac`` of the points).

    One pass, no robustness iterations: a trend line for residual plots, evaluated on ``n``
    points spanning ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> gx, gy = lowess(np.arange(10.0), 2 * np.arange(10.0), n=3)
    >>> np.round(gy, 6).tolist()
    [0.0, 9.0, 18.0]
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0:
        return np.array([]), np.array([])
    grid = np.linspace(x.min(), x.max(), n)
    k = max(3, int(np.ceil(frac * len(x))))
    d = np.abs(x[None, :] - grid[:, None])
    h = np.maximum(np.sort(d, axis=1)[:, k - 1], 1e-12)
    w = np.clip(1 - (d / h[:, None]) ** 3, 0, None) ** 3
    sw, swx, swy = w.sum(1), w @ x, w @ y
    swxx, swxy = w @ (x * x), w @ (x * y)
    den = sw * swxx - swx**2
    slope = np.where(np.abs(den) > 1e-12, (sw * swxy - swx * swy) / np.where(den == 0, 1, den), 0.0)
    icpt = (swy - slope * swx) / sw
    return grid, icpt + slope * grid


def identity_line(ax) -> None:
    """The line y = x over the axes' common range."""
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", zorder=0)


def output_labels(data) -> np.ndarray:
    """Each observation's output (DVID as text; "1" everywhere for a one-output model)."""
    return data.obs_output if "DVID" in data.records.columns else np.full(data.n_obs, "1", dtype=object)
