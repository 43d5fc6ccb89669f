"""Analytic compartment solutions against numerical ODE integration, and their gradients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from nlmebayes import read_nonmem
from nlmebayes.data import DataError
from nlmebayes.pk import MODELS, disposition, get_model
from tests.reference_ode import simulate, system_matrix

PARAM_ORDER = ("CL", "V", "Q", "V2", "Q3", "V3", "KA", "TLAG", "F")

# Relative agreement asked of the analytic solutions. The ODE reference is integrated at
# rtol 1e-11, and the Taylor fallback of divided differences is accurate to ~1e-8, so 1e-6 has
# two orders of margin. Values below 1e-9 of the concentration scale (total dose / V), e.g.
# long after elimination, are below what the ODE's absolute tolerance resolves and are
# compared absolutely at that level.
REL, FLOOR = 1e-6, 1e-9
# Every example is a new graph: compile it without the numba JIT (the default linker), whose
# per-graph compile time and retained memory would dominate the run.
MODE = "FAST_COMPILE"
# Gradients of the 2- and 3-compartment solutions: PyTensor's local_greedy_distributor rewrite
# spends ~40 s per 3-compartment graph distributing products over sums (value and gradient of
# 3cpt_iv: 40 s to compile with it, 1.5 s without). These checks hold either way.
GRAD_MODE = pytensor.compile.mode.get_mode(MODE).excluding("local_greedy_distributor")
# Each example costs a compile; shrinking would take minutes. A failure prints its example.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


def _event_table(regimens) -> pd.DataFrame:
    """One subject per regimen, records in time order (dose before observation at ties)."""
    rows = []
    for i, reg in enumerate(regimens, start=1):
        recs = [
            dict(
                ID=i,
                TIME=d["time"],
                DV=0,
                AMT=d["amt"],
                EVID=1,
                CMT=d["cmt"],
                RATE=d["rate"],
                II=d["ii"],
                ADDL=d["addl"],
                SS=d["ss"],
            )
            for d in reg["doses"]
        ]
        recs += [
            dict(ID=i, TIME=t, DV=1.0, AMT=0, EVID=0, CMT=0, RATE=0, II=0, ADDL=0, SS=0) for t in reg["obs"]
        ]
        rows += sorted(recs, key=lambda r: r["TIME"])
    return pd.DataFrame(rows)


def reference(model, params, regimen):
    """Central concentration from the scipy ODE, doses expanded independently of nlmebayes."""
    M = system_matrix(model.n_cpt, model.oral, params)
    c_state = int(model.oral)
    doses = []
    for d in regimen["doses"]:
        into_depot = model.oral and d["cmt"] in (0, 1)
        target = into_depot or not model.oral
        lag = params["TLAG"] if target else 0.0
        F = params["F"] if target else 1.0
        state = 0 if into_depot else c_state
        for k in range(d["addl"] + 1):
            t0 = d["time"] + k * d["ii"]
            dur = F * d["amt"] / d["rate"] if d["rate"] > 0 else 0.0
            doses.append(
                dict(
                    time0=t0,
                    time=t0 + lag,
                    state=state,
                    amt=F * d["amt"],
                    dur=dur,
                    ss=d["ss"] if k == 0 else 0,
                    ii=d["ii"],
                )
            )
    return simulate(M, doses, np.asarray(regimen["obs"]), c_state) / params["V"]


@st.composite
def subject(draw, oral: bool):
    """Parameters and a random regimen: bolus/infusion, depot/central, lag, F, ADDL, SS."""
    p = {
        "CL": draw(st.floats(0.5, 20)),
        "V": draw(st.floats(5, 100)),
        "Q": draw(st.floats(0.5, 20)),
        "V2": draw(st.floats(5, 200)),
        "Q3": draw(st.floats(0.2, 10)),
        "V3": draw(st.floats(10, 300)),
        "KA": draw(st.floats(0.1, 5)),
        "TLAG": draw(st.floats(0, 1)),
        "F": draw(st.floats(0.3, 1)),
    }
    doses = []
    t = 0.0
    for i in range(draw(st.integers(1, 3))):
        t += draw(st.floats(0, 24)) if i else 0.0
        inf = draw(st.booleans())
        ii = draw(st.floats(6, 24))
        # SS=1 resets, so only the first record may carry it (later ones use SS=2).
        ss = draw(st.sampled_from([0, 1] if i == 0 else [0, 2]))
        dur = draw(st.floats(0.5, 4)) if inf else 0.0
        amt = draw(st.floats(10, 500))
        cmt = draw(st.sampled_from([0, 1, 2])) if oral else 0
        ii = ii if (ss or draw(st.booleans())) else 0.0
        doses.append(
            dict(
                time=round(t, 3),
                amt=amt,
                rate=amt / dur if inf else 0.0,
                ii=ii,
                ss=ss,
                cmt=cmt,
                addl=draw(st.integers(0, 3)) if ii > 0 else 0,
            )
        )
    obs = sorted(draw(st.lists(st.floats(0.05, 120), min_size=3, max_size=8, unique=True)))
    # Observations exactly at a dose or infusion end are kinks: keep them away (the tie rule
    # has its own test).
    kinks = []
    for d in doses:
        for k in range(d["addl"] + 1):
            t0 = d["time"] + k * d["ii"]
            kinks += [t0, t0 + p["TLAG"]]
            if d["rate"]:
                kinks.append(t0 + p["TLAG"] + d["amt"] / d["rate"] * p["F"])
    assume(all(min(abs(o - k) for k in kinks) > 1e-3 for o in obs))
    return p, dict(doses=doses, obs=obs)


def _population_graph(model, subjects):
    data = read_nonmem(_event_table([reg for _, reg in subjects]))
    names = model.parameters + ("TLAG", "F")
    syms = {k: pt.dvector(k) for k in names}
    conc = model.concentration(data, syms)
    values = [np.array([p[k] for p, _ in subjects]) for k in names]
    return data, names, syms, conc, values


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=NO_SHRINK)
@given(data=st.data())
def test_analytic_matches_ode(name, data):
    """Each example is a population of 12 random regimens (one compiled graph per example)."""
    model = get_model(name)
    subjects = data.draw(st.lists(subject(model.oral), min_size=12, max_size=12))
    ev, names, syms, conc, values = _population_graph(model, subjects)
    got = pytensor.function(list(syms.values()), conc, on_unused_input="ignore", mode=MODE)(*values)
    assert np.all(np.isfinite(got))
    for i, (p, reg) in enumerate(subjects):
        ref = reference(model, p, reg)
        dose_scale = sum(d["amt"] * (d["addl"] + 1) for d in reg["doses"]) / p["V"]
        tol = REL * np.abs(ref) + FLOOR * dose_scale
        mine = got[ev.obs_subject == i]
        np.testing.assert_array_less(np.abs(mine - ref), tol, err_msg=f"{name} {p} {reg}")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=NO_SHRINK)
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    """Directional derivative (random projection of the outputs) vs central differences."""
    model = get_model(name)
    subjects = data.draw(st.lists(subject(model.oral), min_size=6, max_size=6))
    ev, names, syms, conc, values = _population_graph(model, subjects)
    w = np.random.default_rng(0).normal(size=ev.n_obs)
    inputs = list(syms.values())
    f = pytensor.function(inputs, (conc * w).sum(), on_unused_input="ignore", mode=GRAD_MODE)
    g = pytensor.function(
        inputs,
        pytensor.grad((conc * w).sum(), inputs, disconnected_inputs="ignore"),
        on_unused_input="ignore",
        mode=GRAD_MODE,
    )
    grads = g(*values)
    f0 = abs(f(*values))
    # f's own precision: the 3-compartment roots (trigonometric cubic formula) are accurate to
    # 4e-13 relative (measured against 40-digit mpmath eigenvalues), the others to a few eps.
    f_rel = 1e-12 if model.n_cpt == 3 else 10 * np.finfo(float).eps
    for j, gj in enumerate(grads):
        for i in range(len(subjects)):
            # Central differences with a relative step of 1e-6: truncation ~1e-12 relative, and
            # a round-off of about f_rel*|f|/h, which is added to the 1e-5 relative tolerance.
            h = 1e-6 * max(values[j][i], 1e-2)  # TLAG may be exactly 0
            vp = [v.copy() for v in values]
            vm = [v.copy() for v in values]
            vp[j][i] += h
            vm[j][i] -= h
            fd = (f(*vp) - f(*vm)) / (2 * h)
            scale = abs(fd) + abs(gj[i]) + 1e-12
            roundoff = f_rel * (f0 + 1.0) / h
            assert abs(gj[i] - fd) <= 1e-5 * scale + roundoff, (name, names[j], i, gj[i], fd)


def test_disposition_eigenvalues_match_numpy():
    """Closed-form roots and coefficients of 2- and 3-compartment disposition vs numpy.linalg."""
    rng = np.random.default_rng(1)
    for n_cpt in (2, 3):
        for _ in range(20):
            p = dict(
                CL=rng.uniform(0.1, 30),
                V=rng.uniform(1, 100),
                Q=rng.uniform(0.1, 30),
                V2=rng.uniform(1, 300),
                Q3=rng.uniform(0.1, 30),
                V3=rng.uniform(1, 300),
            )
            lam, coef = disposition(n_cpt, *[pt.as_tensor(p[k]) for k in ("CL", "V", "Q", "V2", "Q3", "V3")])
            lam, coef = pytensor.function([], [lam, coef], mode=MODE)()
            M = system_matrix(n_cpt, False, p)
            ev = np.sort(-np.linalg.eigvals(M).real)
            np.testing.assert_allclose(np.sort(lam), ev, rtol=1e-9)
            # coefficients sum to 1: a unit bolus starts with all of it in the central compartment
            np.testing.assert_allclose(coef.sum(), 1.0, rtol=1e-9)


def _single_oral(ka, k, t):
    CL, V, KA = pt.dscalar(), pt.dscalar(), pt.dscalar()
    data = read_nonmem(
        pd.DataFrame(dict(ID=1, TIME=[0.0, *t], AMT=[100.0] + [0] * len(t), DV=[0.0] + [1.0] * len(t)))
    )
    c = get_model("1cpt_oral").concentration(data, dict(CL=CL, V=V, KA=KA))
    grads = pytensor.grad(c.sum(), [CL, V, KA])
    f = pytensor.function([CL, V, KA], [c, *grads])
    return f(k * 10.0, 10.0, ka)


def test_ka_equal_k_is_the_limit():
    """KA == K has the limit C = D*K*t*exp(-K t)/V; no 0/0, gradients continuous across it."""
    t = np.array([0.5, 1.0, 4.0, 12.0, 48.0])
    k = 0.3
    c_eq, *g_eq = _single_oral(k, k, t)
    limit = 100.0 * k * t * np.exp(-k * t) / 10.0
    np.testing.assert_allclose(c_eq, limit, rtol=1e-12)
    for eps in (1e-12, 1e-8, 1e-5):
        c_near, *g_near = _single_oral(k * (1 + eps), k, t)
        # value and gradient change by O(eps) across the tie
        np.testing.assert_allclose(c_near, c_eq, rtol=10 * eps + 1e-12)
        for a, b in zip(g_near, g_eq, strict=True):
            assert np.isfinite(a) and np.isfinite(b)
            np.testing.assert_allclose(a, b, rtol=1e3 * eps + 1e-9)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_nan_at_extreme_legal_values(name):
    """Values and gradients stay finite for parameters over 8+ orders of magnitude and times
    far beyond elimination (where concentrations underflow to 0)."""
    m = get_model(name)
    df = pd.DataFrame(
        dict(
            ID=1,
            TIME=[0, 0.001, 1, 1e3, 1e5, 1e5, 1e5 + 1],
            AMT=[100, 0, 0, 0, 0, 50, 0],
            RATE=[0, 0, 0, 0, 0, 25, 0],
            II=[0, 0, 0, 0, 0, 12, 0],
            SS=[0, 0, 0, 0, 0, 1, 0],
            DV=[0, 1, 1, 1, 1, 0, 1],
        )
    )
    data = read_nonmem(df)
    syms = {k: pt.dscalar(k) for k in m.parameters + ("TLAG",)}
    c = m.concentration(data, syms)
    # A residual objective, as in the Normal likelihood: (DV - C)^2. (log C would be -inf
    # where C underflows to 0 long after the dose, which is the right answer there.)
    grads = pytensor.grad(((1.0 - c) ** 2).sum(), list(syms.values()))
    f = pytensor.function(list(syms.values()), [c, *grads], mode=GRAD_MODE)
    for scale in (1e-4, 1.0, 1e4):
        for ka in (1e-4, 1.0, 1e3):
            vals = {k: scale * 1.0 for k in syms}
            vals.update(
                {k: v for k, v in dict(V=10.0, V2=50.0, V3=100.0, TLAG=0.0, KA=ka).items() if k in syms}
            )
            out = f(*vals.values())
            for o in out:
                assert np.all(np.isfinite(o)), (name, scale, ka, out)


@pytest.mark.parametrize("name", ["1cpt_oral", "2cpt_oral", "3cpt_iv"])
def test_parameter_divisions_are_per_subject_not_per_pair(name):
    """CL / V, the 2-/3-cpt exponents and coefficients, 1 / V and 1 / (KA - lambda) are computed
    once per subject and then taken per dose-observation pair, in the values and the gradient:
    every division whose result has one entry per pair divides by a constant (the series'
    1/6, 1/24). Per pair they cost the rich oral design (120 subjects x 11 samples) 95 us per
    log-density and gradient, per subject 64 us; the rich 2-cpt IV design 210 -> 121 us."""
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import applys_between
    from pytensor.scalar import TrueDiv
    from pytensor.tensor.elemwise import DimShuffle, Elemwise

    model = get_model(name)
    # doses unequally spaced (no geometric-sum trains), so pairs outnumber observations
    dose = dict(amt=100.0, cmt=1, rate=0.0, ii=0.0, addl=0, ss=0)
    reg = dict(doses=[dose | {"time": t} for t in (0.0, 12.0, 36.0)], obs=[1.0, 6.0, 14.0, 30.0, 40.0, 48.0])
    data = read_nonmem(_event_table([reg] * 3))
    n_pairs = len(data.pair_obs)
    assert n_pairs > data.n_obs
    p = {k: pt.dvector(k) for k in model.parameters}
    c = model.concentration(data, p)
    grads = pytensor.grad(pt.sum(c**2), list(p.values()))
    divs = [
        n
        for n in applys_between(list(p.values()), [c, *grads])
        if isinstance(n.op, Elemwise) and isinstance(n.op.scalar_op, TrueDiv)
    ]
    lengths = pytensor.function(
        list(p.values()), [n.outputs[0].shape[0] for n in divs], mode=MODE, on_unused_input="ignore"
    )(*[np.full(3, v) for v in (5.0, 20.0, 10.0, 50.0, 3.0, 80.0, 1.5)[: len(p)]])

    def divisor(node):
        v = node.inputs[1]
        while v.owner is not None and isinstance(v.owner.op, DimShuffle):
            v = v.owner.inputs[0]
        return v

    per_pair = [divisor(n) for n, k in zip(divs, lengths, strict=True) if k == n_pairs]
    assert all(isinstance(v, Constant) for v in per_pair), per_pair
    assert sum(k == 3 for k in lengths) >= 3  # the divisions happen, on the subjects' rows


def test_bolus_at_observation_time_follows_record_order():
    """A bolus recorded before an observation at the same time is seen by it; after, not."""
    df = pd.DataFrame(dict(ID=1, TIME=[0.0, 2.0, 2.0, 2.0], AMT=[100, 0, 100, 0], DV=[0, 1.0, 0, 1.0]))
    data = read_nonmem(df)
    c = get_model("1cpt_iv").concentration(data, dict(CL=1.0, V=10.0)).eval()
    np.testing.assert_allclose(c, [10 * np.exp(-0.2), 10 * np.exp(-0.2) + 10], rtol=1e-12)


def test_reset_and_modelled_duration():
    """EVID 3 wipes earlier doses; RATE=-2 takes the infusion length from parameter D."""
    df = pd.DataFrame(
        dict(
            ID=1,
            TIME=[0, 1, 5, 0, 1],
            AMT=[100, 0, 0, 0, 0],
            EVID=[1, 0, 0, 3, 0],
            MDV=[1, 0, 0, 1, 0],
            DV=[0, 1, 1, 0, 1],
        )
    )
    c = get_model("1cpt_iv").concentration(read_nonmem(df), dict(CL=1.0, V=10.0)).eval()
    np.testing.assert_allclose(c, [10 * np.exp(-0.1), 10 * np.exp(-0.5), 0.0], rtol=1e-12)
    df = pd.DataFrame(dict(ID=1, TIME=[0, 1, 3], AMT=[100, 0, 0], RATE=[-2, 0, 0], DV=[0, 1, 1]))
    c = get_model("1cpt_iv").concentration(read_nonmem(df), dict(CL=1.0, V=10.0, D=2.0)).eval()
    k = 0.1
    in_inf = 50 / 1.0 * (1 - np.exp(-k * 1)) / k / 10.0
    after = 50 * (1 - np.exp(-k * 2)) / k * np.exp(-k * 1) / 10.0
    np.testing.assert_allclose(c, [in_inf, after], rtol=1e-10)
    with pytest.raises(ValueError, match="needs D"):
        get_model("1cpt_iv").concentration(read_nonmem(df), dict(CL=1.0, V=10.0))


def test_unknown_compartment_is_named():
    df = pd.DataFrame(dict(ID=1, TIME=[0, 1], AMT=[100, 0], CMT=[3, 1], DV=[0, 1]))
    with pytest.raises(DataError, match=r"row 1, column CMT: unknown dose compartment CMT=3"):
        get_model("1cpt_iv").concentration(read_nonmem(df), dict(CL=1.0, V=10.0))


def _constant_infusion(ii=12.0, cmt=0, bolus=0.0):
    """SS=1, AMT=0, RATE=10 (a constant-rate infusion at steady state), then observations."""
    return read_nonmem(
        pd.DataFrame(
            dict(
                ID=1,
                TIME=[0.0, 0.0, 1.0, 5.0, 48.0],
                AMT=[0.0, bolus, 0, 0, 0],
                RATE=[10.0, 0, 0, 0, 0],
                SS=[1, 0, 0, 0, 0],
                II=[ii, 0, 0, 0, 0],
                CMT=[cmt, cmt, 0, 0, 0],
                EVID=[1, 1 if bolus else 2, 0, 0, 0],
                DV=[np.nan, np.nan, 1.0, 1.0, 1.0],
            )
        )
    )


@pytest.mark.parametrize("ii", [12.0, 0.0], ids=["II=12", "II=0"])
def test_constant_rate_steady_state_infusion(ii):
    """SS=1 with AMT=0 and RATE>0 is an infusion that has run forever: the concentration is
    RATE * F / CL at every time after the record, whatever the compartments or the input route
    (it used to predict 0). Closed forms; rtol 1e-12 is rounding (1e-10 for 2-cpt, whose
    exponents come from a quadratic's roots)."""
    c = get_model("1cpt_iv").concentration(_constant_infusion(ii), dict(CL=1.0, V=10.0)).eval()
    np.testing.assert_allclose(c, [10.0, 10.0, 10.0], rtol=1e-12)
    # into the depot (CMT 1) of an oral model, with bioavailability scaling the rate
    oral = get_model("1cpt_oral").concentration(
        _constant_infusion(ii, cmt=1), dict(CL=2.0, V=10.0, KA=1.3, F=0.5)
    )
    np.testing.assert_allclose(oral.eval(), [2.5, 2.5, 2.5], rtol=1e-12)
    two = get_model("2cpt_iv").concentration(_constant_infusion(ii), dict(CL=2.0, V=10.0, Q=3.0, V2=40.0))
    np.testing.assert_allclose(two.eval(), [5.0, 5.0, 5.0], rtol=1e-10)


def test_constant_infusion_superposes_and_differentiates():
    """A bolus on top of the steady state adds its own decay; d Css / d CL = -RATE / CL^2."""
    c = get_model("1cpt_iv").concentration(_constant_infusion(bolus=100.0), dict(CL=1.0, V=10.0)).eval()
    t = np.array([1.0, 5.0, 48.0])
    np.testing.assert_allclose(c, 10.0 + 10.0 * np.exp(-0.1 * t), rtol=1e-12)
    cl = pt.dscalar("cl")
    css = get_model("1cpt_iv").concentration(_constant_infusion(), dict(CL=cl, V=10.0))[0]
    grad = pytensor.function([cl], pytensor.grad(css, cl), mode=MODE)(2.0)
    np.testing.assert_allclose(grad, -10.0 / 4.0, rtol=1e-12)


def test_constant_infusion_is_rejected_by_the_ode_path():
    """The ODE path does not compute the steady state of a constant-rate infusion (SS=1, AMT=0)
    yet: it says so, naming the row."""
    with pytest.raises(DataError, match="row 1.*column SS.*steady-state"):
        get_model("1cpt_iv_ode").check(_constant_infusion())


def test_k_replaces_v_or_cl_but_not_both():
    """K = CL/V may stand in for V (nlme's SSfol) or for CL (NONMEM's TRANS1): same curve."""
    df = pd.DataFrame({"ID": 1, "TIME": [0, 1, 4, 12], "AMT": [100, 0, 0, 0], "DV": [None, 1, 1, 1]})
    m, data = get_model("1cpt_iv"), read_nonmem(df)
    ref = m.concentration(data, dict(CL=2.0, V=10.0)).eval()
    np.testing.assert_allclose(m.concentration(data, dict(CL=2.0, K=0.2)).eval(), ref, rtol=1e-12)
    np.testing.assert_allclose(m.concentration(data, dict(K=0.2, V=10.0)).eval(), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="give K with one of CL and V"):
        m.check_parameters(["CL", "V", "K"])
    with pytest.raises(ValueError, match=r"missing \['CL'\]"):
        m.check_parameters(["V"])


@pytest.mark.parametrize("name", ["1cpt_oral", "2cpt_oral", "2cpt_iv"])
def test_dose_trains_equal_the_doses_one_by_one(name):
    """Half a year of daily doses (as ADDL on one record for one subject, as 180 records for the
    other) with a lag of 1.5 h at troughs: the trains' geometric sums give the same
    concentrations and gradients as superposing the 180 doses one by one (to 1e-10 relative:
    both are exact formulas; they differ by rounding in sums of up to 180 terms), with at most
    2 pairs per observation instead of up to 181."""
    model = get_model(name)
    records = [dict(ID=1, TIME=0.0, AMT=100.0, II=24.0, ADDL=179, DV=0.0, EVID=1)]
    records += [dict(ID=2, TIME=24.0 * k, AMT=100.0, II=0, ADDL=0, DV=0.0, EVID=1) for k in range(180)]
    # the second subject also has a loading dose at 0: a pair of its own beside the train
    records += [dict(ID=2, TIME=0.0, AMT=300.0, II=0, ADDL=0, DV=0.0, EVID=1)]
    obs = [0.5, 1.0, 1.6, 23.0, 100.0, 24 * 90 + 1.2, 24 * 179 + 1.4, 24 * 179 + 30.0, 24 * 200.0]
    records += [dict(ID=i, TIME=t, AMT=0.0, II=0, ADDL=0, DV=1.0, EVID=0) for i in (1, 2) for t in obs]
    df = pd.DataFrame(records).sort_values(["ID", "TIME", "EVID"], kind="stable")
    data = read_nonmem(df)
    assert data.pair_count.max() == 180 and len(data.pair_obs) <= 2 * data.n_obs
    flat = data.without_trains()
    assert len(flat.pair_obs) > 10 * len(data.pair_obs)
    values = {"CL": [3.0, 4.0], "V": [30.0, 50.0], "KA": [1.1, 0.7], "Q": [5.0, 2.0], "V2": [60.0, 80.0]}
    values |= {"TLAG": [1.5, 1.5]}
    syms = {k: pt.dvector(k) for k in values if k in model.parameters + ("TLAG",)}
    args = [np.array(values[k]) for k in syms]
    out = []
    for d in (data, flat):
        conc = model.concentration(d, syms)
        grads = pytensor.grad(pt.sum(pt.log(conc + 1.0)), list(syms.values()))
        out.append(pytensor.function(list(syms.values()), [conc, *grads], mode=MODE)(*args))
    for got, want in zip(*out, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    assert out[0][0][0] == 0.0 and out[0][0][3] > 0  # before the lag has passed, nothing yet


@pytest.mark.parametrize("gap", [0.0, 1e-9, 1e-5, 1e-2])
def test_dose_trains_and_steady_state_through_ka_equal_to_k(gap):
    """Repeated doses into the depot with KA = k (1 + gap), 1- and 2-cpt (exponents far from KA
    beside), concentrations and gradients to 1e-10 relative on both sides of the switch to a
    series where ``|KA - k| t < 1e-3`` (``_depot_repeated``):

    - a 10-dose train against the 10 doses one by one (``exp_diff``);
    - an SS=1 dose against a 100-dose train ending at the same dose (what is left of the doses
      before it is below exp(-40)).

    The formulas are exact up to rounding and the series' truncation (< 1e-14)."""
    obs = [1.0, 50.0, 108.5, 110.0, 119.9, 200.0]
    train = [dict(ID=1, TIME=0.0, AMT=100.0, II=12.0, ADDL=9, SS=0, DV=0.0, EVID=1)]
    train += [dict(ID=1, TIME=t, AMT=0.0, II=0, ADDL=0, SS=0, DV=1.0, EVID=0) for t in obs]
    data = read_nonmem(pd.DataFrame(train))
    assert data.pair_count.tolist() == [1, 5, 10, 10, 10, 10]  # one train pair per sample
    last = 12.0 * 99
    after = [last + t for t in (0.5, 4.0, 11.9, 30.0)]
    ss = [dict(ID=1, TIME=last, AMT=100.0, II=12.0, ADDL=0, SS=1, DV=0.0, EVID=1)]
    long = [dict(ID=1, TIME=0.0, AMT=100.0, II=12.0, ADDL=99, SS=0, DV=0.0, EVID=1)]
    samples = [dict(ID=1, TIME=t, AMT=0.0, II=0, ADDL=0, SS=0, DV=1.0, EVID=0) for t in after]
    cases = [
        (data, data.without_trains()),
        (read_nonmem(pd.DataFrame(ss + samples)), read_nonmem(pd.DataFrame(long + samples))),
    ]
    values = {"CL": 3.0, "V": 30.0, "KA": 0.1 * (1 + gap), "Q": 5.0, "V2": 60.0}
    for name in ("1cpt_oral", "2cpt_oral"):
        model = get_model(name)
        syms = {k: pt.dvector(k) for k in model.parameters}
        args = [np.array([values[k]]) for k in syms]
        for case in cases:
            out = []
            for d in case:
                conc = model.concentration(d, syms)
                grads = pytensor.grad(pt.sum(pt.log(conc)), list(syms.values()))
                out.append(pytensor.function(list(syms.values()), [conc, *grads], mode=MODE)(*args))
            for got, want in zip(*out, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-10)
