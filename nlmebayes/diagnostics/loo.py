"""Predictive information criteria from the stored log-likelihoods.

PSIS-LOO (through ArviZ), WAIC and DIC, at three levels.

==============  ===========================================================================
observation     leave one observation out, conditional on the subject's etas (``DV``
                log-likelihood per observation): how well a subject's other samples predict one
subject         leave one subject out, conditional on its etas: the subject's observations'
                log-likelihoods summed per draw. Pareto k is often high, as each subject's etas
                are informed by its own data only
marginal        leave one subject out with the etas integrated out (importance sampling per
                draw, :func:`~nlmebayes.diagnostics.importance.marginal_loglik_draws`): how
                well the population model predicts a new subject. Needs
                ``fit(..., marginal_loo=True)``
==============  ===========================================================================

WAIC (Watanabe 2010) is computed here as ArviZ >= 1 no longer provides it:
``elpd_waic = sum_i [log mean_s p(y_i|theta_s) - var_s log p(y_i|theta_s)]``. DIC uses
Gelman's ``p_V = var(D) / 2`` with ``D = -2 log p(y|theta)`` (no refit at the posterior mean,
since reporting never rebuilds the model). Both are conditional on the etas.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from arviz_stats import loo as _az_loo
from scipy.special import logsumexp

__all__ = ["log_likelihood", "loo", "psis_loo", "waic", "dic"]

LEVELS = ("observation", "subject", "marginal")


def log_likelihood(result, level: str = "observation") -> xr.DataArray:
    """Pointwise log-likelihood (chain, draw, obs|subject) at ``level`` (see module docstring)."""
    if level == "observation":
        return result.idata["log_likelihood"]["DV"]
    if level == "subject":
        ll = result.idata["log_likelihood"]["DV"]
        subj = result.idata["constant_data"]["subject_index"].values
        labels = result.posterior["subject"].values
        out = xr.DataArray(
            np.zeros((ll.sizes["chain"], ll.sizes["draw"], len(labels))),
            dims=("chain", "draw", "subject"),
            coords={"chain": ll["chain"], "draw": ll["draw"], "subject": labels},
        )
        vals = ll.transpose("chain", "draw", "obs").values
        for i in range(len(labels)):
            out.values[..., i] = vals[..., subj == i].sum(axis=-1)
        return out
    if level == "marginal":
        if "log_likelihood_marginal" not in result.idata.children:
            raise ValueError(
                "no marginal log-likelihood stored: fit with marginal_loo=True or call "
                "nlmebayes.diagnostics.add_marginal(result, marginal_loo=True)"
            )
        return result.idata["log_likelihood_marginal"]["subject"]
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def loo(result, level: str = "observation"):
    """PSIS-LOO at ``level``: an ArviZ ``ELPDData`` (elpd, se, p, pareto_k, warning).

    ArviZ's console warning about large Pareto k is not passed on: ``pareto_k`` and ``warning``
    carry it, and :func:`~nlmebayes.diagnostics.compare` reports the largest k and which
    observations or subjects have k > 0.7.
    """
    return psis_loo(log_likelihood(result, level), result.posterior)


def psis_loo(ll: xr.DataArray, posterior: xr.Dataset):
    """PSIS-LOO of a pointwise log-likelihood (chain, draw, point) drawn from ``posterior``."""
    post = posterior.sel(chain=ll["chain"], draw=ll["draw"])
    tree = xr.DataTree.from_dict({"posterior": post, "log_likelihood": xr.Dataset({"ll": ll})})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        return _az_loo(tree, var_name="ll", pointwise=True)


def _draws_by_point(ll: xr.DataArray) -> np.ndarray:
    point = [d for d in ll.dims if d not in ("chain", "draw")]
    return (
        ll.stack(sample=("chain", "draw"))
        .transpose("sample", *point)
        .values.reshape(ll.sizes["chain"] * ll.sizes["draw"], -1)
    )


def waic(result, level: str = "observation") -> dict:
    """WAIC at ``level``: ``elpd_waic``, its ``se``, ``p_waic`` and ``waic = -2 elpd_waic``."""
    a = _draws_by_point(log_likelihood(result, level))
    lppd = logsumexp(a, axis=0) - np.log(a.shape[0])
    p = a.var(axis=0, ddof=1)
    elpd_i = lppd - p
    n = elpd_i.size
    return {
        "elpd_waic": float(elpd_i.sum()),
        "se": float(np.sqrt(n * elpd_i.var(ddof=1))),
        "p_waic": float(p.sum()),
        "waic": float(-2 * elpd_i.sum()),
    }


def dic(result) -> dict:
    """DIC with ``p_V = var(D) / 2`` (conditional on the etas)."""
    a = _draws_by_point(log_likelihood(result, "observation"))
    D = -2.0 * a.sum(axis=1)
    p_v = float(D.var(ddof=1) / 2)
    return {"dic": float(D.mean() + p_v), "p_dic": p_v, "mean_deviance": float(D.mean())}
