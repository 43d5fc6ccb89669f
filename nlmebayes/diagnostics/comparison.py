"""Model comparison on one table.

Bayesian (PSIS-LOO at observation, subject and marginal level, WAIC) next to the pharmacometric OFV, AIC and
BIC from the FOCE-I marginal likelihood.

Which LOO answers which question: the observation- and subject-level LOO condition on each
subject's etas, so a covariate that only explains between-subject differences (which the etas
absorb anyway) barely changes them. AIC, BIC and the marginal LOO integrate the etas out and judge
the population model, i.e. predictions for a new subject; they are the comparable pair.

Everything is read from the stored results; nothing is refitted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from arviz_stats import compare as _az_compare

from nlmebayes.diagnostics.loo import loo, waic

__all__ = ["compare", "stacking_weights"]

LEVELS = ("observation", "subject", "marginal")


def compare(results, names=None) -> pd.DataFrame:
    """Compare fitted models of the same data.

    Parameters
    ----------
    results : list of FitResult or dict name -> FitResult
    names : list of str, optional
        Defaults to each spec's name.

    Returns
    -------
    pandas.DataFrame
        One row per model: ``elpd_loo_<level>`` with SE, p_loo and the largest Pareto k for each
        level stored (observation, subject, marginal), WAIC, OFV, AIC, BIC, k, and differences to
        the best model: ``d_elpd_loo_<level>`` (<= 0) with the SE of the paired difference,
        ``d_AIC`` and ``d_BIC`` (>= 0), and the stacking ``weight`` of each model
        (:func:`stacking_weights`: subjects left out, with their etas integrated out when every
        model has the marginal log-likelihood; ``table.attrs["weight_level"]`` says which).
        Sorted by the marginal elpd when every model has it, else the observation-level one.
        ``table.attrs["verdict"]`` says which model is preferred and how sure that is.
    """
    if isinstance(results, dict):
        names, results = list(results), list(results.values())
    names = list(names or [r.spec.name for r in results])
    if len(set(names)) != len(names):
        raise ValueError(f"model names must differ, got {names}; pass names=[...]")
    n_obs = {r.data.n_obs for r in results}
    if len(n_obs) != 1:
        raise ValueError(f"models must be fitted to the same observations, got {sorted(n_obs)}")
    rows, pointwise, loos = [], {lv: {} for lv in LEVELS}, {}
    for name, r in zip(names, results, strict=True):
        row = {"model": name}
        for level in LEVELS:
            if level == "marginal" and "log_likelihood_marginal" not in r.idata.children:
                continue
            lo = loo(r, level)
            loos.setdefault(level, {})[name] = lo
            pointwise[level][name] = np.asarray(lo.elpd_i).ravel()
            row.update(
                {
                    f"elpd_loo_{level}": lo.elpd,
                    f"se_{level}": lo.se,
                    f"p_loo_{level}": lo.p,
                    f"max_pareto_k_{level}": float(np.max(lo.pareto_k)),
                }
            )
        row["waic"] = waic(r)["waic"]
        if "marginal" in r.idata.children:
            at = r.idata["marginal"].attrs
            row.update(OFV=at["ofv"], AIC=at["aic"], BIC=at["bic"], k=at["k"])
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model")
    for level in LEVELS:
        col = f"elpd_loo_{level}"
        if col not in table or table[col].isna().any():
            continue
        best = table[col].idxmax()
        table[f"d_elpd_loo_{level}"] = table[col] - table.loc[best, col]
        # SE of the paired pointwise difference (Vehtari, Gelman & Gabry 2017, eq. 24)
        table[f"d_se_{level}"] = [
            float(np.sqrt(len(d) * np.var(d, ddof=1))) if n != best else 0.0
            for n in table.index
            for d in [pointwise[level][n] - pointwise[level][best]]
        ]
    if len(results) > 1:
        level = _stacking_level(loos)
        table["weight"] = _az_compare(loos[level])["weight"].reindex(table.index)
        table.attrs["weight_level"] = level
    for ic in ("AIC", "BIC"):
        if ic in table:
            table[f"d_{ic}"] = table[ic] - table[ic].min()
    key = "marginal" if "d_elpd_loo_marginal" in table else "observation"
    table = table.sort_values(f"elpd_loo_{key}", ascending=False)
    table.attrs["verdict"] = _verdict(table)
    return table


def stacking_weights(results, names=None) -> pd.Series:
    """Stacking weights of fitted models from their leave-one-subject-out predictive densities.

    Stacking (Yao, Vehtari, Simpson & Gelman 2018) finds the mixture of the models' predictive
    distributions that predicts left-out units best. The units here are subjects: the marginal
    LOO (a new subject, etas integrated out) when every model stores it (``fit(...,
    marginal_loo=True)``), else the subject-level LOO (a subject's data given its etas).
    Observations of one subject are not exchangeable units, so the observation level is not
    used. ``weights.attrs["level"]`` says which level was used.

    Parameters
    ----------
    results : list of FitResult or dict name -> FitResult
    names : list of str, optional

    Returns
    -------
    pandas.Series
        Weight per model (summing to 1), indexed by name.

    Examples
    --------
    >>> w = stacking_weights({"base": base_fit, "wt": wt_fit})  # doctest: +SKIP
    >>> w.attrs["level"]  # doctest: +SKIP
    'marginal'
    """
    if isinstance(results, dict):
        names, results = list(results), list(results.values())
    names = list(names or [r.spec.name for r in results])
    if len(results) < 2:
        raise ValueError("stacking needs at least two models")
    marginal = all("log_likelihood_marginal" in r.idata.children for r in results)
    level = "marginal" if marginal else "subject"
    loos = {name: loo(r, level) for name, r in zip(names, results, strict=True)}
    w = _az_compare(loos)["weight"].reindex(names)
    w.attrs["level"] = level
    return w


def _stacking_level(loos: dict) -> str:
    """The level stacking uses: marginal when every model has it, else subject."""
    return "marginal" if len(loos.get("marginal", {})) == len(loos["subject"]) else "subject"


def _verdict(t: pd.DataFrame) -> str:
    if len(t) < 2:
        return f"Only one model ({t.index[0]})."
    parts = []
    for level, what in (
        ("marginal", "for a new subject (etas integrated out)"),
        ("observation", "for a new observation of a known subject"),
    ):
        if f"d_elpd_loo_{level}" not in t:
            continue
        d = t[f"d_elpd_loo_{level}"]
        best = d.idxmax()
        runner = d.drop(best).idxmax()
        gap, se = -d[runner], t.loc[runner, f"d_se_{level}"]
        z = gap / se if se > 0 else np.inf
        sure = "clearly" if z > 4 else "probably" if z > 2 else "not distinguishably"
        parts.append(
            f"LOO {what} prefers {best} over {runner} by {gap:.1f} elpd (SE {se:.1f}): {sure} better."
        )
    for level in ("marginal", "observation"):
        k = t.get(f"max_pareto_k_{level}")
        if k is not None and (k > 0.7).any():
            units = "subjects" if level == "marginal" else "observations"
            parts.append(
                f"PSIS-LOO ({level}) is unreliable for {', '.join(map(str, k.index[k > 0.7]))} "
                f"(Pareto k up to {k.max():.2f} > 0.7: influential {units})."
            )
    if "AIC" in t:
        aic_best = t["AIC"].idxmin()
        parts.append(
            f"AIC prefers {aic_best} (largest dAIC {t['d_AIC'].max():.1f}); BIC prefers {t['BIC'].idxmin()}."
        )
    return " ".join(parts)
