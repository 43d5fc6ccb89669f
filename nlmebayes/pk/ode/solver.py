"""The event loop of the ODE solver (numba).

Every reset segment of every subject is solved through its doses, infusions and observations,
with the sensitivity jumps that TLAG and F cause.

Dosing: bolus doses add to their state; infusions (RATE > 0) are piecewise-constant inputs; TLAG
and F (if the model has them) act on doses into the dose state, F scaling the amount (and the
infusion's duration, as NONMEM does). Sensitivities jump at doses (F) and at event times that
move with TLAG and F. Each segment starts from the initial amounts at its first record's time.

Like :mod:`.integrators`, the functions here are templates compiled per model by
:func:`make_solver` (through :func:`specialise`).
"""

from __future__ import annotations

import types

import numba
import numpy as np

from nlmebayes.pk.ode import integrators

__all__ = [
    "make_solver",
    "specialise",
    "solve_segments",
    "solve_into",
    "c_solver",
    "pack_schedule",
    "C_SIGNATURE",
]

# Event kinds, and their order at equal times: an SS start, doses, infusion ends, observations,
# then a change of parameters (the next period's, which hold from this time on).
_OBSERVATION, _BOLUS, _INFUSION_START, _INFUSION_END, _SS_START, _CHANGE = 0, 1, 2, 3, 4, 5

# Bound per model by specialise() (see make_solver): n_par parameters per row, n_p sensitivity
# columns (n_par per row of a segment, for the most rows any segment has), the sizes of the
# integrated flat state N and of the inputs r, NR (see integrators); the kernel's ``derive`` and
# the number of parameter subexpressions it writes after each row's block column, n_const.
kernel = derive = init = step_to = None
n_states = n_p = n_par = N = NR = n_const = 0
i_clock = -1


def specialise(templates, bound: dict) -> dict:
    """Compile numba copies of ``templates`` that share one namespace.

    The namespace holds the templates' module globals (constants), ``bound`` (the model's
    functions and sizes) and the compiled copies themselves, so that they call each other
    directly and numba folds the sizes as constants. Returns the namespace.

    Examples
    --------
    >>> act = np.zeros(1, dtype=np.int64)
    >>> ns = specialise([integrators.error_norm], {"n_states": 1, "n_p": 1, "N": 2, "NA": 1, "NR": 2,
    ...                                            "ACT_J": act})
    >>> z = np.ones(2)
    >>> float(ns["error_norm"](np.zeros(2), z, z, 1e-6, 1e-8, np.ones(1)))
    0.0
    """
    ns: dict = {}
    for fn in templates:
        ns.update(fn.__globals__)
    ns.update(bound)
    for fn in templates:
        copy = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, fn.__closure__)
        copy.__doc__ = fn.__doc__
        ns[fn.__name__] = numba.njit(cache=False, fastmath=False)(copy)
    return ns


