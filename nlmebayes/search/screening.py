"""Covariate screening: each subject's eta against each covariate, before any refit.

The quick look pharmacometricians take first (eta-vs-covariate plots, as in xpose or PsN's
``scm`` start), as a ranked table. Etas are posterior means per subject. Continuous covariates:
the Pearson correlation of the eta with log(covariate) (the covariate itself where it is not
positive), whose least-squares slope is the power exponent a ``(COV/median)**theta`` relation on
that parameter would start from. Categorical ones (non-numeric, or at most ``max_levels`` values):
a Kruskal-Wallis test across levels, and the largest ratio of exp(mean eta) between two levels.

Screening on individual estimates is blind where shrinkage is high (the etas of uninformative
subjects sit at 0 whatever their covariate): the table carries each parameter's eta shrinkage,
and a relationship screened out there is not ruled out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["covariate_screening"]


def covariate_screening(result, covariates=None, max_levels: int = 5) -> pd.DataFrame:
    """Rank every (parameter with IIV, covariate) pair by the evidence of a relationship.

    Parameters
    ----------
    result : FitResult
    covariates : list of str, optional
        Time-constant covariates of the data to screen (default all of them).
    max_levels : int
        A numeric covariate with at most this many distinct values is screened as categorical.

    Returns
    -------
    DataFrame
        One row per pair, most significant first: parameter, covariate, kind
        (``continuous``/``categorical``), test (``pearson r on log``, ``pearson r`` or
        ``kruskal H``), statistic, effect (the power exponent, the linear slope per unit, or the
        largest fold difference between levels), p, p_adjusted (Bonferroni over the table),
        shrinkage (eta shrinkage SD, %), in_model (the pair already has a covariate relation).

    Examples
    --------
    >>> covariate_screening(result).head(3)  # doctest: +SKIP
    """
    spec, data = result.spec, result.data
    eta = result.idata["posterior"]["eta"].mean(("chain", "draw"))
    names = list(data.constant_covariates() if covariates is None else covariates)
    cov = data.subject_covariates(names)
    sd = result.idata["posterior"]["omega_sd"].median(("chain", "draw"))
    in_model = {(c.parameter, c.covariate) for c in spec.covariates}
    rows = []
    for p in spec.iiv_parameters:
        e = eta.sel(iiv=p).values
        shrink = 100 * (1 - np.std(e, ddof=1) / float(sd.sel(iiv=p)))
        for c in names:
            row = _screen(e, cov[c].to_numpy(), max_levels)
            rows.append({"parameter": p, "covariate": c, **row, "shrinkage": shrink,
                         "in_model": (p, c) in in_model})  # fmt: skip
    tab = pd.DataFrame(rows)
    if tab.empty:
        return tab
    tab["p_adjusted"] = np.minimum(1.0, tab["p"] * len(tab))
    cols = ["parameter", "covariate", "kind", "test", "statistic", "effect", "p", "p_adjusted",
            "shrinkage", "in_model"]  # fmt: skip
    return tab[cols].sort_values("p", kind="stable").reset_index(drop=True)


def _screen(eta: np.ndarray, x: np.ndarray, max_levels: int) -> dict:
    numeric = pd.api.types.is_numeric_dtype(x)
    if not numeric or len(np.unique(x)) <= max_levels:
        return _categorical(eta, x.astype(str))
    x = x.astype(float)
    if np.ptp(x) == 0:
        return {"kind": "continuous", "test": "constant", "statistic": np.nan, "effect": np.nan, "p": 1.0}
    log = bool(np.all(x > 0))
    z = np.log(x) if log else x
    r, p = stats.pearsonr(z, eta)
    slope = np.polyfit(z, eta, 1)[0]
    return {"kind": "continuous", "test": "pearson r on log" if log else "pearson r",
            "statistic": float(r), "effect": float(slope), "p": float(p)}  # fmt: skip


def _categorical(eta: np.ndarray, x: np.ndarray) -> dict:
    levels = [eta[x == lv] for lv in np.unique(x)]
    if len(levels) < 2:
        return {"kind": "categorical", "test": "constant", "statistic": np.nan, "effect": np.nan, "p": 1.0}
    h, p = stats.kruskal(*levels)
    means = [float(np.mean(g)) for g in levels]
    return {"kind": "categorical", "test": "kruskal H", "statistic": float(h),
            "effect": float(np.exp(max(means) - min(means))), "p": float(p)}  # fmt: skip
