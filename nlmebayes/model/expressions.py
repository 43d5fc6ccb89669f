"""The expression language of model specs (``"KA * depot - CL / V * central"``), without PyTensor.

Allowed: numbers, names, ``+ - * / **``, unary minus, and the functions of :data:`FUNCTIONS`:
``exp``, ``log``, ``sqrt``, ``abs``, ``pow(a, b)``, ``min(a, b)``, ``max(a, b)``, ``expit(x)``
(also ``logistic``: 1 / (1 + exp(-x))) and ``logit(p)`` (log(p / (1 - p))).

The spec checks every expression with :func:`expression_names` when it is made (so a typo fails at
load time, naming the model and the place); :mod:`nlmebayes.pk.ode.expressions` turns them into
graphs and derivatives.
"""

from __future__ import annotations

import ast

__all__ = ["FUNCTIONS", "expression_names", "tree_names", "check_call"]

#: The functions expressions may call, with their number of arguments.
FUNCTIONS = {
    "exp": 1, "log": 1, "sqrt": 1, "abs": 1, "expit": 1, "logistic": 1, "logit": 1,
    "pow": 2, "min": 2, "max": 2,
}  # fmt: skip


def expression_names(text: str) -> set[str]:
    """Names used in an expression (states and parameters); a ValueError for bad syntax or calls.

    Examples
    --------
    >>> sorted(expression_names("KA * depot - CL / V * central"))
    ['CL', 'KA', 'V', 'central', 'depot']
    >>> sorted(expression_names("expit(LF) * max(A, 0)"))
    ['A', 'LF']
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"cannot read the expression {text!r}: {e.msg}") from None
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            check_call(n, text)
    return tree_names(tree)


def tree_names(tree: ast.AST) -> set[str]:
    """Names a parsed expression uses, without the functions it calls.

    A function may be a name (``exp``) or, in the generated derivatives, an attribute (``np.exp``).

    Examples
    --------
    >>> sorted(tree_names(ast.parse("np.exp(-KA * t) * max(A, 0)", mode="eval")))
    ['A', 'KA', 't']
    """
    called = {id(n) for c in ast.walk(tree) if isinstance(c, ast.Call) for n in ast.walk(c.func)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called}


def check_call(node: ast.Call, text: str) -> None:
    """A ValueError unless ``node`` calls one of :data:`FUNCTIONS` with its number of arguments."""
    name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
    if name not in FUNCTIONS:
        raise ValueError(f"unknown function {name!r} in {text!r}; known: {', '.join(FUNCTIONS)}")
    if len(node.args) != FUNCTIONS[name] or node.keywords:
        raise ValueError(f"{name} takes {FUNCTIONS[name]} argument(s), in {text!r}")
