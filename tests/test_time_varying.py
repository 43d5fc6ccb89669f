"""Parameters that change within a subject: time-varying covariates and IOV on the ODE path.

The reference (``tests/reference_ode.py``) integrates the linear system with scipy, switching its
matrix at the period boundaries; NONMEM's convention (a record's values hold over the interval
that ends at it; a dose's F and TLAG are its record's) is written out here independently of
:mod:`nlmebayes.data.periods`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest

from nlmebayes import IIV, IOV, Covariate, ModelSpec, ResidualError, read_nonmem
from nlmebayes.data.periods import parameter_rows
from nlmebayes.model.builder import build_model
from nlmebayes.pk import get_model
from nlmebayes.pk.ode import ODE_MODELS
from tests.reference_ode import simulate, system_matrix

MODE = "FAST_COMPILE"


def _weight_records(oral: bool, n: int, seed: int) -> pd.DataFrame:
    """Random regimens (bolus/infusion, depot/central, ADDL) whose WT changes at random records and
    whose occasion (OCC) at random doses."""
    rng = np.random.default_rng(seed)
    occ_rng = np.random.default_rng(seed + 100)
    rows = []
    for i in range(1, n + 1):
        recs, t = [], 0.0
        for k in range(rng.integers(2, 4)):
            t += rng.uniform(4, 24) if k else 0.0
            inf = rng.random() < 0.4
            amt = rng.uniform(50, 500)
            addl = int(rng.integers(0, 3))
            cmt = (1 if rng.random() < 0.7 else 2) if oral else 1
            rate = (-2.0 if rng.random() < 0.4 else amt / rng.uniform(0.5, 4)) if inf else 0.0
            recs.append(
                dict(
                    ID=i, TIME=t, DV=0.0, AMT=amt, EVID=1, CMT=cmt, RATE=rate, II=12.0 * bool(addl), ADDL=addl
                )
            )
        for tt in np.sort(rng.uniform(0, t + 36, 8)):
            recs.append(dict(ID=i, TIME=tt, DV=1.0, AMT=0.0, EVID=0, CMT=1 + oral, RATE=0.0, II=0.0, ADDL=0))
        recs = sorted(recs, key=lambda r: (r["TIME"], -r["EVID"]))
        wt = rng.uniform(50, 90)
        occ = 1
        for r in recs:  # a random walk that moves at about half of the records
            wt = wt * np.exp(rng.normal(0, 0.15)) if rng.random() < 0.5 else wt
            r["WT"] = round(wt, 1)
            occ += int(r["EVID"] == 1 and occ_rng.random() < 0.5)  # a new occasion at some doses
            r["OCC"] = occ
        rows += recs
    return pd.DataFrame(rows)


def _reference(data, df, name, values, rows):
    """Central amounts / V per observation from scipy, with the matrix switched per period."""
    oral, n_cpt = name.endswith("oral"), int(name[0])
    obs = np.full(data.n_obs, np.nan)
    rec_row = rows.record_row
    for s, (_, sub) in enumerate(df.groupby("ID", sort=False)):
        idx = np.flatnonzero(df["ID"].to_numpy() == sub["ID"].iloc[0])
        per_row = {r: {k: v[r] for k, v in values.items()} for r in np.unique(rec_row[idx])}
        mats = {r: system_matrix(n_cpt, oral, p) for r, p in per_row.items()}
        # the record's row holds from the previous record's time: switch there
        changes = [
            (df["TIME"].iloc[j - 1], mats[rec_row[j]]) for j in idx[1:] if rec_row[j] != rec_row[j - 1]
        ]
        doses = []
        for j in idx[df["EVID"].to_numpy()[idx] == 1]:
            r = df.iloc[j]
            p = per_row[rec_row[j]]
            depot = r["CMT"] == 1
            F, lag = (p["F"], p["TLAG"]) if depot else (1.0, 0.0)
            for k in range(int(r["ADDL"]) + 1):
                t0 = r["TIME"] + k * r["II"]
                dur = F * r["AMT"] / r["RATE"] if r["RATE"] > 0 else (p["D"] if r["RATE"] == -2 else 0.0)
                doses.append(
                    dict(
                        time=t0 + lag,
                        time0=t0,
                        state=int(r["CMT"]) - 1,
                        amt=F * r["AMT"],
                        dur=dur,
                        ss=0,
                        ii=0.0,
                    )
                )
        o = np.flatnonzero(data.obs_subject == s)
        amounts = simulate(mats[rec_row[idx[0]]], doses, data.obs_time[o], int(oral), changes)
        obs[o] = amounts / values["V"][rows.obs_rows(data)[o]]
    return obs


def _values_and_grads(model, data, values, rows):
    syms = {k: pt.dvector(k) for k in values}
    c = model.concentration(data, syms, index=rows)
    w = pt.dvector("w")
    g = pt.grad(pt.sum(c * w), list(syms.values()))
    fn = pytensor.function([*syms.values(), w], [c, *g], mode=MODE)
    wv = np.random.default_rng(1).standard_normal(data.n_obs)
    return (lambda vals: fn(*vals.values(), wv)), fn(*values.values(), wv)


def _row_values(name, n_rows, seed):
    rng = np.random.default_rng(seed)
    values = {
        "CL": rng.uniform(1, 10, n_rows),
        "V": rng.uniform(10, 60, n_rows),
        "TLAG": rng.uniform(0, 1, n_rows),
        "F": rng.uniform(0.4, 1, n_rows),
        "D": rng.uniform(0.5, 3, n_rows),
    }
    if name[0] in "23":
        values |= {"Q": rng.uniform(1, 10, n_rows), "V2": rng.uniform(20, 100, n_rows)}
    if name[0] == "3":
        values |= {"Q3": rng.uniform(0.5, 5, n_rows), "V3": rng.uniform(50, 200, n_rows)}
    if name.endswith("oral"):
        values["KA"] = rng.uniform(0.3, 3, n_rows)
    return values


@pytest.mark.slow
@pytest.mark.parametrize("name", ["1cpt_oral", "2cpt_iv", "2cpt_oral", "3cpt_iv"])
def test_parameters_that_change_at_records_match_scipy(name):
    """5 subjects, random regimens (boluses, infusions with a given rate or RATE=-2, ADDL), WT
    changing at random records and OCC at random doses (the periods of a time-varying covariate
    and of IOV, carried over), every period its own random CL, V (KA, Q, V2, Q3, V3), TLAG, F
    and D. The compartmental model (matrix exponentials between records) and the ODE path (rtol
    1e-10) both match scipy's LSODA (rtol 1e-11), which switches the system matrix at the same
    times, to relative 1e-6; their gradients w.r.t. every period's parameters agree to 1e-6, and
    match central differences (h = 1e-6 relative: truncation ~1e-12, rounding ~1e-10 / 1e-6) to
    1e-5 relative."""
    df = _weight_records(name.endswith("oral"), 5, seed=len(name))
    data = read_nonmem(df)
    rows = parameter_rows(data, ["WT", "OCC"])  # periods of a time-varying covariate and of IOV
    assert rows.varies and rows.n_rows >= 2 * data.n_subjects  # several periods per subject
    assert (df.RATE == -2).any() and (df.RATE > 0).any() and df.OCC.max() >= 2
    values = _row_values(name, rows.n_rows, seed=4)
    ref = _reference(data, df, name, values, rows)
    f, (c, *grads) = _values_and_grads(get_model(name), data, values, rows)
    np.testing.assert_allclose(c, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())
    if name in ("1cpt_oral", "2cpt_iv"):  # the ODE twins (3cpt and 2cpt oral have none ready)
        ode = dataclasses.replace(ODE_MODELS[f"{name}_ode"], rtol=1e-10, atol=1e-12)
        _, (co, *grads_ode) = _values_and_grads(get_model(ode), data, values, rows)
        np.testing.assert_allclose(co, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())
        for p, g, go in zip(values, grads, grads_ode, strict=True):
            np.testing.assert_allclose(go, g, rtol=1e-6, atol=1e-8 * np.abs(g).max(), err_msg=p)
    wv = np.random.default_rng(1).standard_normal(data.n_obs)
    rng = np.random.default_rng(0)
    for (p, v), g in zip(values.items(), grads, strict=True):
        for r in rng.choice(rows.n_rows, 4, replace=False):
            h = 1e-6 * v[r]
            up, down = dict(values), dict(values)
            up[p], down[p] = v.copy(), v.copy()
            up[p][r] += h
            down[p][r] -= h
            fd = (f(up)[0] - f(down)[0]) @ wv / (2 * h)
            np.testing.assert_allclose(g[r], fd, rtol=1e-5, atol=1e-7 * np.abs(g).max(), err_msg=f"{p}[{r}]")


def test_parameter_rows_follow_the_records():
    """Rows change where WT or OCC changes, per subject; doses and observations take their record's row."""
    df = pd.DataFrame(
        dict(
            ID=[1, 1, 1, 1, 2, 2],
            TIME=[0, 1, 2, 3, 0, 5],
            AMT=[100, 0, 0, 0, 50, 0],
            DV=[0, 5.0, 4, 3, 0, 2],
            WT=[70, 70, 72, 72, 60, 60],
            OCC=[1, 1, 1, 2, 1, 1],
        )
    )
    data = read_nonmem(df)
    rows = parameter_rows(data, ["WT", "OCC"])
    assert rows.record_row.tolist() == [0, 0, 1, 2, 3, 3]
    assert rows.row_subject.tolist() == [0, 0, 0, 1]
    assert rows.obs_rows(data).tolist() == [0, 1, 2, 3]
    assert rows.dose_rows(data).tolist() == [0, 3]


