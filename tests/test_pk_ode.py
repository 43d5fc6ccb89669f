"""ODE structural models against the analytic solutions (values and gradients), a stiff system,
the expression parser, and the spec/TOML plumbing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest

from nlmebayes import ModelSpec, read_nonmem
from nlmebayes.data import DataError
from nlmebayes.model.spec import ODE, ResidualError
from nlmebayes.pk import get_model
from nlmebayes.pk.ode import ODE_MODELS, ODESolve, ODESystem, parse_expression

MODE = "FAST_COMPILE"  # throw-away graphs: skip the numba JIT of the surrounding graph


def _regimens(oral: bool, n: int, seed: int) -> pd.DataFrame:
    """Random multiple-dose regimens: bolus or infusion (given rate, or RATE=-2: modelled
    duration D), depot or central, ADDL, irregular sampling."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        recs, t = [], 0.0
        for k in range(rng.integers(1, 4)):
            t += rng.uniform(4, 24) if k else 0.0
            inf = rng.random() < 0.5
            cmt = (1 if rng.random() < 0.7 else 2) if oral else 1
            amt = rng.uniform(50, 500)
            addl = int(rng.integers(0, 3))
            recs.append(
                dict(
                    ID=i,
                    TIME=t,
                    DV=0.0,
                    AMT=amt,
                    EVID=1,
                    CMT=cmt,
                    RATE=(-2.0 if rng.random() < 0.4 else amt / rng.uniform(0.5, 4)) if inf else 0.0,
                    II=12.0 if addl else 0.0,
                    ADDL=addl,
                )
            )
        for tt in np.sort(rng.uniform(0, t + 48, 8)):
            recs.append(
                dict(ID=i, TIME=tt, DV=1.0, AMT=0.0, EVID=0, CMT=2 if oral else 1, RATE=0.0, II=0.0, ADDL=0)
            )
        rows += sorted(recs, key=lambda r: (r["TIME"], -r["EVID"]))
    return pd.DataFrame(rows)


def _values_and_grads(model, data, values):
    syms = {k: pt.dvector(k) for k in values}
    c = model.concentration(data, syms)
    w = pt.dvector("w")  # a random projection: one gradient checks every observation
    g = pt.grad(pt.sum(c * w), list(syms.values()))
    fn = pytensor.function([*syms.values(), w], [c, *g], mode=MODE)
    wv = np.random.default_rng(1).standard_normal(data.n_obs)
    return fn(*values.values(), wv)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["1cpt_iv", "1cpt_oral", "2cpt_iv", "2cpt_oral"])
def test_ode_matches_analytic_values_and_gradients(name):
    """6 subjects with random multiple-dose regimens (bolus/infusion, depot/central, ADDL,
    RATE=-2 with a modelled duration D), lag and F: the ODE path agrees with the closed form to
    relative 1e-6 in concentrations and in gradients w.r.t. every parameter, integrating at rtol
    1e-10."""
    oral = name.endswith("oral")
    df = _regimens(oral, 6, seed=len(name))
    assert (df.RATE == -2).any() and (df.RATE > 0).any()
    data = read_nonmem(df)
    rng = np.random.default_rng(3)
    n = data.n_subjects
    values = {
        "CL": rng.uniform(1, 10, n),
        "V": rng.uniform(10, 60, n),
        "TLAG": rng.uniform(0, 1, n),
        "F": rng.uniform(0.4, 1, n),
        "D": rng.uniform(0.5, 3, n),
    }
    if name.startswith("2cpt"):
        values |= {"Q": rng.uniform(1, 10, n), "V2": rng.uniform(20, 100, n)}
    if oral:
        values["KA"] = rng.uniform(0.3, 3, n)
    ode = dataclasses.replace(ODE_MODELS[f"{name}_ode"], rtol=1e-10, atol=1e-12)
    a = _values_and_grads(get_model(name), data, values)
    o = _values_and_grads(get_model(ode), data, values)
    scale = np.abs(a[0]).max()
    np.testing.assert_allclose(o[0], a[0], rtol=1e-6, atol=1e-9 * scale)
    for name_, ga, go in zip(values, a[1:], o[1:], strict=True):
        np.testing.assert_allclose(go, ga, rtol=1e-6, atol=1e-8 * np.abs(ga).max(), err_msg=name_)


