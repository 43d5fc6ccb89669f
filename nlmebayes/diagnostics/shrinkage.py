"""Shrinkage.

How far the data leave the individual random effects and residuals pulled toward the population (Savic &
Karlsson 2009; Gelman & Pardoe 2006).

========================  ==========================================================================
eta shrinkage, SD         ``1 - SD_i(eta_i) / omega`` (NONMEM ETASHRINKSD; SD over subjects, n - 1)
eta shrinkage, variance   ``1 - Var_i(eta_i) / omega^2`` (NONMEM ETASHRINKVR)
epsilon shrinkage         ``1 - sqrt(mean(IWRES^2))`` and ``1 - mean(IWRES^2)`` (EPSSHRINKSD/VR)
pooling factor            ``1 - Var_i(E[eta_i | y]) / E[Var_i(eta_i)]`` (Gelman & Pardoe: the
                          variance over subjects of the posterior means against the posterior
                          mean of the per-draw variance over subjects): 0 = no pooling, 1 = complete
subject shrinkage         ``Var(eta_i | y) / omega^2`` per subject and parameter: the share of the
                          population's spread left after seeing subject i's data (1 = the data say
                          nothing about this subject, 0 = fully determined by them)
========================  ==========================================================================

The eta shrinkages are computed from posterior-mode EBEs (NONMEM's convention, from
:mod:`nlmebayes.diagnostics.ebe`) and from posterior means of the etas; Bayesian summaries use ``E[omega^2]``
over the posterior as the population variance. Everything here works on stored arrays: nothing
rebuilds the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["eta_shrinkage", "epsilon_shrinkage", "pooling_factor", "subject_shrinkage", "shrinkage_table"]


def eta_shrinkage(eta, omega, kind: str = "sd") -> np.ndarray:
    """Eta shrinkage of individual estimates ``eta`` (subjects x q) given Omega (q x q or q variances).

    ``kind="sd"``: ``1 - SD(eta) / sqrt(omega_kk)``; ``kind="variance"``: ``1 - Var(eta) / omega_kk``.
    The SD is over subjects with n - 1 in the denominator, as NONMEM computes it.
    """
    eta = np.asarray(eta, dtype=float)
    om = np.asarray(omega, dtype=float)
    var = np.diag(om) if om.ndim == 2 else om
    v = eta.var(axis=0, ddof=1)
    if kind == "sd":
        return 1.0 - np.sqrt(v / var)
    if kind == "variance":
        return 1.0 - v / var
    raise ValueError(f"kind must be 'sd' or 'variance', got {kind!r}")


def epsilon_shrinkage(iwres, kind: str = "sd") -> float:
    """Epsilon shrinkage from individual weighted residuals (IWRES at the EBEs).

    NONMEM takes their spread about zero, not about their mean.
    """
    ms = float(np.mean(np.square(np.asarray(iwres, dtype=float))))
    if kind == "sd":
        return 1.0 - np.sqrt(ms)
    if kind == "variance":
        return 1.0 - ms
    raise ValueError(f"kind must be 'sd' or 'variance', got {kind!r}")


def _stacked(da: xr.DataArray) -> xr.DataArray:
    return da.stack(sample=("chain", "draw"))


def pooling_factor(posterior: xr.Dataset) -> xr.DataArray:
    """Gelman & Pardoe's pooling factor per random effect, ``1 - Var_i(E[eta_i|y]) / E[Var_i(eta_i)]``.

    Unlike the variance-based shrinkage of posterior means it compares with the realised spread
    of the etas in each draw rather than with omega^2.
    """
    eta = posterior["eta"]
    between = eta.mean(("chain", "draw")).var("subject", ddof=1)
    within = eta.var("subject", ddof=1).mean(("chain", "draw"))
    return (1.0 - between / within).rename("pooling_factor")


def subject_shrinkage(posterior: xr.Dataset) -> xr.DataArray:
    """Per-subject shrinkage ``Var(eta_i | y) / E[omega^2]`` (subject x iiv).

    Near 1: the subject's data carry no information on that parameter and its estimate is the
    population's; near 0: its own data determine it. Sparse subjects sit near 1.
    """
    cond_var = _stacked(posterior["eta"]).var("sample", ddof=1)
    omega2 = (posterior["omega_sd"] ** 2).mean(("chain", "draw"))
    return (cond_var / omega2).rename("subject_shrinkage")


def shrinkage_table(result) -> pd.DataFrame:
    """Shrinkage per random effect (percent).

    From EBEs (NONMEM), from posterior means, the pooling factor, the mean per-subject shrinkage; and epsilon
    shrinkage from IWRES at the EBEs.

    Parameters
    ----------
    result : FitResult
        A fit with IIV. The EBE columns need its ``marginal`` group (computed by :func:`fit`).
    """
    post = result.posterior
    if "eta" not in post:
        raise ValueError("the model has no IIV: there is no eta shrinkage")
    omega2 = (post["omega_sd"] ** 2).mean(("chain", "draw")).values
    eta_mean = post["eta"].mean(("chain", "draw")).transpose("subject", "iiv").values
    rows = pd.DataFrame(index=pd.Index(post["iiv"].values, name="eta"))
    if "marginal" in result.idata.children:
        mg = result.idata["marginal"].to_dataset()
        om_at = np.diag(mg["omega"].values)
        rows["EBE SD %"] = 100 * eta_shrinkage(mg["eta_ebe"].values, om_at, "sd")
        rows["EBE var %"] = 100 * eta_shrinkage(mg["eta_ebe"].values, om_at, "variance")
    rows["post. mean SD %"] = 100 * eta_shrinkage(eta_mean, omega2, "sd")
    rows["post. mean var %"] = 100 * eta_shrinkage(eta_mean, omega2, "variance")
    rows["pooling factor %"] = 100 * pooling_factor(post).values
    rows["mean subject %"] = 100 * subject_shrinkage(post).mean("subject").values
    if "marginal" in result.idata.children:
        iwres = result.idata["marginal"]["iwres"].values
        rows.loc["epsilon", "EBE SD %"] = 100 * epsilon_shrinkage(iwres, "sd")
        rows.loc["epsilon", "EBE var %"] = 100 * epsilon_shrinkage(iwres, "variance")
    return rows
