"""Linear compartment models whose parameters change between records, by matrix exponentials.

With time-varying covariates the individual parameters are piecewise constant in time
(:mod:`nlmebayes.data.periods`), and superposition of sum-of-exponential dose responses no longer
holds across a change. Within a period the system ``dA/dt = M A + u(t)`` is still linear with
constant ``M``, so it is solved exactly (to the rounding of the matrix exponential) as NONMEM's
ADVANs do, from record to record:

* the amounts at each period's start ``s_r`` carry the past: ``A(s_r) = e^{M_{r-1} (s_r - s_{r-1})}
  A(s_{r-1}) + w_r``, where ``w_r`` collects the inputs that fell in period ``r - 1``;
* an input's part inside a window ``(lo, hi]`` seen at time ``t`` is, for a bolus at ``a``,
  ``e^{M (t - a)} F AMT e_j``, and for an infusion at rate ``R`` over ``[a, a + dur]``,
  ``e^{M (t - h)} G(h - l) R e_j`` with ``l, h`` the infusion's overlap with the window and
  ``G(h) = int_0^h e^{M v} dv``, the top-right column of the exponential of
  ``[[M h, R e_j h], [0, 0]]``;
* an observation in period ``r`` is ``e^{M_r (t - s_r)} A(s_r)`` plus the inputs in ``(s_r, t]``.

Every exponential is one batched :func:`expm_small` (Taylor series with scaling and squaring,
differentiated through), so the whole data set is a fixed number of vectorised operations
plus one matrix-vector step per period place (a Python loop over the most periods of any
segment). This costs more than the closed forms (an exponential per dose-observation pair) and is
used only where parameters change within a subject. TLAG, F and D (RATE = -2) are those of the
dose's record. Steady-state doses are refused here.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from nlmebayes.data import DataError, EventData
from nlmebayes.data.periods import ParameterRows, segment_runs

__all__ = ["piecewise_concentration", "system_matrices", "occasion_carry_over"]


_SQUARINGS = 24  # scaling 2^-24: |M h| up to ~1e5 leaves a norm < 0.01 for the Taylor series
_TAYLOR_DEGREE = 8  # remainder < 0.01^9 / 9! relative


def _matmul(A, B):
    """Batched product of small matrices as one broadcast-and-sum (fused elementwise loops)."""
    return pt.sum(A[..., :, :, None] * B[..., None, :, :], axis=-2)


def expm_small(A):
    """``exp(A)`` for a batch of small matrices ``(..., n, n)``: Taylor series and squaring.

    ``exp(A) = exp(A / 2^s)^(2^s)`` with a fixed ``s`` (24), so the graph is the same for every
    parameter value; the series of degree 8 is exact to rounding for ``|A| / 2^s < 0.01``. The
    work is on ``F = exp(.) - I`` (squared as ``2F + F^2``), so the small scaled exponential keeps
    all its digits instead of losing them next to the identity. The gradient is the derivative
    of these products. PyTensor's ``expm`` (Pade) costs ~100 us per small matrix in the numba
    backend; this is a few fused loops for the whole batch.

    Examples
    --------
    >>> import numpy as np, scipy.linalg
    >>> a = np.array([[-1.0, 0.0], [1.0, -0.1]]) * 24.0
    >>> bool(np.allclose(expm_small(pt.as_tensor(a)).eval(), scipy.linalg.expm(a), rtol=0, atol=1e-15))
    True
    """
    n = A.shape[-1]
    eye = pt.eye(n)
    X = A / 2.0**_SQUARINGS
    G = eye + X / _TAYLOR_DEGREE
    for k in range(_TAYLOR_DEGREE - 1, 1, -1):  # Horner: F = X (I + X/2 (I + X/3 (...)))
        G = eye + _matmul(X, G) / k
    F = _matmul(X, G)
    for _ in range(_SQUARINGS):
        F = 2.0 * F + _matmul(F, F)
    return eye + F


def system_matrices(n_cpt: int, oral: bool, P: dict):
    """``M`` of ``dA/dt = M A`` per row, states [depot?, central, peripheral 1, peripheral 2].

    Examples
    --------
    >>> import numpy as np
    >>> M = system_matrices(1, True, {"CL": np.array([2.0]), "V": np.array([20.0]), "KA": np.array([1.0])})
    >>> M.eval()[0].tolist()
    [[-1.0, 0.0], [1.0, -0.1]]
    """
    n, c = n_cpt + int(oral), int(oral)
    k10 = P["CL"] / P["V"]
    M = pt.zeros((k10.shape[0], n, n))
    M = M[:, c, c].set(-k10)
    if oral:
        M = M[:, 0, 0].set(-P["KA"])
        M = M[:, c, 0].set(P["KA"])
    for j, (Q, Vp) in enumerate((("Q", "V2"), ("Q3", "V3"))[: n_cpt - 1]):
        kcp, kpc, p = P[Q] / P["V"], P[Q] / P[Vp], c + 1 + j
        M = M[:, c, c].inc(-kcp)
        M = M[:, p, c].inc(kcp)
        M = M[:, c, p].inc(kpc)
        M = M[:, p, p].inc(-kpc)
    return M


def _runs(data: EventData, rows: ParameterRows) -> dict:
    """Each segment's periods (:func:`~nlmebayes.data.periods.segment_runs`) and more.

    Adds each window's lower end, each observation's and dose's run, and the doses' segments and
    record times.
    """
    runs = segment_runs(data, rows.record_row)
    lower = np.where(runs["place"] > 0, runs["start"], -np.inf)  # a segment's first takes all before
    dose_position = data.record_positions(data.dose_row)
    dose_run = runs["of_record"][dose_position]
    return runs | dict(
        lower=lower,
        obs=runs["of_record"][data.record_positions(data.obs_row)],
        dose=dose_run,
        dose_seg=runs["seg"][dose_run],
        dose_record_time=data.records["TIME"].to_numpy().astype(float)[dose_position],
    )


def _window_amounts(M, end, lower, a, dur, R, amount, state, infusion: np.ndarray, n: int):
    """Amounts at ``end`` of the inputs that fall inside ``(lower, end]``, per (window, dose) pair.

    ``M`` (pairs, n, n); ``a`` effective dose time; boluses give ``amount``, infusions (static
    mask ``infusion``) run at ``R`` for ``dur``; ``state`` (int array) is where the dose enters.
    """
    out = pt.zeros((len(infusion), n))
    bol = np.flatnonzero(~infusion)
    if len(bol):
        ab, eb = a[bol], end[bol]
        inside = (ab > lower[bol]) & (ab <= eb)
        h = pt.switch(inside, eb - ab, 0.0)  # no overflow in a window that does not count
        E = expm_small(M[bol] * h[:, None, None])
        col = E[np.arange(len(bol)), :, state[bol]] * amount[bol][:, None]
        out = out[bol].set(pt.switch(inside[:, None], col, 0.0))
    inf = np.flatnonzero(infusion)
    if len(inf):
        ai, ei = a[inf], end[inf]
        lo = pt.maximum(ai, lower[inf])
        hi = pt.minimum(ai + dur[inf], ei)
        inside = hi > lo
        h1 = pt.switch(inside, hi - lo, 0.0)
        h2 = pt.switch(inside, ei - hi, 0.0)
        aug = pt.zeros((len(inf), n + 1, n + 1))
        aug = aug[:, :n, :n].set(M[inf] * h1[:, None, None])
        aug = aug[np.arange(len(inf)), state[inf], n].set(R[inf] * h1)
        G = expm_small(aug)[:, :n, n]  # int_0^h1 e^{M v} dv R e_j
        col = pt.sum(expm_small(M[inf] * h2[:, None, None]) * G[:, None, :], axis=-1)
        out = out[inf].set(pt.switch(inside[:, None], col, 0.0))
    return out


def _dose_inputs(model, data: EventData, P: dict, dose_row: np.ndarray) -> dict:
    """Per dose: effective time, infusion length and rate, bolus amount, state entered."""
    cmt = data.dose_cmt
    into_depot = (cmt <= 1) if model.oral else np.zeros(len(cmt), bool)
    target = into_depot if model.oral else np.ones(len(cmt), bool)  # TLAG and F act on it

    def at_dose(name, default):
        return pt.switch(target, P[name][dose_row], default) if name in P else pt.as_tensor(default)

    lag, F = at_dose("TLAG", 0.0), at_dose("F", 1.0)
    rate = data.dose_rate
    if (rate == -2).any() and "D" not in P:
        raise ValueError("the data have RATE = -2 (modelled duration): the model needs D")
    D = P["D"][dose_row] if "D" in P else pt.ones(len(rate))
    safe = np.where(rate > 0, rate, 1.0)
    dur = pt.switch(rate == -2, D, pt.switch(rate > 0, F * data.dose_amt / safe, 0.0))
    R = pt.switch(rate == -2, F * data.dose_amt / D, safe)
    state = np.where(into_depot, 0, int(model.oral))
    amount = F * data.dose_amt
    return dict(a=data.dose_time + lag, dur=dur, R=R, amount=amount, state=state, infusion=rate != 0)


def piecewise_concentration(model, data: EventData, params: dict, rows: ParameterRows):
    """Central concentration at every observation with parameters per period (``rows``).

    Parameters
    ----------
    model : Compartmental
        The compartment model (its size and input).
    data : EventData
    params : dict of str -> tensor
        Structural parameters, one entry per row of ``rows``.
    rows : ParameterRows

    Returns
    -------
    tensor of shape ``(n_obs,)``
    """
    if np.any(data.dose_ss > 0):
        j = int(np.flatnonzero(data.dose_ss > 0)[0])
        raise DataError(
            "steady-state doses with parameters that change within a subject need an ODE model",
            source=data.source,
            row=int(data.dose_row[j]),
            column="SS",
        )
    n, c = model.n_cpt + int(model.oral), int(model.oral)
    P = {k: pt.as_tensor_variable(v) * pt.ones(rows.n_rows) for k, v in params.items()}
    M = system_matrices(model.n_cpt, model.oral, P)
    runs = _runs(data, rows)
    dose = _dose_inputs(model, data, P, runs["row"][runs["dose"]])
    x = _period_starts(M, runs, dose, data, n, P)
    # observations: the carried amounts plus the inputs of their own period
    flat = data.without_trains()
    o, d = flat.pair_obs, flat.pair_dose
    t = data.obs_time
    ro = runs["obs"]
    if "TLAG" not in P:
        keep = _may_count(dose, data, d, runs["lower"][ro[o]])
        o, d = o[keep], d[keep]
    pair = _window_amounts(M[runs["row"][ro[o]]], t[o], runs["lower"][ro[o]], *_at(dose, d), n)
    Eo = expm_small(M[runs["row"][ro]] * (t - runs["start"][ro])[:, None, None])
    amount = pt.sum(Eo[:, c, :] * x[ro], axis=-1)
    amount = amount + pt.zeros(data.n_obs)[o].inc(pair[:, c]) if len(o) else amount
    return amount / P["V"][runs["row"][ro]]


def _may_count(dose: dict, data: EventData, d: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Whether dose ``d`` can add to a window with lower end ``lower``, without TLAG.

    A bolus then enters at its record time, so one at or before the window's lower end never
    counts there (pruned from the graph); an infusion may still be running.
    """
    return dose["infusion"][d] | (data.dose_time[d] > lower)


