"""Population parameter vectors (NONMEM's THETA, OMEGA, SIGMA in our names).

Also the per-draw Omega, the parameter count of AIC/BIC, and what the marginal-likelihood code
cannot integrate yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nlmebayes.data import EventData
from nlmebayes.model.spec import ModelSpec

__all__ = [
    "PopulationValues",
    "omega_draws",
    "covariance_draws",
    "pi_draws",
    "random_effects_covariance",
    "unsupported",
    "n_parameters",
    "LOG_2PI",
]

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
    pi_sd : dict
        Inter-occasion SDs by parameter, e.g. ``{"CL": 0.2}`` (NONMEM's IOV OMEGA is their square).
    pi : array (r, r), optional
        Covariance of the kappas over ``spec.iov_parameters`` (block IOV, NONMEM's
        ``$OMEGA BLOCK(n) SAME``); replaces ``diag(pi_sd**2)`` when given.
    level_sd : dict
        SDs between the groups of a level, by column and parameter, e.g.
        ``{"STUDY": {"CL": 0.3}}``.
    level_effects : dict
        The groups' effects (column -> array (groups, parameters)) at which the conditional
        quantities (EBEs, residuals) are evaluated; the OFV integrates them out. Zero if not given;
        :func:`~nlmebayes.diagnostics.ofv.marginal_likelihood` fills in their modes.
    nu : float, optional
        Student-t degrees of freedom, when the model estimates them.
    """

    typical: dict
    omega: np.ndarray | None = None
    thetas: dict = field(default_factory=dict)
    sigma: dict = field(default_factory=dict)
    pi_sd: dict = field(default_factory=dict)
    nu: float | None = None
    pi: np.ndarray | None = None
    level_sd: dict = field(default_factory=dict)
    level_effects: dict = field(default_factory=dict)

    def rv_values(self, spec: ModelSpec) -> dict[str, float]:
        """Values of the builder's population variables (``log_CL_pop``, ``theta_..``, ``sigma_..``)."""
        out = {}
        for lvl in spec.levels:
            if set(self.level_sd.get(lvl.column, {})) != set(lvl.parameters):
                raise ValueError(
                    f"the model has a {lvl.column} level: give level_sd[{lvl.column!r}] for {lvl.parameters}"
                )
            given = self.level_effects.get(lvl.column)
            out[f"gamma_{lvl.column}"] = (
                np.zeros((0, len(lvl.parameters))) if given is None else np.asarray(given)
            )
        for p in spec.parameters:
            if p.fixed:
                continue
            if p.name not in self.typical:
                raise ValueError(f"give a typical value for {p.name}")
            out[p.free_name] = p.to_free(self.typical[p.name])
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
        if spec.residual_distribution == "student_t" and getattr(spec.error, "nu", None) is None:
            if self.nu is None:
                raise ValueError("the model estimates Student-t degrees of freedom: give nu")
            out["nu"] = float(self.nu)
        return out

    def omega_matrix(self, spec: ModelSpec) -> np.ndarray:
        """Omega as a checked (q, q) array, ordered as ``spec.iiv_parameters``."""
        q = len(spec.iiv_parameters)
        if q == 0:
            return np.zeros((0, 0))
        if self.omega is None:
            raise ValueError("the model has IIV: give omega (covariance of the etas)")
        om = np.atleast_2d(np.asarray(self.omega, dtype=float))
        if om.shape != (q, q):
            raise ValueError(f"omega must be {q}x{q} (order {spec.iiv_parameters}), got {om.shape}")
        return om

    def covariance(self, spec: ModelSpec, n_slots: int = 0) -> np.ndarray:
        """Covariance of a subject's random effects: Omega, then ``n_slots`` occasions' kappas.

        The kappas of each occasion slot follow the etas, ordered as ``spec.iov_parameters``;
        each slot has ``Pi`` (:attr:`pi`, else ``diag(pi_sd**2)``; see :mod:`nlmebayes.diagnostics.ofv`
        on why slots a subject lacks change nothing).
        """
        omega = self.omega_matrix(spec)
        if not spec.iov:
            return omega
        if self.pi is not None:
            r = len(spec.iov_parameters)
            pi_cov = np.atleast_2d(np.asarray(self.pi, dtype=float))
            if pi_cov.shape != (r, r):
                raise ValueError(f"pi must be {r}x{r} (order {spec.iov_parameters}), got {pi_cov.shape}")
            return random_effects_covariance(omega, pi_cov, n_slots)
        missing = [p for p in spec.iov_parameters if p not in self.pi_sd]
        if missing:
            raise ValueError(f"the model has IOV: give pi_sd for {missing}")
        pi = np.array([self.pi_sd[p] for p in spec.iov_parameters], dtype=float)
        return random_effects_covariance(omega, pi, n_slots)

    @classmethod
    def from_posterior(cls, posterior, spec: ModelSpec, stat: str = "median") -> PopulationValues:
        """Posterior median (or mean) of every population parameter.

        Omega is the elementwise summary of the per-draw covariance matrices.
        """
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
        pi_sd, pi_cov = {}, None
        if spec.iov:
            pi = summ(draws("pi_sd"))
            pi_sd = dict(zip(spec.iov_parameters, map(float, pi), strict=True))
            if any(b.block for b in spec.iov):
                pi_cov = summ(pi_draws(posterior, spec))
        nu = float(summ(draws("nu"))) if "nu" in posterior else None
        level_sd = {
            lvl.column: {p: float(summ(draws(f"level_sd_{lvl.column}_{p}"))) for p in lvl.parameters}
            for lvl in spec.levels
        }
        return cls(
            typical=typical,
            omega=omega,
            thetas=thetas,
            sigma=sigma,
            pi_sd=pi_sd,
            nu=nu,
            pi=pi_cov,
            level_sd=level_sd,
        )


