"""The PyTensor Op that solves every subject's ODE system inside the compiled model.

:class:`ODESolve` has a numba implementation (registered with PyTensor's numba backend), so
nutpie runs it in its compiled model without Python callbacks; its gradient comes from the
forward sensitivities ``S = dA/dp`` integrated with the states. It has a cache key (equations,
settings, dosing schedule, a hash of this package's source), so PyTensor keeps compiled ODE
models on disk and a new process loads them instead of compiling again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.null_type import NullType
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_and_cache_key

from nlmebayes.data import EventData
from nlmebayes.pk.ode.codegen import compile_kernel, initial_source, njit_source
from nlmebayes.pk.ode.expressions import CLOCK
from nlmebayes.pk.ode.schedule import schedule
from nlmebayes.pk.ode.solver import make_solver

__all__ = ["ODESolve"]


class ODESolve(Op):
    """Solve every subject's ODE system with its doses.

    Amounts ``A`` (n_obs, n_states) at the observation times and their sensitivities ``S`` (n_obs, n_states,
    K n_p) to the parameters (the input, one row of n_p per subject, or per period with ``rows``): to each of
    the K rows of the observation's segment (the most any segment has), in time order. The gradient uses
    ``S``; it is not differentiable twice.
    """

    def __init__(self, system, data: EventData, param_names, rtol: float, atol: float, rows=None):
        self.system = system
        self.n_states = len(system.states)
        self.param_names = tuple(param_names)
        self.n_p = len(self.param_names)
        self.rtol, self.atol = float(rtol), float(atol)
        self.args = schedule(system, data, self.param_names, rows)
        row_start, seg_rows = self.args[13], self.args[14]
        self.n_rows = int(np.max(np.diff(row_start))) if len(row_start) > 1 else 1
        self.obs_rows = _observation_rows(self.args[1], row_start, seg_rows, self.n_rows)
        modelled = bool(np.any(self.args[4] == -2.0))  # RATE = -2: rate sensitivities in the kernel
        self.solver = _solver(system, self.param_names, self.n_rows, modelled)
        self._fn = None

    def cache_key(self) -> str:
        """What the compiled function bakes in.

        The equations, the solver settings and the dosing schedule (so PyTensor can cache the compiled model
        on disk).
        """
        h = hashlib.sha256(repr((self.system, self.param_names, self.rtol, self.atol)).encode())
        h.update(_SOURCE_HASH)
        for a in self.args:
            h.update(np.ascontiguousarray(a).tobytes())
        return f"nlmebayes_ode_{h.hexdigest()}"

    def make_node(self, P):
        """Apply the Op to the parameter matrix ``P`` (n_rows x n_p)."""
        P = pt.as_tensor_variable(P)
        return Apply(self, [P], [pt.dmatrix(), pt.dtensor3()])

    def perform(self, node, inputs, outputs):
        """Solve in Python mode (through the cached numba build)."""
        # Through a NUMBA-mode function of this Op alone rather than self.solver directly:
        # PyTensor caches that build on disk (see cache_key), so Python-mode graphs (the
        # vectorised deterministics after sampling) skip the solver's JIT compilation.
        if self._fn is None:
            P = pt.dmatrix("P")
            self._fn = pytensor.function([P], self(P), mode="NUMBA")
        A, S = self._fn(np.asarray(inputs[0], dtype=float))
        outputs[0][0] = A
        outputs[1][0] = S

    def pullback(self, inputs, outputs, output_grads):
        """Vector-Jacobian product from the forward sensitivities."""
        (P,) = inputs
        A, S = outputs
        gA, gS = output_grads
        if not isinstance(gS.type, pytensor.gradient.DisconnectedType):
            return [pytensor.gradient.grad_not_implemented(self, 0, P, "second-order sensitivities")]
        if isinstance(gA.type, NullType | pytensor.gradient.DisconnectedType):
            return [pt.zeros_like(P)]
        contrib = pt.sum(gA[:, :, None] * S, axis=1).reshape((-1, self.n_rows, self.n_p))
        return [pt.inc_subtensor(pt.zeros_like(P)[self.obs_rows], contrib)]

    def connection_pattern(self, node):
        """Both outputs depend on the parameters."""
        return [[True, True]]


_SOLVERS: dict = {}


def _source_hash() -> bytes:
    """Hash of the ODE package's source, part of the on-disk cache key of compiled models.

    A changed solver must not load an old build.
    """
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.digest()


_SOURCE_HASH = _source_hash()


def _observation_rows(obs_start, row_start, seg_rows, width) -> np.ndarray:
    """(n_obs, width): the parameter row of each sensitivity block of each observation.

    Blocks past its segment's rows (zero sensitivities) point at the segment's first row.
    """
    n_obs = obs_start[-1]
    seg = np.searchsorted(obs_start, np.arange(n_obs), side="right") - 1
    k = np.arange(width)[None, :]
    n_k = (row_start[1:] - row_start[:-1])[seg][:, None]
    return seg_rows[row_start[seg][:, None] + np.where(k < n_k, k, 0)]


def _solver(system, param_names, n_rows: int = 1, rate_sensitivity: bool = False):
    """Return the compiled solver for a system, reused by every model built from the same equations.

    A fit builds the model more than once, and numba compiles each new closure afresh.
    """
    key = (
        system.states,
        system.rhs,
        system.initial,
        tuple(param_names),
        system.method,
        system.max_steps,
        n_rows,
        rate_sensitivity,
    )
    if key not in _SOLVERS:
        width = len(param_names) * n_rows
        kernel = compile_kernel(system.states, dict(system.rhs), param_names, width, rate_sensitivity)
        init = njit_source(initial_source(system.states, dict(system.initial), param_names), "init")
        rhs = jac = None
        if system.method == "rosenbrock23":
            rhs, jac = system.rhs_function(param_names)
        i_clock = system.states.index(CLOCK) if system.clock else -1
        n_states, n_p = len(system.states), len(param_names)
        _SOLVERS[key] = make_solver(
            system.method, n_states, n_p, kernel, init, rhs, jac, system.max_steps, i_clock, n_rows
        )
    return _SOLVERS[key]


@register_funcify_and_cache_key(ODESolve)
def _numba_ode_solve(op, node, **kwargs):
    solver, args, rtol, atol = op.solver, op.args, op.rtol, op.atol
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19 = args

    # No fast-math here either (the solver it calls has none): with PyTensor's default flags on
    # this wrapper, a fresh build and one loaded from the disk cache gave Theoph ODE
    # log-densities that differed in the last bit; without them they are bit-identical.
    @numba_njit(fastmath=False)
    def ode_solve(P):
        A, S, _ = solver(
            P,
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            a8,
            a9,
            a10,
            a11,
            a12,
            a13,
            a14,
            a15,
            a16,
            a17,
            a18,
            a19,
            rtol,
            atol,
        )
        return A, S

    return ode_solve, op.cache_key()