def _at(dose: dict, d: np.ndarray) -> tuple:
    """The dose inputs of the pairs' doses ``d``, in :func:`_window_amounts`' order."""
    return (
        dose["a"][d],
        dose["dur"][d],
        dose["R"][d],
        dose["amount"][d],
        dose["state"][d],
        dose["infusion"][d],
    )


def _period_starts(M, runs: dict, dose: dict, data: EventData, n: int, P: dict):
    """Amounts at each period's start (zero at a segment's first), period after period."""
    n_runs = len(runs["row"])
    later = np.flatnonzero(runs["place"] > 0)
    x = pt.zeros((n_runs, n))
    if not len(later):
        return x
    # (run, dose) pairs: the doses of the run's segment recorded up to its start
    order = np.argsort(runs["dose_seg"], kind="stable")
    lo = np.searchsorted(runs["dose_seg"][order], runs["seg"][later], side="left")
    hi = np.searchsorted(runs["dose_seg"][order], runs["seg"][later], side="right")
    r = np.repeat(later, hi - lo)
    d = order[np.repeat(lo - np.cumsum(np.r_[0, hi - lo][:-1]), hi - lo) + np.arange(len(r))]
    keep = runs["dose_record_time"][d] <= runs["start"][r]
    if "TLAG" not in P:
        keep &= _may_count(dose, data, d, runs["lower"][r - 1])
    r, d = r[keep], d[keep]
    prev = r - 1  # the run before, in the same segment
    w = pt.zeros((n_runs, n))
    if len(r):
        Mp, lower = M[runs["row"][prev]], runs["lower"][prev]
        w = w[r].inc(_window_amounts(Mp, runs["start"][r], lower, *_at(dose, d), n))
    span = runs["start"][later] - runs["start"][later - 1]
    Phi = expm_small(M[runs["row"][later - 1]] * span[:, None, None])
    for k in range(1, int(runs["place"].max()) + 1):
        sel = np.flatnonzero(runs["place"][later] == k)
        now = later[sel]
        carried = pt.sum(Phi[sel] * x[now - 1][:, None, :], axis=-1)
        x = x[now].set(carried + w[now])
    return x