def random_effects_covariance(omega: np.ndarray, pi_sd: np.ndarray, n_slots: int) -> np.ndarray:
    """``blockdiag(Omega, Pi, ..., Pi)`` with ``n_slots`` occasion blocks.

    ``pi_sd`` holds the kappas' SDs (``Pi = diag(pi_sd**2)``), or ``Pi`` itself as a matrix (block
    IOV). Works on stacks too: ``omega`` (..., q, q) and ``pi_sd`` (..., r) or (..., r, r) give
    (..., q + n_slots r, ...).

    Examples
    --------
    >>> random_effects_covariance(np.eye(1), np.array([0.5]), 2).diagonal().tolist()
    [1.0, 0.25, 0.25]
    """
    omega, pi_sd = np.asarray(omega, dtype=float), np.asarray(pi_sd, dtype=float)
    q, r = omega.shape[-1], pi_sd.shape[-1]
    if pi_sd.ndim < omega.ndim:  # SDs: a diagonal Pi
        pi_sd = pi_sd[..., :, None] * np.eye(r) * pi_sd[..., None, :]
    n = q + n_slots * r
    out = np.zeros(np.broadcast_shapes(omega.shape[:-2], pi_sd.shape[:-2]) + (n, n))
    out[..., :q, :q] = omega
    for j in range(n_slots):
        a = q + j * r
        out[..., a : a + r, a : a + r] = pi_sd
    return out


def covariance_draws(posterior, spec: ModelSpec, n_slots: int = 0) -> np.ndarray:
    """Per-draw :func:`random_effects_covariance` (Omega and the kappas' slots), chains stacked."""
    n = posterior.sizes["chain"] * posterior.sizes["draw"]
    omega = omega_draws(posterior, spec) if spec.iiv else np.zeros((n, 0, 0))
    if not spec.iov:
        return omega
    return random_effects_covariance(omega, pi_draws(posterior, spec), n_slots)


def pi_draws(posterior, spec: ModelSpec) -> np.ndarray:
    """Per-draw Pi (covariance of the kappas), shape ``(n_draws, r, r)``, chains stacked."""
    sd = posterior["pi_sd"].stack(sample=("chain", "draw")).transpose("sample", "iov").values
    corr = np.broadcast_to(np.eye(sd.shape[1]), (sd.shape[0],) + (sd.shape[1],) * 2).copy()
    j = 0
    for b, block in enumerate(spec.iov):
        n = len(block.parameters)
        if block.block:
            c = posterior[f"pi_corr_{b}"].stack(sample=("chain", "draw"))
            corr[:, j : j + n, j : j + n] = c.transpose("sample", ...).values
        j += n
    return corr * sd[:, :, None] * sd[:, None, :]


def omega_draws(posterior, spec: ModelSpec) -> np.ndarray:
    """Per-draw Omega (covariance of the etas), shape ``(n_draws, q, q)``, chains stacked."""
    sd = posterior["omega_sd"].stack(sample=("chain", "draw")).transpose("sample", "iiv").values
    corr = np.broadcast_to(np.eye(sd.shape[1]), (sd.shape[0],) + (sd.shape[1],) * 2).copy()
    j = 0
    for k, block in enumerate(spec.iiv):
        n = len(block.parameters)
        if block.block:
            c = posterior[f"omega_corr_{k}"].stack(sample=("chain", "draw"))
            corr[:, j : j + n, j : j + n] = c.transpose("sample", ...).values
        j += n
    return sd[:, :, None] * corr * sd[:, None, :]


def unsupported(spec: ModelSpec, data: EventData | None = None) -> str | None:
    """What in ``spec``/``data`` the FOCE-I/Laplace code cannot integrate, or None."""
    if len(spec.levels) > 1:
        return "more than one level above the subject"
    if spec.levels and len(spec.levels[0].parameters) > 3:
        return "a level with more than 3 random effects (its quadrature grid)"
    if spec.outcomes:
        return "non-continuous outcomes (binary, ordinal, count, time to event)"
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
            n_theta += data.records[c.covariate].nunique() - 1
        else:
            n_theta += 1
    if spec.candidates is not None:
        # every candidate effect counts, shrunk or not: an upper bound on the effective number
        from nlmebayes.model.candidates import candidate_forms

        if data is None:
            raise ValueError("counting candidate covariate effects needs the data")
        cov = data.subject_covariates(sorted({c for _, c in spec.candidates.pairs}))
        n_theta += sum(len(f.labels) for f in candidate_forms(spec.candidates, cov))
    n_omega = sum(
        len(b.parameters) * (len(b.parameters) + 1) // 2 if b.block else len(b.parameters)
        for b in [*spec.iiv, *spec.iov]
    )
    if spec.residual_distribution == "student_t" and getattr(spec.error, "nu", None) is None:
        n_theta += 1  # the estimated degrees of freedom
    # IOV elements above (NONMEM's OMEGA BLOCK(n) SAME counts its block once), then each level SD
    n_omega += sum(len(lv.parameters) for lv in spec.levels)
    n_sigma = len(spec.sigma_names)
    return {"theta": n_theta, "omega": n_omega, "sigma": n_sigma, "total": n_theta + n_omega + n_sigma}