def make_solver(
    method: str,
    n_states: int,
    n_p: int,
    kernel,
    init,
    derive,
    n_const: int,
    rhs=None,
    jac=None,
    max_steps: int = 100_000,
    i_clock: int = -1,
    n_rows: int = 1,
    active=None,
):
    """The compiled ``solve(P, *schedule, rtol, atol) -> (A, SA, counters)`` of one ODE system.

    Parameters
    ----------
    method : {"dopri5", "rosenbrock23"}
        The integrator.
    n_states, n_p : int
        Number of states and of parameters (per row).
    kernel, init, derive : numba functions
        The generated right-hand side + sensitivity kernel, initial amounts and the kernel's
        parameter subexpressions (:mod:`.codegen`).
    n_const : int
        How many values ``derive`` writes after each row's parameters and block column.
    rhs, jac : numba functions, optional
        ``(y, p) -> (f, df/dy, df/dp)`` and the augmented system's Jacobian (Rosenbrock only).
    max_steps : int
        Steps allowed per segment before the solve returns NaN.
    i_clock : int
        The state that is the time ``t`` (``dt/dt = 1``, set to each segment's start time), for
        right-hand sides that use ``t``; -1 if none.
    n_rows : int
        The most rows of parameters (periods) in one segment; the kernel must have
        ``n_rows * n_p`` sensitivity columns.
    active : ndarray of bool, optional
        The sensitivities integrated (:func:`~.codegen.sensitivity_pattern`, the one the kernel
        was generated with); default all.

    Returns
    -------
    dict
        The namespace of the compiled functions: ``solve_segments`` (arguments: the subjects'
        parameters ``P`` (n_rows x n_p), the arrays of :func:`~.schedule.schedule` and the
        tolerances) and ``solve_into``, which :func:`c_solver` puts behind a C signature.
    """
    if n_rows > 1 and method == "rosenbrock23":
        raise NotImplementedError(
            "parameters that change within a subject (IOV, time-varying covariates) need "
            "method='dopri5'; the Rosenbrock method does not support them yet"
        )
    width = n_rows * n_p
    if active is None:
        active = np.ones((n_states, width), dtype=bool)
    if method == "rosenbrock23" and not active.all():
        raise ValueError("the Rosenbrock method integrates every sensitivity")
    act_i, act_j = np.nonzero(active)  # row-major, the kernel's order
    bound = dict(kernel=kernel, derive=derive, n_const=n_const, init=init, rhs=rhs, jac=jac,
                 n_states=n_states, n_p=width, n_par=n_p,
                 N=n_states + len(act_i), NA=len(act_i), NR=n_states * (1 + width),
                 ACT_I=act_i.astype(np.int64), ACT_J=act_j.astype(np.int64), max_steps=max_steps,
                 i_clock=i_clock)  # fmt: skip
    ns = specialise(integrators.TEMPLATES + TEMPLATES, bound)
    ns["step_to"] = ns["rosenbrock23" if method == "rosenbrock23" else "dopri5"]
    return ns


def c_solver(ns: dict, cache_key: str):
    """:func:`c_solve` of the system compiled in ``ns`` (:func:`make_solver`) as a numba cfunc.

    Called by address, the solver stays out of the compiled model's own code: nutpie's final
    compile then neither optimises nor generates it again (which took ~2.5 s of every ODE fit's
    compile). It is cached on disk in PyTensor's numba cache under ``cache_key`` (which must
    name everything the namespace binds), so a new process loads it instead of compiling it
    (~25 s for a one-compartment model). With PyTensor's numba cache switched off it is compiled
    in every process.
    """
    import pytensor
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    fn = types.FunctionType(c_solve.__code__, ns, "c_solve")
    CACHED_SRC_FUNCTIONS[fn] = cache_key
    # Only PyTensor's locator tells systems apart (by cache_key): numba's own would file every
    # system's c_solve (same code, other globals) under one name and load the wrong one
    cache = bool(pytensor.config.numba__cache)
    return numba.cfunc(C_SIGNATURE, cache=cache, fastmath=False)(fn)


def rate_of(y, p, r):
    """``f(y) + r`` from the generated kernel (sensitivity part unused)."""
    z = np.zeros(N)
    z[:n_states] = y
    out = np.empty(N)
    kernel(z, p, r, out)
    return out[:n_states].copy()