@pytest.mark.slow
def test_stiff_system_with_rosenbrock():
    """Two compartments exchanging at 1000/h with elimination 0.1/h: eigenvalues ~2000 and ~0.05
    per hour, a stiffness ratio of 4e4. The L-stable Rosenbrock pair (exact Jacobian of the state
    + sensitivity system) matches the closed form to 1e-5 in ~2000 steps at rtol 1e-8; the
    explicit method needs 30x as many (its step is capped by stability at ~1.5e-3 h)."""
    df = pd.DataFrame(
        dict(
            ID=1,
            TIME=[0.0, 0.5, 2, 10, 50, 100],
            AMT=[100.0, 0, 0, 0, 0, 0],
            DV=[0.0, 1, 1, 1, 1, 1],
            EVID=[1, 0, 0, 0, 0, 0],
        )
    )
    data = read_nonmem(df)
    values = {"CL": np.array([1.0]), "V": np.array([10.0]), "Q": np.array([1e4]), "V2": np.array([10.0])}
    ref = _values_and_grads(get_model("2cpt_iv"), data, values)
    steps = {}
    for method in ("rosenbrock23", "dopri5"):
        system = ODESystem.from_spec(
            dataclasses.replace(ODE_MODELS["2cpt_iv_ode"], method=method, rtol=1e-8, atol=1e-10)
        )
        out = _values_and_grads(system, data, values)
        np.testing.assert_allclose(out[0], ref[0], rtol=1e-5)
        op = ODESolve(system, data, ("CL", "Q", "V", "V2"), system.rtol, system.atol)
        _, _, counters = op.solver(np.array([[1.0, 1e4, 10.0, 10.0]]), *op.args, op.rtol, op.atol)
        steps[method] = int(counters[0])
    assert steps["rosenbrock23"] < 5000
    assert steps["dopri5"] > 10 * steps["rosenbrock23"]


@pytest.mark.slow
def test_rosenbrock_sensitivities():
    data = read_nonmem(_regimens(True, 3, seed=5))
    values = {"CL": np.array([3.0, 5, 8]), "V": np.array([20.0, 30, 50]), "KA": np.array([0.5, 1, 2])}
    if (data.dose_rate == -2).any():
        values["D"] = np.array([1.0, 2.0, 1.5])
    ref = _values_and_grads(get_model("1cpt_oral"), data, values)
    ode = dataclasses.replace(ODE_MODELS["1cpt_oral_ode"], method="rosenbrock23", rtol=1e-9, atol=1e-11)
    out = _values_and_grads(get_model(ode), data, values)
    # an order-2 method at rtol 1e-9: about 1e-6 relative
    for ga, go in zip(ref, out, strict=True):
        np.testing.assert_allclose(go, ga, rtol=1e-5, atol=1e-7 * np.abs(ga).max())


def test_expression_parser_is_safe_and_complete():
    x = pt.dscalar("x")
    f = pytensor.function([x], parse_expression("-(2 * x ** 2 + exp(x) / sqrt(4.0)) - log(x)", {"x": x}))
    assert f(1.5) == pytest.approx(-(2 * 1.5**2 + np.exp(1.5) / 2) - np.log(1.5))
    for bad in ("__import__('os')", "x.real", "x if x else 1", "unknown * 2"):
        with pytest.raises(ValueError):
            parse_expression(bad, {"x": x})


def test_ode_spec_round_trip_and_one_word_switch():
    mm = ODE(
        name="mm",
        states=["depot", "central"],
        rhs={"depot": "-KA * depot", "central": "KA * depot - VMAX * central / (KM * V + central)"},
        observe="central / V",
    )
    spec = ModelSpec(
        name="mm",
        structural=mm,
        parameters={"KA": 1.0, "V": 30.0, "VMAX": 10.0, "KM": 2.0},
        error=ResidualError("proportional"),
    )
    assert ModelSpec.from_toml(spec.to_toml()) == spec
    assert get_model(spec.structural).parameters == ("KA", "KM", "V", "VMAX")
    with pytest.raises(ValueError, match="one right-hand side per state"):
        ODE(name="x", states=["a", "b"], rhs={"a": "-a"}, observe="a")
    with pytest.raises(ValueError, match="missing"):
        get_model("1cpt_oral_ode").check_parameters(["CL", "V"])


def _reset_records() -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(ID=1, TIME=0.0, AMT=100.0, EVID=1, CMT=1),
            dict(ID=1, TIME=2.0, AMT=0, EVID=0, CMT=2),
            dict(ID=1, TIME=8.0, AMT=0, EVID=0, CMT=2),
            dict(ID=1, TIME=1.0, AMT=0, EVID=3, CMT=2),  # reset: amounts back to 0, clock to 1 h
            dict(ID=1, TIME=3.0, AMT=0, EVID=0, CMT=2),
            dict(ID=1, TIME=4.0, AMT=50.0, EVID=1, CMT=2),
            dict(ID=1, TIME=6.0, AMT=0, EVID=0, CMT=2),
            dict(ID=1, TIME=0.0, AMT=80.0, EVID=4, CMT=1),  # reset and dose
            dict(ID=1, TIME=1.5, AMT=0, EVID=0, CMT=2),
            dict(ID=1, TIME=12.0, AMT=0, EVID=0, CMT=2),
            dict(ID=2, TIME=0.0, AMT=60.0, EVID=1, CMT=1),
            dict(ID=2, TIME=5.0, AMT=0, EVID=0, CMT=2),
        ]
    ).assign(DV=lambda d: np.where(d["EVID"] == 0, 1.0, 0.0))


