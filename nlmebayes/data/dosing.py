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

__all__ = ["DoseEvents", "expand_doses", "dose_observation_pairs", "dose_trains", "train_observation_pairs"]


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
    time, or the same time and an earlier record): :func:`train_observation_pairs` with every
    dose a train of one.

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
    singles = np.arange(len(doses.record))  # every dose a train of one
    pair_obs, pair_dose, _, _ = train_observation_pairs(doses, singles, obs_records, time, segment)
    return pair_obs, pair_dose


def dose_trains(doses: DoseEvents, key: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """Run id of each dose event: runs of equally spaced doses that superposition can sum at once.

    A run (a *train*) is a maximal sequence of a reset segment's dose events with the same
    ``key`` (>= 0), each the same time after the one before. Its contribution at time ``x`` after
    its latest dose is a finite geometric series in the spacing (see
    :mod:`nlmebayes.pk.analytic`), so one dose-observation pair stands for the whole train: a
    regimen of 180 daily doses costs each later observation one pair instead of 180. Events with
    ``key < 0`` are runs of one.

    Parameters
    ----------
    doses : DoseEvents
    key : int array
        Per dose event; events may share a train only if their keys are equal and >= 0 (same
        amount, compartment, route and every column that could change the parameters).
    rtol : float
        Spacings equal within ``rtol * max(1, |TIME|)`` count as equal (ADDL times are
        ``TIME + k * II`` in floating point).

    Returns
    -------
    int array
        Run id per event; runs are numbered in (segment, key, time) order.

    Examples
    --------
    >>> ev = expand_doses(np.array([0.0]), np.array([24.0]), np.array([3.0]), np.array([0.0]),
    ...                   np.array([True]), np.array([0]), np.array([1]))
    >>> dose_trains(ev, np.zeros(4, int)).tolist()
    [0, 0, 0, 0]
    """
    n = len(doses.time)
    key = np.where(key < 0, -1 - np.arange(n), key)  # a unique negative key: a run of one
    order = np.lexsort((doses.record, doses.time, key, doses.segment))
    t, seg, k = doses.time[order], doses.segment[order], key[order]
    gap = np.diff(t, prepend=np.nan)
    tol = rtol * np.maximum(1.0, np.abs(t))
    group_start = np.r_[True, (np.diff(seg) != 0) | (np.diff(k) != 0)]
    hard = group_start | ~(gap > tol)  # simultaneous doses cannot share a train
    # e continues the run of e-1 unless its gap differs from the gap before e-1 (when e-1 is not
    # a run's first event): every run's gaps then equal its first gap.
    prev_hard = np.r_[True, hard[:-1]]
    soft = ~hard & ~prev_hard & (np.abs(gap - np.r_[np.nan, gap[:-1]]) > tol)
    run = np.empty(n, int)
    run[order] = np.cumsum(hard | soft) - 1
    return run


def train_observation_pairs(doses: DoseEvents, run: np.ndarray, obs_records, time, segment):
    """Pairs (observation, train): each train's doses that come before the observation, as one pair.

    The doses of a train that come first (in the observation's segment, at an earlier time or at
    the same time and an earlier record) are its first ``count`` events. Vectorised: within a
    segment the trains that started before an observation are a run of the trains sorted by
    their first (segment, time, record), found for every observation at once by binary search on
    one integer key; so is each train's count.

    Parameters
    ----------
    doses : DoseEvents
    run : int array
        :func:`dose_trains` of ``doses``.
    obs_records, time, segment
        As in :func:`dose_observation_pairs`.

    Returns
    -------
    pair_obs, pair_dose, pair_first, pair_count : int arrays
        Observation, latest and first dose event of the train's counted doses, and their number;
        grouped by observation, in event order.
    """
    obs_records = np.asarray(obs_records, dtype=int)
    empty = np.zeros(0, int)
    if len(doses.record) == 0 or len(obs_records) == 0:
        return empty, empty, empty, empty
    # one integer key per event and observation: (segment, time, record), ranked
    t_rank = np.unique(np.r_[doses.time, time[obs_records]], return_inverse=True)[1]
    n_t, n_r = int(t_rank.max()) + 1, len(time) + 1
    seg_d, seg_o = segment[doses.record].astype(np.int64), segment[obs_records].astype(np.int64)
    key_d = (seg_d * n_t + t_rank[: len(doses.time)]) * n_r + doses.record
    key_o = (seg_o * n_t + t_rank[len(doses.time) :]) * n_r + obs_records
    rank = np.unique(np.r_[key_d, key_o], return_inverse=True)[1].astype(np.int64)
    rank_d, rank_o = rank[: len(key_d)], rank[len(key_d) :]
    # events by (run, key): each run a contiguous block, in time order
    by_run = np.lexsort((key_d, run))
    n_runs = int(run.max()) + 1
    first_pos = np.searchsorted(run[by_run], np.arange(n_runs))
    first_event = by_run[first_pos]
    # the runs that started before an observation are a range of runs sorted by first key
    run_order = np.argsort(key_d[first_event], kind="stable")
    sorted_first = key_d[first_event][run_order]
    lo = np.searchsorted(sorted_first, seg_o * n_t * n_r, side="left")
    hi = np.searchsorted(sorted_first, key_o, side="left")
    counts = hi - lo
    pair_obs = np.repeat(np.arange(len(obs_records)), counts)
    pair_run = run_order[np.repeat(lo, counts) + _ranges(counts)]
    # how many of the run's events come first: a binary search in (run, rank) order
    stride = len(rank) + 1
    event_key = run[by_run] * stride + rank_d[by_run]
    pos = np.searchsorted(event_key, pair_run * stride + rank_o[pair_obs])
    pair_count = pos - first_pos[pair_run]
    pair_dose = by_run[pos - 1]
    pair_first = first_event[pair_run]
    within = np.lexsort((pair_dose, pair_obs))
    return (
        pair_obs[within].astype(int),
        pair_dose[within].astype(int),
        pair_first[within].astype(int),
        pair_count[within].astype(int),
    )