@pytest.mark.slow
def test_closed_form_and_ode_agree_on_a_time_varying_covariate_model():
    """Through the builder (CL and V on WT, which changes at random records): the 1-cpt oral
    model's IPRED equals its ODE twin's at the same non-zero etas, to 1e-6."""
    df = _weight_records(True, 4, seed=9).query("RATE != -2")
    spec = ModelSpec(
        "tv",
        "1cpt_oral",
        {"KA": 1.0, "CL": 3.0, "V": 30.0},
        covariates=[
            Covariate("CL", "WT", "power", reference=70.0, theta=0.75),
            Covariate("V", "WT", "power", reference=70.0, theta=1.0, fixed=True),
        ],
        iiv=IIV(["CL", "V"], sd=[0.3, 0.2]),
    )
    data = read_nonmem(df)
    closed, point = _ipred(spec, data)
    ode, _ = _ipred(dataclasses.replace(spec, structural="1cpt_oral_ode"), data, point)
    np.testing.assert_allclose(ode, closed, rtol=1e-6)


def _ipred(spec, data, point=None):
    """IPRED at ``point`` (default: the initial point with z moved off 0), and the point."""
    built = build_model(spec, data)
    model = built.model
    (ipred,) = model.replace_rvs_by_values([model["ipred"]])
    fn = pytensor.function(model.value_vars, ipred, on_unused_input="ignore", mode=MODE)
    if point is None:
        rng = np.random.default_rng(2)
        point = {k: v + 0.3 * rng.standard_normal(np.shape(v)) if k.startswith("z") else v
                 for k, v in model.initial_point(random_seed=1).items()}  # fmt: skip
    return fn(**point), point