def _sequential_reference(df: pd.DataFrame, values: dict) -> np.ndarray:
    """1-cpt oral by scipy, record by record in file order: a reset (EVID 3/4) sets the amounts
    to 0 and the clock to its TIME, a dose adds to its compartment, an observation integrates
    up to its TIME (LSODA, rtol 1e-11). Shares nothing with the package's event handling."""
    from scipy.integrate import solve_ivp

    out = []
    for s_, (_, sub) in enumerate(df.groupby("ID", sort=False)):
        cl, v, ka = (values[k][s_] for k in ("CL", "V", "KA"))
        y, t = np.zeros(2), None
        for r in sub.itertuples():
            if r.EVID in (3, 4) or t is None:
                y, t = np.zeros(2), r.TIME
            if r.TIME > t:
                sol = solve_ivp(
                    lambda _, a, ka=ka, cl=cl, v=v: [-ka * a[0], ka * a[0] - cl / v * a[1]],
                    (t, r.TIME),
                    y,
                    method="LSODA",
                    rtol=1e-11,
                    atol=1e-12,
                )
                y, t = sol.y[:, -1], r.TIME
            if r.EVID in (1, 4):
                y[int(r.CMT) - 1] += r.AMT
            elif r.EVID == 0:
                out.append(y[1] / v)
    return np.array(out)


def test_reset_events_match_scipy():
    """EVID 3 and EVID 4 against an independent sequential scipy integration (issue 20: resets
    had been checked only against the package's own analytic path); rtol 1e-7 leaves room for
    LSODA at rtol 1e-11 over many steps."""
    df = _reset_records()
    values = {"CL": np.array([3.0, 5.0]), "V": np.array([20.0, 30.0]), "KA": np.array([1.2, 0.7])}
    c = get_model("1cpt_oral").concentration(read_nonmem(df), {k: pt.as_tensor(v) for k, v in values.items()})
    np.testing.assert_allclose(c.eval(), _sequential_reference(df, values), rtol=1e-7, atol=1e-12)


@pytest.mark.slow
def test_reset_events_match_analytic():
    """EVID 3 (reset) and EVID 4 (reset and dose) restart a subject's system from zero, times
    starting again after the reset: the ODE path agrees with the closed form (whose pairs of
    doses and observations never cross a reset) to 1e-6 in values and gradients."""
    df = _reset_records()
    data = read_nonmem(df)
    values = {"CL": np.array([3.0, 5.0]), "V": np.array([20.0, 30.0]), "KA": np.array([1.2, 0.7])}
    ref = _values_and_grads(get_model("1cpt_oral"), data, values)
    ode = dataclasses.replace(ODE_MODELS["1cpt_oral_ode"], rtol=1e-10, atol=1e-12)
    out = _values_and_grads(get_model(ode), data, values)
    assert ref[0][2] == 0.0 and ref[0][1] > 0  # the reset really cleared the first dose
    for ga, go in zip(ref, out, strict=True):
        np.testing.assert_allclose(go, ga, rtol=1e-6, atol=1e-9 * np.abs(ga).max())


_TURNOVER = ODE(
    name="pk_turnover",
    states=["depot", "central", "effect"],
    rhs={
        "depot": "-KA * depot",
        "central": "KA * depot - CL / V * central",
        "effect": "KOUT * E0 * (1 - central / V / (IC50 + central / V)) - KOUT * effect",
    },
    observe={"cp": "central / V", "pd": "effect"},
    initial={"effect": "E0"},
)


def _turnover_reference(p, dose, t_obs):
    """scipy LSODA at rtol 1e-11 of the same system (doses at t = 0 into the depot)."""
    from scipy.integrate import solve_ivp

    def f(t, y):
        c = y[1] / p["V"]
        return [
            -p["KA"] * y[0],
            p["KA"] * y[0] - p["CL"] / p["V"] * y[1],
            p["KOUT"] * p["E0"] * (1 - c / (p["IC50"] + c)) - p["KOUT"] * y[2],
        ]

    sol = solve_ivp(
        f, (0, t_obs.max()), [dose, 0.0, p["E0"]], t_eval=t_obs, method="LSODA", rtol=1e-11, atol=1e-12
    )
    return sol.y[1] / p["V"], sol.y[2]


