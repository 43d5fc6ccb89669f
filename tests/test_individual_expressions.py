"""Individual parameters as expressions (NONMEM's $PK), etas of their own, linear-scale thetas and
closed-form structural models (issue 15, items 2 and 3).

The declarative forms and the expressions build the same density, so their OFVs agree to rounding;
a reparameterisation (KA, V, K) <-> (KA, CL, K) with Omega mapped by the linear map of the etas gives
the same OFV; a closed-form biexponential equals the ODE with initial amounts.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from nlmebayes import (
    IIV,
    ClosedForm,
    Covariate,
    ModelSpec,
    Parameter,
    ResidualError,
    datasets,
    fit,
    read_nonmem,
)
from nlmebayes.diagnostics import PopulationValues, marginal_likelihood
from nlmebayes.model.builder import build_model
from tests.expression_models import (
    BIEXP_OMEGA,
    BIEXP_SIGMA,
    BIEXP_TRUTH,
    biexponential,
    biexponential_coverage,
    biexponential_data,
    log_scale_summary,
)

THEO = {"KA": 1.5, "CL": 2.7, "V": 31.5}


def _expression_spec() -> ModelSpec:
    return ModelSpec(
        "expr",
        ClosedForm("pkpd", {"cp": "C", "effect": "E0 + EMAX * C / (EC50 + C)"}, pk="1cpt_oral"),
        [
            Parameter("TVCL", 2.7),
            Parameter("V", 31.5),
            Parameter("KA", 1.5),
            Parameter("LOGIT_F", 0.5, scale="linear"),
            Parameter("E0", 10.0),
            Parameter("EMAX", 50.0),
            Parameter("EC50", 3.0),
        ],
        iiv=[
            IIV(
                ["eta_CL", "V", "E0"],
                sd=[0.3, 0.2, 5.0],
                block=True,
                kind=["additive", "lognormal", "additive"],
            )
        ],
        individual={
            "CL": "TVCL * (WT / 70)**0.75 * exp(eta_CL)",
            "F": "expit(LOGIT_F)",
            "THALF": "log(2) * V / CL",
        },
        error={"cp": ResidualError("proportional", prop=0.1), "effect": ResidualError("additive", add=2.0)},
    )


def test_expression_spec_round_trips_through_toml_without_pymc():
    spec = _expression_spec()
    assert ModelSpec.from_toml(spec.to_toml()) == spec
    assert spec.eta_names == ["eta_CL"]
    assert [spec.eta_kind(p) for p in spec.iiv_parameters] == ["additive", "lognormal", "additive"]
    code = (
        "import sys; from nlmebayes.model.spec import ModelSpec; "
        f"s = ModelSpec.from_toml({spec.to_toml()!r}); assert s.individual['F'] == 'expit(LOGIT_F)'; "
        "assert 'pymc' not in sys.modules and 'pytensor' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(individual={"CL": "CL * 2"}), "already a parameter"),
        (dict(individual={"K": "K / V"}), "uses itself"),
        (dict(iiv=IIV(["eta_V"]), individual={"K": "CL / V"}), "neither parameters"),
        (dict(individual={"K": "cos(CL) / V"}), "unknown function 'cos'"),
        (
            dict(parameters=[Parameter("CL", 1.0), Parameter("V", 3.0, scale="linear")], iiv=IIV(["V"])),
            "takes additive etas",
        ),
    ],
)
def test_invalid_expression_specs_are_rejected(kwargs, match):
    base = dict(name="x", structural="1cpt_iv", parameters={"CL": 1.0, "V": 10.0})
    with pytest.raises(ValueError, match=match):
        ModelSpec(**{**base, **kwargs})


def test_invalid_components_are_rejected():
    with pytest.raises(ValueError, match="scale='linear'"):
        Parameter("V", -3.0)
    with pytest.raises(ValueError, match="one per parameter"):
        IIV(["CL", "V"], kind=["additive"] * 3)
    with pytest.raises(ValueError, match="names no pk model"):
        ClosedForm("pd", "E0 + C")


def test_unknown_names_and_missing_structural_parameters_are_named():
    data = datasets.theophylline()
    spec = ModelSpec(
        "x", "1cpt_oral", {"KA": 1.5, "TVCL": 2.7, "V": 31.5}, individual={"CL": "TVCL * (AGE / 40)"}
    )
    with pytest.raises(ValueError, match=r"use \['AGE'\], which are not parameters"):
        build_model(spec, data)
    spec = ModelSpec("x", "1cpt_oral", {"KA": 1.5, "K": 0.1, "V": 31.5}, individual={"THALF": "log(2) / K"})
    with pytest.raises(ValueError, match=r"missing \['CL'\].*write them in individual"):
        build_model(spec, data)


def test_declarative_forms_and_expressions_give_the_same_ofv():
    """Theophylline with a fixed WT power on CL, IIV on all three: written declaratively, and as
    $PK-style expressions of thetas and etas of their own. The same density, so the same OFV to
    rounding (1e-8), and the structural parameters come out under their names."""
    data = datasets.theophylline()
    declarative = ModelSpec(
        "decl",
        "1cpt_oral",
        THEO,
        covariates=[Covariate("CL", "WT", "power", reference=70, theta=0.75, fixed=True)],
        iiv=IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.15], block=True),
        error=ResidualError("combined", add=0.3, prop=0.1),
    )
    expressions = ModelSpec(
        "expr",
        "1cpt_oral",
        {"TVKA": 1.5, "TVCL": 2.7, "TVV": 31.5},
        iiv=IIV(["eta_KA", "eta_CL", "eta_V"], sd=[0.6, 0.3, 0.15], block=True),
        individual={
            "KA": "TVKA * exp(eta_KA)",
            "CL": "TVCL * (WT / 70)**0.75 * exp(eta_CL)",
            "V": "TVV * exp(eta_V)",
        },
        error=ResidualError("combined", add=0.3, prop=0.1),
    )
    omega = np.array([[0.36, 0.02, 0.01], [0.02, 0.09, 0.015], [0.01, 0.015, 0.0225]])
    sigma = {"add": 0.3, "prop": 0.1}
    a = marginal_likelihood(declarative, data, PopulationValues(THEO, omega, sigma=sigma))
    tv = {"TVKA": 1.5, "TVCL": 2.7, "TVV": 31.5}
    b = marginal_likelihood(expressions, data, PopulationValues(tv, omega, sigma=sigma))
    assert abs(a.ofv - b.ofv) < 1e-8
    np.testing.assert_allclose(a.eta, b.eta, atol=1e-8)


def test_kvk_and_kck_parameterisations_give_the_same_ofv():
    """Issue 15's invariance: theophylline as (KA, V, K) with CL = K V and a full 3 x 3 Omega,
    against (KA, CL, K) with V = CL / K. eta_CL = eta_V + eta_K, so Omega maps by
    M = [[1,0,0],[0,1,1],[0,0,1]]: the FOCE-I OFVs agree to 1e-6 (the issue's tolerance; the EBE
    search converges to ~1e-9). The declarative "K replaces V" form is the same model too."""
    data = datasets.theophylline()
    block = dict(sd=[0.6, 0.2, 0.3], block=True)
    kvk = ModelSpec("kvk", "1cpt_oral", {"KA": 1.5, "V": 31.5, "K": 0.0857},
                    iiv=IIV(["KA", "V", "K"], **block), individual={"CL": "K * V"})  # fmt: skip
    kck = ModelSpec("kck", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "K": 0.0857},
                    iiv=IIV(["KA", "CL", "K"], **block), individual={"V": "CL / K"})  # fmt: skip
    declarative = ModelSpec("kck_decl", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "K": 0.0857},
                            iiv=IIV(["KA", "CL", "K"], **block))  # fmt: skip
    omega = np.array([[0.40, 0.05, -0.03], [0.05, 0.02, -0.01], [-0.03, -0.01, 0.06]])  # (KA, V, K)
    M = np.array([[1.0, 0, 0], [0, 1, 1], [0, 0, 1]])
    sigma = {"add": 0.7}
    ka, v, k = 1.5, 31.5, 0.0857
    ofv_kvk = marginal_likelihood(
        kvk, data, PopulationValues({"KA": ka, "V": v, "K": k}, omega, sigma=sigma)
    ).ofv
    pop_kck = PopulationValues({"KA": ka, "CL": k * v, "K": k}, M @ omega @ M.T, sigma=sigma)
    ofv_kck = marginal_likelihood(kck, data, pop_kck).ofv
    ofv_decl = marginal_likelihood(declarative, data, pop_kck).ofv
    assert abs(ofv_kvk - ofv_kck) < 1e-6
    assert abs(ofv_decl - ofv_kck) < 1e-6


def _ipred(spec, data):
    """IPRED at the spec's initial values with every eta at 0."""
    import pytensor

    model = build_model(spec, data).model
    fn = pytensor.function(
        model.value_vars, model.replace_rvs_by_values([model["ipred"]])[0], on_unused_input="ignore"
    )
    return fn(**model.initial_point())


