"""Eta diagnostics: distributions against N(0, omega), etas against covariates, eta pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from nlmebayes.diagnostics.shrinkage import shrinkage_table
from nlmebayes.plots._base import OBS, PRED, attach, lowess, new_figure

__all__ = ["eta_data", "eta_distributions", "eta_covariates", "eta_pairs"]


def eta_data(result) -> pd.DataFrame:
    """Per subject and IIV parameter: posterior-mean eta, EBE (posterior mode, NaN if not computed).

    Returns
    -------
    DataFrame
        ID, parameter, eta_mean, eta_ebe, and the subject's time-constant covariates.
    """
    post = result.posterior
    mean = post["eta"].mean(("chain", "draw")).to_pandas()
    if "marginal" in result.idata.children:
        ebe = result.idata["marginal"]["eta_ebe"].to_pandas()
    else:
        ebe = mean * np.nan
    data = result.data
    long = pd.DataFrame(
        {
            "ID": np.repeat(data.ids, mean.shape[1]),
            "parameter": np.tile(mean.columns.astype(str), mean.shape[0]),
            "eta_mean": mean.to_numpy().ravel(),
            "eta_ebe": ebe.to_numpy().ravel(),
        }
    )
    constant = data.constant_covariates()
    if constant:
        cov = data.subject_covariates(constant).reset_index()
        long = long.merge(cov, on="ID", how="left")
    return long


def _omega_var(result) -> pd.Series:
    """Posterior mean of each eta's variance (omega^2), by IIV parameter."""
    sd = result.posterior["omega_sd"]
    return (sd**2).mean(("chain", "draw")).to_pandas()


def eta_distributions(result):
    """Histograms of the EBEs and posterior-mean etas with the N(0, omega^2) density, per parameter.

    The title gives eta shrinkage (SD, percent) of both as the report's shrinkage table has them:
    NONMEM's from the EBEs, and that of the posterior means; the density uses E[omega^2].

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["etas"]`` (:func:`eta_data`) and ``["shrinkage"]``.

    Examples
    --------
    >>> fig = eta_distributions(result)  # doctest: +SKIP
    """
    df = eta_data(result)
    var = _omega_var(result)
    table = shrinkage_table(result)  # the report's numbers, so that figure and table agree
    params = list(var.index)
    fig, axes = new_figure(1, len(params))
    rows = []
    for ax, p in zip(axes[0], params, strict=True):
        sub = df[df["parameter"] == p]
        sh = {}
        for col, color, label, column in (
            ("eta_ebe", OBS, "EBE", "EBE SD %"),
            ("eta_mean", PRED, "posterior mean", "post. mean SD %"),
        ):
            v = sub[col].dropna().to_numpy()
            if len(v):
                ax.hist(v, bins="auto", density=True, alpha=0.45, color=color, label=label)
                sh[label] = float(table.loc[p, column])
        sd = np.sqrt(var[p])
        g = np.linspace(-4 * sd, 4 * sd, 200)
        ax.plot(g, stats.norm.pdf(g, 0, sd), color="grey", ls="--", label="N(0, omega^2)")
        ax.set_title(f"eta({p}) shrinkage " + ", ".join(f"{k} {v:.0f}%" for k, v in sh.items()), fontsize=8)
        ax.set(xlabel=f"eta({p})", ylabel="density")
        ax.legend(fontsize=7)
        rows += [dict(parameter=p, estimate=k, shrinkage_sd_percent=v) for k, v in sh.items()]
    return attach(fig, etas=df, shrinkage=pd.DataFrame(rows))


def _categorical(values: pd.Series) -> bool:
    return values.dtype == object or values.nunique() <= 4


def eta_covariates(result, covariates=None, *, eta: str = "eta_mean"):
    """Etas against covariates: scatter with a smoother (continuous), boxplots (categorical).

    A covariate with at most 4 distinct values, or text values, is drawn as categorical.

    Parameters
    ----------
    result : FitResult
    covariates : sequence of str, optional
        Time-constant covariates (default all).
    eta : {"eta_mean", "eta_ebe"}
        Posterior means (default) or EBEs.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["etas"]``.

    Examples
    --------
    >>> fig = eta_covariates(result, ["WT"])  # doctest: +SKIP
    """
    df = eta_data(result)
    params = list(pd.unique(df["parameter"]))
    covariates = (
        [c for c in df.columns if c not in ("ID", "parameter", "eta_mean", "eta_ebe")]
        if covariates is None
        else list(covariates)
    )
    if not covariates:
        raise ValueError("the data have no time-constant covariates to plot the etas against")
    fig, axes = new_figure(len(params), len(covariates), panel=(3.0, 2.5))
    for i, p in enumerate(params):
        sub = df[df["parameter"] == p]
        for j, c in enumerate(covariates):
            ax = axes[i, j]
            if _categorical(sub[c]):
                groups = sorted(sub[c].unique(), key=str)
                ax.boxplot(
                    [sub.loc[sub[c] == g, eta].dropna() for g in groups], tick_labels=[str(g) for g in groups]
                )
            else:
                ax.scatter(sub[c], sub[eta], s=10, color=OBS)
                gx, gy = lowess(sub[c], sub[eta])
                ax.plot(gx, gy, color="#d62728")
            ax.axhline(0, color="grey", lw=1, ls="--")
            ax.set(xlabel=c, ylabel=f"eta({p})")
    return attach(fig, etas=df)


def eta_pairs(result, *, eta: str = "eta_mean"):
    """Scatter of each pair of etas (posterior means by default), correlation in the title.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["etas"]`` in wide form (one column per parameter).
    """
    df = eta_data(result).pivot(index="ID", columns="parameter", values=eta)
    params = list(df.columns)
    n = len(params)
    if n < 2:
        raise ValueError("eta pairs need at least two IIV parameters")
    fig, axes = new_figure(n - 1, n - 1, panel=(2.6, 2.4))
    for i in range(1, n):
        for j in range(n - 1):
            ax = axes[i - 1, j]
            if j >= i:
                ax.set_visible(False)
                continue
            ax.scatter(df[params[j]], df[params[i]], s=10, color=OBS)
            r = np.corrcoef(df[params[j]], df[params[i]])[0, 1]
            ax.set_title(f"r = {r:.2f}", fontsize=8)
            ax.set(xlabel=f"eta({params[j]})", ylabel=f"eta({params[i]})")
    return attach(fig, etas=df.reset_index())
