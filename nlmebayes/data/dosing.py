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
    k = _ranges(n_addl + 1)
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


def _ranges(counts: np.ndarray) -> np.ndarray:
    """``0, 1, ..., c - 1`` for each count ``c``, concatenated (no Python loop)."""
    counts = np.asarray(counts, dtype=int)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(int(counts.sum())) - starts


def _not_cancelled(rep, k, dose_time, time, subject, segment) -> np.ndarray:
    """Mask of dose events that survive.

    Implied doses at or after the next reset of their subject are cancelled.
    """
    seg_ids, first = np.unique(segment, return_index=True)
    nxt = segment[rep] + 1
    pos = np.minimum(np.searchsorted(seg_ids, nxt), len(seg_ids) - 1)
    has_next = (seg_ids[pos] == nxt) & (subject[first[pos]] == subject[rep])
    cancelled = (k > 0) & has_next & (dose_time >= time[first[pos]])
    return ~cancelled


def dose_observation_pairs(doses: DoseEvents, obs_records, time, segment):
    """Pairs (observation, dose event) where the dose can contribute to the observation.

    A dose contributes if it is in the observation's reset segment and comes first (earlier
    time, or the same time and an earlier record). Vectorised: within a segment the doses that
    come first are a run of the doses sorted by (segment, time, record), found for every
    observation at once by binary search on one integer key.

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
        Observation index and dose-event index of each pair, grouped by observation, doses in
        event order.
    """
    obs_records = np.asarray(obs_records, dtype=int)
    if len(doses.record) == 0 or len(obs_records) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    t_rank = np.unique(np.r_[doses.time, time[obs_records]], return_inverse=True)[1]
    n_t, n_r = int(t_rank.max()) + 1, len(time) + 1
    seg_d, seg_o = segment[doses.record].astype(np.int64), segment[obs_records].astype(np.int64)
    rank_d, rank_o = t_rank[: len(doses.time)], t_rank[len(doses.time) :]
    key_d = (seg_d * n_t + rank_d) * n_r + doses.record
    key_o = (seg_o * n_t + rank_o) * n_r + obs_records
    order = np.argsort(key_d, kind="stable")
    sorted_d = key_d[order]
    lo = np.searchsorted(sorted_d, seg_o * n_t * n_r, side="left")
    hi = np.searchsorted(sorted_d, key_o, side="left")
    counts = hi - lo
    pair_obs = np.repeat(np.arange(len(obs_records)), counts)
    pair_dose = order[np.repeat(lo, counts) + _ranges(counts)]
    # grouped by observation, each group in event order (as the superposition sums expect)
    within = np.lexsort((pair_dose, pair_obs))
    return pair_obs[within].astype(int), pair_dose[within].astype(int)
