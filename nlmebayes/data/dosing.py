"""Dose events from dose records.

ADDL/II expansion, cancellation at resets, and the dose-observation pairs that superposition sums over.

A reset segment is a subject's run of records up to a reset (EVID 3, EVID 4, or an SS=1 dose);
segments are numbered in record order and never span subjects. Implied ADDL doses stay in the
segment of the record that declared them unless a later reset in that subject ends it: an implied
dose at or after that reset is cancelled, as NONMEM does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DoseEvents", "expand_doses", "dose_observation_pairs"]


@dataclass(frozen=True)
class DoseEvents:
    """Dose events after ADDL expansion, sorted by (subject, time, record, k).

    Attributes
    ----------
    record : int array
        0-based index of the dose record each event comes from.
    k : int array
        0 for the record's own dose, k for its k-th implied (ADDL) dose.
    time : float array
        Event time ``TIME + k * II``.
    ss : int array
        SS of the record for its own dose; implied doses are not steady state themselves.
    segment : int array
        Reset segment of the declaring record.
    n_cancelled : int
        Implied doses cancelled by a later reset.
    """

    record: np.ndarray
    k: np.ndarray
    time: np.ndarray
    ss: np.ndarray
    segment: np.ndarray
    n_cancelled: int


def expand_doses(time, ii, addl, ss, is_dose, subject, segment) -> DoseEvents:
    """Expand dose records into dose events (record arrays in, one entry per record).

    Parameters
    ----------
    time, ii, addl, ss : float arrays
        The records' TIME, II, ADDL and SS.
    is_dose : bool array
        Dose records (EVID 1 or 4).
    subject, segment : int arrays
        0-based subject index and reset segment of each record.

    Returns
    -------
    DoseEvents

    Examples
    --------
    >>> ev = expand_doses(np.array([0.0]), np.array([12.0]), np.array([2.0]), np.array([0.0]),
    ...                   np.array([True]), np.array([0]), np.array([1]))
    >>> ev.time.tolist(), ev.k.tolist()
    ([0.0, 12.0, 24.0], [0, 1, 2])
    """
    dr = np.flatnonzero(is_dose)
    n_addl = addl[dr].astype(int)
    rep = np.repeat(dr, n_addl + 1)
    k = np.concatenate([np.arange(a + 1) for a in n_addl]) if len(dr) else np.zeros(0, int)
    dose_time = time[rep] + k * ii[rep]
    dose_ss = np.where(k == 0, ss[rep], 0).astype(int)
    # record order breaks time ties: an implied dose sorts after the record that declared it
    order = np.lexsort((k, rep, dose_time, subject[rep]))
    rep, k, dose_time, dose_ss = rep[order], k[order], dose_time[order], dose_ss[order]
    keep = _not_cancelled(rep, k, dose_time, time, subject, segment)
    return DoseEvents(
        record=rep[keep],
        k=k[keep],
        time=dose_time[keep],
        ss=dose_ss[keep],
        segment=segment[rep][keep],
        n_cancelled=int((~keep).sum()),
    )


def _not_cancelled(rep, k, dose_time, time, subject, segment) -> np.ndarray:
    """Mask of dose events that survive.

    Implied doses at or after the next reset of their subject are cancelled.
    """
    seg_start_time = {}
    for s_id in np.unique(segment):
        first = np.flatnonzero(segment == s_id)[0]
        seg_start_time[s_id] = (time[first], first)
    dose_seg = segment[rep]
    keep = np.ones(len(rep), bool)
    for j in np.flatnonzero(k > 0):
        nxt = dose_seg[j] + 1
        if nxt in seg_start_time and subject[seg_start_time[nxt][1]] == subject[rep[j]]:
            if dose_time[j] >= seg_start_time[nxt][0]:
                keep[j] = False
    return keep


def dose_observation_pairs(doses: DoseEvents, obs_records, time, segment):
    """Pairs (observation, dose event) where the dose can contribute to the observation.

    A dose contributes if it is in the observation's reset segment and comes first (earlier
    time, or the same time and an earlier record).

    Parameters
    ----------
    doses : DoseEvents
    obs_records : int array
        0-based record index of each observation.
    time, segment : arrays
        TIME and reset segment of every record.

    Returns
    -------
    pair_obs, pair_dose : int arrays
        Observation index and dose-event index of each pair.
    """
    pair_obs, pair_dose = [], []
    by_seg: dict[int, list[int]] = {}
    for j, sgm in enumerate(doses.segment):
        by_seg.setdefault(int(sgm), []).append(j)
    for oi, r in enumerate(obs_records):
        in_segment = by_seg.get(int(segment[r]))
        if not in_segment:
            continue
        cand = np.asarray(in_segment)
        t_d = doses.time[cand]
        before = (t_d < time[r]) | ((t_d == time[r]) & (doses.record[cand] < r))
        sel = cand[before]
        pair_obs.append(np.full(len(sel), oi))
        pair_dose.append(sel)
    po = np.concatenate(pair_obs) if pair_obs else np.zeros(0, int)
    pdose = np.concatenate(pair_dose) if pair_dose else np.zeros(0, int)
    return po.astype(int), pdose.astype(int)
