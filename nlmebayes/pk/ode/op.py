"""The PyTensor Op that solves every subject's ODE system inside the compiled model.

:class:`ODESolve` has a numba implementation (registered with PyTensor's numba backend), so
nutpie runs it in its compiled model without Python callbacks; its gradient comes from the
forward sensitivities ``S = dA/dp`` integrated with the states.

Two compiled pieces, each cached on disk:

* the solver of a system (its equations, parameters, method and the most parameter rows per
  segment; not the data), compiled behind a C signature (:func:`~.solver.c_solver`) and
  registered with the JIT under a symbol named by its hash;
* the Op's own code, which PyTensor compiles into the model: it allocates the outputs and calls
  that symbol with the dosing schedule (constants, packed by :func:`~.solver.pack_schedule`).
  Its cache key covers the equations, settings, schedule and a hash of this package's source.

Kept apart, the solver is compiled once per system rather than once per data set, and the
model's compile (nutpie's included) neither optimises nor generates the solver's code again:
Theoph's ODE model compiles in ~3 s instead of ~5.5 s in a process that has used the system.
Python mode (:meth:`ODESolve.perform`) calls the same solver through ctypes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pytensor
import pytensor.tensor as pt
from llvmlite import binding as llvm_binding
from llvmlite import ir as llvm_ir
from numba.core import cgutils
from pytensor.graph.basic import Apply
from pytensor.graph.null_type import NullType
from pytensor.graph.op import Op
from pytensor.graph.replace import _vectorize_node
from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_and_cache_key

from nlmebayes.data import EventData
from nlmebayes.pk.ode.codegen import compile_kernel, initial_source, njit_source, sensitivity_pattern
from nlmebayes.pk.ode.expressions import CLOCK
from nlmebayes.pk.ode.schedule import schedule
from nlmebayes.pk.ode.solver import c_solver, make_solver, pack_schedule

__all__ = ["ODESolve", "ODESolveGrad", "ODESolveBatch"]


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
        self.n_obs = len(self.args[0])
        row_start, seg_rows = self.args[13], self.args[14]
        self.n_rows = int(np.max(np.diff(row_start))) if len(row_start) > 1 else 1
        self.obs_rows = _observation_rows(self.args[1], row_start, seg_rows, self.n_rows)
        # the rows of P the schedule reads: a shorter P is refused (the solver would read past it)
        self.min_rows = int(seg_rows.max()) + 1 if seg_rows.size else 0
        self.modelled = bool(np.any(self.args[4] == -2.0))  # RATE = -2: rate sensitivities in the kernel
        self.solver_key, ns = _solver(system, self.param_names, self.n_rows, self.modelled)
        self.solver = ns["solve_segments"]  # the same solver called from Python (with step counters)
        self.packed = pack_schedule(self.args)
        self.width = self.n_rows * self.n_p
        self.grad_op = ODESolveGrad(self)  # built once: it hashes obs_rows

    def c_solver(self):
        """The compiled solver behind its C signature, compiled or loaded in this process if need be.

        (An Op unpickled in a new process has not been through ``__init__`` there.)
        """
        if self.solver_key not in _SOLVERS:
            _solver(self.system, self.param_names, self.n_rows, self.modelled)
        return _SOLVERS[self.solver_key][1]

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
        """Solve in Python mode: the compiled solver called by address through ctypes."""
        outputs[0][0], outputs[1][0] = self.solve(inputs[0])

    def solve(self, P, A=None, S=None):
        """Amounts and sensitivities for the parameter matrix ``P`` (NumPy), by the compiled solver.

        ``P`` is one matrix (n_rows x n_p) or a stack of them (draws first), solved in one call.
        Written into ``A`` and ``S`` when given (C-contiguous float arrays of the output shapes).
        """
        P = np.ascontiguousarray(P, dtype=float)
        if P.shape[-2] < self.min_rows or P.shape[-1] != self.n_p:
            raise ValueError(f"ODESolve: P has shape {P.shape[-2:]}, needs ({self.min_rows}, {self.n_p})")
        batch = P.shape[:-2]
        A = np.empty((*batch, self.n_obs, self.n_states)) if A is None else A
        S = np.empty((*batch, self.n_obs, self.n_states, self.width)) if S is None else S
        F, I = self.packed
        ptr = [_pointer(x) for x in (P, F, I, A, S)]
        n_batch, n_rows = int(np.prod(batch)), P.shape[-2]
        # ctypes lets go of the GIL for the call: ODESolveBatch solves draws in threads
        self.c_solver().ctypes(ptr[0], n_batch, n_rows, ptr[1], ptr[2], self.rtol, self.atol, ptr[3], ptr[4])
        return A, S

    def pullback(self, inputs, outputs, output_grads):
        """Vector-Jacobian product from the forward sensitivities."""
        (P,) = inputs
        A, S = outputs
        gA, gS = output_grads
        if not isinstance(gS.type, pytensor.gradient.DisconnectedType):
            return [pytensor.gradient.grad_not_implemented(self, 0, P, "second-order sensitivities")]
        if isinstance(gA.type, NullType | pytensor.gradient.DisconnectedType):
            return [pt.zeros_like(P)]
        return [self.grad_op(P, gA, S)]

    def connection_pattern(self, node):
        """Both outputs depend on the parameters."""
        return [[True, True]]


class ODESolveGrad(Op):
    """The vector-Jacobian product of an :class:`ODESolve`: ``gP`` from ``gA`` and the sensitivities.

    ``gP[row, j] += sum_i gA[o, i] S[o, i, k n_p + j]`` over the observations ``o`` and the
    parameter rows ``row = obs_rows[o, k]`` of their segments. One node with a numba loop, where
    the same written with PyTensor's ops (a product, a sum, a reshape and an advanced increment
    into zeros) made the compiled model's final LLVM module larger and its compile slower.
    """

    def __init__(self, solve: ODESolve):
        self.obs_rows = np.ascontiguousarray(solve.obs_rows, dtype=np.int64)
        self.n_p = solve.n_p
        self.key = hashlib.sha256(
            self.obs_rows.tobytes() + repr((self.obs_rows.shape, self.n_p)).encode()
        ).hexdigest()

    def __eq__(self, other):
        return type(other) is type(self) and other.key == self.key

    def __hash__(self):
        return hash((type(self), self.key))

    def make_node(self, P, gA, S):
        """``P`` (n_rows x n_p), ``gA`` (n_obs x n_states), ``S`` (n_obs x n_states x width)."""
        P, gA, S = (pt.as_tensor_variable(x) for x in (P, gA, S))
        return Apply(self, [P, gA, S], [P.type()])

    def perform(self, node, inputs, outputs):
        """The same product in NumPy."""
        P, gA, S = inputs
        contrib = np.einsum("oi,oic->oc", gA, S).reshape((len(S), -1, self.n_p))
        g = np.zeros_like(P)
        np.add.at(g, self.obs_rows, contrib)
        outputs[0][0] = g

    def pullback(self, inputs, outputs, output_grads):
        """Linear in ``gA``: its pullback is the forward product ``S v``.

        Forward mode (``pushforward``, which the EBE search uses) goes through it. ``P`` gives the
        shape only; ``S`` would need the second-order sensitivities.
        """
        P, gA, S = inputs
        (v,) = output_grads
        v_rows = v[self.obs_rows].reshape((S.shape[0], S.shape[2]))
        return [
            pytensor.gradient.disconnected_type(),
            pt.sum(S * v_rows[:, None, :], axis=2),
            pytensor.gradient.grad_not_implemented(self, 2, S, "second-order sensitivities"),
        ]

    def connection_pattern(self, node):
        """``gP`` depends on ``gA`` and ``S``; on ``P`` for its shape only."""
        return [[False], [True], [True]]


@register_funcify_and_cache_key(ODESolveGrad)
def _numba_ode_grad(op, node, **kwargs):
    rows, n_p = op.obs_rows, op.n_p

    @numba_njit(fastmath=False)
    def ode_grad(P, gA, S):
        g = np.zeros_like(P)
        for o in range(S.shape[0]):
            for c in range(S.shape[2]):
                acc = 0.0
                for i in range(S.shape[1]):
                    acc += gA[o, i] * S[o, i, c]
                g[rows[o, c // n_p], c % n_p] += acc
        return g

    return ode_grad, f"nlmebayes_ode_grad_{op.key}"


class ODESolveBatch(Op):
    """:class:`ODESolve` over leading batch axes of ``P`` (posterior draws, replicates), in threads.

    What ``vectorize_graph`` makes of an ODESolve (the derived quantities, predictions and
    simulations evaluate every draw at once): one Op whose ``perform`` hands the draws to as many
    threads as the machine has cores, where PyTensor's Blockwise would solve them one by one. Not
    differentiable (no sampler graph is vectorised).
    """

    def __init__(self, core: ODESolve):
        self.core = core

    def make_node(self, P):
        """Apply to ``P`` of shape (batch..., n_rows, n_p)."""
        P = pt.as_tensor_variable(P)
        batch = P.type.shape[:-2]
        outs = [
            pt.tensor(dtype="float64", shape=(*batch, None, None)),
            pt.tensor(dtype="float64", shape=(*batch, None, None, None)),
        ]
        return Apply(self, [P], outs)

    def perform(self, node, inputs, outputs):
        """Solve the batch in a pool of threads, one block of consecutive draws (one call) each."""
        P = np.ascontiguousarray(inputs[0], dtype=float)
        flat = P.reshape((-1, *P.shape[-2:]))
        core = self.core
        A = np.empty((len(flat), core.n_obs, core.n_states))
        S = np.empty((len(flat), core.n_obs, core.n_states, core.width))
        n_threads = max(1, min(len(flat), _n_threads()))
        edges = np.linspace(0, len(flat), n_threads + 1).astype(int)
        blocks = [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            list(pool.map(lambda b: core.solve(flat[b], A[b], S[b]), blocks))
        outputs[0][0] = A.reshape(P.shape[:-2] + A.shape[1:])
        outputs[1][0] = S.reshape(P.shape[:-2] + S.shape[1:])

    def pullback(self, inputs, outputs, output_grads):
        """Not differentiable: the batched solve only evaluates."""
        return [pytensor.gradient.grad_not_implemented(self, 0, inputs[0], "batched ODE solves")]


@_vectorize_node.register(ODESolve)
def _vectorize_ode_solve(op, node, P):
    if P.type.ndim == 2:
        return op.make_node(P)
    return ODESolveBatch(op).make_node(P)


def _n_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: The compiled solvers of this process by symbol: (the namespace of the numba functions, the
#: solver behind its C signature, solver.c_solver).
_SOLVERS: dict = {}


def _pointer(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_int64 if a.dtype == np.int64 else ctypes.c_double))


def _register(symbol: str) -> None:
    """Make ``symbol`` name the compiled solver for the JIT, which links the models' code to it."""
    llvm_binding.add_symbol(symbol, _SOLVERS[symbol][1].address)


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
    """The symbol and the namespace of the compiled solver of a system.

    Reused by every model built from the same equations (a fit builds the model more than once, and
    numba compiles each new closure afresh). The solver behind its C signature
    (:func:`~.solver.c_solver`) is compiled, or loaded from the disk cache, and registered under its
    symbol here, before any model's code is linked to it.
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
        system.clock,
    )
    h = hashlib.sha256(repr(key).encode())
    h.update(_SOURCE_HASH)
    name = f"nlmebayes_ode_solver_{h.hexdigest()}"
    if name not in _SOLVERS:
        width = len(param_names) * n_rows
        active = None  # every sensitivity (Rosenbrock's Jacobian, and the period blocks, are dense)
        if system.method == "dopri5" and n_rows == 1:
            active = sensitivity_pattern(system.states, dict(system.rhs), dict(system.initial), param_names)
        kernel, derive, n_const = compile_kernel(
            system.states, dict(system.rhs), param_names, width, rate_sensitivity, active
        )
        init = njit_source(initial_source(system.states, dict(system.initial), param_names), "init")
        rhs = jac = None
        if system.method == "rosenbrock23":
            rhs, jac = system.rhs_function(param_names)
        i_clock = system.states.index(CLOCK) if system.clock else -1
        n_states, n_p = len(system.states), len(param_names)
        ns = make_solver(
            system.method,
            n_states,
            n_p,
            kernel,
            init,
            derive,
            n_const,
            rhs,
            jac,
            system.max_steps,
            i_clock,
            n_rows,
            active,
        )
        _SOLVERS[name] = (ns, c_solver(ns, name))
        _register(name)
    return name, _SOLVERS[name][0]


@numba.extending.intrinsic
def _call_solver(typingctx, symbol, P, F, I, rtol, atol, A, S):
    """Call the solver ``symbol`` (a registered C symbol, see :func:`_solver`) on these arrays.

    The model's code declares the solver as an external function that the JIT resolves by name
    when it loads the code: it holds no address of this process (PyTensor caches it on disk),
    and the solver's own code stays out of it (nutpie's final compile neither optimises nor
    generates it again).
    """
    if not isinstance(symbol, numba.types.StringLiteral):
        return None
    sig = numba.types.void(symbol, P, F, I, rtol, atol, A, S)

    def codegen(context, builder, signature, args):
        _, P_, F_, I_, rtol_, atol_, A_, S_ = args
        ty = signature.args
        P, F, I, A, S = (context.make_array(t)(context, builder, v) for t, v in
                         zip(ty[1:4] + ty[6:], (P_, F_, I_, A_, S_), strict=True))  # fmt: skip
        f64, i64 = llvm_ir.DoubleType(), llvm_ir.IntType(64)
        f64p = f64.as_pointer()
        args = [f64p, i64, i64, f64p, i64.as_pointer(), f64, f64, f64p, f64p]  # solver.C_SIGNATURE
        fnty = llvm_ir.FunctionType(llvm_ir.VoidType(), args)
        fn = cgutils.get_or_insert_function(builder.module, fnty, symbol.literal_value)
        n_rows = builder.extract_value(P.shape, 0)
        one = llvm_ir.Constant(i64, 1)  # one draw: the model's density
        builder.call(fn, [P.data, one, n_rows, F.data, I.data, rtol_, atol_, A.data, S.data])
        return context.get_dummy_value()

    return sig, codegen


@register_funcify_and_cache_key(ODESolve)
def _numba_ode_solve(op, node, **kwargs):
    F, I = op.packed
    rtol, atol = op.rtol, op.atol
    n_obs, n_states, width = op.n_obs, op.n_states, op.width
    min_rows, n_p = op.min_rows, op.n_p
    symbol = op.solver_key
    op.c_solver()  # registered under its symbol before the JIT links this code to it

    # No fast-math here: with PyTensor's default flags on this wrapper, a fresh build and one
    # loaded from the disk cache gave Theoph ODE log-densities that differed in the last bit.
    @numba_njit(fastmath=False)
    def ode_solve(P):
        if P.shape[0] < min_rows or P.shape[1] != n_p:
            raise ValueError("ODESolve: P has fewer rows or other columns than the schedule needs")
        Pc = np.ascontiguousarray(P)
        A = np.empty((n_obs, n_states))
        S = np.empty((n_obs, n_states, width))
        _call_solver(symbol, Pc, F, I, rtol, atol, A, S)
        return A, S

    return ode_solve, op.cache_key()