@pytest.mark.slow
def test_ode_iov_matches_the_closed_form_where_both_are_exact():
    """IOV on CL and V, 3 occasions per subject, each starting with a reset dose (EVID 4): the
    closed form (each dose with its occasion's parameters) is exact there, and the ODE path
    (parameters switching at the records) agrees to 1e-6 at the same non-zero etas and kappas.
    With carry-over between occasions (no resets) the closed form is an approximation; the ODE
    path is then checked against scipy by the test above (periods of OCC are periods like WT's)."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(1, 5):
        for occ in range(1, 4):
            t0 = 100.0 * (occ - 1)
            rows.append(dict(ID=i, TIME=t0, AMT=200.0, DV=0.0, EVID=4, CMT=1, OCC=occ))
            rows += [
                dict(ID=i, TIME=t0 + t, AMT=0.0, DV=1.0, EVID=0, CMT=2, OCC=occ)
                for t in np.sort(rng.uniform(0.2, 24, 5))
            ]
    data = read_nonmem(pd.DataFrame(rows))
    spec = ModelSpec(
        "iov",
        "1cpt_oral",
        {"KA": 1.2, "CL": 3.0, "V": 30.0},
        iiv=IIV(["CL", "V"], sd=[0.3, 0.2]),
        iov=IOV(["CL", "V"], sd=[0.2, 0.15]),
    )
    closed, point = _ipred(spec, data)
    ode, _ = _ipred(dataclasses.replace(spec, structural="1cpt_oral_ode"), data, point)
    np.testing.assert_allclose(ode, closed, rtol=1e-6)


def _growing_design(n: int, seed: int) -> pd.DataFrame:
    """Weekly visits (a bolus, samples at 1, 4 and 12 h); weight changes by up to +-30% over the study."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        wt0, growth = rng.uniform(40, 100), rng.uniform(-0.1, 0.1)
        for k in range(4):
            t0, wt = 168.0 * k, round(wt0 * (1 + growth * k), 1)
            rows.append(dict(ID=i, TIME=t0, AMT=100.0, DV=0.0, EVID=1, WT=wt))
            rows += [dict(ID=i, TIME=t0 + t, AMT=0.0, DV=1.0, EVID=0, WT=wt) for t in (1.0, 4.0, 12.0)]
    return pd.DataFrame(rows)


