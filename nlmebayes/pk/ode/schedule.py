"""The dosing schedule of the data as flat per-segment arrays for the numba solver."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes.data import EventData

__all__ = ["schedule"]


def schedule(system, data: EventData, param_names):
    """Flat per-segment arrays for the solver.

    A segment is a subject's run of records between resets (EVID 3/4), numbered in record order; doses are
    sorted by (segment, time).
    """
    rec = data.records
    seg_ids, first, seg = np.unique(rec["_SEG"].to_numpy(), return_index=True, return_inverse=True)
    seg_subject = rec["_SUBJ"].to_numpy()[first].astype(np.int64)
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
    i_lag = param_names.index("TLAG") if "TLAG" in param_names else -1
    i_f = param_names.index("F") if "F" in param_names else -1
    # SS=1 boluses: their dosing interval (the state before them is the periodic steady state)
    ss_ii = np.where(data.dose_ss[order] == 1, data.dose_ii[order], 0.0).astype(float)
    return (
        data.obs_time.astype(float),
        obs_start.astype(np.int64),
        data.dose_time[order].astype(float),
        data.dose_amt[order].astype(float),
        data.dose_rate[order].astype(float),
        state,
        lagf,
        dose_start.astype(np.int64),
        seg_subject,
        seg_t0,
        np.int64(i_lag),
        np.int64(i_f),
        ss_ii,
    )
