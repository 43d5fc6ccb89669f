"""The full covariate model: every candidate effect in one fit under a shrinkage prior.

Write the candidates in the spec (:class:`~nlmebayes.model.spec.CovariateCandidates`, or
:func:`full_covariate_model` on a base spec) and :func:`~nlmebayes.fit` it. The regularised
horseshoe leaves effects the data support about where an ordinary prior would, and pulls the
others to 0; :func:`candidate_effects` summarises each effect:

* the effect in the unit of its form (power exponent, change of log P per unit, log fold of a
  level) and as the factor on the parameter over the covariate's 5th-95th percentile range (or
  between the level and the reference), with 90% intervals;
* ``p_sign``, the posterior probability of the effect's sign (1: the data fix its direction);
* ``inclusion``, the posterior mean of ``1 - kappa`` with ``kappa = 1 / (1 + N s^2 tau^2
  lambda~^2 / omega^2)``, the horseshoe's shrinkage factor (Piironen & Vehtari 2017, eq. 3) with N
  subjects, s^2 the variance of the effect's standardised column and omega the parameter's IIV
  SD: about 1 for an effect left alone, about 0 for one shrunk away.

The intervals judge effects one at a time. Which set of covariates predicts as well as all of them
is :func:`~nlmebayes.search.projection.select_covariates`'s question.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from nlmebayes.model.candidates import CandidateForm, candidate_forms
from nlmebayes.model.spec import CovariateCandidates, ModelSpec

__all__ = ["full_covariate_model", "candidate_effects", "fitted_forms", "stacked_draws"]


def full_covariate_model(spec: ModelSpec, candidates, **options) -> ModelSpec:
    """``spec`` with every candidate effect under the shrinkage prior.

    Parameters
    ----------
    spec : ModelSpec
        The base model (its own covariate relations stay, outside the search).
    candidates : list of (str, str)
        (parameter, covariate) pairs.
    **options
        :class:`~nlmebayes.model.spec.CovariateCandidates` settings (``expected``, ...).

    Examples
    --------
    >>> from nlmebayes import IIV, ModelSpec
    >>> base = ModelSpec("base", "1cpt_oral", {"KA": 1, "CL": 4, "V": 40}, iiv=IIV(["CL", "V"]))
    >>> full_covariate_model(base, [("CL", "WT"), ("V", "SEX")], expected=1).candidates.pairs
    [('CL', 'WT'), ('V', 'SEX')]
    """
    return dataclasses.replace(
        spec, name=f"{spec.name}_full", candidates=CovariateCandidates(list(candidates), **options)
    )


def fitted_forms(result) -> list[CandidateForm]:
    """The candidate forms of a full-model fit (as its builder made them)."""
    cand = result.spec.candidates
    if cand is None:
        raise ValueError(f"model {result.spec.name} has no candidate covariate effects (spec.candidates)")
    cov = result.data.subject_covariates(sorted({c for _, c in cand.pairs}))
    return candidate_forms(cand, cov)


def candidate_effects(result, prob: float = 0.9) -> pd.DataFrame:
    """Per candidate effect of a full-model fit: size, interval, sign probability, inclusion.

    Parameters
    ----------
    result : FitResult
        A fit of a spec with ``candidates``.
    prob : float
        Mass of the equal-tailed intervals.

    Returns
    -------
    DataFrame
        One row per effect (per level of a categorical one), in the order of the candidates:
        parameter, covariate, level, kind, effect with effect_lower/effect_upper, factor (on the
        parameter over the 5th-95th percentile range, or level vs reference) with its interval,
        excludes_zero, p_sign, inclusion.

    Examples
    --------
    >>> candidate_effects(result).query("excludes_zero")  # doctest: +SKIP
    """
    post = result.posterior
    forms = fitted_forms(result)
    n = result.data.n_subjects
    a = (1 - prob) / 2
    beta = stacked_draws(post["beta_candidate"])
    kappa = _shrinkage_factor(post, forms, n, beta.shape[0])
    rows, j = [], 0
    for f in forms:
        for level in f.levels or [None]:
            theta = beta[:, j] / f.scale
            span = (
                1.0 if f.kind == "categorical" else float(np.ptp(np.quantile(f.columns[:, 0], [0.05, 0.95])))
            )
            q = np.quantile(theta, [a, 0.5, 1 - a])
            rows.append({
                "parameter": f.parameter, "covariate": f.covariate, "level": level, "kind": f.kind,
                "effect": q[1], "effect_lower": q[0], "effect_upper": q[2],
                "factor": np.exp(q[1] * span), "factor_lower": np.exp(q[0] * span),
                "factor_upper": np.exp(q[2] * span),
                "excludes_zero": bool(q[0] > 0 or q[2] < 0),
                "p_sign": float(max(np.mean(theta > 0), np.mean(theta < 0))),
                "inclusion": float(np.mean(1 - kappa[:, j])),
            })  # fmt: skip
            j += 1
    return pd.DataFrame(rows)


def stacked_draws(da) -> np.ndarray:
    """Draws with chains pooled: (chain * draw, ...)."""
    return da.stack(sample=("chain", "draw")).transpose("sample", ...).values


def _shrinkage_factor(post, forms: list[CandidateForm], n: int, S: int) -> np.ndarray:
    """Kappa per draw and standardised column (see the module docstring)."""
    tau = stacked_draws(post["hs_tau"]).reshape(S, 1)
    lam, c2 = stacked_draws(post["hs_lambda"]), stacked_draws(post["hs_c2"]).reshape(S, 1)
    lam_t2 = c2 * lam**2 / (c2 + tau**2 * lam**2)
    omega = post["omega_sd"]
    cols = []
    for f in forms:
        sd = stacked_draws(omega.sel(iiv=f.parameter))
        for k in range(len(f.labels)):
            col = f.columns[:, k] / f.scale
            cols.append((col.var(), sd))
    s2 = np.array([v for v, _ in cols])
    om = np.stack([sd for _, sd in cols], axis=1)
    return 1.0 / (1.0 + n * s2 * tau**2 * lam_t2 / om**2)
