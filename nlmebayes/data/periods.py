"""Parameter periods: where a subject's individual parameters change between its records.

With time-varying covariates (weight over weeks, renal function) or inter-occasion variability the
individual parameters are piecewise constant in time. We follow NONMEM: the values on a record
apply over the interval that *ends* at that record (the system is advanced from the previous
record's time to this record's time with the parameters computed from this record), and a dose's
F and TLAG are those of the record that gives it (also for its ADDL-implied doses). A *period* is
a run of consecutive records of one subject on which the columns that drive the parameters do not
change; its parameters hold from the previous period's last record to its own last record.

PyMC-free: the builder gives each period a row of the parameter arrays (:class:`ParameterRows`),
and a structural model that supports it (the ODE path) switches parameters at those times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nlmebayes.data.events import EventData

__all__ = ["ParameterRows", "parameter_rows", "segment_runs"]


@dataclass(frozen=True)
class ParameterRows:
    """Which row of the individual parameters holds over each record's interval.

    Attributes
    ----------
    record_row : int array
        Row of each record of ``data.records`` (in record order); rows are numbered in record
        order, so a subject's rows are consecutive and increase with time.
    row_subject : int array
        Subject index of each row.
    row_record : int array
        Index (into ``data.records``) of each row's first record.
    columns : tuple of str
        The columns whose changes start a new row.
    """

    record_row: np.ndarray
    row_subject: np.ndarray
    row_record: np.ndarray
    columns: tuple[str, ...]

    @property
    def n_rows(self) -> int:
        """Number of rows (periods)."""
        return len(self.row_subject)

    @property
    def varies(self) -> bool:
        """Whether any subject has more than one row."""
        return self.n_rows > len(np.unique(self.row_subject))

    def at_rows(self, data: EventData, rows: np.ndarray) -> np.ndarray:
        """Row of the records with numbers ``rows`` (``data``'s 1-based ``_ROW``)."""
        return self.record_row[data.record_positions(rows)]

    def dose_rows(self, data: EventData) -> np.ndarray:
        """Row of each dose event (that of the record that gives it)."""
        return self.at_rows(data, data.dose_row)

    def obs_rows(self, data: EventData) -> np.ndarray:
        """Row of each observation."""
        return self.at_rows(data, data.obs_row)


def parameter_rows(data: EventData, columns=()) -> ParameterRows:
    """Periods of constant ``columns`` within each subject (one row per subject if none change).

    Parameters
    ----------
    data : EventData
        The data.
    columns : sequence of str
        Data columns the individual parameters depend on that may change within a subject
        (time-varying covariates, the occasion column with IOV).

    Returns
    -------
    ParameterRows

    Examples
    --------
    >>> import pandas as pd
    >>> from nlmebayes import read_nonmem
    >>> d = read_nonmem(pd.DataFrame(dict(ID=[1, 1, 1, 2], TIME=[0, 1, 2, 0], AMT=[100, 0, 0, 100],
    ...                                   DV=[0, 5.0, 4.0, 0], WT=[70, 70, 72, 60])))
    >>> r = parameter_rows(d, ["WT"])
    >>> r.record_row.tolist(), r.row_subject.tolist()
    ([0, 0, 1, 2], [0, 0, 1])
    """
    rec = data.records
    subject = rec["_SUBJ"].to_numpy()
    new = np.r_[True, subject[1:] != subject[:-1]]
    for c in columns:
        v = rec[c].to_numpy()
        new[1:] |= v[1:] != v[:-1]
    record_row = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    return ParameterRows(record_row.astype(np.int64), subject[first].astype(np.int64), first, tuple(columns))


def segment_runs(data: EventData, record_row: np.ndarray) -> dict:
    """The runs of one parameter row within one reset segment, in record order.

    A row split by a reset (EVID 3/4, SS=1) is a run in each segment. Returns ``seg`` (0-based
    segment of each run), ``row``, ``place`` (0 for a segment's first run), ``start`` (the time
    from which the run's parameters hold: the previous record's time, or the segment's first
    record's for its first run) and ``of_record`` (each record's run).

    Examples
    --------
    >>> import pandas as pd
    >>> from nlmebayes import read_nonmem
    >>> d = read_nonmem(pd.DataFrame(dict(ID=1, TIME=[0, 1, 2, 3], AMT=[100, 0, 0, 0],
    ...                                   DV=[0, 5.0, 4.0, 3.0], WT=[70, 70, 72, 72])))
    >>> r = segment_runs(d, parameter_rows(d, ["WT"]).record_row)
    >>> r["place"].tolist(), r["start"].tolist(), r["of_record"].tolist()
    ([0, 1], [0.0, 1.0], [0, 0, 1, 1])
    """
    seg = np.unique(data.records["_SEG"].to_numpy(), return_inverse=True)[1]
    new = np.r_[True, (seg[1:] != seg[:-1]) | (record_row[1:] != record_row[:-1])]
    first = np.flatnonzero(new)
    run_seg = seg[first]
    seg_first = np.r_[True, run_seg[1:] != run_seg[:-1]]
    i = np.arange(len(first))
    place = i - np.maximum.accumulate(np.where(seg_first, i, 0))
    time = data.records["TIME"].to_numpy().astype(float)
    start = np.where(place > 0, time[np.maximum(first - 1, 0)], time[first])
    row, of_record = record_row[first].astype(np.int64), np.cumsum(new) - 1
    return dict(seg=run_seg, row=row, place=place.astype(np.int64), start=start, of_record=of_record)
