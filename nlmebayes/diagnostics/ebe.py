"""The joint objective of each subject's etas and its minimisation.

The empirical Bayes estimates (EBEs, NONMEM's conditional modes) and the Hessians the Laplace and FOCE-I
approximations need (see :mod:`.ofv` for the formulas).
"""

from __future__ import annotations

import warnings

import numpy as np

from nlmebayes.diagnostics.conditional import ConditionalModel
from nlmebayes.diagnostics.population import LOG_2PI

__all__ = ["JointObjective", "conditional_modes"]


class JointObjective:
    """Per-subject joint objective ``obj_i(eta)`` and its derivatives (see module docstring)."""

    def __init__(self, cm: ConditionalModel, pop: dict, omega: np.ndarray):
        self.cm, self.pop = cm, pop
        self.nu = cm.nu(pop)
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
        """Joint objective ``obj_i(eta)`` per subject."""
        f, R = self.cm.predict(self.pop, eta)
        return self._value(eta, f, R)

    def _value(self, eta, f, R):
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = -2.0 * self.cm.loglik(f, R, self.nu)
        quad = np.einsum("ik,kl,il->i", eta, self.Oinv, eta)
        return self._sum(terms) + quad + self.logdet + self.q * LOG_2PI

    def derivatives(self, eta):
        """obj, its gradient and the FOCE-I Hessian of obj / 2, per subject."""
        f, R, G, dR = self.cm.predict_with_gradients(self.pop, eta)
        obj = self._value(eta, f, R)
        if self.cm.student_t:
            score, outer = self.cm.student_t_terms(f, R, G, dR, self.nu)
            per_obs = -2.0 * score
        else:
            r = self.cm.y - f
            per_obs = dR / R[:, None] - 2.0 * (r / R)[:, None] * G - (r * r / R**2)[:, None] * dR
            w1, w2 = 1.0 / R, 0.5 / R**2
            outer = (
                w1[:, None, None] * G[:, :, None] * G[:, None, :]
                + w2[:, None, None] * dR[:, :, None] * dR[:, None, :]
            )
        c = self.cm.censored
        if c.size:
            # M3: the score of log P(interval); its outer product as the metric (FOCE-I's
            # expectation is not defined for a probability: the OFV uses the exact Hessian)
            score = self.cm.censored_score(f[c], R[c], G[c], dR[c])
            per_obs[c] = -2.0 * score
            outer[c] = score[:, :, None] * score[:, None, :]
        m = self.cm.m4
        if m.size:
            # M4: each row's log-likelihood less log P(y > 0); the metric keeps its base term
            per_obs[m] += 2.0 * self.cm.m4_score(f[m], R[m], G[m], dR[m])
        grad = np.stack([self._sum(per_obs[:, k]) for k in range(self.q)], axis=1) + 2 * eta @ self.Oinv
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


def conditional_modes(obj: JointObjective, eta0=None, tol=1e-9, maxiter=200):
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
    warnings.warn(
        f"EBEs not converged after {maxiter} iterations: the largest predicted OFV "
        f"change is {np.max(decrement):.1e} (subject index {int(np.argmax(decrement))})",
        RuntimeWarning,
        stacklevel=3,
    )
    return eta, maxiter
