"""Residual diagnostics per observation: PRED, IPRED, RES, IWRES, CWRES and NPDE.

All are computed at one population parameter vector (the one a :class:`~nlmebayes.diagnostics.ofv.Marginal`
was evaluated at) and on the modelling scale (log DV for exponential error):

=======  ======================================================================================
PRED     population prediction, etas = 0
IPRED    individual prediction at the EBEs
IWRES    ``(DV - IPRED) / sqrt(R(EBE))``
CWRES    conditional weighted residuals (Hooker et al. 2007): the FOCE linearisation about the
         EBE, ``E_i = f(EBE) - G EBE``, ``C_i = G Omega G' + diag(R)``, ``CWRES_i = L_i^-1 (y_i - E_i)``
         with ``C_i = L_i L_i'``
NPDE     normalised prediction distribution errors (Brendel et al. 2006; Comets et al. 2008):
         ``n_sim`` data sets simulated from the population model; each subject's observations and
         simulations are decorrelated with the Cholesky factor of the simulated covariance; the
         fraction of simulations below the observation (the pde) goes through the normal quantile
=======  ======================================================================================

Under the model, CWRES and NPDE are approximately and exactly N(0, 1) respectively.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.special import ndtri

from nlmebayes.diagnostics.conditional import ConditionalModel
from nlmebayes.diagnostics.ofv import Marginal

__all__ = ["residuals"]


def _decorrelate(cov, x):
    """``L^-1 x`` for ``cov = L L'``, with a small ridge if ``cov`` is numerically singular."""
    n = cov.shape[0]
    ridge = 0.0
    for _ in range(8):
        try:
            L = np.linalg.cholesky(cov + ridge * np.eye(n))
            return np.linalg.solve(L, x)
        except np.linalg.LinAlgError:
            ridge = max(ridge * 100, 1e-12 * max(np.trace(cov) / n, 1e-300))
    raise np.linalg.LinAlgError("covariance of the simulated observations is singular")


def residuals(
    marginal: Marginal, conditional: ConditionalModel, *, n_sim: int = 1000, seed: int | None = 0
) -> xr.Dataset:
    """PRED, IPRED, RES, IWRES, CWRES, PDE and NPDE per observation (dimension ``obs``).

    A censored observation (M3) has no residual: IWRES, CWRES, PDE and NPDE are NaN there, and it
    is left out of its subject's decorrelation. Under M4 the measured samples' residuals are those
    of the normal model, not truncated at 0 (the truncation matters only where the prediction is
    within a few residual SDs of 0, which is where samples turn BLQ).

    Parameters
    ----------
    marginal : Marginal
        From :func:`nlmebayes.diagnostics.ofv.marginal_likelihood` (EBEs, ``G``, ``R`` at the EBEs).
    conditional : ConditionalModel
        The compiled model it was computed with (simulates the NPDE replicates).
    n_sim : int
        Simulated data sets for NPDE (its resolution is ``1 / n_sim``).
    seed : int
        Seeds the NPDE simulations.
    """
    cm, m = conditional, marginal
    data = cm.data
    pop = m.population.rv_values(cm.spec)
    omega = m.population.covariance(cm.spec, cm.n_slots)
    y, f, R, G = m.y, m.f, m.R, m.G
    iwres = (y - f) / np.sqrt(R)
    iwres[cm.censored] = np.nan

    rng = np.random.default_rng(seed)
    q = cm.q
    eta_sim = (
        rng.multivariate_normal(np.zeros(q), omega, size=(n_sim, data.n_subjects))
        if q
        else np.zeros((n_sim, data.n_subjects, 0))
    )
    batch = {k: np.full((n_sim,) + np.shape(v), v) for k, v in pop.items()}
    f_sim, R_sim = cm.predict_batch(batch, eta_sim)
    nu = cm.nu(pop)
    noise = rng.standard_normal(f_sim.shape) if nu is None else rng.standard_t(float(nu), f_sim.shape)
    y_sim = f_sim + np.sqrt(R_sim) * noise

    uncensored = np.ones(data.n_obs, dtype=bool)
    uncensored[cm.censored] = False
    cwres = np.full(data.n_obs, np.nan)
    pde = np.full(data.n_obs, np.nan)
    for i in range(data.n_subjects):
        # censored observations (M3) have no residual: left out, and out of the decorrelation
        j = np.flatnonzero((data.obs_subject == i) & uncensored)
        if not len(j):
            continue
        Gi = G[j]
        C = Gi @ omega @ Gi.T + np.diag(R[j])
        cwres[j] = _decorrelate(C, y[j] - (f[j] - Gi @ m.eta[i]))
        sims = y_sim[:, j]
        E = sims.mean(axis=0)
        V = np.atleast_2d(np.cov(sims, rowvar=False))
        dec_obs = _decorrelate(V, y[j] - E)
        dec_sim = _decorrelate(V, (sims - E).T).T
        pde[j] = np.mean(dec_sim < dec_obs, axis=0)
    pde = np.clip(pde, 0.5 / n_sim, 1 - 0.5 / n_sim)
    ds = xr.Dataset(
        {
            "dv": ("obs", y),
            "pred": ("obs", m.pred),
            "ipred": ("obs", f),
            "res": ("obs", y - f),
            "iwres": ("obs", iwres),
            "cwres": ("obs", cwres),
            "pde": ("obs", pde),
            "npde": ("obs", ndtri(pde)),
        },
        coords={"obs": np.arange(data.n_obs)},
    )
    ds.attrs.update(
        n_sim=n_sim, seed=-1 if seed is None else int(seed), scale="log" if cm.spec.log_scale_error else "DV"
    )
    return ds