def test_closed_form_pd_on_a_pk_model_and_derived_parameters():
    """A direct Emax response on the 1-cpt oral PK, two outputs by DVID: the cp rows equal the
    analytic model's prediction (F = expit(0.5) on every dose), the effect rows the Emax of it, to
    rounding; the derived THALF is a deterministic per subject."""
    theo = datasets.theophylline()
    rows = theo.records[["ID", "TIME", "AMT", "DV", "WT", "EVID", "CMT"]].copy()
    effect = rows[rows["EVID"] == 0].assign(DVID="effect", DV=20.0)
    df = pd.concat([rows.assign(DVID="cp"), effect]).sort_values(["ID", "TIME", "EVID"], kind="stable")
    data = read_nonmem(df.drop(columns="EVID").reset_index(drop=True))
    spec = _expression_spec()
    ipred = _ipred(spec, data)
    # the 1-cpt oral single dose by hand, at each subject's CL = 2.7 (WT/70)^0.75, F = expit(0.5)
    f = 1.0 / (1.0 + np.exp(-0.5))
    cl = 2.7 * (data.subject_covariates(["WT"])["WT"].to_numpy() / 70) ** 0.75
    dose = np.zeros(data.n_subjects)
    np.add.at(dose, data.dose_subject, data.dose_amt)
    k, ka, v, t, i = cl[data.obs_subject] / 31.5, 1.5, 31.5, data.obs_time, data.obs_subject
    conc = f * dose[i] * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
    cp = data.obs_output == "cp"
    np.testing.assert_allclose(ipred[cp], conc[cp], rtol=1e-10)
    np.testing.assert_allclose(ipred[~cp], 10.0 + 50.0 * conc[~cp] / (3.0 + conc[~cp]), rtol=1e-10)
    assert build_model(spec, data).model.named_vars_to_dims["THALF"] == ("subject",)


