"""Reference solutions of linear compartment models by numerical ODE integration (scipy).

Independent of nlmebayes.pk: the system matrix is written out from the micro-constants and
integrated piecewise between events with tight tolerances. Steady state is the periodic
solution ``x0 = (I - expm(A II))^{-1} p``, with ``p`` the state one interval after a single
dose from zero (also integrated numerically).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp
from scipy.linalg import expm

RTOL, ATOL = 1e-11, 1e-16


def system_matrix(n_cpt: int, oral: bool, p: dict) -> np.ndarray:
    """dA/dt = M A for states [depot?, central, peripheral 1, peripheral 2]."""
    k10 = p["CL"] / p["V"]
    n = n_cpt + int(oral)
    M = np.zeros((n, n))
    c = int(oral)
    M[c, c] -= k10
    if oral:
        M[0, 0] = -p["KA"]
        M[c, 0] = p["KA"]
    for j, (Q, Vp) in enumerate((("Q", "V2"), ("Q3", "V3"))[: n_cpt - 1]):
        kcp, kpc = p[Q] / p["V"], p[Q] / p[Vp]
        pi = c + 1 + j
        M[c, c] -= kcp
        M[pi, c] += kcp
        M[c, pi] += kpc
        M[pi, pi] -= kpc
    return M


def _integrate(M, x0, t0, t1, u):
    # An interval of < 1e-12 h (e.g. a lag of 1e-177) changes nothing at our tolerance, and
    # would make the integrator crawl through sub-normal step sizes.
    if t1 - t0 <= 1e-12 * max(1.0, abs(t1)):
        return x0
    sol = solve_ivp(
        lambda t, x: M @ x + u, (t0, t1), x0, method="LSODA", rtol=RTOL, atol=ATOL, jac=lambda t, x: M
    )
    return sol.y[:, -1]


def simulate(M, doses, obs_times, central: int, changes=()):
    """Amounts in ``central`` at ``obs_times``.

    doses: list of dicts with keys time (effective, lag included), state (index), amt (already
    times F), dur (0 for bolus), ss (0, 1 or 2), ii. Records are applied in time order; an SS
    dose sets (SS=1) or adds (SS=2) the periodic steady state at its record time ``time0``.
    changes: (time, matrix) pairs: from that time on (after the doses and observations there)
    the system matrix is the new one.
    """
    n = M.shape[0]
    # Event list: (time, kind, payload) with boluses before observations at equal times.
    events = []
    for d in doses:
        if d["ss"]:
            events.append((d["time0"], 0, ("ss", d)))
        events.append((d["time"], 1, ("start", d)))
        if d["dur"] > 0:
            events.append((d["time"] + d["dur"], 1, ("stop", d)))
    for i, t in enumerate(obs_times):
        events.append((t, 2, ("obs", i)))
    events += [(t, 3, ("change", m)) for t, m in changes]
    events.sort(key=lambda e: (e[0], e[1]))
    x = np.zeros(n)
    u = np.zeros(n)
    t = 0.0
    out = np.full(len(obs_times), np.nan)
    for te, _, (kind, payload) in events:
        x = _integrate(M, x, t, te, u)
        t = max(t, te)
        if kind == "obs":
            out[payload] = x[central]
        elif kind == "change":
            M = payload
        elif kind == "ss":
            x_ss = steady_state(M, payload, n)
            x = x_ss if payload["ss"] == 1 else x + x_ss
            if payload["ss"] == 1:
                u = np.zeros(n)  # a reset stops running infusions
        elif kind == "start":
            if payload["dur"] > 0:
                u[payload["state"]] += payload["amt"] / payload["dur"]
            else:
                x[payload["state"]] += payload["amt"]
        elif kind == "stop":
            u[payload["state"]] -= payload["amt"] / payload["dur"]
    return out


def steady_state(M, d, n):
    """State at the SS record time of the periodic regimen (dose at lag, interval II)."""
    lag, ii = d["time"] - d["time0"], d["ii"]
    x = np.zeros(n)
    u = np.zeros(n)
    x = _integrate(M, x, 0.0, lag, u)
    if d["dur"] > 0:
        u[d["state"]] = d["amt"] / d["dur"]
        x = _integrate(M, x, lag, lag + d["dur"], u)
        u[:] = 0.0
        x = _integrate(M, x, lag + d["dur"], ii, u)
    else:
        x[d["state"]] += d["amt"]
        x = _integrate(M, x, lag, ii, u)
    return np.linalg.solve(np.eye(n) - expm(M * ii), x)