@pytest.mark.slow
def test_initial_amounts_and_two_outputs():
    """A PK + turnover PD system starting at its baseline (initial effect = E0), observed
    through two outputs chosen by DVID: values agree with scipy's LSODA at rtol 1e-11 to 1e-7,
    and gradients (E0 enters through the initial amount) with central finite differences of
    those references to 1e-5 (the differences' own error at h = 1e-5 relative)."""
    t = np.array([0.0, 0.5, 2, 6, 12, 24, 48, 96])
    rows = [dict(ID=1, TIME=0.0, AMT=100.0, DV=0.0, EVID=1, DVID="cp")]
    for tt in t:
        rows += [
            dict(ID=1, TIME=tt, AMT=0.0, DV=1.0, EVID=0, DVID="cp"),
            dict(ID=1, TIME=tt, AMT=0.0, DV=1.0, EVID=0, DVID="pd"),
        ]
    data = read_nonmem(pd.DataFrame(rows))
    p = {"KA": 1.1, "CL": 0.15, "V": 8.0, "E0": 95.0, "KOUT": 0.05, "IC50": 1.3}
    system = get_model(dataclasses.replace(_TURNOVER, rtol=1e-10, atol=1e-12))
    assert system.parameters == ("CL", "E0", "IC50", "KA", "KOUT", "V")
    out = _values_and_grads(system, data, {k: np.array([v]) for k, v in p.items()})
    cp, effect = _turnover_reference(p, 100.0, t)
    ref = np.ravel(np.column_stack([cp, effect]))
    np.testing.assert_allclose(out[0], ref, rtol=1e-7, atol=1e-10)
    assert out[0][1] == pytest.approx(95.0)  # at t = 0 the response is at its baseline
    w = np.random.default_rng(1).standard_normal(data.n_obs)  # the projection of _values_and_grads
    for k, g in zip(p, out[1:], strict=True):
        h = 1e-5 * p[k]
        hi = np.ravel(np.column_stack(_turnover_reference(p | {k: p[k] + h}, 100.0, t)))
        lo = np.ravel(np.column_stack(_turnover_reference(p | {k: p[k] - h}, 100.0, t)))
        fd = w @ (hi - lo) / (2 * h)
        assert g[0] == pytest.approx(fd, rel=1e-5, abs=1e-8), k


def test_structural_zero_sensitivities_are_left_out():
    """The solver integrates only the sensitivities that can be non-zero (the gradients of the
    test above go through that reduced system). The pattern follows the equations through the
    states they depend on, the initial amounts, and the dosing parameters (TLAG, F, D jump in
    every state at a dose); parameters that change within a subject keep every column."""
    from nlmebayes.pk.ode.codegen import sensitivity_pattern

    params = ("CL", "E0", "IC50", "KA", "KOUT", "V")
    pattern = sensitivity_pattern(_TURNOVER.states, _TURNOVER.rhs, _TURNOVER.initial, params)
    assert pattern.astype(int).tolist() == [
        [0, 0, 0, 1, 0, 0],  # depot: KA only
        [1, 0, 0, 1, 0, 1],  # central: KA through the depot, CL and V
        [1, 1, 1, 1, 1, 1],  # effect: everything, through central and its own equation
    ]
    oral = ODE_MODELS["2cpt_oral_ode"]
    params = ("CL", "KA", "Q", "V", "V2", "F", "TLAG")
    pattern = sensitivity_pattern(oral.states, oral.rhs, {}, params)
    assert pattern[0].tolist() == [False, True, False, False, False, True, True]
    assert pattern[1:].all()
    # the compiled kernel of the one-compartment depot model writes 2 + 4 entries, not 2 + 6
    system = get_model("1cpt_oral_ode")
    from nlmebayes.pk.ode.codegen import kernel_source

    active = sensitivity_pattern(system.states, dict(system.rhs), {}, ("KA", "CL", "V"))
    src = kernel_source(system.states, dict(system.rhs), ("KA", "CL", "V"), active=active)
    assert [line.split("=")[0].strip() for line in src.splitlines() if "out[" in line] == [
        f"out[{k}]" for k in range(6)
    ]


def test_subexpressions_of_parameters_are_computed_once_per_row():
    """The generated kernel reads ``CL / V``, ``Q / V2``, ... from slots that ``derive`` fills once
    per row of parameters: no division or power is left in the kernel of the 2-cpt oral system
    (they made its solve 26% slower, 200 -> 148 us on Theophylline's 12 subjects), a repeated
    subexpression has one slot, and the kernel's right-hand side equals the equations evaluated
    by Python (the same operations in the same order: 1e-15 allows pow against x * x)."""
    from nlmebayes.pk.ode.codegen import compile_kernel, kernel_source

    system = get_model("2cpt_oral_ode")
    params = ("CL", "KA", "Q", "V", "V2")
    src = kernel_source(system.states, dict(system.rhs), params)
    kernel_body, derive_body = src.split("def derive(p):")
    body = [line for line in kernel_body.splitlines() if "out[" in line or "jy" in line]
    assert not any("/" in line or "**" in line for line in body)
    # Q / V: in the peripheral equation and its Jacobian entry; Q / V2: in two equations
    assert derive_body.count("= Q / V\n") == 1 and derive_body.count("= Q / V2\n") == 1
    kernel, derive, n_const = compile_kernel(system.states, dict(system.rhs), params)
    n, m = len(system.states), len(params)
    rng = np.random.default_rng(1)
    values = np.array([2.7, 1.5, 1.0, 20.0, 15.0])
    p = np.r_[values, 0.0, np.zeros(n_const)]
    derive(p)
    z, r, out = rng.uniform(1, 100, n * (1 + m)), rng.uniform(0, 1, n * (1 + m)), np.empty(n * (1 + m))
    kernel(z, p, r, out)
    scope = dict(zip(params, values, strict=True)) | dict(zip(system.states, z[:n], strict=True))
    expected = [eval(rhs, {}, scope) for _, rhs in system.rhs]  # the spec's own equations
    np.testing.assert_allclose(out[:n], np.array(expected) + r[:n], rtol=1e-15)