def segment_events(ps, dose_k, o0, o1, d0, d1, obs_t, dose_t, dose_amt, dose_rate, dose_lagf, i_lag, i_f,
                   ss_ii, c0, c1, chg_t, i_d):  # fmt: skip
    """A segment's events in time order: times, kinds, indices, the order and the count.

    The events are each dose (lagged), each infusion's end (its length scaled by F), each
    observation, at the record time of an SS dose the start of its steady state, and each
    change of parameters. A dose's TLAG, F and D are those of its record's row (``ps[dose_k]``);
    a RATE = -2 infusion lasts D.
    """
    n_ev = (o1 - o0) + 3 * (d1 - d0) + (c1 - c0)
    et = np.empty(n_ev)
    pr = np.empty(n_ev)
    kind = np.empty(n_ev, dtype=np.int64)
    idx = np.empty(n_ev, dtype=np.int64)
    m = 0
    for k in range(d0, d1):
        pd = ps[dose_k[k]]
        lag = pd[i_lag] if (i_lag >= 0 and dose_lagf[k]) else 0.0
        F = pd[i_f] if (i_f >= 0 and dose_lagf[k]) else 1.0
        et[m] = dose_t[k] + lag
        pr[m] = 0.0
        infusion = dose_rate[k] > 0 or dose_rate[k] == -2.0
        kind[m] = _INFUSION_START if infusion else _BOLUS
        idx[m] = k
        m += 1
        if ss_ii[k] > 0.0:
            et[m] = dose_t[k]
            pr[m] = -1.0  # before the dose and any sample at that time
            kind[m] = _SS_START
            idx[m] = k
            m += 1
        if infusion:
            dur = pd[i_d] if dose_rate[k] == -2.0 else F * dose_amt[k] / dose_rate[k]
            et[m] = dose_t[k] + lag + dur
            pr[m] = 1.0
            kind[m] = _INFUSION_END
            idx[m] = k
            m += 1
    for j in range(o0, o1):
        et[m] = obs_t[j]
        pr[m] = 2.0
        kind[m] = _OBSERVATION
        idx[m] = j
        m += 1
    for j in range(c0, c1):
        et[m] = chg_t[j]
        pr[m] = 3.0  # after everything at that time: the next period starts there
        kind[m] = _CHANGE
        idx[m] = j
        m += 1
    # order by (time, priority): insertion sort, events per subject are few
    order = np.arange(m)
    for a in range(1, m):
        b = a
        while b > 0 and (
            et[order[b - 1]] > et[order[b]]
            or (et[order[b - 1]] == et[order[b]] and pr[order[b - 1]] > pr[order[b]])
        ):
            tmp = order[b - 1]
            order[b - 1] = order[b]
            order[b] = tmp
            b -= 1
    return et, kind, idx, order, m


def apply_dose_event(kind, k, y, S, p, pd, r, dose_state, dose_lagf, dose_amt, dose_rate, i_lag, i_f, i_d):
    """A bolus, infusion start or infusion end at its (lagged) time, with the sensitivity jumps.

    F scales a bolus; an event time that moves with TLAG (or, for an infusion's end, with F or D)
    makes the sensitivities jump by the change in the right-hand side. A RATE = -2 infusion runs at
    ``F AMT / D``: its rate's derivatives in F and D enter ``r`` after the rates (they drive the
    sensitivities while it runs). ``p`` are the parameters that hold now, ``pd`` those of the
    dose's record (its F, TLAG and D, whose sensitivity columns start at ``pd[n_par]``).
    """
    c = dose_state[k]
    applies = dose_lagf[k]
    od = int(pd[n_par])
    F = pd[i_f] if (i_f >= 0 and applies) else 1.0
    modelled = dose_rate[k] == -2.0
    rate = F * dose_amt[k] / pd[i_d] if modelled else dose_rate[k]
    f_before = rate_of(y, p, r)
    if kind == _BOLUS:
        y = y.copy()
        y[c] += F * dose_amt[k]
        if i_f >= 0 and applies:
            S = S.copy()
            S[c, od + i_f] += dose_amt[k]
    else:
        sign = 1.0 if kind == _INFUSION_START else -1.0
        r = r.copy()
        r[c] += sign * rate
        if modelled:  # d rate / dD and d rate / dF
            r[n_states + c * n_p + od + i_d] -= sign * rate / pd[i_d]
            if i_f >= 0 and applies:
                r[n_states + c * n_p + od + i_f] += sign * dose_amt[k] / pd[i_d]
        if kind == _INFUSION_END and abs(r[c]) < 1e-12 * abs(rate):
            r[c] = 0.0
            for j in range(n_p):
                r[n_states + c * n_p + j] = 0.0
    f_after = rate_of(y, p, r)
    jump = f_before - f_after
    if i_lag >= 0 and applies:
        S = S.copy()
        S[:, od + i_lag] += jump
    if kind == _INFUSION_END and modelled:
        S = S.copy()
        S[:, od + i_d] += jump
    elif kind == _INFUSION_END and i_f >= 0 and applies:
        S = S.copy()
        S[:, od + i_f] += jump * dose_amt[k] / dose_rate[k]
    return y, S, r


