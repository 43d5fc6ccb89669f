"""Code generation.

The right-hand side, its Jacobians and the sensitivity equations as one unrolled, allocation-free numba
kernel, written from the symbolic derivatives of the expressions (:func:`~.expressions.derivative`); and the
initial amounts with their sensitivities.
"""

from __future__ import annotations

import ast
import copy
import math

import numba
import numpy as np

from nlmebayes.model.expressions import tree_names
from nlmebayes.pk.base import DOSING_PARAMETERS
from nlmebayes.pk.ode.expressions import derivative

__all__ = ["sensitivity_pattern", "kernel_source", "initial_source", "njit_source", "compile_kernel"]


def sensitivity_pattern(states, rhs, initial, param_names) -> np.ndarray:
    """Which sensitivities d state_i / d p_j can be non-zero: a boolean (n_states, n_p) matrix.

    ``S_ij`` is a structural zero when neither state ``i``'s equation nor its initial amount
    depends on ``p_j``, directly or through the states it depends on, and ``p_j`` is not a dosing
    parameter (TLAG, F, D: conservatively non-zero in every state). A depot emptied at rate
    ``KA * depot`` has no sensitivity to CL or V: the solver leaves such entries out of the
    integrated system (they stay 0) instead of integrating zeros.

    Examples
    --------
    >>> sensitivity_pattern(("depot", "central"), {"depot": "-KA * depot",
    ...     "central": "KA * depot - CL / V * central"}, {}, ("KA", "CL", "V")).astype(int).tolist()
    [[1, 0, 0], [1, 1, 1]]
    """
    trees = {s: ast.parse(rhs[s], mode="eval").body for s in states}
    init = {s: ast.parse(initial[s], mode="eval").body for s in states if s in initial}
    direct = np.array(
        [
            [
                q in DOSING_PARAMETERS  # their sensitivities jump at a dose in every state
                or derivative(trees[s], q) is not None
                or (s in init and derivative(init[s], q) is not None)
                for q in param_names
            ]
            for s in states
        ],
        dtype=bool,
    ).reshape(len(states), len(param_names))
    feeds = [[derivative(trees[s], u) is not None for u in states] for s in states]
    active = direct.copy()
    for _ in states:  # each pass follows the dependencies one state further
        for i in range(len(states)):
            for k in range(len(states)):
                if feeds[i][k]:
                    active[i] |= active[k]
    return active


class _Hoist(ast.NodeTransformer):
    """Replace each largest subexpression of parameters only (``CL / V``) by a name ``_c0, _c1, ...``.

    Such a subexpression is the same at every stage of every step: the solver evaluates it once
    per row of parameters (the kernel's ``derive``) instead of in each call of the kernel, where
    its divisions and powers sat on the step's critical path. Identical subexpressions share one
    name. The operations and their order are those of the expression, so the values are the same
    to the bit. Works on copies: the derivatives are taken of the original trees.
    """

    def __init__(self, param_names):
        self.params = set(param_names)
        self.constants: dict[str, str] = {}  # source -> name, in the order met

    def __call__(self, tree) -> str:
        return ast.unparse(self.visit(copy.deepcopy(tree)))

    def visit(self, node):
        if isinstance(node, ast.expr) and not isinstance(node, ast.Name | ast.Constant):
            names = tree_names(node)
            if names and names <= self.params:
                name = self.constants.setdefault(ast.unparse(node), f"_c{len(self.constants)}")
                return ast.Name(name, ast.Load())
        return self.generic_visit(node)


def _kernel(states, rhs, param_names, width, rate_sensitivity, active) -> tuple[str, int]:
    """:func:`kernel_source` and the number of subexpressions ``derive`` writes."""
    n, m = len(states), len(param_names)
    w = m if width is None else width
    if active is None:
        active = np.ones((n, w), dtype=bool)
    elif w != m:
        raise ValueError("a sensitivity pattern needs one row of parameters")
    pos = np.full((n, w), -1)
    pos[active] = n + np.arange(int(active.sum()))
    trees = [ast.parse(rhs[s], mode="eval").body for s in states]
    u = _Hoist(param_names)
    body = []
    if w != m:
        body.append(f"    o = int(p[{m}])")
    for i, tree in enumerate(trees):
        body.append(f"    out[{i}] = ({u(tree)}) + r[{i}]")
    for i, tree in enumerate(trees):
        dy = [derivative(tree, s) for s in states]
        dp = [derivative(tree, q) for q in param_names]
        for k, e in enumerate(dy):
            if e is not None:
                body.append(f"    jy{k} = {u(e)}")
        if w != m:
            terms = [f"jy{k} * z[{n + k * w} + c]" for k, e in enumerate(dy) if e is not None]
            terms += [f"r[{n + i * w} + c]"] if rate_sensitivity else []
            body.append(f"    for c in range({w}):")
            body.append(f"        out[{n + i * w} + c] = {' + '.join(terms) or '0.0'}")
            body += [f"    out[{n + i * w} + o + {j}] += {u(e)}" for j, e in enumerate(dp) if e is not None]
            continue
        for j in range(m):
            if not active[i, j]:
                continue
            terms = [f"jy{k} * z[{pos[k, j]}]" for k, e in enumerate(dy) if e is not None and active[k, j]]
            if dp[j] is not None:
                terms.append(f"({u(dp[j])})")
            if rate_sensitivity:
                terms.append(f"r[{n + i * m + j}]")
            body.append(f"    out[{pos[i, j]}] = {' + '.join(terms) or '0.0'}")
    loads = [f"    {s} = z[{i}]" for i, s in enumerate(states)]
    loads += [f"    {q} = p[{k}]" for k, q in enumerate(param_names)]
    loads += [f"    {c} = p[{m + 1 + k}]" for k, c in enumerate(u.constants.values())]
    derive = [f"    {q} = p[{k}]" for k, q in enumerate(param_names)]
    derive += [f"    p[{m + 1 + k}] = {e}" for k, e in enumerate(u.constants)] or ["    return"]
    source = "\n".join(["def kernel(z, p, r, out):", *loads, *body, "def derive(p):", *derive]) + "\n"
    return source, len(u.constants)


