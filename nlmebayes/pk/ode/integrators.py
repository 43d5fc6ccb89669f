"""Adaptive integrators of the state + sensitivity system, as module-level numba functions.

The system is flat: ``z = (y, S[ACT_I, ACT_J])`` with ``n_states`` amounts ``y`` and the ``NA``
sensitivities ``S`` (``n_states x n_p``) to the subject's parameters that can be non-zero (in
row-major order; :func:`~.codegen.sensitivity_pattern`; all of them for the Rosenbrock method
and for parameters that change within a subject). The others stay 0 and are not integrated.
Both methods control the error of the states and of the (log-scaled) sensitivities
(:func:`error_norm`):

* :func:`dopri5`: Dormand-Prince 5(4), explicit, for non-stiff systems. It takes the generated
  kernel (:mod:`.codegen`), steps over observation times and interpolates them with its order-4
  continuous extension (Hairer, Norsett & Wanner, CONTD5), stopping only at doses.
* :func:`rosenbrock23`: the L-stable Rosenbrock (2,3) pair of Shampine & Reichelt (1997,
  MATLAB's ``ode23s``) for stiff systems, with the exact Jacobian of the state + sensitivity
  system (second derivatives of the right-hand side included); it steps to each observation.

The functions here are templates: :func:`~.solver.make_solver` compiles a copy of each with
numba for one model, with the model's generated ``kernel`` (or ``rhs`` and ``jac`` for
Rosenbrock), its sizes and ``max_steps`` bound as compile-time globals (see
:func:`~.solver.specialise`). Bound as globals, the calls are direct and the sizes are constants, as in a
closure, and the compiled solver can be cached on disk; jitted functions passed as arguments
would become function pointers, slower and not cacheable. Beyond ``max_steps`` steps per
segment a solve returns NaN, which the sampler rejects (this bounds the cost of extreme
parameter values met during warm-up). None of this uses fast-math: with it (even without its
no-NaN assumption), a freshly compiled solver and the same one loaded from the disk cache gave
results that differed in the last bits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["error_norm", "record", "dopri5", "rosenbrock23", "rosenbrock23_to", "TEMPLATES"]

# Bound per model by solver.specialise(): the generated right-hand side + sensitivity kernel;
# for the Rosenbrock method the plain right-hand side and the augmented Jacobian; the number of
# states, of sensitivity columns n_p and of parameters n_par (n_p = n_par with one row of
# parameters per segment), the integrated sensitivities (NA of them, at rows ACT_I and columns
# ACT_J of S), the flat system's size N = n_states + NA, the full size NR = n_states * (1 + n_p)
# (of the inputs r, which keep every sensitivity's slot), and the step budget.
# The parameter vector p carries more entries (the current row's first column, then the kernel's
# subexpressions of parameters; see codegen.kernel_source), which the Rosenbrock method's
# compiled functions do not take.
kernel = rhs = jac = None
n_states = n_p = n_par = N = NA = NR = max_steps = 0
ACT_I = ACT_J = np.zeros(0, dtype=np.int64)


# Dormand-Prince 5(4) tableau, error weights and the CONTD5 dense-output coefficients.
A21 = 1 / 5
A31, A32 = 3 / 40, 9 / 40
A41, A42, A43 = 44 / 45, -56 / 15, 32 / 9
A51, A52, A53, A54 = 19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729
A61, A62, A63, A64, A65 = 9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656
B1, B3, B4, B5, B6 = 35 / 384, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84
E1, E3, E4, E5, E6, E7 = 71 / 57600, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40
D1, D3, D4 = -12715105075 / 11282082432, 87487479700 / 32700410799, -10690763975 / 1880347072
D5, D6, D7 = 701980252875 / 199316789632, -1453857185 / 822651844, 69997945 / 29380423

# Rosenbrock (2,3) constants of Shampine & Reichelt.
RB_D = 1.0 / (2.0 + np.sqrt(2.0))
RB_E32 = 6.0 + np.sqrt(2.0)


def error_norm(e, z, zn, rtol, atol, scale):
    """RMS of the local error ``e`` of the flat state + sensitivity vector.

    Each entry is weighted by ``atol + rtol * |value|``; sensitivities to p_j are scaled by
    ``|p_j|`` (so they are compared as d amount / d log p_j, in amount units). The mean is over
    all ``NR`` states and sensitivities, the structural zeros (no error) included.
    """
    acc_y = 0.0  # two sums, not one running total: half the chain of dependent additions
    for i in range(n_states):
        w = atol + rtol * max(abs(z[i]), abs(zn[i]))
        acc_y += (e[i] / w) ** 2
    acc_s = 0.0
    for a in range(NA):
        k = n_states + a
        sc = scale[ACT_J[a]]
        w = atol + rtol * sc * max(abs(z[k]), abs(zn[k]))
        acc_s += (sc * e[k] / w) ** 2
    return np.sqrt((acc_y + acc_s) / NR)


def record(k, z, A, SA):
    """Write the flat state ``z`` into row ``k`` of the amounts ``A`` and sensitivities ``SA``.

    The structural zeros of ``SA`` are left as they are (the solver zeroes ``SA`` first).
    """
    for i in range(n_states):
        A[k, i] = z[i]
    for a in range(NA):
        SA[k, ACT_I[a], ACT_J[a]] = z[n_states + a]


def pack(y, S, z):
    """The flat state ``z`` from the amounts ``y`` and the integrated sensitivities of ``S``."""
    z[:n_states] = y
    for a in range(NA):
        z[n_states + a] = S[ACT_I[a], ACT_J[a]]


def unpack(z):
    """The amounts and the sensitivity matrix (structural zeros filled in) of the flat state."""
    S = np.zeros((n_states, n_p))
    for a in range(NA):
        S[ACT_I[a], ACT_J[a]] = z[n_states + a]
    return z[:n_states].copy(), S


def dopri5(t0, t1, y, S, p, r, rtol, atol, h, scale, counters, q_t, q_k, nq, A, SA):
    """Dormand-Prince 5(4) from ``t0`` to ``t1`` (a dose or infusion change).

    Allocation-free inside the step loop: the generated kernel writes into preallocated stage
    buffers. The pending observations ``q_t`` (sorted, in ``(t0, t1]``) are not stepped to but
    interpolated with the method's continuous extension of order 4 (Hairer, Norsett & Wanner,
    CONTD5) and recorded into A/SA rows ``q_k``. ``counters`` = (steps, rejected, steps of this
    segment). Returns the state and sensitivities at ``t1`` and the next step size.
    """
    t = t0
    z = np.empty(N)
    pack(y, S, z)
    k1, k2, k3, k4 = np.empty(N), np.empty(N), np.empty(N), np.empty(N)
    k5, k6, k7 = np.empty(N), np.empty(N), np.empty(N)
    zt, zn = np.empty(N), np.empty(N)
    kernel(z, p, r, k1)
    jq = 0
    while t1 - t > 1e-13 * max(abs(t1), 1.0):
        h = min(h, t1 - t)
        # Each stage adds its terms oldest first, the coefficients scaled by h beforehand: the
        # newest stage (the one the next waits for) enters through one product and one sum.
        for i in range(N):
            zt[i] = z[i] + (h * A21) * k1[i]
        kernel(zt, p, r, k2)
        for i in range(N):
            zt[i] = z[i] + (h * A31) * k1[i] + (h * A32) * k2[i]
        kernel(zt, p, r, k3)
        for i in range(N):
            zt[i] = z[i] + (h * A41) * k1[i] + (h * A42) * k2[i] + (h * A43) * k3[i]
        kernel(zt, p, r, k4)
        for i in range(N):
            zt[i] = z[i] + (h * A51) * k1[i] + (h * A52) * k2[i] + (h * A53) * k3[i] + (h * A54) * k4[i]
        kernel(zt, p, r, k5)
        for i in range(N):
            zt[i] = (
                z[i]
                + (h * A61) * k1[i]
                + (h * A62) * k2[i]
                + (h * A63) * k3[i]
                + (h * A64) * k4[i]
                + (h * A65) * k5[i]
            )
        kernel(zt, p, r, k6)
        for i in range(N):
            zn[i] = (
                z[i]
                + (h * B1) * k1[i]
                + (h * B3) * k3[i]
                + (h * B4) * k4[i]
                + (h * B5) * k5[i]
                + (h * B6) * k6[i]
            )
        kernel(zn, p, r, k7)
        for i in range(N):  # the local error estimate, in zt (free until the next step)
            zt[i] = (
                (h * E1) * k1[i]
                + (h * E3) * k3[i]
                + (h * E4) * k4[i]
                + (h * E5) * k5[i]
                + (h * E6) * k6[i]
                + (h * E7) * k7[i]
            )
        err = error_norm(zt, z, zn, rtol, atol, scale)
        counters[0] += 1
        if not np.isfinite(err) and h < 1e-10 * max(abs(t), 1.0):
            # NaN that no smaller step removes (0**P in a sensitivity): give up now, not
            # after max_steps steps of 1e-14
            z[:] = np.nan
            break
        if err <= 1.0 or h < 1e-14 * max(abs(t), 1.0):
            while jq < nq and q_t[jq] <= t + h:
                # y(t + th h) = z + th (dz + (1-th) (b + th (dz - h k7 - b + (1-th) c5))),
                # dz = zn - z, b = h k1 - dz, c5 = h sum d_i k_i
                th = (q_t[jq] - t) / h
                th1 = 1.0 - th
                for i in range(N):
                    dz = zn[i] - z[i]
                    b = h * k1[i] - dz
                    c5 = h * (D1 * k1[i] + D3 * k3[i] + D4 * k4[i] + D5 * k5[i] + D6 * k6[i] + D7 * k7[i])
                    zt[i] = z[i] + th * (dz + th1 * (b + th * (dz - h * k7[i] - b + th1 * c5)))
                record(q_k[jq], zt, A, SA)
                jq += 1
            t += h
            for i in range(N):
                z[i] = zn[i]
                k1[i] = k7[i]
            h = h * min(5.0, max(0.2, 0.9 * (err + 1e-16) ** (-0.2)))
        else:
            counters[1] += 1
            h = h * max(0.2, 0.9 * err ** (-0.2))
        counters[2] += 1
        if counters[2] > max_steps:  # a runaway (stiff or extreme) solve: NaN, rejected
            z[:] = np.nan
            break
    while jq < nq:  # at t1 itself (rounding), or NaN after a runaway solve
        record(q_k[jq], z, A, SA)
        jq += 1
    y, S = unpack(z)
    return y, S, h


def augmented(z, p, r):
    """``(f(y) + r, (df/dy S + df/dp).ravel())`` from ``rhs(y, p) -> (f, df/dy, df/dp)``."""
    y = z[:n_states].copy()
    S = z[n_states:].copy().reshape((n_states, n_p))
    f, Jy, Jp = rhs(y, p[:n_par])
    out = np.empty(N)
    out[:n_states] = f + r[:n_states]
    out[n_states:] = (Jy @ S + Jp).ravel() + r[n_states:]
    return out


def rosenbrock23_to(t0, t1, y, S, p, r, rtol, atol, h, scale, counters):
    """Integrate from ``t0`` to ``t1`` with the Rosenbrock (2,3) pair of Shampine & Reichelt.

    L-stable, on the state + sensitivity system, with its exact Jacobian ``jac(y, S, p)``
    (second derivatives of the right-hand side included).
    """
    t = t0
    z = np.empty(N)
    z[:n_states] = y
    z[n_states:] = S.ravel()
    F0 = augmented(z, p, r)
    J = jac(y, S.copy(), p[:n_par])[0]
    eye = np.eye(N)
    while t1 - t > 1e-13 * max(abs(t1), 1.0):
        h = min(h, t1 - t)
        W = np.linalg.inv(eye - h * RB_D * J)
        k1 = W @ F0
        F1 = augmented(z + 0.5 * h * k1, p, r)
        k2 = W @ (F1 - k1) + k1
        zn = z + h * k2
        F2 = augmented(zn, p, r)
        k3 = W @ (F2 - RB_E32 * (k2 - F1) - 2.0 * (k1 - F0))
        e = h / 6.0 * (k1 - 2.0 * k2 + k3)
        err = error_norm(e, z, zn, rtol, atol, scale)
        counters[0] += 1
        if not np.isfinite(err) and h < 1e-10 * max(abs(t), 1.0):
            z = z * np.nan  # as in dopri5: a NaN no smaller step removes
            break
        if err <= 1.0 or h < 1e-14 * max(abs(t), 1.0):
            t += h
            z = zn
            F0 = F2
            J = jac(z[:n_states].copy(), z[n_states:].copy().reshape((n_states, n_p)), p[:n_par])[0]
            h = h * min(5.0, max(0.2, 0.9 * (err + 1e-16) ** (-1.0 / 3.0)))
        else:
            counters[1] += 1
            h = h * max(0.2, 0.9 * err ** (-1.0 / 3.0))
        counters[2] += 1
        if counters[2] > max_steps:  # a runaway (stiff or extreme) solve: NaN, rejected
            z = z * np.nan
            break
    return z[:n_states].copy(), z[n_states:].copy().reshape((n_states, n_p)), h


def rosenbrock23(t0, t1, y, S, p, r, rtol, atol, h, scale, counters, q_t, q_k, nq, A, SA):
    """Rosenbrock through the pending observations (stepping to each), then to ``t1``."""
    t = t0
    for j in range(nq):
        if q_t[j] > t:
            h = min(h, q_t[j] - t)
            y, S, h = rosenbrock23_to(t, q_t[j], y, S, p, r, rtol, atol, h, scale, counters)
            t = q_t[j]
        A[q_k[j]] = y
        SA[q_k[j]] = S
    if t1 > t:
        h = min(h, t1 - t)
        y, S, h = rosenbrock23_to(t, t1, y, S, p, r, rtol, atol, h, scale, counters)
    return y, S, h


#: The integrator templates, in the order they are specialised (callees first).
TEMPLATES = (error_norm, record, pack, unpack, dopri5, augmented, rosenbrock23_to, rosenbrock23)