def steady_state(k, t, y, S, pd, h, rtol, a_tol, scale, counters, q_t, q_k, A, SA, ss_ii, ss_add,
                 dose_state, dose_lagf, dose_amt, dose_rate, i_lag, i_f):  # fmt: skip
    """The state at the record time ``t`` of SS dose ``k`` (bolus or infusion) at steady state.

    The periodic steady state of that dose every ``ss_ii[k]``, its earlier doses given at
    ``t + lag - n II``, under the parameters ``pd`` of the dose's record (which hold up to it).
    SS=1 replaces the state (the segment starts here); SS=2 adds it to the current state, as
    NONMEM does (exact for linear systems).

    From zero amounts, whole dosing cycles (:func:`ss_cycle`) repeat until the state and its
    sensitivities just before a dose change by less than the tolerances over a cycle; one more
    dose and ``II - lag`` of integration give the state at the record time, where the dose itself
    follows after its lag. The trough does not move with TLAG; the state at the record time does,
    by ``-f`` (the flow's derivative in its duration). The cycles run in the dose's own time (the
    clock, if any, is put back after each); F enters every dose (an infusion's length with it).
    An infusion must end before the record time (``F AMT / RATE <= II - lag``): else NaN.
    """
    y_before, S_before = y, S
    ii = ss_ii[k]
    applies = dose_lagf[k]
    lag = (pd[i_lag] % ii) if (applies and i_lag >= 0) else 0.0
    F = pd[i_f] if (applies and i_f >= 0) else 1.0
    dur = F * dose_amt[k] / dose_rate[k] if dose_rate[k] > 0 else 0.0
    y = np.zeros(n_states)
    S = np.zeros((n_states, n_p))
    if dur > ii - lag:
        return y * np.nan, S * np.nan, h
    if i_clock >= 0:
        y[i_clock] = t
    for _ in range(5000):
        y0, S0 = y.copy(), S.copy()
        y, S, h = ss_cycle(k, t, ii, dur, y, S, pd, h, rtol, a_tol, scale, counters, q_t, q_k, A, SA,
                           dose_state, dose_lagf, dose_amt, dose_rate, i_f)  # fmt: skip
        if np.max(np.abs(y - y0)) <= rtol * np.max(np.abs(y)) + a_tol and np.max(np.abs(S - S0)) <= (
            rtol * np.max(np.abs(S)) + a_tol
        ):
            break
    if lag > 0.0:
        y, S, h = ss_cycle(k, t, ii - lag, dur, y, S, pd, h, rtol, a_tol, scale, counters, q_t, q_k, A, SA,
                           dose_state, dose_lagf, dose_amt, dose_rate, i_f)  # fmt: skip
    if applies and i_lag >= 0:
        S = S.copy()
        S[:, int(pd[n_par]) + i_lag] -= rate_of(y, pd, np.zeros(NR))
    if ss_add[k]:
        y = y + y_before
        S = S + S_before
        if i_clock >= 0:
            y[i_clock] = t
    return y, S, h


