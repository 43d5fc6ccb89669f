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

from nlmebayes.data import EventData
from nlmebayes.diagnostics.population import unsupported
from nlmebayes.model.builder import build_model
from nlmebayes.model.compile import batched_function, compile_settings
from nlmebayes.model.spec import ModelSpec

__all__ = ["ConditionalModel"]


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
        return [np.asarray(pop[n], dtype=float) for n in self.pop_names] + [eta]

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
        return self._batch(*[np.asarray(pop[n], dtype=float) for n in self.pop_names], eta)

    def predict_with_gradients(self, pop: dict, eta):
        """``f, R, G, dR``; ``G[j, k] = df_j / d eta_{s(j), k}`` and likewise ``dR``."""
        out = self._fg(*self._args(pop, eta))
        if not self.q:
            out += [np.zeros((self.data.n_obs, 0))] * 2
        return out
