"""Objective function value (OFV): the marginal likelihood with the etas integrated out, as NONMEM
computes it, at any population parameter vector (posterior median, posterior mean or given values).

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
from dataclasses import dataclass, field

import numpy as np
import pytensor
import pytensor.tensor as pt
import xarray as xr
from pytensor.gradient import pushforward
from pytensor.graph.replace import graph_replace, vectorize_graph

from nlmebayes.builder import build_model, compile_settings
from nlmebayes.data import EventData
from nlmebayes.spec import ModelSpec

__all__ = ["PopulationValues", "ConditionalModel", "Marginal", "marginal_likelihood", "marginal_loglik_draws",
           "n_parameters", "omega_draws"]

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass
class PopulationValues:
    """Population parameters on the natural scale, as NONMEM tables give them.

    Attributes
    ----------
    typical : dict
        Typical values, e.g. ``{"CL": 0.0047, "V": 0.98}``.
    omega : array (q, q)
        Covariance of the etas (variances on the diagonal), ordered as ``spec.iiv_parameters``.
    thetas : dict
        Covariate effects by name, e.g. ``{"theta_V_APGR": 0.159}``.
    sigma : dict
        Residual SDs by kind, e.g. ``{"prop": 0.115}`` (NONMEM's SIGMA is a variance: take its root).
    """

    typical: dict
    omega: np.ndarray | None = None
    thetas: dict = field(default_factory=dict)
    sigma: dict = field(default_factory=dict)

    def rv_values(self, spec: ModelSpec) -> dict[str, float]:
        """Values of the builder's population variables (``log_CL_pop``, ``theta_..``, ``sigma_..``)."""
        out = {}
        for p in spec.parameters:
            if p.fixed:
                continue
            if p.name not in self.typical:
                raise ValueError(f"give a typical value for {p.name}")
            out[f"log_{p.name}_pop"] = float(np.log(self.typical[p.name]))
        for c in spec.covariates:
            if c.fixed:
                continue
            if c.name not in self.thetas:
                raise ValueError(f"give a value for covariate effect {c.name}")
            out[c.name] = np.asarray(self.thetas[c.name], dtype=float)
        for k in spec.sigma_names:
            if k not in self.sigma:
                raise ValueError(f"give the residual SD sigma[{k!r}]")
            out[f"sigma_{k}"] = float(self.sigma[k])
        return out

    def omega_matrix(self, spec: ModelSpec) -> np.ndarray:
        q = len(spec.iiv_parameters)
        if q == 0:
            return np.zeros((0, 0))
        if self.omega is None:
            raise ValueError("the model has IIV: give omega (covariance of the etas)")
        om = np.atleast_2d(np.asarray(self.omega, dtype=float))
        if om.shape != (q, q):
            raise ValueError(f"omega must be {q}x{q} (order {spec.iiv_parameters}), got {om.shape}")
        return om

    @classmethod
    def from_posterior(cls, posterior, spec: ModelSpec, stat: str = "median") -> PopulationValues:
        """Posterior median (or mean) of every population parameter; Omega is the elementwise
        summary of the per-draw covariance matrices."""
        summ = {"median": lambda a: np.median(a, axis=0), "mean": lambda a: np.mean(a, axis=0)}[stat]

        def draws(name):
            da = posterior[name]
            return da.stack(sample=("chain", "draw")).transpose("sample", ...).values

        typical = {p.name: float(summ(draws(f"{p.name}_pop"))) for p in spec.parameters if not p.fixed}
        typical.update({p.name: p.initial for p in spec.parameters if p.fixed})
        thetas = {c.name: summ(draws(c.name)) for c in spec.covariates if not c.fixed}
        sigma = {k: float(summ(draws(f"sigma_{k}"))) for k in spec.sigma_names}
        omega = None
        if spec.iiv:
            omega = summ(omega_draws(posterior, spec))
        return cls(typical=typical, omega=omega, thetas=thetas, sigma=sigma)


def omega_draws(posterior, spec: ModelSpec) -> np.ndarray:
    """Per-draw Omega (covariance of the etas), shape ``(n_draws, q, q)``, chains stacked."""
    sd = posterior["omega_sd"].stack(sample=("chain", "draw")).transpose("sample", "iiv").values
    corr = np.broadcast_to(np.eye(sd.shape[1]), (sd.shape[0],) + (sd.shape[1],) * 2).copy()
    j = 0
    for k, block in enumerate(spec.iiv):
        n = len(block.parameters)
        if block.block:
            c = posterior[f"omega_corr_{k}"].stack(sample=("chain", "draw"))
            corr[:, j:j + n, j:j + n] = c.transpose("sample", ...).values
        j += n
    return sd[:, :, None] * corr * sd[:, None, :]


def unsupported(spec: ModelSpec, data: EventData | None = None) -> str | None:
    """What in ``spec``/``data`` the FOCE-I/Laplace code cannot integrate, or None."""
    if spec.iov:
        return "inter-occasion variability (kappas would be integrated per occasion)"
    if spec.levels:
        return "random effects above the subject"
    if spec.residual_distribution != "normal":
        return "Student-t residuals"
    if data is not None and data.obs_cens is not None and spec.observations.get("blq", "M3") == "M3" \
            and np.any(data.obs_cens != 0):
        return "censored observations (M3)"
    return None


def n_parameters(spec: ModelSpec, data: EventData | None = None) -> dict[str, int]:
    """Estimated parameters counted as NONMEM does: thetas, omega elements, sigmas."""
    n_theta = sum(not p.fixed for p in spec.parameters)
    for c in spec.covariates:
        if c.fixed:
            continue
        if c.kind == "categorical":
            if data is None:
                raise ValueError("counting a categorical covariate's levels needs the data")
            n_theta += data.subject_covariates([c.covariate])[c.covariate].nunique() - 1
        else:
            n_theta += 1
    n_omega = sum(len(b.parameters) * (len(b.parameters) + 1) // 2 if b.block else len(b.parameters)
                  for b in spec.iiv)
    n_sigma = len(spec.sigma_names)
    return {"theta": n_theta, "omega": n_omega, "sigma": n_sigma, "total": n_theta + n_omega + n_sigma}


class ConditionalModel:
    """The model given the population parameters: per-observation mean ``f``, residual variance
    ``R`` and their derivatives w.r.t. each subject's etas, compiled once from the builder's graph.

    Parameters
    ----------
    spec : ModelSpec
    data : EventData
    mode : str
        PyTensor compilation mode; "FAST_COMPILE" (default) compiles in about a second, "NUMBA"
        pays seconds of compilation for faster calls (worth it for many evaluations).
    """

    def __init__(self, spec: ModelSpec, data: EventData, mode: str = "FAST_COMPILE"):
        why = unsupported(spec, data)
        if why:
            raise NotImplementedError(f"the marginal likelihood does not handle {why} yet")
        model = build_model(spec, data)
        self.spec = spec
        self.data = model.nlme_data
        dv = model["DV"]
        node = dv.owner
        if getattr(node.op, "name", None) != "normal":
            raise NotImplementedError("the marginal likelihood is implemented for Gaussian residuals")
        mu, sd = node.op.dist_params(node)
        self.y = np.asarray(model.rvs_to_values[dv].data, dtype=float)
        self.pop_names = [rv.name for rv in model.free_RVs if not rv.name.startswith(("z_", "omega_"))]
        self.q = len(spec.iiv_parameters)
        n_sub = self.data.n_subjects
        eta_in = pt.matrix("eta_in")
        pop_in = [model[n].type(name=n) for n in self.pop_names]
        repl = {model[n]: v for n, v in zip(self.pop_names, pop_in, strict=True)}
        if self.q:
            repl[model["eta"]] = eta_in
        f = mu * pt.ones(self.data.n_obs)
        R = pt.square(sd) * pt.ones(self.data.n_obs)
        f, R = graph_replace([f, R], replace=repl, strict=False)
        outs = [f, R]
        if self.q:
            # Forward mode in the direction "eta_k of every subject": each observation depends on
            # its own subject's etas only, so this is df_j / d eta_{s(j), k} for all j at once.
            gs, dRs = [], []
            for k in range(self.q):
                e = np.zeros((n_sub, self.q))
                e[:, k] = 1.0
                g, dR = pushforward([f, R], eta_in, pt.as_tensor_variable(e))
                gs.append(g)
                dRs.append(dR)
            outs += [pt.stack(gs, axis=1), pt.stack(dRs, axis=1)]
        self.mode = mode
        self._inputs, self._fR, self._batch = [*pop_in, eta_in], [f, R], None
        with compile_settings():
            self._f = pytensor.function([*pop_in, eta_in], [f, R], mode=mode,
                                        on_unused_input="ignore")
            self._fg = pytensor.function([*pop_in, eta_in], outs, mode=mode,
                                         on_unused_input="ignore")

    def _args(self, pop: dict, eta):
        missing = [n for n in self.pop_names if n not in pop]
        if missing:
            raise ValueError(f"missing population values {missing}")
        eta = np.zeros((self.data.n_subjects, 0)) if eta is None else np.asarray(eta, dtype=float)
        return [np.asarray(pop[n], dtype=float) for n in self.pop_names] + [eta]

    def predict(self, pop: dict, eta=None):
        """``f`` and ``R`` per observation at population values ``pop`` (builder names) and etas."""
        return self._f(*self._args(pop, eta))

    def predict_batch(self, pop: dict, eta):
        """``f`` and ``R`` for a batch: every value in ``pop`` has a leading batch axis (B,),
        ``eta`` is (B, n_subjects, q); returns arrays (B, n_obs). One compiled call for the batch
        (the graph vectorised over the batch axis), for simulation and importance sampling."""
        if self._batch is None:
            new = [pt.tensor(name=v.name, dtype=v.dtype, shape=(None,) * (v.ndim + 1))
                   for v in self._inputs]
            outs = vectorize_graph(self._fR, replace=dict(zip(self._inputs, new, strict=True)))
            with compile_settings():
                self._batch = pytensor.function(new, outs, mode=self.mode,
                                                on_unused_input="ignore")
        eta = np.asarray(eta, dtype=float)
        if eta.ndim != 3:
            raise ValueError(f"eta must be (batch, subjects, q), got shape {eta.shape}")
        return self._batch(*[np.asarray(pop[n], dtype=float) for n in self.pop_names], eta)

    def predict_with_gradients(self, pop: dict, eta):
        """``f, R, G, dR``; ``G[j, k] = df_j / d eta_{s(j), k}`` and likewise ``dR``."""
        out = self._fg(*self._args(pop, eta))
        if not self.q:
            out += [np.zeros((self.data.n_obs, 0))] * 2
        return out


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

    @property
    def loglik(self) -> float:
        return -0.5 * self.m2ll

    def to_dataset(self, spec: ModelSpec, subjects=None) -> xr.Dataset:
        """The EBEs, per-subject -2LL, Omega and the OFV summary as a labelled Dataset (stored by
        :func:`~nlmebayes.sampling.fit` as the ``marginal`` group)."""
        n_sub = self.eta.shape[0]
        subjects = np.arange(n_sub) if subjects is None else np.asarray(subjects)
        iiv = spec.iiv_parameters
        ds = xr.Dataset(
            {"eta_ebe": (("subject", "iiv"), self.eta),
             "eta_cov": (("subject", "iiv", "iiv_col"), self.eta_cov),
             "subject_m2ll": ("subject", self.subject_m2ll),
             "omega": (("iiv", "iiv_col"), self.population.omega_matrix(spec))},
            coords={"subject": subjects, "iiv": iiv, "iiv_col": iiv})
        pv = self.population
        ds.attrs.update(
            ofv=self.ofv, m2ll=self.m2ll, aic=self.aic, bic=self.bic, n_obs=self.n_obs,
            k_theta=self.k["theta"], k_omega=self.k["omega"], k_sigma=self.k["sigma"],
            k=self.k["total"], method=self.method,
            population=json.dumps({"typical": pv.typical, "sigma": pv.sigma,
                                   "thetas": {k: np.asarray(v).tolist() for k, v in pv.thetas.items()}}))
        return ds

    @property
    def aic(self) -> float:
        return self.m2ll + 2 * self.k["total"]

    @property
    def bic(self) -> float:
        return self.m2ll + self.k["total"] * np.log(self.n_obs)


class _Objective:
    """Per-subject joint objective ``obj_i(eta)`` and its derivatives (see module docstring)."""

    def __init__(self, cm: ConditionalModel, pop: dict, omega: np.ndarray):
        self.cm, self.pop = cm, pop
        self.s = cm.data.obs_subject
        self.n = cm.data.n_subjects
        self.q = cm.q
        if self.q:
            self.chol = np.linalg.cholesky(omega)  # raises if Omega is not positive definite
            self.Oinv = np.linalg.inv(omega)
            self.logdet = 2.0 * np.sum(np.log(np.diag(self.chol)))
        else:
            self.Oinv, self.logdet = np.zeros((0, 0)), 0.0

    def _sum(self, x):
        return np.bincount(self.s, weights=x, minlength=self.n)

    def value(self, eta):
        f, R = self.cm.predict(self.pop, eta)
        return self._value(eta, f, R)

    def _value(self, eta, f, R):
        r = self.cm.y - f
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.log(2 * np.pi * R) + r * r / R
        quad = np.einsum("ik,kl,il->i", eta, self.Oinv, eta)
        return self._sum(terms) + quad + self.logdet + self.q * LOG_2PI

    def derivatives(self, eta):
        """obj, its gradient and the FOCE-I Hessian of obj / 2, per subject."""
        f, R, G, dR = self.cm.predict_with_gradients(self.pop, eta)
        r = self.cm.y - f
        obj = self._value(eta, f, R)
        per_obs = dR / R[:, None] - 2.0 * (r / R)[:, None] * G - (r * r / R**2)[:, None] * dR
        grad = np.stack([self._sum(per_obs[:, k]) for k in range(self.q)], axis=1) + 2 * eta @ self.Oinv
        w1, w2 = 1.0 / R, 0.5 / R**2
        outer = (w1[:, None, None] * G[:, :, None] * G[:, None, :]
                 + w2[:, None, None] * dR[:, :, None] * dR[:, None, :])
        H = np.zeros((self.n, self.q, self.q))
        np.add.at(H, self.s, outer)
        H += self.Oinv
        return obj, grad, H, (f, R, G)

    def exact_hessian(self, eta, h=1e-5):
        """Hessian of obj / 2 by central differences of the exact gradient (Laplace)."""
        H = np.zeros((self.n, self.q, self.q))
        for k in range(self.q):
            e = np.zeros_like(eta)
            e[:, k] = h
            gp = self.derivatives(eta + e)[1]
            gm = self.derivatives(eta - e)[1]
            H[:, :, k] = (gp - gm) / (4 * h)
        return 0.5 * (H + np.swapaxes(H, 1, 2))


def _ebe(obj: _Objective, eta0=None, tol=1e-9, maxiter=200):
    """Conditional modes by Fisher scoring with a per-subject backtracking line search.

    Converged when every subject's predicted decrease of obj (``-grad . step``, the scoring
    decrement) is below ``tol``: the OFV is then within ~``tol`` per subject of its value at the
    exact mode, whatever the scale of the etas.
    """
    eta = np.zeros((obj.n, obj.q)) if eta0 is None else np.array(eta0, dtype=float)
    for it in range(1, maxiter + 1):
        val, grad, H, _ = obj.derivatives(eta)
        if not np.all(np.isfinite(grad)):
            raise FloatingPointError("non-finite gradient of the conditional objective")
        step = -np.linalg.solve(2.0 * H, grad[..., None])[..., 0]
        decrement = -np.sum(grad * step, axis=1)
        if np.max(decrement) < tol:
            return eta, it
        alpha = np.ones(obj.n)
        todo = decrement >= tol
        new = eta.copy()
        for _ in range(40):
            trial = eta + alpha[:, None] * step
            tv = obj.value(trial)
            ok = todo & (tv <= val + 1e-12 * np.abs(val))
            new[ok] = trial[ok]
            todo &= ~ok
            if not todo.any():
                break
            alpha[todo] *= 0.5
        eta = new
    warnings.warn(f"EBEs not converged after {maxiter} iterations: the largest predicted OFV "
                  f"change is {np.max(decrement):.1e} (subject index {int(np.argmax(decrement))})",
                  RuntimeWarning, stacklevel=3)
    return eta, maxiter


def marginal_likelihood(
    spec: ModelSpec,
    data: EventData,
    population: PopulationValues,
    *,
    method: str = "focei",
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
        FOCE with interaction (NONMEM-comparable), Laplace with the exact Hessian, or importance
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
    pop = population.rv_values(spec)
    omega = population.omega_matrix(spec)
    obj = _Objective(cm, pop, omega)
    eta, iters = _ebe(obj)
    val, _, H, (f, R, G) = obj.derivatives(eta)
    if method == "laplace":
        H = obj.exact_hessian(eta)
    sign, logdetH = np.linalg.slogdet(H) if cm.q else (np.ones(obj.n), np.zeros(obj.n))
    if np.any(sign <= 0):
        raise FloatingPointError("the Hessian at an EBE is not positive definite")
    subject = val - cm.q * LOG_2PI + logdetH
    if method == "importance" and cm.q:
        covs = np.linalg.inv(H) * 1.2**2
        props, log_q = _t_proposals(eta, covs, n_is, np.random.default_rng(seed))
        ll, ess = _importance_loglik(cm, pop, omega, props, log_q)
        subject = -2.0 * ll
        if np.min(ess) < 50:
            warnings.warn(f"importance sampling: weights' ESS as low as {np.min(ess):.0f} of {n_is}",
                          RuntimeWarning, stacklevel=2)
    m2ll = float(np.sum(subject))
    n_obs = cm.data.n_obs
    pred = cm.predict(pop, np.zeros_like(eta))[0]
    return Marginal(
        ofv=m2ll - n_obs * LOG_2PI, m2ll=m2ll, n_obs=n_obs, k=n_parameters(spec, cm.data),
        method=method, eta=eta, eta_cov=np.linalg.inv(H) if cm.q else H, subject_m2ll=subject,
        y=cm.y, f=f, R=R, G=G, pred=pred, population=population, iterations=iters)


def _importance_loglik(cm: ConditionalModel, pop: dict, omega, props, log_q):
    """``log p(y_i | pop)`` per subject by importance sampling over the etas, and the weights'
    effective sample size per subject. ``props`` (K, n_subjects, q) are proposal points with
    log densities ``log_q`` (K, n_subjects); one batched model call evaluates them all."""
    from scipy.special import logsumexp

    K, n_sub, q = props.shape
    f, R = cm.predict_batch({n: np.repeat(np.asarray(pop[n], dtype=float)[None], K, axis=0)
                             for n in cm.pop_names}, props)
    ll_obs = -0.5 * (LOG_2PI + np.log(R) + (cm.y - f) ** 2 / R)
    ll = np.zeros((n_sub, K))
    np.add.at(ll, cm.data.obs_subject, ll_obs.T)
    ll = ll.T
    if not q:
        return ll[0], np.ones(n_sub)
    L = np.linalg.cholesky(omega)
    z = np.linalg.solve(L, props.reshape(-1, q).T).T.reshape(K, n_sub, q)
    log_prior = -0.5 * np.sum(z**2, axis=-1) - np.sum(np.log(np.diag(L))) - 0.5 * q * LOG_2PI
    lw = ll + log_prior - log_q
    w = np.exp(lw - lw.max(axis=0))
    return logsumexp(lw, axis=0) - np.log(K), w.sum(0) ** 2 / (w**2).sum(0)


def _t_proposals(means, covs, n, rng):
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
    """Per-draw, per-subject marginal log-likelihood ``log p(y_i | theta_s)``, the etas integrated
    out by importance sampling; the input to the marginal (leave-one-subject-out) LOO.

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
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    step = max(1, int(np.ceil(n_chain * n_draw / max_draws)))
    post = posterior.isel(draw=slice(None, None, step))
    S = post.sizes["chain"] * post.sizes["draw"]

    def stacked(name):
        return post[name].stack(sample=("chain", "draw")).transpose("sample", ...).values

    pop_names = cm.pop_names
    pop = {n: stacked(n) for n in pop_names}
    rng = np.random.default_rng(seed)
    if q:
        omegas = omega_draws(post, spec)
        eta_post = (posterior["eta"].stack(sample=("chain", "draw"))
                    .transpose("sample", "subject", "iiv").values)
        covs = np.stack([np.cov(eta_post[:, i, :], rowvar=False).reshape(q, q) * 1.2**2
                         + 1e-12 * np.eye(q) for i in range(n_sub)])
        props, log_q = _t_proposals(eta_post.mean(axis=0), covs, n_eta, rng)
    else:
        n_eta = 1
        props, log_q = np.zeros((1, n_sub, 0)), np.zeros((1, n_sub))
    out = np.empty((S, n_sub))
    min_ess = float(n_eta)
    for s in range(S):
        pop_s = {n: pop[n][s] for n in pop_names}
        out[s], ess = _importance_loglik(cm, pop_s, omegas[s] if q else None, props, log_q)
        min_ess = min(min_ess, float(np.min(ess)))
    da = xr.DataArray(out.reshape(post.sizes["chain"], post.sizes["draw"], n_sub),
                      dims=("chain", "draw", "subject"),
                      coords={"chain": post["chain"].values, "draw": post["draw"].values,
                              "subject": posterior["subject"].values if "subject" in posterior.coords
                              else np.arange(n_sub)})
    da.attrs.update(n_eta=n_eta, thinning=step, min_is_ess=min_ess)
    return da
