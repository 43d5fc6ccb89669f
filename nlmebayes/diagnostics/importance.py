"""Importance sampling over the etas.

Each subject's marginal likelihood ``p(y_i | theta)`` from multivariate Student-t proposals, at one population
vector (the OFV's ``method="importance"``) or for every posterior draw (the input of the marginal, leave-one-
subject-out LOO).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from nlmebayes.diagnostics.conditional import ConditionalModel
from nlmebayes.diagnostics.population import LOG_2PI, covariance_draws
from nlmebayes.model.spec import ModelSpec

__all__ = ["importance_loglik", "t_proposals", "marginal_loglik_draws"]


def importance_loglik(cm: ConditionalModel, pop: dict, omega, props, log_q):
    """Compute ``log p(y_i | pop)`` per subject by importance sampling over the etas.

    Also returns the weights' effective sample size per subject. ``props`` (K, n_subjects, q)
    are proposal points with log densities ``log_q`` (K, n_subjects); one batched model call
    evaluates them all.
    """
    from scipy.special import logsumexp

    K, n_sub, q = props.shape
    batch = {n: np.repeat(np.asarray(pop[n], dtype=float)[None], K, axis=0) for n in cm.pop_names}
    f, R = cm.predict_batch(batch, props)
    ll = cm.data.sum_by_subject(cm.loglik(f, R, cm.nu(batch)))
    if not q:
        return ll[0], np.ones(n_sub)
    L = np.linalg.cholesky(omega)
    z = np.linalg.solve(L, props.reshape(-1, q).T).T.reshape(K, n_sub, q)
    log_prior = -0.5 * np.sum(z**2, axis=-1) - np.sum(np.log(np.diag(L))) - 0.5 * q * LOG_2PI
    lw = ll + log_prior - log_q
    w = np.exp(lw - lw.max(axis=0))
    return logsumexp(lw, axis=0) - np.log(K), w.sum(0) ** 2 / (w**2).sum(0)


def thinning_step(posterior, max_draws: int) -> int:
    """Every how many draws to keep (chains kept whole) so that at most ``max_draws`` remain."""
    return max(1, int(np.ceil(posterior.sizes["chain"] * posterior.sizes["draw"] / max_draws)))


def t_proposals(means, covs, n, rng):
    """Multivariate Student-t (5 df) points and log densities per subject: (n, n_sub, q), (n, n_sub)."""
    from scipy.stats import multivariate_t

    n_sub, q = means.shape
    props, log_q = np.empty((n, n_sub, q)), np.empty((n, n_sub))
    for i in range(n_sub):
        dist = multivariate_t(loc=means[i], shape=covs[i] * 3.0 / 5.0, df=5, seed=rng)
        props[:, i, :] = dist.rvs(size=n).reshape(n, q)
        log_q[:, i] = dist.logpdf(props[:, i, :]).reshape(n)
    return props, log_q


def marginal_loglik_draws(
    posterior,
    spec: ModelSpec,
    conditional: ConditionalModel,
    *,
    n_eta: int = 200,
    max_draws: int = 500,
    seed: int | None = 0,
):
    """Per-draw, per-subject marginal log-likelihood ``log p(y_i | theta_s)``.

    The etas are integrated out by importance sampling; this is the input to the marginal
    (leave-one-subject-out) LOO.

    For each subject the proposal is a multivariate Student-t (5 degrees of freedom) centred on
    the posterior mean of its etas, with 1.2 times their posterior SD; the same ``n_eta`` proposal
    points serve every posterior draw ``s``, weighted by
    ``p(y_i | eta, theta_s) N(eta; 0, Omega_s) / q_i(eta)``. Draws are thinned to at most
    ``max_draws`` (keeping chains). Returns a DataArray (chain, draw, subject) whose attribute
    ``min_is_ess`` is the smallest importance-sampling effective sample size over draws and subjects.
    """
    cm = conditional
    data = cm.data
    n_sub, q = data.n_subjects, cm.q
    step = thinning_step(posterior, max_draws)
    post = posterior.isel(draw=slice(None, None, step))
    S = post.sizes["chain"] * post.sizes["draw"]

    def stacked(name):
        return post[name].stack(sample=("chain", "draw")).transpose("sample", ...).values

    pop_names = cm.pop_names
    pop = {n: stacked(n) for n in pop_names}
    rng = np.random.default_rng(seed)
    if q:
        omegas = covariance_draws(post, spec, cm.n_slots)
        eta_post = cm.random_effect_draws(posterior)
        covs = np.stack(
            [
                np.cov(eta_post[:, i, :], rowvar=False).reshape(q, q) * 1.2**2 + 1e-12 * np.eye(q)
                for i in range(n_sub)
            ]
        )
        if cm.n_slots:
            # an occasion slot the subject lacks has no draws: propose from its prior, so the
            # prior/proposal ratio stays near 1 (it integrates to 1 whatever the proposal)
            prior = np.median(omegas, axis=0).diagonal()[cm.q_iiv :] * 1.2**2
            lacking = ~np.repeat(cm.slot_used(), len(spec.iov_parameters), axis=1)
            i, j = np.nonzero(lacking)
            covs[i, cm.q_iiv + j, cm.q_iiv + j] = prior[j]
        props, log_q = t_proposals(eta_post.mean(axis=0), covs, n_eta, rng)
    else:
        n_eta = 1
        props, log_q = np.zeros((1, n_sub, 0)), np.zeros((1, n_sub))
    out = np.empty((S, n_sub))
    min_ess = float(n_eta)
    for s in range(S):
        pop_s = {n: pop[n][s] for n in pop_names}
        out[s], ess = importance_loglik(cm, pop_s, omegas[s] if q else None, props, log_q)
        min_ess = min(min_ess, float(np.min(ess)))
    da = xr.DataArray(
        out.reshape(post.sizes["chain"], post.sizes["draw"], n_sub),
        dims=("chain", "draw", "subject"),
        coords={
            "chain": post["chain"].values,
            "draw": post["draw"].values,
            "subject": posterior["subject"].values if "subject" in posterior.coords else np.arange(n_sub),
        },
    )
    da.attrs.update(n_eta=n_eta, thinning=step, min_is_ess=min_ess)
    return da
