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
from nlmebayes.pk import get_model
from nlmebayes.pk.ode import ODE_MODELS, ODESolve, ODESystem, parse_expression
from nlmebayes.spec import ODE, ResidualError

MODE = "FAST_COMPILE"  # throw-away graphs: skip the numba JIT of the surrounding graph


def _regimens(oral: bool, n: int, seed: int) -> pd.DataFrame:
    """Random multiple-dose regimens: bolus or infusion, depot or central, ADDL, irregular
    sampling. No SS (not supported by the ODE path yet)."""
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
            recs.append(dict(ID=i, TIME=t, DV=0.0, AMT=amt, EVID=1, CMT=cmt,
                             RATE=amt / rng.uniform(0.5, 4) if inf else 0.0, II=12.0 if addl else 0.0,
                             ADDL=addl))
        for tt in np.sort(rng.uniform(0, t + 48, 8)):
            recs.append(dict(ID=i, TIME=tt, DV=1.0, AMT=0.0, EVID=0, CMT=2 if oral else 1, RATE=0.0,
                             II=0.0, ADDL=0))
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


@pytest.mark.parametrize("name", ["1cpt_iv", "1cpt_oral", "2cpt_iv", "2cpt_oral"])
def test_ode_matches_analytic_values_and_gradients(name):
    """6 subjects with random multiple-dose regimens (bolus/infusion, depot/central, ADDL), lag
    and F: the ODE path agrees with the closed form to relative 1e-6 in concentrations and in
    gradients w.r.t. every parameter, integrating at rtol 1e-10."""
    oral = name.endswith("oral")
    data = read_nonmem(_regimens(oral, 6, seed=len(name)))
    rng = np.random.default_rng(3)
    n = data.n_subjects
    values = {"CL": rng.uniform(1, 10, n), "V": rng.uniform(10, 60, n), "TLAG": rng.uniform(0, 1, n),
              "F": rng.uniform(0.4, 1, n)}
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


def test_stiff_system_with_rosenbrock():
    """Two compartments exchanging at 1000/h with elimination 0.1/h: eigenvalues ~2000 and ~0.05
    per hour, a stiffness ratio of 4e4. The L-stable Rosenbrock pair (exact Jacobian of the state
    + sensitivity system) matches the closed form to 1e-5 in ~2000 steps at rtol 1e-8; the
    explicit method needs 30x as many (its step is capped by stability at ~1.5e-3 h)."""
    df = pd.DataFrame(dict(ID=1, TIME=[0.0, 0.5, 2, 10, 50, 100], AMT=[100.0, 0, 0, 0, 0, 0],
                           DV=[0.0, 1, 1, 1, 1, 1], EVID=[1, 0, 0, 0, 0, 0]))
    data = read_nonmem(df)
    values = {"CL": np.array([1.0]), "V": np.array([10.0]), "Q": np.array([1e4]), "V2": np.array([10.0])}
    ref = _values_and_grads(get_model("2cpt_iv"), data, values)
    steps = {}
    for method in ("rosenbrock23", "dopri5"):
        system = ODESystem.from_spec(dataclasses.replace(ODE_MODELS["2cpt_iv_ode"], method=method,
                                                         rtol=1e-8, atol=1e-10))
        out = _values_and_grads(system, data, values)
        np.testing.assert_allclose(out[0], ref[0], rtol=1e-5)
        op = ODESolve(system, data, ("CL", "Q", "V", "V2"), system.rtol, system.atol)
        _, _, counters = op.solver(np.array([[1.0, 1e4, 10.0, 10.0]]), *op.args, op.rtol, op.atol)
        steps[method] = int(counters[0])
    assert steps["rosenbrock23"] < 5000
    assert steps["dopri5"] > 10 * steps["rosenbrock23"]


def test_rosenbrock_sensitivities():
    data = read_nonmem(_regimens(True, 3, seed=5))
    values = {"CL": np.array([3.0, 5, 8]), "V": np.array([20.0, 30, 50]), "KA": np.array([0.5, 1, 2])}
    ref = _values_and_grads(get_model("1cpt_oral"), data, values)
    ode = dataclasses.replace(ODE_MODELS["1cpt_oral_ode"], method="rosenbrock23", rtol=1e-9,
                              atol=1e-11)
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
    mm = ODE(name="mm", states=["depot", "central"],
             rhs={"depot": "-KA * depot", "central": "KA * depot - VMAX * central / (KM * V + central)"},
             observe="central / V")
    spec = ModelSpec(name="mm", structural=mm, parameters={"KA": 1.0, "V": 30.0, "VMAX": 10.0, "KM": 2.0},
                     error=ResidualError("proportional"))
    assert ModelSpec.from_toml(spec.to_toml()) == spec
    assert get_model(spec.structural).parameters == ("KA", "KM", "V", "VMAX")
    with pytest.raises(ValueError, match="one right-hand side per state"):
        ODE(name="x", states=["a", "b"], rhs={"a": "-a"}, observe="a")
    with pytest.raises(ValueError, match="missing"):
        get_model("1cpt_oral_ode").check_parameters(["CL", "V"])


def test_ode_rejects_what_it_cannot_do_yet():
    df = pd.DataFrame(dict(ID=1, TIME=[0.0, 1.0], AMT=[100.0, 0], DV=[0.0, 1.0], SS=[1, 0],
                           II=[12.0, 0.0]))
    with pytest.raises(DataError, match="steady-state"):
        get_model("1cpt_iv_ode").check(read_nonmem(df))
