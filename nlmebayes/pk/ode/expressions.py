"""Expressions of states and parameters (``"KA * depot - CL / V * central"``).

Parsing into PyTensor graphs, the names they use, and symbolic derivatives of their syntax trees (which the
generated numba kernels of :mod:`.codegen` are written from).

The syntax (and the names an expression uses) is defined without PyTensor in
:mod:`nlmebayes.model.expressions`, so that the spec can check it at load time.
"""

from __future__ import annotations

import ast

import pytensor.tensor as pt

from nlmebayes.model.expressions import FUNCTIONS, check_call, expression_names

__all__ = ["FUNCTIONS", "CLOCK", "expression_names", "parse_expression", "derivative"]

#: The time in right-hand sides and outputs; when used, the ODE system carries it as a state.
CLOCK = "t"

_FUNCS = {
    "exp": pt.exp,
    "log": pt.log,
    "sqrt": pt.sqrt,
    "abs": pt.abs,
    "expit": pt.sigmoid,
    "logistic": pt.sigmoid,
    "logit": lambda p: pt.log(p) - pt.log1p(-p),
    "pow": lambda a, b: a**b,
    "min": pt.minimum,
    "max": pt.maximum,
}
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


def parse_expression(text: str, symbols: dict):
    """Evaluate an arithmetic expression with ``symbols`` mapping names to PyTensor variables.

    ``+ - * / **``, numbers, names and the functions of :data:`FUNCTIONS` are allowed; anything
    else is rejected with a ValueError.

    Examples
    --------
    >>> import pytensor.tensor as pt
    >>> float(parse_expression("2 * x + 1", {"x": pt.as_tensor_variable(3.0)}).eval())
    7.0
    """

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in symbols:
                raise ValueError(f"unknown name {node.id!r} in {text!r}; known: {', '.join(sorted(symbols))}")
            return symbols[node.id]
        if isinstance(node, ast.Call):
            check_call(node, text)
            return _FUNCS[node.func.id](*(ev(a) for a in node.args))
        raise ValueError(f"unsupported syntax in {text!r}: {ast.dump(node)[:60]}")

    return ev(ast.parse(text, mode="eval"))


def derivative(node, var):
    """Symbolic derivative of an expression AST with respect to the name ``var``.

    Only the syntax :func:`parse_expression` accepts can occur.

    Parameters
    ----------
    node : ast.AST
        The expression tree (``ast.parse(text, mode="eval")`` or a sub-tree).
    var : str
        The name to differentiate by.

    Returns
    -------
    ast.AST or None
        The derivative's tree, or None where it is identically zero.

    Examples
    --------
    >>> import ast
    >>> ast.unparse(derivative(ast.parse("KA * depot", mode="eval"), "depot"))
    'KA'
    """
    if isinstance(node, ast.Expression):
        return derivative(node.body, var)
    if isinstance(node, ast.Constant):
        return None
    if isinstance(node, ast.Name):
        return ast.Constant(1.0) if node.id == var else None
    if isinstance(node, ast.UnaryOp):
        da = derivative(node.operand, var)
        return None if da is None else (ast.UnaryOp(ast.USub(), da) if isinstance(node.op, ast.USub) else da)
    if isinstance(node, ast.Call):
        return _call_derivative(node, var)
    a, b = node.left, node.right
    da, db = derivative(a, var), derivative(b, var)
    if isinstance(node.op, ast.Add | ast.Sub):
        if db is None:
            return da
        db = db if isinstance(node.op, ast.Add) else ast.UnaryOp(ast.USub(), db)
        return db if da is None else ast.BinOp(da, ast.Add(), db)
    if isinstance(node.op, ast.Mult):
        return _add(_mul(da, b), _mul(a, db))
    if isinstance(node.op, ast.Div):
        # (da b - a db) / b^2 = da / b - a db / b^2
        t1 = _div(da, b) if da is not None else None
        t2 = _div(_mul(a, db), ast.BinOp(b, ast.Pow(), ast.Constant(2.0))) if db is not None else None
        return _add(t1, None if t2 is None else ast.UnaryOp(ast.USub(), t2))
    if isinstance(node.op, ast.Pow):
        t1 = (
            _mul(_mul(b, ast.BinOp(a, ast.Pow(), ast.BinOp(b, ast.Sub(), ast.Constant(1.0)))), da)
            if da is not None
            else None
        )
        t2 = _mul(_mul(node, _call("np.log", a)), db) if db is not None else None
        return _add(t1, t2)
    raise ValueError(f"cannot differentiate {ast.dump(node)[:60]}")


def _call_derivative(node: ast.Call, var: str):
    """Chain rule through a call of one of :data:`FUNCTIONS`."""
    fn, args = node.func.id, node.args
    if fn == "pow":
        return derivative(ast.BinOp(args[0], ast.Pow(), args[1]), var)
    if fn in ("min", "max"):
        da, db = (derivative(x, var) for x in args)
        if da is None and db is None:
            return None
        # the derivative of the argument that is chosen (at a tie, the first one's)
        op = ast.LtE() if fn == "min" else ast.GtE()
        test = ast.Compare(args[0], [op], [args[1]])
        return ast.IfExp(test, da or ast.Constant(0.0), db or ast.Constant(0.0))
    a = args[0]
    da = derivative(a, var)
    if da is None:
        return None
    one = ast.Constant(1.0)
    outer = {
        "exp": lambda: node,
        "log": lambda: _div(one, a),
        "sqrt": lambda: _div(ast.Constant(0.5), node),
        "abs": lambda: _call("np.sign", a),
        "expit": lambda: _mul(node, ast.BinOp(one, ast.Sub(), node)),
        "logistic": lambda: _mul(node, ast.BinOp(one, ast.Sub(), node)),
        "logit": lambda: _div(one, _mul(a, ast.BinOp(one, ast.Sub(), a))),
    }[fn]()
    return _mul(outer, da)


def _add(a, b):
    return b if a is None else a if b is None else ast.BinOp(a, ast.Add(), b)


def _mul(a, b):
    if a is None or b is None:
        return None
    if isinstance(a, ast.Constant) and a.value == 1.0:
        return b
    if isinstance(b, ast.Constant) and b.value == 1.0:
        return a
    return ast.BinOp(a, ast.Mult(), b)


def _div(a, b):
    return ast.BinOp(a, ast.Div(), b)


def _call(name, arg):
    mod, fn = name.split(".")
    return ast.Call(ast.Attribute(ast.Name(mod, ast.Load()), fn, ast.Load()), [arg], [])
