"""ODE models in the whole workflow: spec -> builder -> NUTS -> report, on simulated truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nlmebayes import ModelSpec, fit, read_nonmem
from nlmebayes.simulation import simulate
from tests.calibration import assert_calibrated_coverage, assert_converged
from tests.test_spec import MODELS

pytestmark = pytest.mark.sampling
MODEL_DIR = MODELS[0].parent


def test_michaelis_menten_population_recovery():
    """30 simulated subjects given 25, 100 or 400 mg, so that concentrations span KM (C0 from
    ~0.8 to ~13 mg/L against KM = 2): the population parameters' 90% intervals hold the truth
    as calibrated intervals do (at most 2 of the 8 outside, none outside its 99.5% interval), after
    the chains are checked to agree. The coverage over many data sets is measured by
    benchmarks/ode_mm_coverage.py. Data seed 4, the first one tried (seed 5 had replaced it when
    this test asked for all eight truths inside; with the calibrated assertion it is back)."""
    spec = ModelSpec.from_toml(MODEL_DIR / "mm_1cpt_oral_ode.toml")
    rows = []
    for i in range(1, 31):
        amt = (25.0, 100.0, 400.0)[i % 3]
        rows.append(dict(ID=i, TIME=0.0, AMT=amt, DV=0.0, CMT=1))
        rows += [dict(ID=i, TIME=t, AMT=0.0, DV=1.0, CMT=2) for t in (0.5, 1, 2, 4, 8, 12, 24)]
    design = read_nonmem(pd.DataFrame(rows))
    truth = dict(KA=1.0, V=30.0, VMAX=20.0, KM=2.0)
    sim = simulate(
        spec, design, typical=truth, omega=np.diag([0.09, 0.04]), sigma={"add": 0.05, "prop": 0.1}, seed=4
    )
    # nutpie's low-rank mass matrix: the slow direction is the VMAX-KM ridge of the typical
    # values, a correlation the diagonal adaptation cannot learn (bulk ESS of VMAX ~28 per 1000
    # draws with it, ~530 with low-rank, in half the time; benchmarks/mass_matrix.py).
    res = fit(spec, sim, draws=500, tune=500, chains=2, seed=5, diagnostics=False, adaptation="low_rank")
    assert_converged(res)
    expect = truth | {"omega(VMAX)": 0.3, "omega(V)": 0.2, "sigma_prop": 0.1, "sigma_add": 0.05}

    # at most 2 of 8 outside the 90% intervals, none outside 99.5%: P = 0.93 under calibration
    assert_calibrated_coverage(res, expect, k=2)


def test_warfarin_pk_turnover_pd_fit(tmp_path):
    """The bundled PK + turnover PD model on real data: warfarin concentrations and PCA in six
    subjects (the first six with at least three concentrations in the first 6 h, so that each
    one's absorption is identified). Two outputs by DVID, each with its own error; PCA starts at
    its baseline E0 (an initial amount).

    References: the 95% intervals must hold the DDMoRe NONMEM (SAEM, 32 subjects) typical values
    CL = 0.133 L/h and V = 8.15 L per 70 kg, and E0 must hold the subjects' mean measured
    baseline PCA (a model-free value). No published full-precision PD estimates exist for these
    data (see the data's SOURCE.md), so KOUT and IC50 are checked for being identified: their
    95% intervals span less than a factor of 3 (6 subjects, 7 PCA samples each)."""
    from nlmebayes import datasets

    spec = ModelSpec.from_toml(MODEL_DIR / "warfarin_pkpd_turnover.toml")
    df = datasets.warfarin().input_frame()
    early = df[(df["DVID"] == "cp") & (df["AMT"] == 0) & (df["TIME"] <= 6)].groupby("ID").size()
    ids = early[early >= 3].index[:6]
    data = read_nonmem(df[df["ID"].isin(ids)].reset_index(drop=True), source="warfarin.csv (6 subjects)")
    # V = 8.15 sits near the upper end of the 6 subjects' 95% interval (2 x 1000 draws: 5.99 to
    # 8.55); with 2 x 250 draws the tail quantile rests on ~175 effective draws and fell to 8.09
    # when the sampler's graph changed (same density, other draws), so 2 x 600.
    res = fit(spec, data, draws=600, tune=400, chains=2, seed=3, diagnostics=False)
    tab = res.parameter_table(ci=0.95).set_index("parameter")
    baseline = df[df["ID"].isin(ids) & (df["DVID"] == "pca") & (df["TIME"] == 0)]["DV"].mean()
    for name, ref in (("CL", 0.133), ("V", 8.15), ("E0", baseline)):
        assert tab.loc[name, "lower"] < ref < tab.loc[name, "upper"], (name, ref, tab.loc[name])
    for name in ("KOUT", "IC50"):
        assert tab.loc[name, "upper"] / tab.loc[name, "lower"] < 3, tab.loc[name]
    # short chains: R-hat < 1.05 on the typical values is the convergence check we can afford
    assert (tab.loc[["CL", "V", "E0", "KOUT", "IC50"], "rhat"] < 1.05).all(), tab["rhat"]
    text = res.report()
    assert "sigma_pca_add" in text and "sigma_cp_prop" in text
    # plots and the run report of a two-output ODE model: a GOF panel set and a VPC per output
    from nlmebayes import plots
    from nlmebayes.diagnostics.vpc import vpc
    from tests.test_plots import assert_self_contained, render_check

    assert len(plots.gof(res).axes) == 18
    check = vpc(res, n=50, stratify="DVID")
    assert sorted(check.percentiles["stratum"].unique()) == ["cp", "pca"]
    assert_self_contained(res.to_html(tmp_path / "warfarin.html", n_vpc=50))
    render_check(tmp_path / "warfarin.html", tmp_path)
