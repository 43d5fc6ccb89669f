"""Closed-form linear compartment models written in PyTensor, vectorised over all subjects.

Every dose response of a linear system is a sum of exponentials. After a unit bolus into the
central compartment the central amount is ``sum_m c_m exp(-lambda_m t)`` (:func:`disposition`).
Each input type is then one function ``u(lambda)`` of the decay rate, evaluated for every
(dose, observation) pair:

====================  =====================================================================
bolus                 ``exp(-lambda x)``
infusion (length D)   ``integral over the infusion window of exp(-lambda s) ds``
steady state (SS)     the same summed over all past doses ``x + k II``: a geometric series
====================  =====================================================================

A dose into the absorption (depot) compartment enters the central compartment at rate
``KA * depot``, so its response is ``KA * sum_m c_m * (u(lambda_m) - u(KA)) / (KA - lambda_m)``,
a divided difference of ``u``. Divided differences are computed without 0/0 when KA ~ lambda:
for the single oral bolus by :func:`exp_diff` (plain difference, series near the tie), for the
other inputs with a derivative fallback near the tie.

Superposition over doses happens on flat arrays: the dose-observation pairs of
:class:`nlmebayes.data.EventData` carry the per-pair parameters, and the pair contributions
are summed per observation. What depends on the parameters alone (the exponents and
coefficients, ``1 / V``, ``1 / (KA - lambda_m)``) is computed once per parameter row (subject,
or period) and then taken per pair: no division is left in the pairs' hot loop but the
response's own, and the gradient flows back through the rows' few divisions.

Parameters are named as pharmacometricians do: CL, V (central), Q, V2 (first peripheral), Q3,
V3 (second peripheral), KA, plus optional TLAG (absorption lag), F (bioavailability) and D
(modelled infusion duration, for RATE = -2 records).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import pytensor
import pytensor.tensor as pt

from nlmebayes.data import DataError, EventData, check_compartments
from nlmebayes.data.periods import ParameterRows
from nlmebayes.pk.base import DOSING_PARAMETERS, register_model
from nlmebayes.pk.piecewise import occasion_carry_over, piecewise_concentration

__all__ = ["Compartmental", "MODELS", "disposition", "log_sinhc", "exp_diff", "phi"]

_TAYLOR = 1e-3  # |y| below which log(sinh y / y) uses its series (error < 1e-21)
_DD_TOL = 1e-4  # dimensionless |b - a| * time scale below which divided differences use -u'(mid)


def log_sinhc(y):
    """``log(sinh(y) / y)``, even in y, finite for all y and with a finite gradient at 0."""
    ya = pt.abs(y)
    small = ya < _TAYLOR
    ys = pt.switch(small, 1.0, ya)  # the "double where": no 0/0 in the unused branch
    big = ys + pt.log1p(-pt.exp(-2.0 * ys)) - np.log(2.0) - pt.log(ys)
    y2 = y * y
    return pt.switch(small, y2 / 6.0 - y2 * y2 / 180.0, big)


def phi(z):
    """``(1 - exp(-z)) / z`` for z >= 0, equal to 1 at z = 0, without cancellation."""
    return pt.exp(-0.5 * z + log_sinhc(0.5 * z))


def exp_diff(a, b, x, inv_gap=None):
    """``(exp(-a x) - exp(-b x)) / (b - a)`` for x >= 0, smooth through a = b (``x e^{-ax}``).

    Equal to ``x exp(-a x) phi((b - a) x)`` with ``phi(z) = (1 - exp(-z)) / z``. Where
    ``|b - a| x >= 1e-3`` the plain difference is used (cancellation costs at most ~2e-13
    relative), else phi's series to z^3 (truncation z^4/120 < 1e-14). Both branches share
    ``exp(-a x)``: two exponentials per term, as this is the hot path of every oral model.
    ``inv_gap``, if given, is ``1 / (b - a)`` wherever ``b != a`` (see :func:`_inverse_gap`),
    computed once per parameter row rather than once per dose-observation pair.
    """
    z = (b - a) * x
    close = pt.abs(z) < 1e-3
    b_far = pt.switch(close, a + 1.0, b)  # keeps the unused branch free of 0/0 (and its gradient)
    ea = pt.exp(-a * x)
    if inv_gap is None:
        far = (ea - pt.exp(-b_far * x)) / (b_far - a)
    else:
        far = (ea - pt.exp(-b_far * x)) * pt.switch(close, 1.0, inv_gap)
    near = x * ea * (1.0 + z * (-0.5 + z * (1.0 / 6.0 - z / 24.0)))
    return pt.switch(close, near, far)


def disposition(n_cpt: int, CL, V, Q=None, V2=None, Q3=None, V3=None):
    """Exponents and coefficients of the central amount after a unit bolus into the central compartment.

    ``A(t) = sum_m coef[..., m] * exp(-lam[..., m] * t)``.

    Parameters
    ----------
    n_cpt : {1, 2, 3}
    CL, V, Q, V2, Q3, V3 : tensors (broadcastable)
        Clearance, central volume, inter-compartmental clearances and peripheral volumes.

    Returns
    -------
    lam, coef : tensors with a trailing axis of length ``n_cpt``
    """
    k10 = CL / V
    if n_cpt == 1:
        return pt.stack([k10], axis=-1), pt.stack([pt.ones_like(k10)], axis=-1)
    k12, k21 = Q / V, Q / V2
    if n_cpt == 2:
        s = k10 + k12 + k21
        # s^2 - 4 k10 k21 rewritten as a sum of non-negative terms: no cancellation.
        disc = pt.sqrt((k10 + k12 - k21) ** 2 + 4.0 * k12 * k21)
        l1 = 0.5 * (s + disc)
        l2 = k10 * k21 / l1  # the small root from the product: stable when l2 << l1
        c1 = (k21 - l1) / (l2 - l1)
        c2 = (k21 - l2) / (l1 - l2)
        return pt.stack([l1, l2], axis=-1), pt.stack([c1, c2], axis=-1)
    if n_cpt == 3:
        k13, k31 = Q3 / V, Q3 / V3
        a2 = k10 + k12 + k13 + k21 + k31
        a1 = k10 * k21 + k10 * k31 + k21 * k31 + k12 * k31 + k13 * k21
        a0 = k10 * k21 * k31
        # lambda^3 - a2 lambda^2 + a1 lambda - a0 = 0; with lambda = y + a2/3: y^3 + p y + q = 0
        p = a1 - a2**2 / 3.0
        q = -2.0 * a2**3 / 27.0 + a1 * a2 / 3.0 - a0
        r = pt.sqrt(-p / 3.0)
        arg = pt.clip(1.5 * q / (p * r), -1.0 + 1e-15, 1.0 - 1e-15)
        th = pt.arccos(arg) / 3.0
        lams = [2.0 * r * pt.cos(th - 2.0 * np.pi * k / 3.0) + a2 / 3.0 for k in range(2)]
        # th is in [0, pi/3], so k = 2 is always the smallest root, and the sum formula loses
        # digits there (~1e-12); Vieta's product l0 l1 l2 = a0 gives it to full precision.
        lams.append(a0 / (lams[0] * lams[1]))
        coefs = []
        for m in range(3):
            j, l = [i for i in range(3) if i != m]
            lm = lams[m]
            coefs.append((k21 - lm) * (k31 - lm) / ((lams[j] - lm) * (lams[l] - lm)))
        return pt.stack(lams, axis=-1), pt.stack(coefs, axis=-1)
    raise ValueError(f"n_cpt must be 1, 2 or 3, got {n_cpt}")


# --------------------------------------------------------------------------- input responses
def _u_bolus(lam, x, D, tau):
    return pt.exp(-lam * x)


def _u_infusion(lam, x, D, tau):
    w = pt.minimum(x, D)
    return pt.exp(-lam * pt.maximum(x - D, 0.0)) * w * phi(lam * w)


def _u_bolus_ss(lam, x, D, tau):
    return pt.exp(-lam * x) / -pt.expm1(-lam * tau)


def _u_bolus_train(lam, x, D, tau, m):
    # m boluses tau apart, the latest x ago: exp(-lam x) sum_k exp(-lam k tau), a geometric sum
    return pt.exp(-lam * x) * (pt.expm1(-lam * m * tau) / pt.expm1(-lam * tau))


def _depot_repeated(lam, ka, x, tau, m, inv_gap):
    """``(u(lam) - u(KA)) / (KA - lam)`` for boluses into the depot, tau apart, the latest x ago.

    ``m`` of them (:func:`_u_bolus_train`'s ``u``), or infinitely many (``m`` None, steady state,
    :func:`_u_bolus_ss`). Times KA it is the central amount per exponent.

    With ``E(t) = exp_diff(lam, KA, t)`` and ``G(c) = N(c) / D(c)`` (``N = 1 - exp(-c m tau)``,
    1 at steady state, and ``D = 1 - exp(-c tau)``: the geometric sum) it is ``E(x) G(lam) +
    exp(-KA x) DG``, where the divided difference of the quotient G is ``DG = (N(KA) E(tau) /
    D(KA) - E(m tau)) / D(lam)``. Every E is smooth through KA = lam, so the form holds at any
    gap. D, the only divisor, is ``-expm1``: positive and exact however small ``c tau`` is. Six
    exponentials per exponent for a train, four at steady state.

    Before, the divided difference of ``u`` itself with ``-u'`` at the midpoint near KA = lam (as
    :func:`_divided_difference` does for infusions) put twice as many exponentials and second
    derivatives in the gradient. A 2-cpt oral density of 300 subjects (1,371 samples; 60 subjects
    with one dose) took 361 us per gradient with 10-dose trains for the others, now 328; with
    one SS dose each 221, now 210; with one dose each 146-154.
    """
    d_lam, d_ka = -pt.expm1(-lam * tau), -pt.expm1(-ka * tau)
    exp_ka_x = pt.exp(-ka * x)

    def diff(t, exp_lam_t, exp_ka_t):  # E(t) = exp_diff(lam, KA, t), given the two exponentials
        z = (ka - lam) * t
        close = pt.abs(z) < 1e-3
        near = t * exp_lam_t * (1.0 + z * (-0.5 + z * (1.0 / 6.0 - z / 24.0)))
        return pt.switch(close, near, (exp_lam_t - exp_ka_t) * pt.switch(close, 1.0, inv_gap))

    diff_x = diff(x, pt.exp(-lam * x), exp_ka_x)
    diff_tau = diff(tau, 1.0 - d_lam, 1.0 - d_ka)
    if m is None:  # steady state: N = 1, E(m tau) = 0
        return (diff_x + exp_ka_x * diff_tau / d_ka) / d_lam
    span = m * tau
    exp_lam_span, exp_ka_span = pt.exp(-lam * span), pt.exp(-ka * span)
    dg = ((1.0 - exp_ka_span) * diff_tau / d_ka - diff(span, exp_lam_span, exp_ka_span)) / d_lam
    return diff_x * (1.0 - exp_lam_span) / d_lam + exp_ka_x * dg


def _u_infusion_ss(lam, x, D, tau):
    # The current infusion (k = 0) plus all earlier ones, which have ended (D <= II).
    return _u_infusion(lam, x, D, tau) + pt.exp(-lam * (x + tau - D)) * D * phi(lam * D) / -pt.expm1(
        -lam * tau
    )


def _inverse_gap(ka, lam):
    """``1 / (KA - lambda_m)``, with 1 where they are equal (there the callers use a series)."""
    gap = pt.shape_padright(ka, 1) - lam
    return 1.0 / pt.switch(pt.eq(gap, 0.0), 1.0, gap)


def _divided_difference(u, a, b, x, D, tau, inv_gap):
    """``(u(a) - u(b)) / (b - a)``.

    When ``|b - a| * (x + D + tau)`` is tiny, ``-u'((a+b)/2)`` (error O((b-a)^2)), so neither branch
    ever divides 0 by 0. ``inv_gap`` is ``1 / (b - a)`` where ``b != a``, as for :func:`exp_diff`.
    """
    scale = x + D + tau + 1e-300
    close = pt.abs(b - a) * scale < _DD_TOL
    b_far = pt.switch(close, a + 1.0 / scale, b)
    far = (u(a, x, D, tau) - u(b_far, x, D, tau)) * pt.switch(close, scale, inv_gap)
    mid = 0.5 * (a + b)
    du = pytensor.grad(pt.sum(u(mid, x, D, tau)), mid)
    return pt.switch(close, -du, far)


_INPUTS = {
    (False, False): _u_bolus,
    (True, False): _u_infusion,
    (False, True): _u_bolus_ss,
    (True, True): _u_infusion_ss,
}


def _take(v, idx: np.ndarray):
    """``v[idx]`` for a tensor or array ``v``, the index given as one constant.

    Indexing a tensor with a NumPy array makes PyTensor inspect it element by element in Python
    (6 s for a million pairs); as a constant tensor it is one node, the same graph.
    """
    return pt.as_tensor_variable(v)[pt.as_tensor_variable(np.asarray(idx, dtype="int64"))]


def _take_rows(v, rows: np.ndarray, row_axis: bool):
    """Row ``rows[j]`` of ``v`` for each pair or observation j; ``v`` itself if it has no rows.

    A one-column table is taken as a vector: PyTensor fuses a vector's gather into the loop
    that uses it (a smaller graph, which compiles faster), a table's it does not. Wider tables
    (2-/3-cpt) are taken whole: column by column and stacked after, they cost more per gradient.
    """
    if not row_axis:
        return pt.ones((len(rows),) + (1,) * v.ndim) * v
    if v.ndim == 2 and v.type.shape[-1] == 1:
        return pt.shape_padright(_take(v[:, 0], rows), 1)
    return _take(v, rows)


def _pair_amounts(pairs: dict, lam, coef, ka, inv_gap):
    """Central amount each dose-observation pair contributes (before division by V).

    Pairs are grouped by input kind (into the depot or central, bolus or infusion, single or
    steady state); each group evaluates its response ``u`` (a divided difference of ``u`` for
    doses into the depot) in one vectorised expression.
    """
    x, D, R, F, amt, tau, m = (pairs[k] for k in ("x", "D", "R", "F", "amt", "tau", "m"))
    into_depot, infusion, ss, constant = (pairs[k] for k in ("into_depot", "infusion", "ss", "constant"))
    train = pairs["train"]
    n = len(amt)
    contrib = pt.zeros(n)
    for depot, inf, is_ss, is_train in itertools.product((False, True), repeat=4):
        sel = np.flatnonzero(
            (into_depot == depot) & (infusion == inf) & (ss == is_ss) & (train == is_train) & ~constant
        )
        if not len(sel):
            continue
        xs = pt.shape_padright(_take(x, sel), 1)
        Ds = pt.shape_padright(_take(D, sel), 1)
        taus = pt.shape_padright(pt.as_tensor_variable(tau[sel]), 1)
        if is_train:  # trains are boluses, never steady state (dose_trains' key)
            ms = pt.shape_padright(_take(m, sel), 1)
            u = functools.partial(_u_bolus_train, m=ms)
        else:
            u = _INPUTS[(inf, is_ss)]
        ls = _take(lam, sel)
        if not depot:
            resp = u(ls, xs, Ds, taus)
        else:
            kas, inv = pt.shape_padright(_take(ka, sel), 1), _take(inv_gap, sel)
            if not inf and (is_train or is_ss):
                dd = _depot_repeated(ls, kas, xs, taus, ms if is_train else None, inv)
            elif not inf:
                dd = exp_diff(ls, kas, xs, inv)
            else:
                dd = _divided_difference(u, ls, kas, xs, Ds, taus, inv)
            resp = kas * dd
        amount = pt.sum(_take(coef, sel) * resp, axis=-1)
        scale = _take(R, sel) if inf else _take(F, sel) * _take(amt, sel)
        contrib = scale * amount if len(sel) == n else pt.set_subtensor(_take(contrib, sel), scale * amount)
    if constant.any():
        # A constant-rate infusion at steady state (SS=1, AMT=0, RATE>0) has run forever and
        # keeps running: the central amount is rate * sum_m c_m / lambda_m, from the central
        # compartment or through the depot alike (at steady state the depot passes on all it
        # receives). F scales the rate.
        sel = np.flatnonzero(constant)
        amount = pt.sum(_take(coef, sel) / _take(lam, sel), axis=-1)
        contrib = pt.set_subtensor(_take(contrib, sel), _take(F, sel) * _take(R, sel) * amount)
    return contrib


@dataclass(frozen=True)
class Compartmental:
    """A linear 1-, 2- or 3-compartment model with IV and/or first-order absorption input.

    Compartments are numbered as in NONMEM: with absorption (ADVAN2/4/12) 1 = depot,
    2 = central, 3/4 = peripheral; without (ADVAN1/3/11) 1 = central. Observations are
    concentrations in the central compartment. TLAG and F apply to doses into the dosing
    compartment (depot when there is one); IV doses into central in an oral model get neither.
    """

    name: str
    n_cpt: int
    oral: bool

    @property
    def parameters(self) -> tuple[str, ...]:
        """Required structural parameters."""
        p = ("CL", "V", "Q", "V2", "Q3", "V3")[: 2 * self.n_cpt]
        return p + (("KA",) if self.oral else ())

    optional_parameters: tuple[str, ...] = DOSING_PARAMETERS
    #: Takes :class:`~nlmebayes.data.periods.ParameterRows` (parameters that change between
    #: records, solved by matrix exponentials: :mod:`nlmebayes.pk.piecewise`).
    piecewise_parameters = True

    def iov_by_dose(self, data: EventData, column: str, typical: dict | None) -> bool:
        """Whether IOV may give each dose its occasion's parameters (superposition, cheap).

        True where earlier occasions have washed out when a new one starts: less than 1e-4 of a
        dose left at half the typical rates (:func:`~nlmebayes.pk.piecewise.occasion_carry_over`),
        so the per-dose form differs from switching the parameters at the records (NONMEM's
        IOV, :mod:`nlmebayes.pk.piecewise`) by less than that fraction of a dose. Without typical
        values, False.
        """
        if typical is None:
            return False
        return occasion_carry_over(self, data, column, _with_cl_and_v(typical)) < 1e-4

    #: Alternative parameterisations: K (elimination rate constant CL/V) may stand in for V, as in
    #: nlme's ``SSfol(Dose, Time, lKe, lKa, lCl)`` (then V = CL / K), or for CL, as in NONMEM's
    #: ADVAN1/2 TRANS1 (then CL = K * V). K takes the place of one of them, never both.
    alternatives = {"V": "K", "CL": "K"}

    def check_parameters(self, names) -> None:
        """Raise if ``names`` do not form a valid parameter set of this model."""
        names = list(names)
        missing = [p for p in self.parameters if p not in names and self.alternatives.get(p) not in names]
        allowed = self.parameters + self.optional_parameters + tuple(self.alternatives.values())
        extra = [p for p in names if p not in allowed]
        replaced = [p for p in self.alternatives if p in names]
        both = "K" in names and len(replaced) != 1
        if missing or extra or both:
            raise ValueError(
                f"structural model {self.name} needs parameters {list(self.parameters)} "
                f"(optional {list(self.optional_parameters)}; K may replace V or CL); missing {missing}, "
                f"unknown {extra}" + (", give K with one of CL and V" if both else "")
            )

    @property
    def dose_compartments(self) -> dict[int, str]:
        """CMT number -> name of the compartments that take doses."""
        return {1: "depot", 2: "central"} if self.oral else {1: "central"}

    @property
    def obs_compartments(self) -> dict[int, str]:
        """CMT number -> name of the observed compartment."""
        return {2: "central"} if self.oral else {1: "central"}

    def check(self, data: EventData) -> None:
        """Check the data suit the model (compartments, infusion lengths), naming the row."""
        check_compartments(data, self.dose_compartments, self.obs_compartments, self.name)

    def concentration(self, data: EventData, params: dict, index=None):
        """Central concentration at every observation of ``data``.

        Parameters
        ----------
        data : EventData
        params : dict of str -> tensor
            Structural parameters, each of shape ``(n_rows,)`` (typically one row per subject)
            or a scalar. Missing optional parameters default to TLAG = 0, F = 1.
        index : int array, optional
            Row of ``params`` for each dose event; defaults to the dose's subject.

        Returns
        -------
        tensor of shape ``(n_obs,)``
        """
        self.check_parameters(params)
        params = _with_cl_and_v(params)
        self.check(data)
        if isinstance(index, ParameterRows):
            return piecewise_concentration(self, data, params, index)
        per_subject = index is None  # parameter rows are the subjects
        index = data.dose_subject if index is None else np.asarray(index)
        pd_idx = index[data.pair_dose]
        if data.pair_first is not None and not np.array_equal(index[data.pair_first], pd_idx):
            raise ValueError(
                "the parameters change within a train of equally spaced doses (rows "
                f"{data.dose_row[data.pair_first[index[data.pair_first] != pd_idx][0]]} on); "
                "trains are keyed by every column on the dose records, so index must be one of them"
            )

        def per_pair(name, default=None):
            v = params.get(name)
            if v is None:
                return default
            v = pt.as_tensor_variable(v)
            return v * pt.ones(len(pd_idx)) if v.ndim == 0 else _take(v, pd_idx)

        # Exponents, coefficients and 1 / V per parameter row, then taken per pair: a subject
        # has far fewer rows than dose-observation pairs, and its divisions (and the 2-/3-cpt
        # roots) would otherwise be repeated, with their gradients, for every pair.
        # float64 throughout: PyTensor would store a Python 10.0 as a float32 constant
        rows = {k: pt.as_tensor_variable(params[k]).astype("float64") for k in self.parameters}
        lam, coef = disposition(self.n_cpt, *(rows.get(k) for k in ("CL", "V", "Q", "V2", "Q3", "V3")))
        inv_gap = None
        if self.oral:
            inv_gap = _inverse_gap(rows["KA"], lam)
            inv_gap = _take_rows(inv_gap, pd_idx, inv_gap.ndim == 2)
        lam, coef = (_take_rows(v, pd_idx, v.ndim == 2) for v in (lam, coef))
        inv_v, has_rows = 1.0 / rows["V"], rows["V"].ndim == 1
        pairs = self._pair_inputs(data, params, per_pair)
        ka = per_pair("KA") if self.oral else None
        contrib = _pair_amounts(pairs, lam, coef, ka, inv_gap)
        if pairs["started"] is not None:
            contrib = pt.switch(pairs["started"], contrib, 0.0)
        n_obs = data.n_obs
        one_per_obs = np.array_equal(data.pair_obs, np.arange(n_obs))  # single doses

        def add_up(c):
            return c if one_per_obs else pt.inc_subtensor(_take(pt.zeros(n_obs), data.pair_obs), c)

        if per_subject and not one_per_obs:
            # Every pair of an observation has the subject's V: divide after adding them up
            # (one gather per observation, not per pair; 1,000 subjects x 180 irregular doses).
            return add_up(contrib) * _take_rows(inv_v, data.obs_subject, has_rows)
        return add_up(contrib * _take_rows(inv_v, pd_idx, has_rows))

    def _pair_inputs(self, data: EventData, params: dict, per_pair) -> dict:
        """Inputs of each dose-observation pair.

        Time since the (lagged) dose ``x``, whether the dose has started, infusion length ``D``
        and rate ``R``, F, amount, II and the input kind.
        """
        d = data.pair_dose
        cmt = data.dose_cmt[d]
        into_depot = (cmt == 1) | (cmt == 0) if self.oral else np.zeros(len(d), bool)
        # TLAG and F act on the dosing compartment: the depot in oral models, else central.
        target = into_depot if self.oral else np.ones(len(d), bool)
        has_lag, has_f = "TLAG" in params, "F" in params
        tlag = pt.switch(target, per_pair("TLAG"), 0.0) if has_lag else 0.0
        F = pt.switch(target, per_pair("F"), 1.0) if has_f else np.ones(len(d))

        x_raw = data.obs_time[data.pair_obs] - data.dose_time[d] - tlag
        amt = data.dose_amt[d]
        rate = data.dose_rate[d]
        ss = data.dose_ss[d] > 0
        count = np.ones(len(d)) if data.pair_count is None else data.pair_count.astype(float)
        train = count > 1
        first = d if data.pair_first is None else data.pair_first
        # a train's spacing (tau of its geometric sum); II for the others (steady state)
        step = (data.dose_time[d] - data.dose_time[first]) / np.maximum(count - 1, 1)
        tau = np.where(train, step, data.dose_ii[d])
        infusion = rate != 0
        if (rate == -2).any() and "D" not in params:
            raise ValueError("the data have RATE = -2 (modelled duration): the model needs D")
        with np.errstate(divide="ignore", invalid="ignore"):
            rate_safe = np.where(rate > 0, rate, 1.0)
        if infusion.any():
            Dmod = per_pair("D", 1.0)
            # NONMEM keeps RATE and scales the duration with F; RATE=-2 keeps the duration.
            D = pt.switch(rate == -2, Dmod, F * amt / rate_safe)
            D = pt.switch(infusion, D, 0.0)
            R = pt.switch(rate == -2, F * amt / pt.switch(rate == -2, Dmod, 1.0), rate_safe)
        else:
            D = R = np.zeros(len(d))
        if (infusion & ss).any():
            self._check_ss_infusion(data, d[infusion & ss], amt, rate)
        # Only a lag can put an effective dose after an observation that follows its record.
        m = count
        if has_lag:
            # Before an SS dose's lag has passed, the previous implied dose is the latest one.
            x = pt.switch(ss, pt.switch(x_raw < 0, x_raw + tau, x_raw), pt.maximum(x_raw, 0.0))
            started = pt.or_(ss, x_raw >= 0)
            if train.any():
                # A lag can hold back a train's latest doses: skip those, count the others.
                step_safe = np.where(train, step, 1.0)
                skip = pt.clip(pt.ceil(-x_raw / step_safe), 0.0, count)
                m = pt.switch(train, count - skip, count)
                x = pt.switch(train, x_raw + skip * step_safe, x)
                started = pt.switch(train, m > 0, started)
        else:
            x, started = x_raw, None
        return dict(
            m=m,
            train=train,
            constant=ss & (amt == 0) & (rate > 0),
            x=x,
            started=started,
            D=D,
            R=R,
            F=F,
            amt=amt,
            tau=tau,
            into_depot=into_depot,
            infusion=infusion,
            ss=ss,
        )

    @staticmethod
    def _check_ss_infusion(data: EventData, doses, amt, rate):
        for j in np.unique(doses):
            r = data.dose_rate[j]
            if r > 0 and data.dose_amt[j] / r > data.dose_ii[j]:
                raise DataError(
                    f"steady-state infusion lasts AMT/RATE = {data.dose_amt[j] / r:g}, longer than "
                    f"II = {data.dose_ii[j]:g}; overlapping steady-state infusions are not supported",
                    source=data.source,
                    row=int(data.dose_row[j]),
                    column="RATE",
                )


def _with_cl_and_v(params: dict) -> dict:
    """``params`` with CL and V, where K (= CL / V) stands in for one of them."""
    if "V" not in params:
        return dict(params, V=params["CL"] / params["K"])
    if "CL" not in params:
        return dict(params, CL=params["K"] * params["V"])
    return params


#: The analytic models by name (NONMEM's ADVAN1-4, 11, 12).
MODELS: dict[str, Compartmental] = {
    m.name: m
    for m in (
        Compartmental("1cpt_iv", 1, False),
        Compartmental("1cpt_oral", 1, True),
        Compartmental("2cpt_iv", 2, False),
        Compartmental("2cpt_oral", 2, True),
        Compartmental("3cpt_iv", 3, False),
        Compartmental("3cpt_oral", 3, True),
    )
}

for _m in MODELS.values():
    register_model(_m)
