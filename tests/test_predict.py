"""Regimens, prediction from the posterior, exposure metrics and target attainment.

Checked against closed forms of the one-compartment model (steady-state average, AUC, Cmax,
Tmax) and against the population distribution the predictions are drawn from, with a posterior
concentrated at known values (tests/prediction_cases.py), so no sampling is needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from nlmebayes import IIV, IOV, ModelSpec, ResidualError, datasets, read_nonmem
from nlmebayes.simulation import (
    Regimen,
    exposure,
    grid,
    predict,
    prediction_summary,
    regimen_design,
    target_attainment,
    virtual_population,
)
from tests.prediction_cases import fixed_result


def _spec(structural: str, typical: dict) -> ModelSpec:
    """A one-compartment model with IIV on CL and V (omega 0.3, 0.2) and 10% proportional error."""
    return ModelSpec(
        structural,
        structural,
        typical,
        iiv=IIV(["CL", "V"], sd=[0.3, 0.2]),
        error=ResidualError("proportional", prop=0.1),
    )


IV = _spec("1cpt_iv", {"CL": 2.0, "V": 20.0, "F": 0.8})
ORAL = _spec("1cpt_oral", {"KA": 1.2, "CL": 2.0, "V": 20.0, "F": 0.7})
POP = dict(omega_sd_0_CL=0.3, omega_sd_0_V=0.2, sigma_prop=0.1)


def _result(spec, design, draws: int = 50, **extra):
    fixed = {p.name: p.initial for p in spec.parameters if not p.fixed}
    return fixed_result(spec, design, draws=draws, **fixed, **POP, **extra)


def test_regimen_records_and_checks():
    loading = Regimen(200, route="iv", duration=2)
    maintenance = Regimen(100, every=12, doses=6, start=12, route="iv", rate=50)
    rec = (loading + maintenance).records(lambda route: 1)
    assert rec[["TIME", "AMT", "RATE", "II", "ADDL", "SS"]].values.tolist() == [
        [0.0, 200.0, 100.0, 0.0, 0, 0],
        [12.0, 100.0, 50.0, 12.0, 5, 0],
    ]
    with pytest.raises(ValueError, match="interval"):
        Regimen(100, doses=3)
    with pytest.raises(ValueError, match="rate or a duration"):
        Regimen(100, rate=10, duration=2)
    d = regimen_design(
        IV,
        Regimen(10, every=24, doses=2, per="WGT", route="iv"),
        [1.0],
        virtual_population(3, covariates={"WGT": [1.0, 2.0, 3.5]}),
    )
    assert d.dose_amt.tolist() == [10.0, 10.0, 20.0, 20.0, 35.0, 35.0]


def test_virtual_population_keeps_covariate_rows():
    data = datasets.pheno()
    pop = virtual_population(400, data=data, seed=3)
    rows = set(map(tuple, data.subject_covariates(["WGT", "APGR"]).to_numpy()))
    # whole subjects are resampled, so every (WGT, APGR) pair is one that occurs in the data
    assert set(map(tuple, pop[["WGT", "APGR"]].to_numpy())) <= rows
    drawn = virtual_population(5, draw={"WT": lambda rng, n: rng.normal(70, 10, n)}, seed=1)
    assert drawn["WT"].notna().all() and len(drawn) == 5


def test_steady_state_average_concentration_is_dose_over_clearance():
    """Typical Cavg over a steady-state interval = F Dose / (CL tau).

    IV bolus: the curve within the interval is one exponential, which the log-down trapezoid
    integrates exactly, so 1e-6 (relative) leaves only rounding.
    """
    tau, dose = 12.0, 100.0
    design = regimen_design(IV, Regimen(dose, every=tau, steady_state=True, route="iv"), grid(0, tau, 0.5), 2)
    p = predict(_result(IV, design), design, level="typical", draws=3)
    cavg = exposure(p, start=0, end=tau)["Cavg"].values
    np.testing.assert_allclose(cavg, 0.8 * dose / (2.0 * tau), rtol=1e-6)


@pytest.mark.parametrize("spec", [IV, ORAL], ids=["iv", "oral"])
def test_auc_to_infinity_after_a_single_dose_is_f_dose_over_cl_i(spec):
    """Per simulated subject, AUC(0-inf) = F Dose / CL_i.

    IV: exact up to rounding (mono-exponential). Oral: the linear-up trapezoid on a 0.05 h grid
    errs by ~(KA h)^2 / 12 relative on the rising part, ~3e-4 of the total, within the 1e-3 the
    issue asks.
    """
    route = "iv" if spec is IV else "oral"
    design = regimen_design(spec, Regimen(100.0, route=route), grid(0, 96, 0.05), 40)
    p = predict(_result(spec, design), design, level="population", draws=5, seed=2)
    auc = exposure(p, extrapolate=True)["AUC_inf"].isel(output=0)
    expected = spec.parameter("F").initial * 100.0 / p["CL"]
    assert float(p["CL"].std()) > 0.3  # subjects differ: the check is per subject
    np.testing.assert_allclose(auc, expected, rtol=1e-3)


def test_cmax_and_tmax_of_an_oral_dose_match_the_closed_form():
    """Tmax = ln(KA/k)/(KA-k) to the grid step; Cmax between the curve at the grid points around it."""
    h = 0.1
    design = regimen_design(ORAL, Regimen(100.0), grid(0, 24, h), 1)
    m = exposure(predict(_result(ORAL, design), design, level="typical", draws=1))
    ka, k, v = 1.2, 2.0 / 20.0, 20.0
    tmax = np.log(ka / k) / (ka - k)

    def conc(t):
        return 0.7 * 100.0 * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))

    assert abs(float(m["Tmax"].squeeze()) - tmax) <= h / 2 + 1e-9
    assert conc(tmax - h) <= float(m["Cmax"].squeeze()) <= conc(tmax) * (1 + 1e-12)


def test_population_level_draws_etas_from_omega():
    """Sample variance of log CL_i over 10,000 new subjects within 3% of omega^2.

    The relative SE of a variance from n = 10,000 normal draws is sqrt(2/n) = 1.4%: 3% is ~2 SE,
    with the seed fixed.
    """
    design = regimen_design(IV, Regimen(100.0, route="iv"), [1.0], 10_000)
    p = predict(_result(IV, design), design, level="population", draws=1, seed=5)
    var = float(np.log(p["CL"].values).var())
    assert abs(var / 0.3**2 - 1) < 0.03, var


def test_population_level_draws_kappas_from_pi():
    """Within-subject, between-occasion variance of log CL within 5% of pi^2.

    Each subject has two occasions (a reset and dose at 100 h), each observed at 1 and 5 h, so
    its occasion's elimination rate is log(C1/C5)/4 exactly and log CL differs between its
    occasions by kappa_2 - kappa_1 ~ N(0, 2 pi^2). 10,000 subjects: relative SE 1.4%.
    """
    spec = ModelSpec(
        "iov",
        "1cpt_iv",
        {"CL": 2.0, "V": 20.0},
        iiv=IIV(["CL"], sd=[0.3]),
        iov=IOV(["CL"], sd=[0.2]),
        error=ResidualError("proportional", prop=0.1),
    )
    n = 10_000
    rows = []
    for occ, t0, evid in ((1, 0.0, 1), (2, 100.0, 4)):
        rows.append(
            pd.DataFrame({"TIME": t0, "AMT": 100.0, "EVID": evid, "MDV": 1, "DV": 0.0, "OCC": occ}, index=[0])
        )
        rows.append(
            pd.DataFrame({"TIME": [t0 + 1, t0 + 5], "AMT": 0.0, "EVID": 0, "MDV": 0, "DV": 1.0, "OCC": occ})
        )
    one = pd.concat(rows, ignore_index=True).assign(CMT=1)
    design = read_nonmem(pd.DataFrame({"ID": np.arange(1, n + 1)}).merge(one, how="cross"))
    res = fixed_result(spec, design, CL=2.0, V=20.0, omega_sd_0_CL=0.3, pi_sd_CL=0.2, sigma_prop=0.1, draws=1)
    c = predict(res, design, level="population", draws=1, seed=7)["ipred"].values[
        0, :, :, 0
    ]  # (subject, time)
    k1, k2 = np.log(c[:, 0] / c[:, 1]) / 4, np.log(c[:, 2] / c[:, 3]) / 4
    within = np.var(np.log(k2) - np.log(k1)) / 2
    assert abs(within / 0.2**2 - 1) < 0.05, within


def test_target_attainment_by_regimen_and_stratum():
    """P(Ctrough >= x) rises with the dose, and matches the closed form of the lognormal CL.

    Single steady-state IV bolus, V without IIV, so Ctrough = F D/V e^{-CL_i tau/V}/(1 - e^{-CL_i tau/V})
    and attainment is a monotone event in CL_i: its probability is a normal CDF of log CL.
    5,000 subjects: the binomial SE is <= 0.007, the tolerance 0.03 is > 4 SE.
    """
    from scipy import optimize, stats

    spec = ModelSpec(
        "iv",
        "1cpt_iv",
        {"CL": 2.0, "V": 20.0},
        iiv=IIV(["CL"], sd=[0.3]),
        error=ResidualError("proportional", prop=0.1),
    )
    pop = virtual_population(5000, draw={"WT": lambda rng, n: rng.uniform(40, 100, n)}, seed=2)
    metrics = {}
    for dose in (100.0, 200.0):
        design = regimen_design(
            spec, Regimen(dose, every=12, steady_state=True, route="iv"), grid(0, 12, 1), pop
        )
        p = predict(
            fixed_result(spec, design, CL=2.0, V=20.0, omega_sd_0_CL=0.3, sigma_prop=0.1, draws=2),
            design,
            draws=2,
        )
        metrics[f"{dose:g}"] = exposure(p, start=0, end=12)
    tab = target_attainment(metrics, "Ctrough >= 2.5", by={"WT": [40, 70, 100]})
    assert list(tab.columns) == ["regimen", "stratum", "probability", "lower", "upper", "subjects"]
    assert tab["subjects"].groupby(tab["regimen"]).sum().tolist() == [5000, 5000]
    for dose in (100.0, 200.0):

        def trough(cl, dose=dose):
            k = cl / 20.0
            return dose / 20.0 * np.exp(-k * 12) / (1 - np.exp(-k * 12)) - 2.5

        cl_star = optimize.brentq(trough, 1e-3, 50)  # attained iff CL_i <= cl_star
        expected = stats.norm.cdf(np.log(cl_star / 2.0) / 0.3)
        got = tab[tab["regimen"] == f"{dose:g}"]["probability"]
        np.testing.assert_allclose(got, expected, atol=0.03)
    p100, p200 = (tab[tab["regimen"] == r]["probability"].mean() for r in ("100", "200"))
    assert p200 > p100


def test_ode_model_predicts_as_its_analytic_twin():
    """The ODE library's 1cpt_oral_ode against the analytic 1cpt_oral, a multiple-dose regimen.

    The ODE solver runs at rtol 1e-6 (atol 1e-8): 1e-5 relative allows for that.
    """
    typical = {"KA": 1.2, "CL": 2.0, "V": 20.0}
    regimen = Regimen(100.0, every=12, doses=4)
    out = []
    for spec in (_spec("1cpt_oral_ode", typical), _spec("1cpt_oral", typical)):
        design = regimen_design(spec, regimen, grid(0.5, 60, 0.5), 4)
        res = _result(spec, design)
        out.append(predict(res, design, level="population", draws=3, seed=4)["ipred"].values)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-8)


def test_warfarin_pkpd_predicts_pca_under_a_new_regimen():
    """Two outputs (cp, pca) on one grid: PCA starts at E0, falls under daily dosing, and cp is
    linear in the dose (the PK part is linear: doubling the dose doubles cp to solver accuracy)."""
    spec = ModelSpec.from_toml("models/warfarin_pkpd_turnover.toml")
    values = {p.name: p.initial for p in spec.parameters if not p.fixed}
    sds = {f"omega_sd_0_{p}": s for p, s in zip(spec.iiv[0].parameters, spec.iiv[0].sd, strict=True)}
    sig = {"sigma_cp_add": 0.1, "sigma_cp_prop": 0.1, "sigma_pca_add": 5.0}
    pop = virtual_population(3, covariates={"WT": 70.0})
    curves = []
    for dose in (5.0, 10.0):
        design = regimen_design(spec, Regimen(dose, every=24, doses=7), grid(0, 168, 2), pop)
        res = fixed_result(spec, design, **values, **sds, **sig, draws=2)
        curves.append(predict(res, design, level="typical", draws=1))
    assert list(curves[0]["output"].values) == ["cp", "pca"]
    pca = curves[1]["ipred"].sel(output="pca").values[0, 0]
    assert pca[0] == pytest.approx(values["E0"], rel=1e-6)
    assert pca.min() < 0.7 * values["E0"]  # 10 mg daily suppresses PCA by > 30% within a week
    cp5, cp10 = (c["ipred"].sel(output="cp").values[0, 0, 1:] for c in curves)
    np.testing.assert_allclose(cp10, 2 * cp5, rtol=1e-5)
    band = prediction_summary(curves[1], quantiles=(0.5,))
    assert band.dims == ("quantile", "time", "output")


def test_individual_level_uses_each_fitted_subjects_own_etas():
    """level="individual": CL_i = CL_pop exp(omega z_i) with the posterior z of that subject (matched
    by ID, whatever the design's order); uncertainty=False holds the population values at their
    posterior median."""
    fitted = regimen_design(IV, Regimen(100.0, route="iv"), [1.0, 4.0], 3)
    z = np.array([[0.5, -1.0], [-2.0, 0.3], [1.5, 0.0]])  # (subject, iiv): CL, V
    draws = 4
    res = _result(IV, fitted, draws=draws)
    post = res.posterior.assign(
        z_0=(("chain", "draw", "subject", "iiv_0"), np.broadcast_to(z, (1, draws, 3, 2)).copy())
    ).assign_coords(subject=["1", "2", "3"], iiv_0=["CL", "V"])
    res.idata["posterior"] = xr.DataTree(post)
    later = regimen_design(IV, Regimen(50.0, route="iv", start=24), [25.0], pd.DataFrame({"ID": [3, 1]}))
    p = predict(res, later, level="individual", draws=draws)
    np.testing.assert_allclose(p["CL"].values[0], 2.0 * np.exp(0.3 * z[[2, 0], 0]), rtol=1e-12)
    fixed = predict(res, later, level="typical", uncertainty=False, draws=2)
    assert (fixed["posterior_draw"] == -1).all()
    np.testing.assert_allclose(fixed["CL"].values, 2.0, rtol=1e-12)