def test_a_parameter_matrix_shorter_than_the_schedule_is_refused():
    """The compiled solver reads the rows of P the schedule names; a P with fewer rows (or other
    columns) is an error in Python mode and in the compiled model, not a read past its end."""
    from nlmebayes import datasets

    data = datasets.theophylline()
    system = get_model("1cpt_oral_ode")
    op = ODESolve(system, data, ("KA", "CL", "V"), system.rtol, system.atol)
    P = np.tile([1.5, 2.7, 31.5], (data.n_subjects, 1))
    assert np.isfinite(op.solve(P)[0]).all()
    with pytest.raises(ValueError, match="P has shape"):
        op.solve(P[:5])
    x = pt.dmatrix("P")
    f = pytensor.function([x], op(x)[0], mode="NUMBA")
    np.testing.assert_array_equal(f(P), op.solve(P)[0])
    with pytest.raises(ValueError, match="fewer rows"):
        f(P[:5])


def test_multiple_outputs_need_one_error_each_and_known_dvids():
    params = {"KA": 1.0, "CL": 0.1, "V": 8.0, "E0": 100.0, "KOUT": 0.05, "IC50": 1.0}
    errors = {"cp": ResidualError("proportional", prop=0.1), "pd": ResidualError("additive", add=3)}
    spec = ModelSpec(name="t", structural=_TURNOVER, parameters=params, error=errors)
    assert ModelSpec.from_toml(spec.to_toml()) == spec
    assert spec.sigma_names == ("cp_prop", "pd_add")
    with pytest.raises(ValueError, match="one residual error per output"):
        ModelSpec(name="t", structural=_TURNOVER, parameters=params, error={"cp": errors["cp"]})
    with pytest.raises(ValueError, match="give error as a dict"):
        ModelSpec(name="t", structural=_TURNOVER, parameters=params, error=errors["cp"])
    with pytest.raises(ValueError, match="parameters only"):
        get_model(dataclasses.replace(_TURNOVER, initial={"effect": "E0 + central"}))
    df = pd.DataFrame(
        dict(
            ID=1,
            TIME=[0.0, 1.0, 2.0],
            AMT=[100.0, 0, 0],
            DV=[0.0, 1, 1],
            EVID=[1, 0, 0],
            DVID=["cp", "cp", "pca"],
        )
    )
    with pytest.raises(DataError, match="row 3, column DVID: observation of DVID 'pca'"):
        get_model(_TURNOVER).check(read_nonmem(df))


def test_ode_rejects_what_it_cannot_do_yet():
    df = pd.DataFrame(dict(ID=1, TIME=[0.0, 1.0], AMT=[100.0, 0], DV=[0.0, 1.0], SS=[1, 0], II=[12.0, 0.0],
                           RATE=[5.0, 0.0]))  # fmt: skip
    with pytest.raises(DataError, match=r"row 1, column RATE: a steady-state infusion must end within"):
        get_model("1cpt_iv_ode").check(read_nonmem(df))
    df = df.assign(RATE=[-2.0, 0.0])
    with pytest.raises(DataError, match="steady state with a modelled duration"):
        get_model("1cpt_iv_ode").check(read_nonmem(df))


_DECAY = ODE(name="decay", states=["x"], rhs={"x": "-K * x"}, observe="x", initial={"x": "A0"})


def _decay_records() -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(ID=1, TIME=0.0, AMT=0.0, EVID=2),
            dict(ID=1, TIME=1.0, AMT=0.0, EVID=0),
            dict(ID=1, TIME=1.5, AMT=30.0, EVID=1),
            dict(ID=1, TIME=2.0, AMT=0.0, EVID=0),
            dict(ID=1, TIME=5.0, AMT=0.0, EVID=3),  # reset: back to x = A0, the dose forgotten
            dict(ID=1, TIME=6.0, AMT=0.0, EVID=0),
        ]
    ).assign(DV=lambda d: np.where(d["EVID"] == 0, 1.0, np.nan))


@pytest.mark.slow
def test_reset_returns_to_nonzero_initial_amounts_and_step_budget():
    """A reset restarts from the initial amounts (here x = A0, not 0), against the closed form
    to 1e-6; and a solve that needs more than ``max_steps`` steps returns NaN (rejected by the
    sampler) instead of running on (issue 20, item 6)."""
    data = read_nonmem(_decay_records())
    k, a0 = 0.3, 50.0
    params = {"K": pt.as_tensor([k]), "A0": pt.as_tensor([a0])}
    c = get_model(dataclasses.replace(_DECAY, rtol=1e-10, atol=1e-12)).concentration(data, params).eval()
    expected = [a0 * np.exp(-k), a0 * np.exp(-2 * k) + 30.0 * np.exp(-0.5 * k), a0 * np.exp(-k)]
    np.testing.assert_allclose(c, expected, rtol=1e-6)
    # rtol 1e-12 over these intervals takes dozens of steps; a budget of 3 cannot finish
    tight = dataclasses.replace(_DECAY, name="decay_budget", rtol=1e-12, atol=1e-14, max_steps=3)
    c = get_model(tight).concentration(data, params).eval()
    assert np.isnan(c).all(), c


