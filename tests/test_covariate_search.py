"""The full covariate model under a horseshoe and projection selection (issue 17 items 2 and 3)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from nlmebayes import Covariate, CovariateCandidates, ModelSpec, fit
from nlmebayes.model.candidates import candidate_forms
from nlmebayes.search import candidate_effects, full_covariate_model, select_covariates
from tests.covariate_cases import BASE, PAIRS, REAL, covariate_data


def test_candidates_round_trip_through_toml_and_are_checked():
    spec = full_covariate_model(BASE, PAIRS[:3], expected=2)
    assert ModelSpec.from_toml(spec.to_toml()) == spec
    assert spec.candidates.names == ["theta_CL_WT", "theta_CL_BSA", "theta_CL_CRCL"]
    with pytest.raises(ValueError, match=r"candidate \(CL, WT\): CL has no IIV"):
        dataclasses.replace(BASE, iiv=None, candidates=[("CL", "WT")])
    with pytest.raises(ValueError, match="already a covariate relation"):
        dataclasses.replace(BASE, covariates=[Covariate("CL", "WT", reference=70)], candidates=[("CL", "WT")])
    with pytest.raises(ValueError, match="duplicated candidate"):
        CovariateCandidates([("CL", "WT"), ("CL", "WT")])


def test_candidate_forms_follow_the_covariate_values():
    cov = pd.DataFrame({"WT": [50.0, 60, 70, 80, 90, 100], "Z": [-1.0, 0, 1, 2, -2, 0.5],
                        "SEX": [0, 1, 1, 0, 1, 1], "RACE": ["a", "b", "c", "a", "a", "b"]})  # fmt: skip
    pairs = [("CL", "WT"), ("CL", "Z"), ("V", "SEX"), ("V", "RACE")]
    forms = candidate_forms(CovariateCandidates(pairs), cov)
    assert [f.kind for f in forms] == ["power", "exponential", "categorical", "categorical"]
    wt = forms[0]
    assert wt.reference == 75.0 and np.allclose(wt.columns[:, 0], np.log(cov["WT"] / 75))
    assert np.isclose(wt.scale, np.std(np.log(cov["WT"] / 75)))
    assert forms[2].reference == 1 and forms[2].levels == [0]  # the most common level is the reference
    assert forms[3].levels == ["b", "c"] and forms[3].labels == ["theta_V_RACE[b]", "theta_V_RACE[c]"]
    np.testing.assert_array_equal(forms[3].columns, [[0, 0], [1, 0], [0, 1], [0, 0], [0, 0], [1, 0]])


def test_candidate_effects_enter_as_the_ordinary_relations_they_stand_for():
    """ipred of the horseshoe model at some effects = ipred of fixed relations at theta = beta / scale.

    WT and ALB are powers, SEX categorical; the exponential form is the same log-linear code path.
    """
    from nlmebayes.model.builder import build_model

    data = covariate_data(n=12, seed=1)
    pairs = [("CL", "WT"), ("CL", "ALB"), ("V", "SEX")]
    full = full_covariate_model(BASE, pairs)
    built = build_model(full, data)
    m = built.model
    point = m.initial_point()
    point["hs_z"] = np.array([0.8, -0.5, 1.2])
    point["hs_tau_log__"] = np.log(0.3)  # tau0 is ~0.005: effects of a visible size need a larger tau
    outs = m.replace_rvs_by_values([m["ipred"], m["beta_candidate"]])
    fn = m.compile_fn(
        outs, inputs=m.value_vars, point_fn=False, on_unused_input="ignore", mode="FAST_COMPILE"
    )
    ipred, beta = fn(**point)
    forms = candidate_forms(full.candidates, data.subject_covariates(["WT", "ALB", "SEX"]))
    covs = [
        dataclasses.replace(f.covariate_relation(b / f.scale), fixed=True)
        for f, b in zip(forms, beta, strict=True)
    ]
    plain = build_model(dataclasses.replace(BASE, covariates=covs), data).model
    keep = {k: v for k, v in point.items() if k in {v.name for v in plain.value_vars}}
    out = plain.replace_rvs_by_values([plain["ipred"]])
    (ipred_plain,) = plain.compile_fn(
        out, inputs=plain.value_vars, point_fn=False, on_unused_input="ignore", mode="FAST_COMPILE"
    )(**keep)
    assert np.all(np.abs(beta) > 1e-3)  # the effects are not all 0: the comparison has teeth
    np.testing.assert_allclose(ipred, ipred_plain, rtol=1e-10)
    # and at the builder's start every effect is 0: the model starts as the base model
    assert np.allclose(built.starts["hs_z"], 0)


@pytest.mark.sampling
def test_full_model_and_projection_find_the_two_real_effects():
    """One replicate of the 80-subject, 8-covariate problem (benchmarks/covariate_search.py runs 5).

    Single-effect z of the real effects in this design: WT on CL ~8, SEX on V ~5 (see
    tests/covariate_cases.py); BSA, CRCL and HT correlate with WT (r 0.6-0.8).
    """
    data = covariate_data(80, seed=0)
    full = full_covariate_model(BASE, PAIRS, expected=2)
    result = fit(full, data, chains=2, draws=300, tune=300, seed=1, progressbar=False, diagnostics=False)
    tab = candidate_effects(result)
    real = tab[[(p, c) in REAL for p, c in zip(tab["parameter"], tab["covariate"], strict=True)]]
    null = tab.drop(real.index)
    assert real["excludes_zero"].all() and not null["excludes_zero"].any(), tab
    # the real effects' sizes: truths 0.75 (exponent) and log 1.2 = 0.18 inside their 90% intervals
    assert (real["effect_lower"] < [0.75, np.log(1.2)]).all() and (
        real["effect_upper"] > [0.75, np.log(1.2)]
    ).all()
    assert real["inclusion"].min() > 0.6 and null["inclusion"].max() < 0.5
    sel = select_covariates(result, max_size=3, n_eta=100, max_draws=150, seed=1)
    assert set(sel.selected) == REAL, sel
    # the path is scored up to size 3 and at the full model; the model without effects is far behind
    assert list(sel.path.index) == [0, 1, 2, 3, len(PAIRS)] and sel.path["elpd_diff"].max() == 0
    assert sel.path.loc[0, "elpd_diff"] < -10
    assert sel.spec.candidates is None and {(c.parameter, c.covariate) for c in sel.spec.covariates} == REAL
    assert "Candidate covariate effects" in result.report()
    from nlmebayes.plots import candidate_effects_plot, selection_path_plot

    fig = candidate_effects_plot(result)
    assert len(fig.nlme_data["effects"]) == len(tab) and fig.axes[0].get_xscale() == "log"
    fig = selection_path_plot(sel)
    assert fig.nlme_data["path"]["size"].tolist() == [0, 1, 2, 3, len(PAIRS)]


@pytest.mark.sampling
def test_scm_adds_a_real_effect_keeps_it_backward_and_fits_each_model_once(tmp_path):
    """SCM logic on one candidate (benchmarks/covariate_search.py runs the 16-pair problem)."""
    from dask.distributed import Client

    from nlmebayes.search import scm

    data = covariate_data(30, seed=2)
    # PyMC's sampler: its C code is cached on disk, where nutpie would numba-compile each fit
    kw = dict(chains=1, draws=200, tune=200, seed=1, sampler="pymc", init="jitter")
    # an in-process cluster (threads): no worker processes to start and import into (~15 s here);
    # process clusters are tested in test_search.py
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        res = scm(BASE, data, [("CL", "WT")], tmp_path, client=client, progress=False, **kw)
    assert res.selected == [("CL", "WT")] and res.spec.name == "base__CL-WT"
    # base and base + WT only: the backward step's model (base) was fitted in the forward step
    assert res.n_fits == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["base.nc", "base__CL-WT.nc"]
    fwd, bwd = res.steps.iloc[0], res.steps.iloc[1]
    # WT's exponent 0.75 with 30 subjects, log-SD 0.3, omega(CL) 0.25: dOFV ~ z^2 ~ 10 (measured 11.6)
    assert fwd["chosen"] and fwd["d_ofv"] > fwd["threshold"] == pytest.approx(3.841, abs=1e-3)
    assert (
        bwd["direction"] == "backward" and not bwd["chosen"] and bwd["d_ofv"] == pytest.approx(fwd["d_ofv"])
    )
    again = scm(BASE, data, [("CL", "WT")], tmp_path, progress=False, **kw)  # loads, fits nothing
    assert again.selected == res.selected and again.steps.equals(res.steps)