def ss_cycle(k, t, span, dur, y, S, pd, h, rtol, a_tol, scale, counters, q_t, q_k, A, SA,
             dose_state, dose_lagf, dose_amt, dose_rate, i_f):  # fmt: skip
    """Dose ``k`` (a bolus, or an infusion of length ``dur``), then integrate to ``span`` after it.

    The end of an infusion moves with F: its sensitivity jumps there (:func:`apply_dose_event`).
    """
    r = np.zeros(NR)
    if dur > 0.0:
        y, S, r = apply_dose_event(
            _INFUSION_START, k, y, S, pd, pd, r, dose_state, dose_lagf, dose_amt, dose_rate, -1, i_f, -1
        )
        h = min(h, dur) if h > 0.0 else dur
        y, S, h = step_to(t, t + dur, y, S, pd, r, rtol, a_tol, h, scale, counters, q_t, q_k, 0, A, SA)
        y, S, r = apply_dose_event(
            _INFUSION_END, k, y, S, pd, pd, r, dose_state, dose_lagf, dose_amt, dose_rate, -1, i_f, -1
        )
    else:
        y, S, r = apply_dose_event(
            _BOLUS, k, y, S, pd, pd, r, dose_state, dose_lagf, dose_amt, dose_rate, -1, i_f, -1
        )
    if span > dur:
        h = min(h, span - dur) if h > 0.0 else span - dur
        y, S, h = step_to(t + dur, t + span, y, S, pd, r, rtol, a_tol, h, scale, counters, q_t, q_k, 0, A, SA)
    if i_clock >= 0:
        y[i_clock] = t
    return y, S, h


def segment_rows(P, g, row_start, seg_rows):
    """The parameter rows of segment ``g``, each with its first column and kernel constants.

    After a row's parameters: its first sensitivity column, then the kernel's subexpressions of
    its parameters (``derive``).
    """
    K = row_start[g + 1] - row_start[g]
    ps = np.zeros((K, n_par + 1 + n_const))
    for k in range(K):
        ps[k, :n_par] = P[seg_rows[row_start[g] + k]]
        ps[k, n_par] = k * n_par
        derive(ps[k])
    scale = np.ones(n_p)  # sensitivities are compared as d amount / d log p (error_norm)
    for k in range(K):
        for j in range(n_par):
            scale[k * n_par + j] = abs(ps[k, j]) + 1e-12
    return ps, scale


def solve_segments(P, obs_t, obs_start, dose_t, dose_amt, dose_rate, dose_state, dose_lagf, dose_start,
                   seg_t0, i_lag, i_f, ss_ii, ss_add, row_start, seg_rows, dose_k, chg_t, chg_k, chg_start,
                   i_d, rtol, atol):  # fmt: skip
    """Solve every segment: amounts and sensitivities at the observations, and step counters.

    Returns ``A`` (n_obs, n_states), ``SA`` (n_obs, n_states, n_p) and the counters (steps,
    rejected, steps of the last segment); :func:`solve_into` does the work.
    """
    n_obs = obs_t.shape[0]
    A = np.zeros((n_obs, n_states))
    SA = np.zeros((n_obs, n_states, n_p))
    counters = solve_into(P, obs_t, obs_start, dose_t, dose_amt, dose_rate, dose_state, dose_lagf, dose_start,
                          seg_t0, i_lag, i_f, ss_ii, ss_add, row_start, seg_rows, dose_k, chg_t, chg_k,
                          chg_start, i_d, rtol, atol, A, SA)  # fmt: skip
    return A, SA, counters