def test_rhs_and_initial_amounts_may_call_exp_log_sqrt_abs():
    """The functions the ODE docstring promises compile in the numba kernel (they raised a
    NameError there, issue 15) and differentiate correctly: x' = -exp(LK) x written through all
    four functions, x(0) = exp(log(A0)); against the closed form A0 exp(-exp(LK) t) and its
    derivatives, to 1e-6 (the solver's rtol 1e-10 over a few steps)."""
    ode = ODE(
        name="decay_funcs",
        states=["x"],
        rhs={"x": "-exp(LK) * sqrt(abs(x)) * sqrt(abs(x))"},
        observe="x",
        initial={"x": "exp(log(A0))"},
        rtol=1e-10,
        atol=1e-12,
    )
    df = pd.DataFrame([dict(ID=1, TIME=0.0, AMT=0.0, EVID=2), dict(ID=1, TIME=1.0, AMT=0.0, EVID=0),
                       dict(ID=1, TIME=4.0, AMT=0.0, EVID=0)])  # fmt: skip
    data = read_nonmem(df.assign(DV=lambda d: np.where(d["EVID"] == 0, 1.0, np.nan)))
    lk, a0, t = pt.dvector("LK"), pt.dvector("A0"), np.array([1.0, 4.0])
    c = get_model(ode).concentration(data, {"LK": lk, "A0": a0})
    w = pt.dvector("w")
    fn = pytensor.function([lk, a0, w], [c, *pt.grad(pt.sum(c * w), [lk, a0])], mode=MODE)
    k, amount = 0.25, 50.0
    values, g_lk, g_a0 = fn([np.log(k)], [amount], [1.0, 0.5])
    expected = amount * np.exp(-k * t)
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    weights = np.array([1.0, 0.5])
    np.testing.assert_allclose(g_lk, [np.sum(weights * -k * t * expected)], rtol=1e-6)
    np.testing.assert_allclose(g_a0, [np.sum(weights * expected / amount)], rtol=1e-6)


# (expression, parameter value, the function in NumPy): each evaluates to a positive rate
_FUNCTION_CASES = {
    "exp": ("exp(P)", -1.0, np.exp),
    "log": ("log(P)", 2.0, np.log),
    "sqrt": ("sqrt(P)", 0.3, np.sqrt),
    "abs": ("abs(P)", -0.4, np.abs),
    "pow": ("pow(P, 2)", 0.6, lambda p: p**2),
    "min": ("min(P, 0.5)", 0.3, lambda p: np.minimum(p, 0.5)),
    "max": ("max(0.1, P)", 0.3, lambda p: np.maximum(0.1, p)),
    "expit": ("expit(P)", 0.2, lambda p: 1 / (1 + np.exp(-p))),
    "logistic": ("logistic(P)", -0.3, lambda p: 1 / (1 + np.exp(-p))),
    "logit": ("logit(P)", 0.7, lambda p: np.log(p / (1 - p))),
}


def test_each_expression_function_in_rhs_observe_and_initial():
    """Every documented function, in each place an ODE takes expressions (issue 15). One state per
    function, each with its own parameter P_f and r = f(P_f): x_f' = -r x_f, x_f(0) = 10 r, and the
    output sums x_f r, i.e. 10 r^2 exp(-r t) per function. The sum against its closed form, and
    d/dP_f (which involves f only) against a central difference, to 1e-6 (solver rtol 1e-10,
    difference step 1e-6). One system: one compile for all ten."""
    names = list(_FUNCTION_CASES)
    expr = {fn: _FUNCTION_CASES[fn][0].replace("P", f"P_{fn}") for fn in names}
    ode = ODE(
        name="functions",
        states=[f"x_{fn}" for fn in names],
        rhs={f"x_{fn}": f"-({expr[fn]}) * x_{fn}" for fn in names},
        observe=" + ".join(f"x_{fn} * {expr[fn]}" for fn in names),
        observe_state="x_exp",  # the CMT observations name (no doses here)
        initial={f"x_{fn}": f"10 * {expr[fn]}" for fn in names},
        rtol=1e-10,
        atol=1e-12,
    )
    df = pd.DataFrame([dict(ID=1, TIME=0.0, AMT=0.0, EVID=2), dict(ID=1, TIME=1.0, AMT=0.0, EVID=0),
                       dict(ID=1, TIME=3.0, AMT=0.0, EVID=0)])  # fmt: skip
    data = read_nonmem(df.assign(DV=lambda d: np.where(d["EVID"] == 0, 1.0, np.nan)))
    syms = {f"P_{fn}": pt.dvector(f"P_{fn}") for fn in names}
    c = get_model(ode).concentration(data, syms)
    fn_c = pytensor.function(list(syms.values()), [c, *pt.grad(pt.sum(c), list(syms.values()))], mode=MODE)
    t = np.array([1.0, 3.0])

    def closed(fn, q):
        r = _FUNCTION_CASES[fn][2](q)
        return 10 * r**2 * np.exp(-r * t)

    values, *grads = fn_c(*([_FUNCTION_CASES[fn][1]] for fn in names))
    np.testing.assert_allclose(values, sum(closed(fn, _FUNCTION_CASES[fn][1]) for fn in names), rtol=1e-6)
    for fn, g in zip(names, grads, strict=True):
        p = _FUNCTION_CASES[fn][1]
        fd = (closed(fn, p + 1e-6).sum() - closed(fn, p - 1e-6).sum()) / 2e-6
        np.testing.assert_allclose(g, [fd], rtol=1e-6, err_msg=fn)


