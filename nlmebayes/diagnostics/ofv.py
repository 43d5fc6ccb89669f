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
(``P(y < LLOQ)`` for BLQ), as in NONMEM's ``LAPLACIAN`` with the censored likelihood. FOCE-I's
Hessian is the expectation of Gaussian terms and has no counterpart for a probability, so with
censored data ``method="focei"`` computes Laplace (``Marginal.method`` says so); the EBE search
uses the outer product of the censored terms' score as its metric.

NONMEM reports ``OFV = -2LL - N log(2 pi)`` (N observations); we report both. AIC and BIC count
parameters as NONMEM does: estimated thetas, omega elements and sigmas.

The EBEs are found by Fisher scoring (the FOCE-I Hessian as metric, exact gradients) with a
per-subject line search, all subjects at once. Gradients w.r.t. eta come from forward-mode
derivatives of the model's own PyTensor graph, so every structural and error model of the
builder works here unchanged.
"""

from __future__ import annotations

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
    if method == "focei" and cm.censored.size:
        method = "laplace"  # FOCE-I's expected Hessian is not defined for M3's probabilities
    pop = population.rv_values(spec)
    omega = population.covariance(spec, cm.n_slots)  # Omega, then the kappas' occasion slots
    obj = JointObjective(cm, pop, omega)
    eta, iters = conditional_modes(obj)
    val, _, H, (f, R, G) = obj.derivatives(eta)
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
                stacklevel=2,
            )
    m2ll = float(np.sum(subject))
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
