"""The error every data check raises: it names the file, row, line and column."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset record that breaks the NONMEM conventions.

    Attributes
    ----------
    source : str
        File name (or ``"<DataFrame>"``).
    row : int or None
        1-based data record number (the header is not counted).
    line : int or None
        1-based line in the file, where the data came from a file.
    column : str or None
        The offending data item.

    Examples
    --------
    >>> str(DataError("expected AMT >= 0, got -5", source="pk.csv", row=3, line=4, column="AMT"))
    'pk.csv, row 3 (line 4), column AMT: expected AMT >= 0, got -5'
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        row: int | None = None,
        line: int | None = None,
        column: str | None = None,
    ):
        self.source, self.row, self.line, self.column = source, row, line, column
        where = [source]
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        if column is not None:
            where.append(f"column {column}")
        super().__init__(", ".join(where) + ": " + message)
