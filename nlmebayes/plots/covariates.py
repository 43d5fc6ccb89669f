"""Covariate search: the full model's effects as a forest plot, and the selection's elpd path."""

from __future__ import annotations

import numpy as np

from nlmebayes.plots._base import IPRED, OBS, PRED, attach, new_figure

__all__ = ["candidate_effects_plot", "selection_path_plot"]


def candidate_effects_plot(result, prob: float = 0.9):
    """Forest plot of a full covariate model: each effect's factor on its parameter.

    The factor is over the covariate's 5th-95th percentile range (continuous) or level vs
    reference (categorical), with its ``prob`` interval; effects whose interval excludes 1 are
    drawn in colour. Numbers in ``fig.nlme_data["effects"]``.

    Examples
    --------
    >>> fig = candidate_effects_plot(full_fit)  # doctest: +SKIP
    """
    from nlmebayes.search.covariate_model import candidate_effects

    tab = candidate_effects(result, prob=prob)
    labels = [
        f"{r.parameter} ~ {r.covariate}" + ("" if r.level is None or r.level != r.level else f" [{r.level}]")
        for r in tab.itertuples()
    ]
    fig, axes = new_figure(1, 1, panel=(5.0, 0.3 * len(tab) + 1.2))
    ax = axes[0, 0]
    y = np.arange(len(tab))[::-1]
    colour = np.where(tab["excludes_zero"], IPRED, OBS)
    ax.hlines(y, tab["factor_lower"], tab["factor_upper"], colors=colour)
    ax.scatter(tab["factor"], y, c=colour, zorder=3, s=18)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yticks(y, labels)
    ax.set_xlabel(f"factor on the parameter ({100 * prob:g}% interval)")
    ax.set_title("Candidate covariate effects (horseshoe)")
    return attach(fig, effects=tab.assign(label=labels))


def selection_path_plot(selection):
    """The projection's elpd path: marginal elpd difference to the best size, +/- 1 SE, by size.

    The chosen size is marked. Numbers in ``fig.nlme_data["path"]``.

    Examples
    --------
    >>> fig = selection_path_plot(select_covariates(full_fit))  # doctest: +SKIP
    """
    path = selection.path.reset_index()
    fig, axes = new_figure(1, 1, panel=(5.0, 3.2))
    ax = axes[0, 0]
    ax.errorbar(path["size"], path["elpd_diff"], yerr=path["se_diff"], fmt="o-", color=PRED, capsize=3)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    chosen = len(selection.selected)
    at = path[path["size"] == chosen]
    ax.scatter(
        at["size"], at["elpd_diff"], s=120, facecolors="none", edgecolors=IPRED, zorder=3, label="chosen"
    )
    ticks = [f"{s}\n{a}" if a else str(s) for s, a in zip(path["size"], path["added"], strict=True)]
    ax.set_xticks(path["size"], ticks, fontsize=7)
    ax.set_xlabel("size (effect added)")
    ax.set_ylabel("elpd difference to the best size")
    ax.legend(frameon=False)
    return attach(fig, path=path)