def occasion_carry_over(model, data: EventData, column: str, typical: dict) -> float:
    """The largest fraction of a dose still in the body when a later occasion starts.

    Over every occasion change within a reset segment: ``exp(-r gap)`` with ``gap`` the time
    from the latest dose (ADDL doses included) to the new occasion's first record and ``r`` half
    the slowest rate of the system at the ``typical`` values (a subject may eliminate slower than
    typical). 0 when no occasion starts after a dose of its segment.

    Examples
    --------
    >>> import pandas as pd
    >>> from nlmebayes import read_nonmem
    >>> from nlmebayes.pk.analytic import MODELS
    >>> d = read_nonmem(pd.DataFrame(dict(ID=1, TIME=[0, 1, 24, 25], AMT=[100, 0, 100, 0],
    ...                                   DV=[0, 5.0, 0, 5.0], OCC=[1, 1, 2, 2])))
    >>> round(occasion_carry_over(MODELS["1cpt_iv"], d, "OCC", {"CL": 2.0, "V": 20.0}), 3)
    0.301
    """
    rec = data.records
    seg, occ = rec["_SEG"].to_numpy(), rec[column].to_numpy()
    change = np.flatnonzero(np.r_[False, (seg[1:] == seg[:-1]) & (occ[1:] != occ[:-1])])
    if not len(change):
        return 0.0
    dose_seg, dose_t = seg[data.record_positions(data.dose_row)], data.dose_time
    order = np.lexsort((dose_t, dose_seg))
    key = dose_seg[order] + 1j * dose_t[order]  # (segment, time): complex numbers sort by both
    t = rec["TIME"].to_numpy().astype(float)
    before = np.searchsorted(key, seg[change] + 1j * t[change], side="left") - 1  # doses before it
    ok = (before >= 0) & (dose_seg[order][np.maximum(before, 0)] == seg[change])
    if not ok.any():
        return 0.0
    gap = t[change][ok] - dose_t[order][before[ok]]
    P = {k: np.atleast_1d(float(v)) for k, v in typical.items()}
    # evaluated once at build time: Python mode, not a compiled function (0.01 vs ~0.6 s)
    M = np.array(system_matrices(model.n_cpt, model.oral, P).eval(mode="FAST_COMPILE"))[0]
    rate = np.min(-np.linalg.eigvals(M).real)
    return float(np.exp(-0.5 * rate * gap.min()))
