"""Shrinkage for teaching: each subject's no-pooling estimate, partial-pooling posterior, population value."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from nlmebayes.plots._base import attach, new_figure

__all__ = ["pooling_data", "shrinkage_plot"]

#: Omega is inflated this much (variance) for the no-pooling estimate: a near-flat prior on the etas
#: that keeps a subject with too few samples for its etas finite.
FLAT = 1e4


def pooling_data(result, parameter: str) -> pd.DataFrame:
    """Per subject: no-pooling estimate, partial-pooling posterior median, population value.

    * no pooling: the subject's conditional mode with a near-flat prior (Omega x 10^4), given the
      posterior-median population parameters: what its own data say;
    * partial pooling: the posterior median of the individual parameter;
    * population: the posterior median of the subject's typical value (covariates included).

    Returns
    -------
    DataFrame
        ID, n_obs, no_pooling, partial_pooling, population, and ``pulled``: the share of the way
        from the no-pooling estimate to the population value the posterior has moved (log scale).
    """
    from nlmebayes.diagnostics.conditional import ConditionalModel
    from nlmebayes.diagnostics.ebe import JointObjective, conditional_modes
    from nlmebayes.diagnostics.population import PopulationValues

    spec, data, post = result.spec, result.data, result.posterior
    if parameter not in spec.iiv_parameters:
        raise ValueError(f"{parameter} has no IIV; parameters with IIV: {spec.iiv_parameters}")
    k = spec.iiv_parameters.index(parameter)
    lognormal = spec.eta_kind(parameter) == "lognormal"
    P = (
        (post[parameter] if parameter in spec.parameter_names else post["eta"].sel(iiv=parameter))
        .stack(s=("chain", "draw"))
        .transpose("subject", "s")
        .values
    )
    eta = post["eta"].stack(s=("chain", "draw")).transpose("subject", "iiv", "s").values[:, k]
    typical = np.median(P * np.exp(-eta) if lognormal else P - eta, axis=1)
    cm = ConditionalModel(spec, data)
    pv = PopulationValues.from_posterior(post, spec)
    omega = pv.covariance(spec, cm.n_slots)
    free, _ = conditional_modes(JointObjective(cm, pv.rv_values(spec), omega * FLAT))
    no_pool = typical * np.exp(free[:, k]) if lognormal else typical + free[:, k]
    partial = np.median(P, axis=1)
    f = np.log if lognormal else (lambda v: v)
    with np.errstate(divide="ignore", invalid="ignore"):
        pulled = (f(no_pool) - f(partial)) / (f(no_pool) - f(typical))
    return pd.DataFrame(
        {
            "ID": data.ids,
            "n_obs": np.bincount(data.obs_subject, minlength=data.n_subjects),
            "no_pooling": no_pool,
            "partial_pooling": partial,
            "population": typical,
            "pulled": pulled,
        }
    )


def shrinkage_plot(result, parameter: str = "CL"):
    """Arrows from each subject's no-pooling estimate to its partial-pooling posterior.

    Subjects are rows sorted by their number of observations and coloured by it; the population
    (typical) value is a grey tick. Rich subjects' arrows are short (their data dominate), sparse
    subjects' arrows reach nearly to the population value (the prior dominates).

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.nlme_data["pooling"]`` (:func:`pooling_data`).

    Examples
    --------
    >>> fig = shrinkage_plot(result, "CL")  # doctest: +SKIP
    """
    df = pooling_data(result, parameter).sort_values(["n_obs", "ID"], kind="stable").reset_index(drop=True)
    fig, axes = new_figure(1, 1, panel=(6.0, max(3.0, 0.18 * len(df) + 1.2)))
    ax = axes[0, 0]
    norm = Normalize(df["n_obs"].min(), max(df["n_obs"].max(), df["n_obs"].min() + 1))
    cmap = colormaps["viridis"]
    for i, r in df.iterrows():
        c = cmap(norm(r["n_obs"]))
        ax.annotate(
            "",
            xy=(r["partial_pooling"], i),
            xytext=(r["no_pooling"], i),
            arrowprops=dict(arrowstyle="->", color=c, lw=1.4),
        )
        ax.plot(r["no_pooling"], i, "o", mfc="white", mec=c, ms=5)
        ax.plot(r["population"], i, "|", color="grey", ms=8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(df)), [str(v) for v in df["ID"]], fontsize=6)
    ax.set(
        xlabel=f"{parameter} (open: no pooling, arrow head: partial pooling, grey: population)",
        ylabel="subject (by number of observations)",
    )
    sm = ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="observations")
    return attach(fig, pooling=df)
