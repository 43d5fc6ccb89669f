"""Objective function value (OFV).

The marginal likelihood with the etas integrated out, as NONMEM computes it, at any population parameter
vector (posterior median, posterior mean or given values).

For subject i with random effects eta (q of them), each observation is Gaussian given eta,
``y_ij ~ N(f_ij(eta), R_ij(eta))`` (on the log scale for exponential error). The joint objective

    obj_i(eta) = sum_j [log(2 pi R_ij) + (y_ij - f_ij)^2 / R_ij] + eta' Omega^-1 eta + log|2 pi Omega|

is minimised by the empirical Bayes estimate (EBE, NONMEM's conditional mode). The Laplace
approximation of ``-2 log integral exp(-obj_i / 2) d eta`` is

    -2LL_i = obj_i(EBE_i) - q log(2 pi) + log|H_i|

with ``H_i`` the Hessian of ``obj_i / 2`` at the EBE. FOCE-I (``method="focei"``, NONMEM's
``METHOD=1 INTER``) replaces it by its expectation given eta, which needs first derivatives only:
``H_i = Omega^-1 + sum_j [g g' / R + dR dR' / (2 R^2)]`` with ``g = df/deta``, ``dR = dR/deta``.
``method="laplace"`` uses the exact Hessian (central differences of the exact gradient).

Inter-occasion variability. A subject with occasions 1..K has, besides its etas, one kappa
vector per occasion, ``kappa_ik ~ N(0, Pi)`` independent of each other and of the etas; occasion
k's observations depend on ``(eta_i, kappa_ik)``. All of them are random effects of the subject,
as in NONMEM (where the kappas are extra ETAs with ``$OMEGA BLOCK SAME``): the subject's
random-effect vector is ``b_i = (eta_i, kappa_i1, ..., kappa_iK)`` with covariance
``blockdiag(Omega, Pi, ..., Pi)``, and every formula above holds with ``b_i`` for eta. So the
FOCE-I OFV of an IOV model is NONMEM's formula with the kappas as etas. Subjects with fewer
occasions than the most any subject has carry the missing slots too: such a kappa ``b`` enters
no prediction, so it sits at 0, its gradient row is 0, ``H_i`` is block diagonal in it with
block ``Pi^-1``, and its terms cancel: ``log|2 pi Pi| - r log(2 pi) + log|Pi^-1| = 0``; under
importance sampling its prior/proposal ratio integrates to 1. As Pi -> 0 the kappas' block of
``H_i`` is ``Pi^-1 + O(1)``, and the OFV tends to that of the model without IOV.

Censored observations (M3): the term of a censored observation is ``-2 log P(lo < y < hi | eta)``
(``P(y < LLOQ)`` for BLQ), as in NONMEM's ``LAPLACIAN`` with the censored likelihood. Under M4
(``observations.blq = "M4"``) a BLQ interval starts at 0 and every row's term adds
``2 log P(y > 0 | eta)``. FOCE-I's Hessian is the expectation of Gaussian terms and has no
counterpart for a probability, so with censored (or M4) data ``method="focei"`` computes
Laplace (``Marginal.method`` says so); the EBE search uses the outer product of the censored
terms' score as its metric.

NONMEM reports ``OFV = -2LL - N log(2 pi)`` (N observations); we report both. AIC and BIC count
parameters as NONMEM does: estimated thetas, omega elements and sigmas.

The EBEs are found by Fisher scoring (the FOCE-I Hessian as metric, exact gradients) with a
per-subject line search, all subjects at once. Gradients w.r.t. eta come from forward-mode
derivatives of the model's own PyTensor graph, so every structural and error model of the
builder works here unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

from nlmebayes.data import EventData
from nlmebayes.diagnostics.conditional import ConditionalModel
from nlmebayes.diagnostics.ebe import JointObjective, conditional_modes
from nlmebayes.diagnostics.importance import importance_loglik, t_proposals
from nlmebayes.diagnostics.population import LOG_2PI, PopulationValues, n_parameters
from nlmebayes.model.spec import ModelSpec

__all__ = ["Marginal", "marginal_likelihood", "OFVMethod"]

#: Approximations of the marginal likelihood (see the module docstring).
OFVMethod = Literal["focei", "laplace", "importance"]


@dataclass
class Marginal:
    """The marginal likelihood at one population parameter vector, with the EBEs.

    Attributes
    ----------
    ofv : float
        NONMEM's objective function value, -2LL without ``N log(2 pi)``.
    m2ll, loglik, aic, bic : float
        -2 log-likelihood with the constant, log-likelihood, AIC = -2LL + 2k, BIC = -2LL + k ln N.
    n_obs : int
    k : dict
        Counted parameters (theta, omega, sigma, total).
    method : str
    eta : array (n_subjects, q)
        EBEs (conditional modes).
    eta_cov : array (n_subjects, q, q)
        Inverse of ``H_i``: the approximate conditional covariance of each subject's etas
        (NONMEM's ETC).
    subject_m2ll : array (n_subjects,)
        Per-subject contributions to -2LL (with the constant).
    y : array
        The observations on the modelling scale (log DV for exponential error).
    f, R, G : arrays
        Mean, residual variance and ``df/deta`` per observation at the EBEs.
    pred : array
        Population prediction (etas = 0).
    population : PopulationValues
    """

    ofv: float
    m2ll: float
    n_obs: int
    k: dict
    method: str
    eta: np.ndarray
    eta_cov: np.ndarray
    subject_m2ll: np.ndarray
    y: np.ndarray
    f: np.ndarray
    R: np.ndarray
    G: np.ndarray
    pred: np.ndarray
    population: PopulationValues
    iterations: int = 0
    slot_used: np.ndarray | None = None

    @property
    def loglik(self) -> float:
        """Marginal log-likelihood (with the constant)."""
        return -0.5 * self.m2ll

    def to_dataset(self, spec: ModelSpec, subjects=None) -> xr.Dataset:
        """Return the EBEs, per-subject -2LL, Omega and the OFV summary as a labelled Dataset.

        :func:`~nlmebayes.inference.fit` stores it as the ``marginal`` group.
        """
        n_sub = self.eta.shape[0]
        subjects = np.arange(n_sub) if subjects is None else np.asarray(subjects)
        iiv = spec.iiv_parameters
        q = len(iiv)
        ds = xr.Dataset(
            {
                "eta_ebe": (("subject", "iiv"), self.eta[:, :q]),
                "eta_cov": (("subject", "iiv", "iiv_col"), self.eta_cov[:, :q, :q]),
                "subject_m2ll": ("subject", self.subject_m2ll),
                "omega": (("iiv", "iiv_col"), self.population.omega_matrix(spec)),
            },
            coords={"subject": subjects, "iiv": iiv, "iiv_col": iiv},
        )
        if spec.iov and self.slot_used is not None:
            r = len(spec.iov_parameters)
            kappa = self.eta[:, q:].reshape(n_sub, -1, r).copy()
            kappa[~self.slot_used] = np.nan  # the subject has no such occasion
            ds["kappa_ebe"] = (("subject", "occasion_slot", "iov"), kappa)
            ds["pi_sd"] = ("iov", [self.population.pi_sd[p] for p in spec.iov_parameters])
            ds = ds.assign_coords(occasion_slot=np.arange(1, kappa.shape[1] + 1), iov=spec.iov_parameters)
        for lvl in spec.levels:
            if lvl.column in self.population.level_effects:
                effects = np.asarray(self.population.level_effects[lvl.column])
                ds[f"gamma_ebe_{lvl.column}"] = ((f"{lvl.column}_group", f"{lvl.column}_parameter"), effects)
                ds = ds.assign_coords({f"{lvl.column}_parameter": lvl.parameters})
        pv = self.population
        ds.attrs.update(
            ofv=self.ofv,
            m2ll=self.m2ll,
            aic=self.aic,
            bic=self.bic,
            n_obs=self.n_obs,
            k_theta=self.k["theta"],
            k_omega=self.k["omega"],
            k_sigma=self.k["sigma"],
            k=self.k["total"],
            method=self.method,
            population=json.dumps(
                {
                    "typical": pv.typical,
                    "sigma": pv.sigma,
                    "thetas": {k: np.asarray(v).tolist() for k, v in pv.thetas.items()},
                }
            ),
        )
        return ds

    @property
    def aic(self) -> float:
        """AIC = -2LL + 2k."""
        return self.m2ll + 2 * self.k["total"]

    @property
    def bic(self) -> float:
        """BIC = -2LL + k ln N."""
        return self.m2ll + self.k["total"] * np.log(self.n_obs)


def marginal_likelihood(
    spec: ModelSpec,
    data: EventData,
    population: PopulationValues,
    *,
    method: OFVMethod = "focei",
    conditional: ConditionalModel | None = None,
    n_is: int = 2000,
    seed: int | None = 0,
) -> Marginal:
    """-2 log marginal likelihood (OFV) at ``population``, with the EBEs.

    Parameters
    ----------
    spec, data : the model and the data (before observation selection, as for :func:`fit`)
    population : PopulationValues
        e.g. NONMEM's final estimates, or ``PopulationValues.from_posterior(...)``.
    method : {"focei", "laplace", "importance"}
        FOCE with interaction (NONMEM-comparable; Laplace with censored data, see above), Laplace
        with the exact Hessian, or importance
        sampling (NONMEM's IMP idea): ``n_is`` Student-t (5 df) points per subject around the
        EBE with 1.2 times its FOCE-I conditional SD; unbiased for the likelihood, so it also
        measures the error of the two approximations.
    conditional : ConditionalModel, optional
        A compiled model to reuse across calls.

    Returns
    -------
    Marginal
    """
    if method not in ("focei", "laplace", "importance"):
        raise ValueError(f"method must be 'focei', 'laplace' or 'importance', got {method!r}")
    cm = conditional or ConditionalModel(spec, data)
    if method == "focei" and (cm.censored.size or cm.m4.size):
        method = "laplace"  # FOCE-I's expected Hessian is not defined for M3's probabilities (or M4's)
    omega = population.covariance(spec, cm.n_slots)  # Omega, then the kappas' occasion slots
    group_m2ll = None
    if spec.levels:
        population, group_m2ll = _integrate_level(cm, spec, population, omega, method, n_is, seed)
    pop = population.rv_values(spec)
    subject, eta, H, (f, R, G), iters = _subject_terms(cm, pop, omega, method, n_is, seed)
    # with a level, subjects are independent given their group's effects: the total integrates
    # those out per group, the per-subject terms are conditional on the groups' modes
    m2ll = float(np.sum(subject) if group_m2ll is None else np.sum(group_m2ll))
    n_obs = cm.data.n_obs
    pred = cm.predict(pop, np.zeros_like(eta))[0]
    return Marginal(
        ofv=m2ll - n_obs * LOG_2PI,
        m2ll=m2ll,
        n_obs=n_obs,
        k=n_parameters(spec, cm.data),
        method=method,
        eta=eta,
        eta_cov=np.linalg.inv(H) if cm.q else H,
        subject_m2ll=subject,
        y=cm.y,
        f=f,
        R=R,
        G=G,
        pred=pred,
        population=population,
        iterations=iters,
        slot_used=cm.slot_used() if spec.iov else None,
    )


def _subject_terms(cm: ConditionalModel, pop: dict, omega, method: str, n_is: int, seed):
    """Each subject's -2 log marginal likelihood at ``pop``, with the EBEs, the Hessians and f, R, G."""
    obj = JointObjective(cm, pop, omega)
    eta, iters = conditional_modes(obj)
    val, _, H, fRG = obj.derivatives(eta)
    if method == "laplace":
        H = obj.exact_hessian(eta)
    sign, logdetH = np.linalg.slogdet(H) if cm.q else (np.ones(obj.n), np.zeros(obj.n))
    if np.any(sign <= 0):
        raise FloatingPointError("the Hessian at an EBE is not positive definite")
    subject = val - cm.q * LOG_2PI + logdetH
    if method == "importance" and cm.q:
        covs = np.linalg.inv(H) * 1.2**2
        props, log_q = t_proposals(eta, covs, n_is, np.random.default_rng(seed))
        ll, ess = importance_loglik(cm, pop, omega, props, log_q)
        subject = -2.0 * ll
        if np.min(ess) < 50:
            warnings.warn(
                f"importance sampling: weights' ESS as low as {np.min(ess):.0f} of {n_is}",
                RuntimeWarning,
                stacklevel=3,
            )
    return subject, eta, H, fRG, iters


def _integrate_level(cm, spec: ModelSpec, population: PopulationValues, omega, method, n_is, seed):
    """Integrate a level's group effects out: per group, adaptive Gauss-Hermite quadrature.

    Given its effects gamma_g, a group's subjects are independent, so
    ``-2 log p(y_g) = -2 log int prod_i p(y_i | gamma_g) N(gamma_g; 0, diag(sd^2)) dgamma_g``, each
    ``p(y_i | gamma_g)`` integrating the subject's etas by ``method``. The quadrature is centred at
    the mode of the integrand and scaled by its curvature (both from FOCE-I subject terms, by
    Newton steps with central differences), with 7, 5 or 3 nodes per dimension for 1, 2 or 3
    effects. Returns the population values with the groups' modes as ``level_effects`` and each
    group's -2 log marginal likelihood.
    """
    lvl = spec.levels[0]
    sd = np.array([population.level_sd[lvl.column][p] for p in lvl.parameters], dtype=float)
    d, group = len(sd), cm.subject_group
    n_groups = int(group.max()) + 1
    name = f"gamma_{lvl.column}"

    def joint(gamma, how="focei"):  # -2 log [p(y_g | gamma_g) N(gamma_g)] per group
        pop = population.rv_values(spec) | {name: gamma}
        subject = _subject_terms(cm, pop, omega, how, n_is, seed)[0]
        prior = np.sum((gamma / sd) ** 2 + np.log(2 * np.pi * sd**2), axis=1)
        return np.bincount(group, weights=subject, minlength=n_groups) + prior

    gamma = np.zeros((n_groups, d))
    for _ in range(50):
        grad, hess = _central_differences(joint, gamma)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        gamma = gamma - step
        if np.max(np.abs(step)) < 1e-7:
            break
    _, hess = _central_differences(joint, gamma)
    L = np.linalg.cholesky(np.linalg.inv(hess / 2.0))  # covariance of gamma_g given the data
    z1, w1 = np.polynomial.hermite_e.hermegauss({1: 7, 2: 5, 3: 3}[d])
    Z = np.array(np.meshgrid(*[z1] * d, indexing="ij")).reshape(d, -1).T
    logw = np.sum(np.log(np.array(np.meshgrid(*[w1] * d, indexing="ij")).reshape(d, -1).T), axis=1)
    terms = np.array(
        [
            logw[k] + 0.5 * Z[k] @ Z[k] - 0.5 * joint(gamma + Z[k] @ np.swapaxes(L, 1, 2), method)
            for k in range(len(Z))
        ]
    )
    log_int = np.logaddexp.reduce(terms, axis=0) + np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)
    effects = {**population.level_effects, lvl.column: gamma}
    return dataclasses.replace(population, level_effects=effects), -2.0 * log_int


def _central_differences(fn, x, h: float = 1e-4):
    """Gradient and Hessian of ``fn`` (rows of ``x`` independent problems) by central differences."""
    n, d = x.shape
    f0 = fn(x)
    grad, hess = np.zeros((n, d)), np.zeros((n, d, d))
    e = np.eye(d) * h
    fp = [fn(x + e[i]) for i in range(d)]
    fm = [fn(x - e[i]) for i in range(d)]
    for i in range(d):
        grad[:, i] = (fp[i] - fm[i]) / (2 * h)
        hess[:, i, i] = (fp[i] - 2 * f0 + fm[i]) / h**2
        for j in range(i):
            fpp, fmm = fn(x + e[i] + e[j]), fn(x - e[i] - e[j])
            # f(x+ei+ej) + f(x-ei-ej) = 2 f0 + h^2 (Hii + Hjj + 2 Hij) + O(h^4)
            hess[:, i, j] = hess[:, j, i] = (fpp + fmm - 2 * f0 - h**2 * (hess[:, i, i] + hess[:, j, j])) / (
                2 * h**2
            )
    return grad, hess