def _weight_model() -> ModelSpec:
    return ModelSpec(
        "tv_weight",
        "1cpt_iv_ode",
        {"CL": 3.0, "V": 30.0},
        covariates=[
            Covariate("CL", "WT", "power", reference=70.0, theta=0.0),
            Covariate("V", "WT", "power", reference=70.0, theta=1.0, fixed=True),
        ],
        iiv=IIV(["CL", "V"], sd=[0.3, 0.2]),
        error=ResidualError("proportional", prop=0.1),
    )


@pytest.mark.slow
def test_population_fit_recovers_a_time_varying_covariate_exponent():
    """16 subjects whose weight changes visit to visit (CL = 3 (WT/70)^0.75 e^eta, V = 30 WT/70):
    the 90% interval of the exponent covers 0.75 and is narrower than +-0.5 (its Normal(0, 1)
    prior's would be +-1.64); the typical values' intervals cover theirs."""
    from nlmebayes import fit
    from nlmebayes.simulation import simulate

    spec = _weight_model()
    data = simulate(
        spec,
        read_nonmem(_growing_design(16, seed=3)),
        typical={"CL": 3.0, "V": 30.0},
        thetas={"theta_CL_WT": 0.75},
        omega=np.diag([0.3, 0.2]) ** 2,
        sigma={"prop": 0.1},
        seed=11,
    )
    result = fit(spec, data, chains=2, draws=300, tune=300, seed=1, progressbar=False)
    post = result.posterior
    for name, truth in (("theta_CL_WT", 0.75), ("CL_pop", 3.0), ("V_pop", 30.0)):
        x = post[name].values.ravel()
        lo, hi = np.quantile(x, [0.05, 0.95])
        assert lo < truth < hi, (name, lo, hi)
    lo, hi = np.quantile(post["theta_CL_WT"].values.ravel(), [0.05, 0.95])
    assert hi - lo < 1.0


@pytest.mark.slow
def test_closed_form_iov_switches_at_the_records_when_occasions_carry_over():
    """Daily doses, a new occasion every day (2-cpt oral, IOV on CL and V): a quarter of a dose is
    still there when the next occasion starts, so the closed form switches the parameters at the
    records (matrix exponentials) and its IPRED equals the ODE twin's to 1e-6 at the same non-zero
    etas and kappas. With 2000 h between occasions (under 1e-4 of a dose left at half the typical
    rates) it keeps one row of parameters per dose (superposition)."""
    rng = np.random.default_rng(8)

    def design(gap):
        rows = []
        for i in range(1, 5):
            for occ in range(1, 4):
                t0 = gap * (occ - 1)
                rows.append(dict(ID=i, TIME=t0, AMT=200.0, DV=0.0, EVID=1, CMT=1, OCC=occ))
                rows += [dict(ID=i, TIME=t0 + t, AMT=0.0, DV=1.0, EVID=0, CMT=2, OCC=occ)
                         for t in np.sort(rng.uniform(0.2, gap - 0.1, 4))]  # fmt: skip
        return read_nonmem(pd.DataFrame(rows))

    values = {"KA": 1.2, "CL": 3.0, "V": 30.0, "Q": 2.0, "V2": 60.0}
    spec = ModelSpec(
        "iov2", "2cpt_oral", values, iiv=IIV(["CL", "V"], sd=[0.3, 0.2]), iov=IOV(["CL", "V"], sd=[0.2, 0.15])
    )
    daily = design(24.0)
    assert "CL_period" in build_model(spec, daily).model.named_vars
    assert "CL_period" not in build_model(spec, design(2000.0)).model.named_vars
    closed, point = _ipred(spec, daily)
    ode_model = dataclasses.replace(ODE_MODELS["2cpt_oral_ode"], rtol=1e-10, atol=1e-12)
    ode, _ = _ipred(dataclasses.replace(spec, structural=ode_model), daily, point)
    np.testing.assert_allclose(ode, closed, rtol=1e-6)
