"""Forecasting new patients from a few levels, and dose recommendation (MIPD).

Simulation with known truth (a posterior concentrated at the true population values, so the
forecast posterior is the exact Bayesian one and its intervals must be calibrated), and a
leave-subjects-out check on theophylline with real fits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nlmebayes import IIV, IOV, ModelSpec, ResidualError, datasets, fit, read_nonmem
from nlmebayes.data import id_label
from nlmebayes.simulation import (
    Regimen,
    continue_design,
    forecast,
    grid,
    recommend_dose,
    regimen_design,
    simulate,
)
from nlmebayes.simulation.predictive import Predictor
from tests.prediction_cases import fixed_result

TRUTH = {"KA": 1.0, "CL": 2.0, "V": 20.0}
OMEGA_SD = {"KA": 0.4, "CL": 0.3, "V": 0.2}
SPEC = ModelSpec(
    "oral",
    "1cpt_oral",
    TRUTH,
    iiv=IIV(list(OMEGA_SD), sd=list(OMEGA_SD.values())),
    error=ResidualError("proportional", prop=0.15),
)
POP = {f"omega_sd_0_{p}": s for p, s in OMEGA_SD.items()} | {"sigma_prop": 0.15}


def _patients(n: int, seed: int):
    """``n`` patients from the true population: one 100 mg dose, levels at 2 and 8 h."""
    design = regimen_design(SPEC, Regimen(100.0), [2.0, 8.0], n)
    omega = np.diag(np.square(list(OMEGA_SD.values())))
    hist = simulate(SPEC, design, typical=TRUTH, omega=omega, sigma={"prop": 0.15}, seed=seed)
    return hist, hist.records.attrs["eta"]


@pytest.mark.parametrize("method", ["full", "map"])
def test_forecast_intervals_cover_the_true_clearance(method):
    """90% intervals of CL_i from two levels cover the true CL_i of ~90% of 200 patients.

    With the population known, the forecast posterior is exact (``full``, up to Monte Carlo
    error) or its Laplace approximation (``map``). Binomial SE of a 90% coverage over 200 is
    0.021: [0.83, 0.96] is > 3 SE each side.
    """
    hist, eta = _patients(200, seed=11)
    res = fixed_result(SPEC, hist, **TRUTH, **POP, draws=100)
    fc = forecast(res, hist, method=method, draws=1000, seed=3)
    cl = fc.predict(hist)["CL"].values  # (draw, subject)
    lo, hi = np.quantile(cl, [0.05, 0.95], axis=0)
    true_cl = TRUTH["CL"] * np.exp(eta[:, 1])
    coverage = np.mean((lo < true_cl) & (true_cl < hi))
    print(f"{method}: 90% intervals of CL_i cover {coverage:.3f} of 200 patients")
    assert 0.83 <= coverage <= 0.96
    # two levels say something: the intervals are narrower than the population's (omega 0.3)
    assert np.median(np.log(hi / lo)) < 2 * 1.645 * 0.3


def test_recommended_dose_reaches_the_target_in_simulation():
    """Each of 80 simulated patients gets the smallest of five regimens with P(Ctrough >= 3) >= 0.8;
    the true trough at the recommended regimen reaches 3 mg/L in >= 0.8 of them in expectation
    (an exact posterior is calibrated, and the chosen regimen's probability is >= 0.8). Binomial
    SE at 0.8 over 80 patients is 0.045: the bound 0.69 is 2.5 SE below.
    """
    hist, eta = _patients(80, seed=21)
    res = fixed_result(SPEC, hist, **TRUTH, **POP, draws=100)
    fc = forecast(res, hist, method="full", draws=500, seed=4)
    times = grid(84, 96, 0.5)
    cands = {a: Regimen(a, every=12, doses=6, start=24) for a in (100.0, 150.0, 200.0, 300.0, 450.0)}
    rec = recommend_dose(fc, cands, times, "Ctrough >= 3", probability=0.8)
    chosen = rec[rec["recommended"]].set_index("subject")["regimen"]
    true_trough = {}
    for amount, regimen in cands.items():
        design = continue_design(hist, regimen, times, SPEC)
        pred = Predictor(SPEC, design)
        values = {f"log_{k}_pop": np.log([v]) for k, v in TRUTH.items()} | {
            k: np.array([v]) for k, v in POP.items()
        }
        values["z_0"] = (eta / np.array(list(OMEGA_SD.values())))[None]
        c = pred(values)["ipred"][0][design.obs_time == 96.0]
        true_trough[amount] = dict(zip(pred.coords["subject"], c, strict=True))
    attained = np.mean([true_trough[a][s] >= 3.0 for s, a in chosen.items()])
    print(f"recommended regimen reached the target in {attained:.3f} of 80 patients (aimed >= 0.8)")
    assert attained >= 0.69
    assert chosen.nunique() > 1  # the recommendation is individual


def _records(data, keep):
    df = data.input_frame().reset_index(drop=True)
    return read_nonmem(df[keep].reset_index(drop=True), source="theophylline subset")


def test_forecast_of_held_out_theophylline_subjects_is_calibrated():
    """Leave 4 subjects out at a time (3 fits), forecast each from its 2 earliest post-dose levels;
    90% predictive intervals (with residual error) cover >= 80% of its later observations.

    96 later observations (8 per subject): coverage is printed; 0.8 leaves room for a posterior
    from 8 subjects and for the within-subject correlation of misses.
    """
    spec = ModelSpec.from_toml("models/theophylline_1cpt_oral.toml")
    data = datasets.theophylline()
    rec = data.records
    ids = list(pd.unique(rec["ID"]))
    covered, total = 0, 0
    for fold in range(3):
        out_ids = ids[fold::3]
        held = rec["ID"].isin(out_ids).to_numpy()
        res = fit(spec, _records(data, ~held), chains=2, draws=500, tune=500, seed=fold, progressbar=False)
        obs = rec["_IS_OBS"].to_numpy() & held
        rank = rec[obs & (rec["TIME"] > 0)].groupby("ID").cumcount()
        early = np.zeros(len(rec), bool)
        early[rank.index[rank < 2]] = True
        history = _records(data, held & (rec["_IS_DOSE"].to_numpy() | early))
        later = _records(
            data, held & (rec["_IS_DOSE"].to_numpy() | (obs & ~early & (rec["TIME"] > 0).to_numpy()))
        )
        fc = forecast(res, history, draws=1000, seed=fold)
        p = fc.predict(later, residual=True)
        lo, hi = (p["dv"].quantile(q, dim="draw") for q in (0.05, 0.95))
        y = _on_grid(later, p)
        ok = np.isfinite(y)
        covered += int(((lo.values <= y) & (y <= hi.values))[ok].sum())
        total += int(ok.sum())
    print(f"held-out theophylline: 90% predictive intervals cover {covered}/{total} = {covered / total:.3f}")
    assert total == 12 * 8
    assert covered / total >= 0.80


def _on_grid(data, p):
    """The observed DV on the prediction's (subject, time, output) grid, NaN elsewhere."""
    y = np.full(p["dv"].shape[1:], np.nan)
    times = list(p["time"].values)
    subjects = list(p["subject"].values)
    for s, t, v in zip(data.obs_subject, data.obs_time, data.obs_dv, strict=True):
        y[subjects.index(str(id_label(data.ids[s]))), times.index(t), 0] = v
    return y


def test_forecast_with_iov_gives_future_doses_a_new_occasion():
    """With IOV, a forecast's future doses form a new occasion with a fresh kappa: the prediction
    4 h after a future dose is less certain than 4 h after a dose of a measured occasion, whose
    kappa the level informs (pi 0.3 here is as large as omega, so the gap is wide)."""
    spec = ModelSpec(
        "iov",
        "1cpt_oral",
        TRUTH,
        iiv=IIV(["CL", "V"], sd=[0.3, 0.2]),
        iov=IOV(["CL"], sd=[0.3]),
        error=ResidualError("proportional", prop=0.1),
    )
    rows = []
    for occ, t0 in ((1, 0.0), (2, 24.0)):
        rows += [
            dict(ID=1, TIME=t0, AMT=100.0, EVID=1, MDV=1, DV=0.0, OCC=occ, CMT=1),
            dict(ID=1, TIME=t0 + 4, AMT=0.0, EVID=0, MDV=0, DV=1.0, OCC=occ, CMT=2),
            dict(ID=1, TIME=t0 + 12, AMT=0.0, EVID=0, MDV=0, DV=1.0, OCC=occ, CMT=2),
        ]
    design = read_nonmem(pd.DataFrame(rows))
    hist = simulate(
        spec, design, typical=TRUTH, omega=np.diag([0.09, 0.04]), pi={"CL": 0.3}, sigma={"prop": 0.1}, seed=5
    )
    res = fixed_result(spec, hist, **TRUTH, omega_sd_0_CL=0.3, omega_sd_0_V=0.2, pi_sd_CL=0.3, sigma_prop=0.1)
    fc = forecast(res, hist, draws=1000, seed=2)
    future = continue_design(hist, Regimen(100.0, start=72), [28.0, 84.0], spec)
    assert future.records.loc[future.records["TIME"] == 84.0, "OCC"].tolist() == [3.0]
    p = fc.predict(future)["ipred"].isel(subject=0, output=0)
    spread = np.log(p).std("draw")
    measured, new = float(spread.sel(time=28.0)), float(spread.sel(time=84.0))
    print(f"log-prediction SD: measured occasion {measured:.3f}, new occasion {new:.3f}")
    assert new > 1.5 * measured
