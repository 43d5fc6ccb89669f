"""Prior predictive check and prior-versus-posterior densities of the population parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes.diagnostics.binning import auto_bins, bin_index
from nlmebayes.plots._base import OBS, OUTER_Q, attach, new_figure

__all__ = ["prior_predictive_plot", "prior_posterior"]


def prior_predictive_plot(spec, data, *, prior=None, n: int = 500, seed: int | None = 0, log: bool = True):
    """Prior predictive bands (5-95% and 25-75% of replicated DV per time bin) over the observations.

    Parameters
    ----------
    spec : ModelSpec
    data : EventData
    prior : xarray.Dataset, optional
        From :func:`nlmebayes.simulation.prior_predictive` (else drawn here with ``n``, ``seed``).
    log : bool
        Log y axis (the default: priors spread over orders of magnitude).

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["bands"]``: time bin, its median time, and the five quantiles.

    Examples
    --------
    >>> from nlmebayes import ModelSpec, datasets
    >>> spec = ModelSpec("theo", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "V": 31.5})
    >>> fig = prior_predictive_plot(spec, datasets.theophylline(), n=100)
    >>> list(fig.nlme_data["bands"].columns)
    ['bin', 'time', 'q05', 'q25', 'q50', 'q75', 'q95']
    """
    from nlmebayes.model.select import select_observations
    from nlmebayes.simulation.predictive import prior_predictive

    data = select_observations(spec, data)
    if prior is None:
        prior = prior_predictive(spec, data, n=n, seed=seed)
    t = data.obs_time
    b = bin_index(t, auto_bins(t))
    sims = prior["dv"].values
    rows = []
    for k in np.unique(b):
        q = np.quantile(sims[:, b == k], [0.05, 0.25, 0.5, 0.75, 0.95])
        rows.append(dict(bin=k, time=float(np.median(t[b == k])), **dict(zip(OUTER_Q, q, strict=True))))
    bands = pd.DataFrame(rows)
    fig, axes = new_figure(1, 1, panel=(5.5, 3.8))
    ax = axes[0, 0]
    ax.fill_between(bands["time"], bands["q05"], bands["q95"], color="#c6dbef", lw=0, label="prior 5-95%")
    ax.fill_between(bands["time"], bands["q25"], bands["q75"], color="#6baed6", lw=0, label="prior 25-75%")
    ax.plot(bands["time"], bands["q50"], color="#08519c", label="prior median")
    ax.scatter(t, data.obs_dv, s=8, color=OBS, zorder=3, label="observed")
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="time", ylabel="DV", title="Prior predictive check")
    ax.legend(fontsize=7)
    return attach(fig, bands=bands)


def _natural(name: str, v):
    """Typical values on their natural scale (``log_CL_pop`` -> ``CL_pop``)."""
    if name.startswith("log_") and name.endswith("_pop"):
        return name[4:], np.exp(v)
    return name, v


def prior_posterior(result, *, prior=None, n: int = 2000, seed: int | None = 0):
    """Prior and posterior densities of each scalar population parameter (histograms, log x for positives).

    A posterior as wide as its prior means the data say little about that parameter.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["summary"]``: per parameter the prior and posterior 5/50/95% quantiles and the
        ratio of posterior to prior 90% width (on the log scale for positive parameters).

    Examples
    --------
    >>> fig = prior_posterior(result)  # doctest: +SKIP
    """
    from nlmebayes.simulation.predictive import prior_predictive

    if prior is None:
        prior = prior_predictive(result.spec, result.data, n=n, seed=seed)
    names = [v for v in prior.data_vars if v not in ("ipred", "dv", "time")]
    ncols = min(4, len(names))
    fig, axes = new_figure(-(-len(names) // ncols), ncols, panel=(3.0, 2.4))
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    rows = []
    for ax, name in zip(axes.flat, names, strict=False):
        label, pr = _natural(name, prior[name].values)
        _, po = _natural(name, result.posterior[name].values.ravel())
        positive = (pr > 0).all() and (po > 0).all()
        f = np.log if positive else (lambda v: v)
        edges = np.linspace(*np.quantile(f(np.r_[pr, po]), [0.001, 0.999]), 50)
        ax.hist(f(pr), bins=edges, density=True, color="#bbbbbb", alpha=0.7, label="prior")
        ax.hist(f(po), bins=edges, density=True, color="#1f77b4", alpha=0.7, label="posterior")
        ax.set(xlabel=f"log {label}" if positive else label, yticks=[])
        ax.legend(fontsize=6)
        qp, qq = np.quantile(pr, [0.05, 0.5, 0.95]), np.quantile(po, [0.05, 0.5, 0.95])
        width = (f(qq[2]) - f(qq[0])) / (f(qp[2]) - f(qp[0]))
        rows.append(
            dict(
                parameter=label,
                prior_q05=qp[0],
                prior_q50=qp[1],
                prior_q95=qp[2],
                post_q05=qq[0],
                post_q50=qq[1],
                post_q95=qq[2],
                width_ratio=width,
            )
        )
    return attach(fig, summary=pd.DataFrame(rows))