def solve_into(P, obs_t, obs_start, dose_t, dose_amt, dose_rate, dose_state, dose_lagf, dose_start,
               seg_t0, i_lag, i_f, ss_ii, ss_add, row_start, seg_rows, dose_k, chg_t, chg_k, chg_start,
               i_d, rtol, atol, A, SA):  # fmt: skip
    """Solve every segment into ``A`` (n_obs, n_states) and ``SA`` (n_obs, n_states, n_p).

    Returns the counters (steps, rejected, steps of the last segment). Each reset segment (a
    subject's records up to a reset, EVID 3/4) starts from the initial amounts at its first
    record's time, with the parameters of its first row; at each change (``chg_t``) the next
    row's hold (``chg_k``: its place among the segment's rows ``seg_rows[row_start[g]:]``, whose
    sensitivities are the columns ``k n_par ...``). Observations wait in a queue until the next
    dose, change or the end is integrated to, so that the integrator can interpolate them.

    One numba loop over segments and events, kept whole (about 70 lines of code): split further
    it would pass the same arrays to a function per event.
    """
    A[:] = 0.0
    SA[:] = 0.0
    counters = np.zeros(3, dtype=np.int64)  # steps, rejected steps, steps of this segment
    for g in range(seg_t0.shape[0]):
        counters[2] = 0
        o0, o1 = obs_start[g], obs_start[g + 1]
        d0, d1 = dose_start[g], dose_start[g + 1]
        c0, c1 = chg_start[g], chg_start[g + 1]
        if o1 == o0:
            continue
        ps, scale = segment_rows(P, g, row_start, seg_rows)
        p = ps[0]
        y = np.zeros(n_states)
        S = np.zeros((n_states, n_p))
        init(p, y, S)
        if i_clock >= 0:
            y[i_clock] = seg_t0[g]  # the clock reads the time
        amax = 1e-300
        for k in range(d0, d1):
            amax = max(amax, abs(dose_amt[k]))
        for i in range(n_states):
            if i != i_clock:  # amounts set the absolute tolerance; the clock's size does not
                amax = max(amax, abs(y[i]))
        a_tol = atol * amax
        et, kind, idx, order, m = segment_events(ps, dose_k, o0, o1, d0, d1, obs_t, dose_t, dose_amt,
                                                 dose_rate, dose_lagf, i_lag, i_f, ss_ii, c0, c1,
                                                 chg_t, i_d)  # fmt: skip
        r = np.zeros(NR)
        t = seg_t0[g]
        h = 1e-3
        q_t = np.empty(m)
        q_k = np.empty(m, dtype=np.int64)
        nq = 0
        for q in range(m):
            e = order[q]
            te = et[e]
            k = idx[e]
            if kind[e] == _OBSERVATION:
                if te > t:
                    q_t[nq] = te
                    q_k[nq] = k
                    nq += 1
                else:
                    A[k] = y
                    SA[k] = S
                continue
            if te > t:
                if h <= 0.0 or h > te - t:
                    h = te - t
                y, S, h = step_to(t, te, y, S, p, r, rtol, a_tol, h, scale, counters, q_t, q_k, nq, A, SA)
                nq = 0
                t = te
            if kind[e] == _CHANGE:
                p = ps[chg_k[k]]
                continue
            pd = ps[dose_k[k]]
            if kind[e] == _SS_START:
                y, S, h = steady_state(k, t, y, S, pd, h, rtol, a_tol, scale, counters, q_t, q_k, A, SA,
                                       ss_ii, ss_add, dose_state, dose_lagf, dose_amt, dose_rate,
                                       i_lag, i_f)  # fmt: skip
                if not ss_add[k]:
                    r = np.zeros(NR)  # SS=1 resets: no infusion runs on
                continue
            y, S, r = apply_dose_event(
                kind[e], k, y, S, p, pd, r, dose_state, dose_lagf, dose_amt, dose_rate, i_lag, i_f, i_d
            )
            h = 1e-3 * max(1.0, abs(t))
        if nq:
            if h <= 0.0 or h > q_t[nq - 1] - t:
                h = q_t[nq - 1] - t
            step_to(t, q_t[nq - 1], y, S, p, r, rtol, a_tol, h, scale, counters, q_t, q_k, nq, A, SA)
    return counters