@pytest.mark.slow
def test_closed_form_biexponential_equals_the_ode_with_initial_amounts():
    """The issue's biexponential, 6 x 11 samples: the OFV of the closed form and of the ODE
    (two states starting at A1 and A2, rtol 1e-10) at the truth agree to 1e-6 (measured 3e-10)."""
    data = biexponential_data(seed=3)
    pop = PopulationValues(BIEXP_TRUTH, BIEXP_OMEGA, sigma={"add": BIEXP_SIGMA})
    closed = marginal_likelihood(biexponential("closed"), data, pop)
    ode = marginal_likelihood(biexponential("ode"), data, pop)
    assert abs(closed.ofv - ode.ofv) < 1e-6


def test_closed_form_without_pk_refuses_doses():
    spec = ModelSpec("b", ClosedForm("b", "A * exp(-K * t)"), {"A": 1.0, "K": 0.1})
    with pytest.raises(Exception, match="row 1, column AMT: closed-form model b has no pk model"):
        build_model(spec, datasets.theophylline())


@pytest.mark.sampling
def test_biexponential_fit_recovers_the_truth():
    """The issue's biexponential on 6 subjects x 11 samples (seed 0), default fit (2 x 500): at most
    one of the 9 truths (4 typical values, 3 omegas, the correlation, sigma) outside its 90%
    interval. With 9 intervals of 90%, 0.9^9 = 39% of data sets have all inside and 77% at most
    one outside; over seeds 0-4 (benchmarks/expression_models.py, 2 x 1000) 5 of 45 truths were
    outside (11%), and seed 0 has one (omega of eta_A2, the SD of an additive eta estimated from 6
    subjects). Its block Omega also covers the default fit's start of a block (the packed
    Cholesky factor given to nutpie)."""
    result = fit(biexponential(), biexponential_data(0), chains=2, draws=500, seed=0, progressbar=False)
    coverage = biexponential_coverage(result)
    outside = [k for k, (t, lo, hi) in coverage.items() if not lo <= t <= hi]
    assert len(outside) <= 1, coverage
    assert {"A1", "K1", "A2", "K2"} <= set(result.individual_parameters()["parameter"])