def test_unknown_functions_and_names_are_named_with_the_known_ones():
    """At spec time (no PyTensor), naming the model, the place and the known functions."""
    for where, kwargs, says in (
        ("rhs of x", dict(rhs={"x": "-expp(K) * x"}), "unknown function 'expp'.*known: exp, log"),
        ("observe", dict(observe="pow(x) / V"), "pow takes 2 argument"),
        ("initial amount of x", dict(initial={"x": "A0 *"}), "cannot read the expression"),
    ):
        base = dict(name="bad", states=["x"], rhs={"x": "-K * x"}, observe="x")
        with pytest.raises(ValueError, match=f"ODE bad, {where}: {says}"):
            ODE(**(base | kwargs))
    with pytest.raises(ValueError, match="unknown name 'Q'.*known: K, x"):
        parse_expression("-Q * x", {"K": pt.dscalar(), "x": pt.dscalar()})


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dopri5", "rosenbrock23"])
def test_right_hand_side_may_use_the_time(method):
    """A clearance that wanes with time, ``dA/dt = -K0 exp(-ALPHA t) A``: the time is a clock state
    of the system (set to each subject's start, unchanged by doses). A bolus at t = 2 has the exact
    solution ``D/V exp(-K0/ALPHA (exp(-2 ALPHA) - exp(-ALPHA t)))``: values to 1e-6 (measured 4e-10
    with Dormand-Prince, 2e-7 with Rosenbrock at rtol 1e-10), and the gradient of their sum w.r.t.
    K0 and ALPHA to 1e-5 relative against central differences of the exact solution."""
    rows = []
    for i in (1, 2):
        rows.append(dict(ID=i, TIME=0.0, AMT=0.0, DV=0.0, MDV=1))
        rows.append(dict(ID=i, TIME=2.0, AMT=100.0 * i, DV=0.0))
        rows += [dict(ID=i, TIME=t, AMT=0.0, DV=1.0) for t in (2.5, 3, 5, 8, 12, 24)]
    data = read_nonmem(pd.DataFrame(rows))
    ode = ODE("waning", ["central"], {"central": "-K0 * exp(-ALPHA * t) * central"}, "central / V",
              rtol=1e-10, atol=1e-12, method=method)  # fmt: skip
    system = get_model(ode)
    assert system.parameters == ("ALPHA", "K0", "V")
    P = pt.dvector("P")  # (ALPHA, K0, V) of both subjects
    conc = system.concentration(data, {"ALPHA": P[0], "K0": P[1], "V": P[2]})
    fn = pytensor.function([P], [conc, pytensor.grad(conc.sum(), P)], mode=MODE)
    dose, t = 100.0 * (data.obs_subject + 1), data.obs_time

    def exact(alpha, k0, v):
        return dose / v * np.exp(-(k0 / alpha) * (np.exp(-alpha * 2.0) - np.exp(-alpha * t)))

    x = np.array([0.1, 0.3, 10.0])
    values, grad = fn(x)
    np.testing.assert_allclose(values, exact(*x), atol=1e-6)
    h = 1e-6 * x
    fd = [
        (exact(*(x + h * e)).sum() - exact(*(x - h * e)).sum()) / (2 * h[j]) for j, e in enumerate(np.eye(3))
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def _steady_state_regimens(oral: bool, n: int, seed: int) -> pd.DataFrame:
    """Each subject: an SS=1 bolus or infusion (random II, ADDL doses after it), maybe a later plain
    bolus and an SS=2 dose (bolus or infusion) on top, samples over the next three days."""
    rng = np.random.default_rng(seed)
    rows = []

    def dose(i, t, ss, ii, cmt):
        amt = rng.uniform(50, 500)
        rate = amt / rng.uniform(0.5, 0.8 * ii) if rng.random() < 0.5 else 0.0
        return dict(ID=i, TIME=t, DV=0.0, AMT=amt, EVID=1, CMT=cmt, SS=ss, II=ii, RATE=rate, ADDL=0)

    for i in range(1, n + 1):
        ii = float(rng.choice([8.0, 12.0, 24.0]))
        cmt = (1 if rng.random() < 0.7 else 2) if oral else 1
        recs = [dose(i, 0.0, 1, ii, cmt) | dict(ADDL=int(rng.integers(0, 3)))]
        if rng.random() < 0.5:
            recs.append(
                dict(ID=i, TIME=30.0, DV=0.0, AMT=100.0, EVID=1, CMT=cmt, SS=0, II=0.0, RATE=0.0, ADDL=0)
            )
        if rng.random() < 0.7:
            recs.append(dose(i, 40.0, 2, float(rng.choice([12.0, 24.0])), cmt))
        for tt in np.sort(rng.uniform(0, 72, 10)):
            recs.append(
                dict(
                    ID=i,
                    TIME=tt,
                    DV=1.0,
                    AMT=0.0,
                    EVID=0,
                    CMT=2 if oral else 1,
                    SS=0,
                    II=0.0,
                    RATE=0.0,
                    ADDL=0,
                )
            )
        rows += sorted(recs, key=lambda r: (r["TIME"], -r["EVID"]))
    return pd.DataFrame(rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["1cpt_oral", "2cpt_iv"])
def test_ode_steady_state_doses_match_analytic(name):
    """SS=1 and SS=2 boluses and infusions (issue 15 item 5): the ODE path iterates whole dosing
    cycles to the periodic steady state (with sensitivities; SS=2 adds it to the current state);
    against the analytic SS solution on random regimens (II 8, 12 or 24 h, ADDL after, lag and
    F, infusions ending within the interval) values and gradients agree to relative 1e-6 at rtol
    1e-10."""
    oral = name.endswith("oral")
    df = _steady_state_regimens(oral, 8, seed=len(name))
    assert {(1, True), (1, False), (2, True), (2, False)} <= set(zip(df.SS, df.RATE > 0, strict=True))
    data = read_nonmem(df)
    rng = np.random.default_rng(4)
    n = data.n_subjects
    values = {"CL": rng.uniform(1, 10, n), "V": rng.uniform(10, 60, n), "TLAG": rng.uniform(0, 1, n),
              "F": rng.uniform(0.4, 1, n)}  # fmt: skip
    if name.startswith("2cpt"):
        values |= {"Q": rng.uniform(1, 10, n), "V2": rng.uniform(20, 100, n)}
    if oral:
        values["KA"] = rng.uniform(0.3, 3, n)
    ode = dataclasses.replace(ODE_MODELS[f"{name}_ode"], rtol=1e-10, atol=1e-12)
    a = _values_and_grads(get_model(name), data, values)
    o = _values_and_grads(get_model(ode), data, values)
    scale = np.abs(a[0]).max()
    np.testing.assert_allclose(o[0], a[0], rtol=1e-6, atol=1e-9 * scale)
    for name_, ga, go in zip(values, a[1:], o[1:], strict=True):
        np.testing.assert_allclose(go, ga, rtol=1e-6, atol=1e-8 * np.abs(ga).max(), err_msg=name_)


_SOLVER_BITS_SCRIPT = """
import hashlib
import numpy as np, pytensor, pytensor.tensor as pt
from nlmebayes import datasets
from nlmebayes.pk.ode import ODE_MODELS, ODESolve, ODESystem
data = datasets.theophylline()
system = ODESystem.from_spec(ODE_MODELS["1cpt_oral_ode"])
op = ODESolve(system, data, ("KA", "CL", "V"), system.rtol, system.atol)
P = np.array([1.5, 2.7, 31.5]) * np.exp(np.random.default_rng(0).normal(0, 0.3, (data.n_subjects, 3)))
x = pt.dmatrix("P")
linked = pytensor.function([x], op(x), mode="NUMBA")(P)  # the model's code, calling the symbol
direct = op.solve(P)  # Python mode, through ctypes
# draws solved as a batch (ODESolveBatch: blocks of draws per thread, one call each)
from pytensor.graph.replace import vectorize_graph
Ps = P * np.exp(np.random.default_rng(1).normal(0, 0.3, (5, 1, 3)))
y = pt.tensor3("Ps")
batched = pytensor.function([y], vectorize_graph(list(op(x)), {x: y}))(Ps)
one_by_one = [op.solve(p) for p in Ps]
same = all(np.array_equal(batched[k][b], one_by_one[b][k]) for b in range(5) for k in (0, 1))
digest = [hashlib.sha1(a.tobytes() + s.tobytes()).hexdigest() for a, s in (linked, direct)]
print(digest[0] == digest[1] and same, digest[0])
"""


def test_compiled_solver_gives_the_same_bits_fresh_and_from_the_disk_cache(tmp_path):
    """The solver of a system is compiled once and cached on disk (pk.ode.solver.c_solver); the
    model's code calls it by symbol and Python mode through ctypes. Two processes share a cache
    directory that starts empty: the first compiles the solver, the second loads it. Amounts and
    sensitivities must agree bit for bit between the two calls and the two processes (with
    fast-math on the solver, a fresh and a cached build differed in the last bits), and a batch
    of draws solved in one call per thread must equal the draws solved one by one."""
    import os
    import subprocess
    import sys

    env = os.environ | {"PYTENSOR_FLAGS": f"base_compiledir={tmp_path / 'pytensor'}"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", _SOLVER_BITS_SCRIPT], env=env, check=True, capture_output=True, text=True
        ).stdout.split()[-2:]
        for _ in range(2)
    ]
    assert runs[0][0] == runs[1][0] == "True"  # symbol, ctypes and batch paths agree in each process
    assert runs[0][1] == runs[1][1]  # the cold and the warm process agree