def c_solve(P_ptr, n_batch, n_rows, F_ptr, I_ptr, rtol, atol, A_ptr, SA_ptr):
    """:func:`solve_into` behind a C signature (:data:`C_SIGNATURE`), for a call by address.

    Solves ``n_batch`` parameter matrices (posterior draws, one after the other in ``P``, each
    ``n_rows x n_par``) into as many blocks of ``A`` and ``SA``: a batch of draws costs one call
    (a model's own density passes one). The schedule comes packed (:func:`pack_schedule`): float
    arrays in ``F``, integer and boolean arrays and the three indices in ``I``, whose first
    ``2 + 2 * 20`` entries are the lengths of ``I`` and ``F`` and each argument's (start, stop).
    """
    n_i = numba.carray(I_ptr, (2,))
    I = numba.carray(I_ptr, (n_i[0],))
    F = numba.carray(F_ptr, (n_i[1],))
    h = I[2:]
    obs_t = F[h[0] : h[1]]
    n_obs = obs_t.shape[0]
    Ps = numba.carray(P_ptr, (n_batch, n_rows, n_par))
    As = numba.carray(A_ptr, (n_batch, n_obs, n_states))
    SAs = numba.carray(SA_ptr, (n_batch, n_obs, n_states, n_p))
    dose_lagf, ss_add = I[h[12] : h[13]] != 0, I[h[24] : h[25]] != 0
    for b in range(n_batch):
        A, SA = As[b], SAs[b]
        try:
            solve_into(Ps[b], obs_t, I[h[2]:h[3]], F[h[4]:h[5]], F[h[6]:h[7]], F[h[8]:h[9]],
                       I[h[10]:h[11]], dose_lagf, I[h[14]:h[15]], F[h[16]:h[17]], I[h[18]], I[h[20]],
                       F[h[22]:h[23]], ss_add, I[h[26]:h[27]], I[h[28]:h[29]], I[h[30]:h[31]],
                       F[h[32]:h[33]], I[h[34]:h[35]], I[h[36]:h[37]], I[h[38]], rtol, atol, A,
                       SA)  # fmt: skip
        except Exception:  # noqa: BLE001
            # A C function cannot raise: an error (0 ** -x, a singular Rosenbrock matrix at
            # extreme parameter values) becomes NaN amounts, which the sampler rejects as it did
            # the exception
            A[:] = np.nan
            SA[:] = np.nan


#: The C signature of :func:`c_solve`: P, the number of draws in it, its rows per draw, the
#: packed schedule (F, I), rtol, atol, A, SA.
C_SIGNATURE = numba.types.void(
    numba.types.CPointer(numba.types.float64),
    numba.types.int64,
    numba.types.int64,
    numba.types.CPointer(numba.types.float64),
    numba.types.CPointer(numba.types.int64),
    numba.types.float64,
    numba.types.float64,
    numba.types.CPointer(numba.types.float64),
    numba.types.CPointer(numba.types.float64),
)


def pack_schedule(args) -> tuple[np.ndarray, np.ndarray]:
    """The 20 arrays and indices of :func:`~.schedule.schedule` as one float and one int64 array.

    Float arrays go into ``F``; integer and boolean arrays and the scalar indices into ``I``,
    after a header: the lengths of ``I`` and ``F``, then each argument's (start, stop) in its array
    (the layout :func:`c_solve` reads).

    Examples
    --------
    >>> F, I = pack_schedule((np.array([0.5, 1.0]), np.int64(-1)) + (np.zeros(0),) * 18)
    >>> F.tolist(), I[:2].tolist(), I[2:4].tolist(), I[I[4]:I[5]].tolist()
    ([0.5, 1.0], [43, 2], [0, 2], [-1])
    """
    head = 2 + 2 * len(args)
    floats, ints, spans = [], [], []
    n_f, n_i = 0, head
    for a in args:
        a = np.asarray(a)
        if a.dtype.kind == "f":
            floats.append(a.ravel())
            spans += [n_f, n_f + a.size]
            n_f += a.size
        else:
            ints.append(a.astype(np.int64).ravel())
            spans += [n_i, n_i + a.size]
            n_i += a.size
    I = np.concatenate([np.array([n_i, n_f] + spans, dtype=np.int64), *ints])
    F = np.concatenate(floats) if floats else np.zeros(0)
    return np.ascontiguousarray(F, dtype=float), I


#: The event-loop templates, in the order they are specialised (callees first).
TEMPLATES = (
    rate_of,
    segment_events,
    apply_dose_event,
    ss_cycle,
    steady_state,
    segment_rows,
    solve_into,
    solve_segments,
)
