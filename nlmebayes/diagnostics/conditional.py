"""The model given the population parameters.

Per-observation mean ``f``, residual variance ``R`` and their derivatives with respect to each subject's etas,
compiled once from the builder's graph. The marginal likelihood, the residuals and the importance sampling all
evaluate it.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import pushforward
from pytensor.graph.replace import graph_replace
from scipy import special

from nlmebayes.data import EventData
from nlmebayes.diagnostics.population import LOG_2PI, unsupported
from nlmebayes.model.builder import build_model, occasions
from nlmebayes.model.compile import batched_function, compile_settings
from nlmebayes.model.likelihood import censoring, observation_params
from nlmebayes.model.spec import ModelSpec

__all__ = ["ConditionalModel", "log_interval"]


def _subject_groups(data: EventData, column: str) -> np.ndarray:
    """Each subject's group (row of the builder's ``gamma_<column>``, groups in data order)."""
    import pandas as pd

    groups = data.subject_covariates([column])[column].to_numpy()
    labels = list(pd.unique(groups))
    return np.array([labels.index(g) for g in groups], dtype=int)


def log_interval(a, b):
    """``log(Phi(b) - Phi(a))`` for ``a < b`` (either end may be infinite), without cancellation.

    Examples
    --------
    >>> from scipy.stats import norm
    >>> bool(np.isclose(log_interval(np.array([-1.0]), np.array([2.0]))[0],
    ...                 np.log(norm.cdf(2.0) - norm.cdf(-1.0))))
    True
    """
    from scipy.special import log_ndtr

    # on the side of 0 where the tail is small, so the difference of two tails keeps its digits
    flip = a > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    big, small = log_ndtr(hi), log_ndtr(lo)
    with np.errstate(divide="ignore"):
        return big + np.log1p(-np.exp(small - big))


class ConditionalModel:
    """The model given the population parameters.

    Per-observation mean ``f``, residual variance ``R`` and their derivatives w.r.t. each subject's etas,
    compiled once from the builder's graph.

    Parameters
    ----------
    spec : ModelSpec
    data : EventData
    mode : str
        PyTensor compilation mode; "FAST_COMPILE" (default) compiles in about a second, "NUMBA"
        pays seconds of compilation for faster calls (worth it for many evaluations).
    lean : bool
        Compile only ``f`` and ``R``; their derivatives by central differences (2q evaluations).
        A fifth of the compile time (no forward-mode graph to build and rewrite), for the
        sampler's pilot, which needs the curvature to about a per cent, not to 1e-8.
    """

    def __init__(self, spec: ModelSpec, data: EventData, mode: str = "FAST_COMPILE", lean: bool = False):
        why = unsupported(spec, data)
        if why:
            raise NotImplementedError(f"the marginal likelihood does not handle {why} yet")
        built = build_model(spec, data)
        model = built.model
        self.spec = spec
        self.data = built.data
        dv = model["DV"]
        mu, sd, nu = observation_params(model)
        self.y = np.asarray(model.rvs_to_values[dv].data, dtype=float)
        self._censoring(spec)
        # Student-t residuals: nu fixed by the spec, or the population variable "nu"
        self.student_t = nu is not None
        self.nu_fixed = getattr(spec.error, "nu", None) if self.student_t else None
        if self.student_t and self.censored.size:
            raise NotImplementedError("the marginal likelihood of censored Student-t residuals")
        self.pop_names = [
            rv.name
            for rv in model.free_RVs
            if not rv.name.startswith(("z_", "omega_", "pi_sd_", "pi_chol_", "level_sd_"))
        ]
        # a level's group effects are inputs, integrated outside (diagnostics.ofv, per group)
        self.level_names = [f"gamma_{lvl.column}" for lvl in spec.levels]
        self.pop_names += self.level_names
        self.subject_group = (
            _subject_groups(self.data, spec.levels[0].column) if spec.levels else np.zeros(0, dtype=int)
        )
        self.q_iiv = len(spec.iiv_parameters)
        self._occasion_layout(spec)
        self.q = self.q_iiv + self.n_slots * len(spec.iov_parameters)
        n_sub = self.data.n_subjects
        eta_in = pt.matrix("eta_in")
        pop_in = [model[n].type(name=n) for n in self.pop_names]
        repl = {model[n]: v for n, v in zip(self.pop_names, pop_in, strict=True)}
        if self.q_iiv:
            repl[model["eta"]] = eta_in[:, : self.q_iiv]
        if spec.iov:
            # occasion row (subject s, slot j) takes its kappas from s's random effects
            slots = eta_in[:, self.q_iiv :].reshape((n_sub, self.n_slots, len(spec.iov_parameters)))
            repl[model["kappa"]] = slots[self.occasion_subject, self.occasion_slot]
        f = mu * pt.ones(self.data.n_obs)
        R = pt.square(sd) * pt.ones(self.data.n_obs)
        f, R = graph_replace([f, R], replace=repl, strict=False)
        outs = [f, R]
        if self.q and not lean:
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
            self._f = pytensor.function([*pop_in, eta_in], [f, R], mode=mode, on_unused_input="ignore")
            self._fg = (
                self._differences
                if lean
                else pytensor.function([*pop_in, eta_in], outs, mode=mode, on_unused_input="ignore")
            )

    def _censoring(self, spec: ModelSpec) -> None:
        """Censored observations (M3, M4) and their interval ``(lo, hi)`` on the modelling scale."""
        # as the builder's likelihood; M4 (Beal): P(y > 0) divides these rows' likelihood (loglik)
        _, cens, self.lo, self.hi, m4 = censoring(spec, self.data)
        self.censored, self.m4 = np.flatnonzero(cens != 0), np.flatnonzero(m4)

    def nu(self, pop: dict):
        """Student-t degrees of freedom at ``pop`` (shaped to broadcast over observations), or None."""
        if not self.student_t:
            return None
        nu = np.asarray(self.nu_fixed if self.nu_fixed is not None else pop["nu"], dtype=float)
        return nu[..., None] if nu.ndim else nu

    def loglik(self, f, R, nu=None):
        """Log-likelihood of each observation given ``f`` and ``R`` (any leading batch axes).

        Gaussian density (Student-t with ``nu`` degrees of freedom and scale ``sqrt(R)`` when the
        model has Student-t residuals: ``nu`` from :meth:`nu`), or for a censored observation the
        log probability of its interval.
        """
        if self.student_t:
            from scipy.special import gammaln

            u = (self.y - f) ** 2 / (nu * R)
            return (
                gammaln((nu + 1) / 2)
                - gammaln(nu / 2)
                - 0.5 * np.log(np.pi * nu * R)
                - (nu + 1) / 2 * np.log1p(u)
            )
        ll = -0.5 * (LOG_2PI + np.log(R) + (self.y - f) ** 2 / R)
        if self.censored.size:
            c = self.censored
            s = np.sqrt(R[..., c])
            ll[..., c] = log_interval((self.lo[c] - f[..., c]) / s, (self.hi[c] - f[..., c]) / s)
        if self.m4.size:
            m = self.m4
            ll[..., m] -= special.log_ndtr(f[..., m] / np.sqrt(R[..., m]))  # / P(y > 0)
        return ll

    def m4_score(self, f, R, G, dR):
        """``d log P(y > 0) / d eta`` of the M4 observations (rows of f, R, G, dR).

        It is ``lambda(z) dz / deta`` with ``z = f / sqrt(R)`` and ``lambda = phi / Phi`` (the
        inverse Mills ratio).
        """
        s = np.sqrt(R)
        z = f / s
        mills = np.exp(-0.5 * z**2 - 0.5 * LOG_2PI - special.log_ndtr(z))
        return mills[:, None] * (G - (z / (2 * s))[:, None] * dR) / s[:, None]

    def censored_score(self, f, R, G, dR):
        """``d log P(lo < y < hi) / d eta`` of the censored observations (rows of f, R, G, dR)."""
        c = self.censored
        s = np.sqrt(R)
        a, b = (self.lo[c] - f) / s, (self.hi[c] - f) / s
        log_p = log_interval(a, b)

        def term(z):  # phi(z) / P * dz/deta, 0 at an infinite end
            zf = np.where(np.isfinite(z), z, 0.0)
            ratio = np.where(np.isfinite(z), np.exp(-0.5 * zf**2 - 0.5 * LOG_2PI - log_p), 0.0)
            return ratio[:, None] * -(G + (zf / (2 * s))[:, None] * dR) / s[:, None]

        return term(b) - term(a)

    def student_t_terms(self, f, R, G, dR, nu):
        """Score ``d log t / d eta`` and expected information per observation (Student-t).

        The information is Fisher's for a t location and scale, ``(nu+1)/((nu+3) R) g g' +
        nu/(2 (nu+3) R^2) dR dR'``: FOCE-I's Hessian when nu -> infinity.
        """
        r = self.y - f
        w = 1.0 / (1.0 + r * r / (nu * R))
        score = -0.5 * dR / R[:, None] + ((nu + 1) / 2 * w)[:, None] * (
            (2 * r / (nu * R))[:, None] * G + (r * r / (nu * R * R))[:, None] * dR
        )
        a, b = (nu + 1) / ((nu + 3) * R), nu / (2 * (nu + 3) * R * R)
        info = (
            a[:, None, None] * G[:, :, None] * G[:, None, :]
            + b[:, None, None] * dR[:, :, None] * dR[:, None, :]
        )
        return score, info

    def _occasion_layout(self, spec: ModelSpec) -> None:
        """Each occasion row's subject and slot (its rank among the subject's occasions).

        ``n_slots`` is the most occasions any subject has; every subject carries that many slots
        of kappas, and a slot without an occasion changes no prediction.
        """
        self.occasion_subject = self.occasion_slot = np.zeros(0, dtype=int)
        self.n_slots = 0
        if not spec.iov:
            return
        rows, _ = occasions(spec, self.data)
        subject = np.array([s_ for s_, _ in rows], dtype=int)
        order = np.argsort(subject, kind="stable")
        first = np.searchsorted(subject[order], subject[order])
        slot = np.empty(len(subject), dtype=int)
        slot[order] = np.arange(len(subject)) - first
        self.occasion_subject, self.occasion_slot = subject, slot
        self.n_slots = int(slot.max()) + 1

    def slot_used(self) -> np.ndarray:
        """(n_subjects, n_slots) mask: the subject has an occasion in that slot."""
        used = np.zeros((self.data.n_subjects, self.n_slots), dtype=bool)
        used[self.occasion_subject, self.occasion_slot] = True
        return used

    def random_effect_draws(self, posterior) -> np.ndarray:
        """Posterior draws of every subject's random effects in this layout, (S, n_subjects, q).

        Slots a subject lacks are 0 (the prior mean; no draw exists for them).
        """

        def stacked(name, *dims):
            return posterior[name].stack(sample=("chain", "draw")).transpose("sample", *dims).values

        n_sub = self.data.n_subjects
        eta = stacked("eta", "subject", "iiv") if self.q_iiv else None
        S = posterior.sizes["chain"] * posterior.sizes["draw"]
        out = np.zeros((S, n_sub, self.q))
        if eta is not None:
            out[:, :, : self.q_iiv] = eta
        if self.n_slots:
            r = len(self.spec.iov_parameters)
            kappa = stacked("kappa", "occasion", "iov")
            slots = out[:, :, self.q_iiv :].reshape(S, n_sub, self.n_slots, r)
            slots[:, self.occasion_subject, self.occasion_slot, :] = kappa
            out[:, :, self.q_iiv :] = slots.reshape(S, n_sub, -1)
        return out

    def _differences(self, *args, h: float = 1e-5):
        """``f, R`` and their eta derivatives by central differences (``lean`` mode)."""
        *pop, eta = args
        f, R = self._f(*args)
        G, dR = np.zeros((len(f), self.q)), np.zeros((len(f), self.q))
        for k in range(self.q):
            e = np.zeros_like(eta)
            e[:, k] = h
            fp, Rp = self._f(*pop, eta + e)
            fm, Rm = self._f(*pop, eta - e)
            G[:, k], dR[:, k] = (fp - fm) / (2 * h), (Rp - Rm) / (2 * h)
        return [f, R, G, dR]

    def _args(self, pop: dict, eta):
        missing = [n for n in self.pop_names if n not in pop]
        if missing:
            raise ValueError(f"missing population values {missing}")
        eta = np.zeros((self.data.n_subjects, 0)) if eta is None else np.asarray(eta, dtype=float)
        return [self._value_of(pop, n) for n in self.pop_names] + [eta]

    def _value_of(self, pop: dict, name: str) -> np.ndarray:
        """``pop[name]``; a level's group effects default to 0 (an empty array stands for that)."""
        x = np.asarray(pop[name], dtype=float)
        if name in self.level_names and x.shape[-2] == 0:
            n_groups = int(self.subject_group.max()) + 1
            x = np.zeros(x.shape[:-2] + (n_groups, x.shape[-1]))
        return x

    def predict(self, pop: dict, eta=None):
        """``f`` and ``R`` per observation at population values ``pop`` (builder names) and etas."""
        return self._f(*self._args(pop, eta))

    def predict_batch(self, pop: dict, eta):
        """``f`` and ``R`` for a batch.

        Every value in ``pop`` has a leading batch axis (B,), ``eta`` is (B, n_subjects, q); returns arrays
        (B, n_obs). One compiled call for the batch (the graph vectorised over the batch axis), for simulation
        and importance sampling.
        """
        if self._batch is None:
            self._batch = batched_function(self._inputs, self._fR, mode=self.mode)
        eta = np.asarray(eta, dtype=float)
        if eta.ndim != 3:
            raise ValueError(f"eta must be (batch, subjects, q), got shape {eta.shape}")
        return self._batch(*[self._value_of(pop, n) for n in self.pop_names], eta)

    def predict_with_gradients(self, pop: dict, eta):
        """``f, R, G, dR``; ``G[j, k] = df_j / d eta_{s(j), k}`` and likewise ``dR``."""
        out = self._fg(*self._args(pop, eta))
        if not self.q:
            out += [np.zeros((self.data.n_obs, 0))] * 2
        return out
