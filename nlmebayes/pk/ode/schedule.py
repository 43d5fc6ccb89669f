"""The dosing schedule of the data as flat per-segment arrays for the numba solver."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes.data import EventData
from nlmebayes.data.periods import ParameterRows, segment_runs
from nlmebayes.pk.base import DOSING_PARAMETERS

__all__ = ["schedule"]


def schedule(system, data: EventData, param_names, rows: ParameterRows | None = None):
    """Flat per-segment arrays for the solver.

    A segment is a subject's run of records between resets (EVID 3/4), numbered in record order;
    doses are sorted by (segment, time). ``rows`` (default: one per subject) gives the parameter
    rows: each segment's rows in time order, each dose's place among them, and the times where the
    next row takes over (the last record time of the row before, as NONMEM advances to a record
    with that record's parameters).
    """
    rec = data.records
    seg_ids, first, seg = np.unique(rec["_SEG"].to_numpy(), return_index=True, return_inverse=True)
    seg_t0 = rec["TIME"].to_numpy()[first].astype(float)
    seg_of_row = pd.Series(seg, index=rec["_ROW"].to_numpy())
    obs_seg = seg_of_row.loc[data.obs_row].to_numpy().astype(np.int64)
    dose_seg = seg_of_row.loc[data.dose_row].to_numpy().astype(np.int64)
    if np.any(np.diff(obs_seg) < 0):  # observations are kept in record order
        raise AssertionError("observations out of segment order")
    order = np.lexsort((np.arange(data.n_doses), data.dose_time, dose_seg))
    n_seg = len(seg_ids)
    obs_start = np.searchsorted(obs_seg, np.arange(n_seg + 1))
    dose_start = np.searchsorted(dose_seg[order], np.arange(n_seg + 1))
    cmt = data.dose_cmt[order]
    dose_state_idx = system.states.index(system.dose_state)
    state = np.where(cmt == 0, dose_state_idx, cmt - 1).astype(np.int64)
    lagf = state == dose_state_idx
    i_lag, i_f, i_d = (param_names.index(q) if q in param_names else -1 for q in DOSING_PARAMETERS)
    # SS doses: their dosing interval (the state before them is the periodic steady state, for
    # SS=2 added to the current one)
    ss_ii = np.where(data.dose_ss[order] > 0, data.dose_ii[order], 0.0).astype(float)
    ss_add = data.dose_ss[order] == 2
    periods = _periods(data, rows, n_seg)
    dose_k = periods[2][data.record_positions(data.dose_row[order])]
    return (
        data.obs_time.astype(float),
        obs_start.astype(np.int64),
        data.dose_time[order].astype(float),
        data.dose_amt[order].astype(float),
        data.dose_rate[order].astype(float),
        state,
        lagf,
        dose_start.astype(np.int64),
        seg_t0,
        np.int64(i_lag),
        np.int64(i_f),
        ss_ii,
        ss_add,
        periods[0],
        periods[1],
        dose_k.astype(np.int64),
        *periods[3:],
        np.int64(i_d),
    )


def _periods(data: EventData, rows: ParameterRows | None, n_seg: int):
    """Each segment's parameter rows (CSR), each record's place among them, and the changes.

    Returns ``row_start``, ``seg_rows``, each record's place among its segment's rows, and the
    changes' times, places and CSR starts.
    """
    rec_row = rows.record_row if rows is not None else data.records["_SUBJ"].to_numpy()
    runs = segment_runs(data, rec_row)
    row_start = np.searchsorted(runs["seg"], np.arange(n_seg + 1)).astype(np.int64)
    change = runs["place"] > 0  # the next row holds from the previous record's time
    chg_start = np.searchsorted(runs["seg"][change], np.arange(n_seg + 1)).astype(np.int64)
    record_place = runs["place"][runs["of_record"]]
    return row_start, runs["row"], record_place, runs["start"][change], runs["place"][change], chg_start
