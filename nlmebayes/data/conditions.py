"""Conditions on data columns (``"APGR < 5"``, ``"DV == 0"``) and how IDs are written back."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["OPS", "parse_condition", "id_label", "format_id"]

_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")

#: Comparison operators a condition may use, as NumPy functions.
OPS = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


def parse_condition(text: str | None) -> tuple[str, str, float | str]:
    """Split a condition into (column, operator, value).

    The value is a number when it reads as one, else the text without quotes.

    Raises
    ------
    ValueError
        If ``text`` is not of the form ``COLUMN OP VALUE``.

    Examples
    --------
    >>> parse_condition("APGR < 5")
    ('APGR', '<', 5.0)
    >>> parse_condition("SEX == 'male'")
    ('SEX', '==', 'male')
    """
    m = _CONDITION.match(text or "")
    if not m:
        raise ValueError(f"cannot read condition {text!r}; write e.g. 'APGR < 5' or 'DV == 0'")
    col, op, val = m.groups()
    try:
        return col, op, float(val)
    except ValueError:
        return col, op, val.strip("'\"")


def id_label(x):
    """An ID, occasion or DVID read as float (1.0) back as the integer it was written as.

    Examples
    --------
    >>> id_label(12.0), id_label(1.5), id_label("A")
    (12, 1.5, 'A')
    """
    return int(x) if isinstance(x, float) and float(x).is_integer() else x


def format_id(x) -> str:
    """An ID as text for messages: ``12`` for 12.0."""
    return f"{x:g}" if isinstance(x, float) else str(x)