def kernel_source(
    states, rhs, param_names, width: int | None = None, rate_sensitivity: bool = False, active=None
) -> str:
    """Python source of ``kernel(z, p, r, out)`` and of ``derive(p)``.

    ``z = (y, S.ravel())`` and ``out = (f(y) + r, (df/dy S + df/dp).ravel())``, allocation-free.
    With ``active`` (the :func:`sensitivity_pattern`, one row of parameters only), ``S`` holds
    only its active entries, in row-major order, in ``z`` and ``out``; ``r`` keeps the full layout.
    ``S`` has ``width`` columns (default: one per parameter, unrolled). A wider ``S`` holds the
    sensitivities to several rows of parameters (periods, :mod:`nlmebayes.data.periods`):
    ``p`` then carries, after the parameters, the first column of the current row's block, where
    ``df/dp`` enters; the other columns follow ``df/dy S`` only. ``r`` holds the inputs (infusion
    rates) and, after them, their derivatives in the parameters (``n_states x width``), which enter
    the sensitivities with ``rate_sensitivity`` (modelled durations, RATE = -2).

    The subexpressions of parameters only (:class:`_Hoist`) are read from ``p`` after that column;
    ``derive(p)`` writes them there from the parameters, once per row.

    Examples
    --------
    >>> print(kernel_source(("central",), {"central": "-CL / V * central"}, ("CL", "V")))
    def kernel(z, p, r, out):
        central = z[0]
        CL = p[0]
        V = p[1]
        _c0 = p[3]
        _c1 = p[4]
        _c2 = p[5]
        out[0] = (_c0 * central) + r[0]
        jy0 = _c0
        out[1] = jy0 * z[1] + (_c1 * central)
        out[2] = jy0 * z[2] + (_c2 * central)
    def derive(p):
        CL = p[0]
        V = p[1]
        p[3] = -CL / V
        p[4] = -1.0 / V
        p[5] = -(-CL / V ** 2.0)
    <BLANKLINE>
    """
    return _kernel(states, rhs, param_names, width, rate_sensitivity, active)[0]


def initial_source(states, initial, param_names) -> str:
    """Python source of ``init(p, y, S)``.

    The initial amounts ``y0(p)`` and their sensitivities ``dy0/dp`` written into zeroed ``y`` and ``S``.
    """
    lines = ["def init(p, y, S):"]
    lines += [f"    {q} = p[{k}]" for k, q in enumerate(param_names)]
    for i, s in enumerate(states):
        if s not in initial:
            continue
        tree = ast.parse(initial[s], mode="eval").body
        lines.append(f"    y[{i}] = {ast.unparse(tree)}")
        for j, q in enumerate(param_names):
            e = derivative(tree, q)
            if e is not None:
                lines.append(f"    S[{i}, {j}] = {ast.unparse(e)}")
    return "\n".join(lines + ["    return"]) + "\n"


@numba.njit(cache=False)
def _expit(x):
    # the form whose exp cannot overflow
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(cache=False)
def _logit(p):
    return math.log(p) - math.log1p(-p)


def njit_source(source: str, name: str):
    """Compile generated Python ``source`` and return its function ``name`` jitted by numba.

    No fast-math, no numba cache of its own: the solver that calls it is cached whole
    (:func:`~.solver.c_solver`).
    """
    # The functions the expression language allows (expressions.FUNCTIONS); abs, min, max and
    # pow are builtins numba compiles.
    namespace = {
        "np": np, "exp": math.exp, "log": math.log, "sqrt": math.sqrt,
        "expit": _expit, "logistic": _expit, "logit": _logit,
    }  # fmt: skip
    exec(compile(source, f"<nlmebayes ode {name}>", "exec"), namespace)
    return numba.njit(cache=False, fastmath=False)(namespace[name])


def compile_kernel(
    states, rhs, param_names, width: int | None = None, rate_sensitivity: bool = False, active=None
):
    """The jitted ``kernel`` and ``derive`` of :func:`kernel_source`, and ``derive``'s count.

    (How many values ``derive`` writes after the parameters and the block column.)
    """
    source, n_const = _kernel(states, rhs, param_names, width, rate_sensitivity, active)
    return njit_source(source, "kernel"), njit_source(source, "derive"), n_const