def test_inverse_wishart_omega_prior_is_the_inverse_wishart():
    """The Bartlett construction of ``omega_prior="inverse_wishart"``: 20,000 prior draws of Omega
    against scipy's invwishart, element by element: the quartiles agree to 3% of scipy's
    interquartile range (their Monte Carlo SE is ~1%); the TOML round trip keeps the prior."""
    import pymc as pm
    from scipy import stats

    S = np.array([[0.4, 0.05, 0.0], [0.05, 0.1, 0.02], [0.0, 0.02, 0.2]])
    iiv = IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.2], block=True, omega_prior="inverse_wishart", iw_df=8.0,
              iw_scale=S.tolist())  # fmt: skip
    spec = ModelSpec("iw", "1cpt_oral", THEO, iiv=iiv)
    assert ModelSpec.from_toml(spec.to_toml()) == spec
    with build_model(spec, datasets.theophylline()).model:
        prior = pm.sample_prior_predictive(
            draws=20000, var_names=["omega_sd", "omega_corr_0"], random_seed=1
        ).prior
    sd = prior["omega_sd"].values.reshape(-1, 3)
    ours = prior["omega_corr_0"].values.reshape(-1, 3, 3) * sd[:, :, None] * sd[:, None, :]
    ref = stats.invwishart(df=8, scale=S).rvs(size=20000, random_state=2)
    q_ours, q_ref = (np.quantile(x, [0.25, 0.5, 0.75], axis=0) for x in (ours, ref))
    iqr = q_ref[2] - q_ref[0]
    assert np.all(np.abs(q_ours - q_ref) < 0.03 * iqr)


@pytest.mark.sampling
def test_kvk_and_kck_posteriors_agree_with_mapped_inverse_wishart_priors():
    """Issue 15's posterior invariance: (KA, V, K) with IW(S, 5) on its etas and (KA, CL, K) with
    IW(M S M', 5) have the same prior on Omega, so the same posterior but for the typical values'
    weak Normal(log, 2) priors. Typical KA, CL, V, K and the SDs of their etas (mapped through M):
    medians within 0.1 posterior SD (measured <= 0.051 with 4 x 2000 draws,
    benchmarks/expression_models.py) plus 0.15 for this test's 2 x 1000 draws (3 Monte Carlo SEs
    of a median difference at ESS ~1000). With the default LKJ priors the same comparison gives
    0.88 (omega of K): the LKJ prior does not map."""
    S = np.diag([0.6, 0.2, 0.3]) ** 2
    M = np.array([[1.0, 0, 0], [0, 1, 1], [0, 0, 1]])
    iiv = dict(sd=[0.6, 0.2, 0.3], block=True, omega_prior="inverse_wishart", iw_df=5.0)
    kvk = ModelSpec("kvk", "1cpt_oral", {"KA": 1.5, "V": 31.5, "K": 0.0857},
                    iiv=IIV(["KA", "V", "K"], **iiv, iw_scale=S.tolist()),
                    individual={"CL": "K * V"})  # fmt: skip
    kck = ModelSpec("kck", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "K": 0.0857},
                    iiv=IIV(["KA", "CL", "K"], **iiv, iw_scale=(M @ S @ M.T).tolist()),
                    individual={"V": "CL / K"})  # fmt: skip
    data = datasets.theophylline()
    a, b = (
        log_scale_summary(fit(s, data, chains=2, draws=1000, seed=1, progressbar=False).posterior, form)
        for s, form in ((kvk, "kvk"), (kck, "kck"))
    )
    for k in a:
        assert abs(np.median(a[k]) - np.median(b[k])) < 0.25 * np.sqrt(0.5 * (a[k].var() + b[k].var())), k
