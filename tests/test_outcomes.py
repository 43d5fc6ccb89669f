"""Non-continuous outcomes (issue 16 item 2): binary, ordinal, count and time-to-event likelihoods.

Each family's log-likelihood at fixed values equals scipy's distribution to 1e-8 (the time-to-event
ones: scipy's log density for events, log survival for censored rows), and each recovers its
simulation truth with IIV in a short fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytensor
import pytest
from scipy import stats

from nlmebayes import IIV, ClosedForm, ModelSpec, Outcome, Parameter, fit, read_nonmem
from nlmebayes.data import DataError
from nlmebayes.model.builder import build_model
from nlmebayes.model.spec import HAZARDS


def _pointwise(spec, data, values=None):
    """Each observation's log-likelihood at the initial point (``values`` override free variables)."""
    model = build_model(spec, data).model
    point = {**model.initial_point(), **(values or {})}
    fn = pytensor.function(
        model.value_vars, model.logp(vars=[model["DV"]], sum=False)[0], on_unused_input="ignore"
    )
    grad = pytensor.function(
        model.value_vars, pytensor.grad(model.logp(), model.value_vars), on_unused_input="ignore"
    )
    assert all(np.isfinite(g).all() for g in grad(**point))
    return fn(**point)


def _design(n_subjects, times, dv):
    rows = [
        {"ID": i + 1, "TIME": t, "DV": float(dv[i, j])}
        for i in range(n_subjects)
        for j, t in enumerate(times)
    ]
    return read_nonmem(pd.DataFrame(rows))


def _linear(kind, observe="B0 + SLOPE * t", **outcome):
    params = [Parameter("B0", -1.0, scale="linear"), Parameter("SLOPE", 0.4)]
    return ModelSpec(kind, ClosedForm("f", observe), params, error=Outcome(kind, **outcome))


TIMES = np.arange(1.0, 7.0)


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_binary_likelihood_is_bernoulli(link):
    rng = np.random.default_rng(1)
    data = _design(3, TIMES, rng.integers(0, 2, (3, 6)))
    f = -1.0 + 0.4 * data.obs_time
    p = 1 / (1 + np.exp(-f)) if link == "logit" else stats.norm.cdf(f)
    ll = _pointwise(_linear("binary", link=link), data)
    np.testing.assert_allclose(ll, stats.bernoulli.logpmf(data.obs_dv, p), rtol=0, atol=1e-8)


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_ordinal_likelihood_is_proportional_odds(link):
    rng = np.random.default_rng(2)
    data = _design(4, TIMES, rng.integers(0, 4, (4, 6)))
    cuts = np.array([-0.5, 0.7, 2.0])
    f = -1.0 + 0.4 * data.obs_time
    F = (lambda x: 1 / (1 + np.exp(-x))) if link == "logit" else stats.norm.cdf
    cdf = np.column_stack([np.zeros_like(f), *[F(c - f) for c in cuts], np.ones_like(f)])
    k = data.obs_dv.astype(int)
    expected = np.log(cdf[np.arange(len(k)), k + 1] - cdf[np.arange(len(k)), k])
    ll = _pointwise(_linear("ordinal", link=link, categories=4, cutpoints=list(cuts)), data)
    np.testing.assert_allclose(ll, expected, rtol=0, atol=1e-8)


def test_count_likelihoods_are_poisson_and_negative_binomial():
    rng = np.random.default_rng(3)
    data = _design(3, TIMES, rng.poisson(3.0, (3, 6)))
    mu = 0.5 + 0.4 * data.obs_time
    spec = _linear("poisson", observe="B0 + SLOPE * t")
    ll = _pointwise(spec, data, {"B0_pop": 0.5})
    np.testing.assert_allclose(ll, stats.poisson.logpmf(data.obs_dv, mu), rtol=0, atol=1e-8)
    alpha = 2.5
    spec = _linear("negbin", observe="B0 + SLOPE * t", dispersion=alpha)
    ll = _pointwise(spec, data, {"B0_pop": 0.5, "alpha_log__": np.log(alpha)})
    expected = stats.nbinom.logpmf(data.obs_dv, alpha, alpha / (alpha + mu))  # var = mu + mu^2 / alpha
    np.testing.assert_allclose(ll, expected, rtol=0, atol=1e-8)


def _tte_data(times, events):
    """One record at time 0 (no observation) and one at each subject's event or censoring time."""
    rows = []
    for i, (t, e) in enumerate(zip(times, events, strict=True)):
        rows += [
            {"ID": i + 1, "TIME": 0.0, "DV": 0.0, "MDV": 1},
            {"ID": i + 1, "TIME": t, "DV": float(e), "MDV": 0},
        ]
    return read_nonmem(pd.DataFrame(rows))


def _tte_spec(hazard, parameters, exact=True, **kw):
    h, H = HAZARDS[hazard]
    return ModelSpec(
        hazard,
        ClosedForm(hazard, h),
        parameters,
        error=Outcome("tte", cumulative=H if exact else None, **kw),
        **{},
    )


def test_time_to_event_likelihoods_are_density_and_survival():
    """Weibull (exact cumulative hazard) and Gompertz (exact, and by 32-node Gauss-Legendre
    quadrature of the hazard: smooth, so to 1e-8): events give scipy's logpdf, censored rows its
    logsf."""
    times, events = np.array([2.0, 5.5, 9.0, 14.0, 3.3]), np.array([1, 0, 1, 0, 1])
    data = _tte_data(times, events)
    weibull = _tte_spec("weibull", {"SCALE": 8.0, "SHAPE": 1.6})
    dist = stats.weibull_min(1.6, scale=8.0)
    expected = np.where(events == 1, dist.logpdf(times), dist.logsf(times))
    np.testing.assert_allclose(_pointwise(weibull, data), expected, rtol=0, atol=1e-8)
    lam, gam = 0.05, 0.15
    dist = stats.gompertz(lam / gam, scale=1 / gam)  # h(t) = c exp(t / scale) / scale
    expected = np.where(events == 1, dist.logpdf(times), dist.logsf(times))
    for exact in (True, False):
        spec = _tte_spec("gompertz", {"LAMBDA": lam, "GAMMA": gam}, exact=exact)
        np.testing.assert_allclose(_pointwise(spec, data), expected, rtol=0, atol=1e-8)


def test_repeated_time_to_event_intervals_start_at_the_previous_row():
    """Rows at 2, 5 (events) and 8 (censored) of one subject: each pays H over its own interval."""
    rows = [{"ID": 1, "TIME": 0.0, "DV": 0.0, "MDV": 1}] + [
        {"ID": 1, "TIME": t, "DV": e, "MDV": 0} for t, e in ((2.0, 1.0), (5.0, 1.0), (8.0, 0.0))
    ]
    data = read_nonmem(pd.DataFrame(rows))
    ll = _pointwise(_tte_spec("constant", {"LAMBDA": 0.2}), data)
    np.testing.assert_allclose(ll, [np.log(0.2) - 0.4, np.log(0.2) - 0.6, -0.6], atol=1e-12)


def test_outcome_data_errors_name_the_row():
    data = _design(2, TIMES, np.full((2, 6), 2.0))
    with pytest.raises(DataError, match="row 1, column DV: binary outcome: DV must be 0 or 1"):
        build_model(_linear("binary"), data)
    with pytest.raises(ValueError, match="categories >= 3"):
        Outcome("ordinal", categories=2)
    spec = _linear("ordinal", categories=3)
    assert ModelSpec.from_toml(spec.to_toml()) == spec


def simulated_outcomes(seed: int = 0) -> dict:
    """Each family with IIV: (spec, data, truths by posterior variable), simulated with numpy."""
    rng = np.random.default_rng(seed)
    n, t = 40, TIMES
    out = {}
    # binary: logit P = B0 + eta + SLOPE t
    eta = rng.normal(0, 0.8, n)
    p = 1 / (1 + np.exp(-(-1.5 + eta[:, None] + 0.4 * t)))
    spec = ModelSpec(
        "binary",
        ClosedForm("f", "B0 + SLOPE * t"),
        [Parameter("B0", -1.0, scale="linear"), Parameter("SLOPE", 0.3)],
        iiv=IIV(["B0"], sd=[0.5], kind="additive"),
        error=Outcome("binary"),
    )
    out["binary"] = (
        spec,
        _design(n, t, rng.random((n, 6)) < p),
        {"B0_pop": -1.5, "SLOPE_pop": 0.4, "omega(B0)": 0.8},
    )
    # ordinal, 4 categories: logit P(Y <= k) = c_k - SLOPE_i t
    slope = 0.4 * np.exp(rng.normal(0, 0.3, n))
    cuts = np.array([0.5, 1.5, 2.5])
    cdf = 1 / (1 + np.exp(-(cuts[None, None, :] - (slope[:, None] * t)[:, :, None])))
    y = (rng.random((n, 6))[:, :, None] > cdf).sum(axis=2)
    spec = ModelSpec(
        "ordinal", ClosedForm("f", "SLOPE * t"), {"SLOPE": 0.3}, iiv=IIV(["SLOPE"], sd=[0.3]),
        error=Outcome("ordinal", categories=4, cutpoints=[0.0, 1.0, 2.0]),
    )  # fmt: skip
    out["ordinal"] = (spec, _design(n, t, y), {"SLOPE_pop": 0.4, "omega(SLOPE)": 0.3, "cutpoints": cuts})
    # counts: mean BASE_i exp(-KD t), Poisson and negative binomial (alpha 3)
    base = 4.0 * np.exp(rng.normal(0, 0.4, n))
    mu = base[:, None] * np.exp(-0.1 * t)
    for kind, y, extra in (
        ("poisson", rng.poisson(mu), {}),
        ("negbin", rng.negative_binomial(3.0, 3.0 / (3.0 + mu)), {"alpha": 3.0}),
    ):
        f = ClosedForm("f", "BASE * exp(-KD * t)")
        spec = ModelSpec(kind, f, {"BASE": 3.0, "KD": 0.2}, iiv=IIV(["BASE"], sd=[0.3]), error=Outcome(kind))
        out[kind] = (spec, _design(n, t, y), {"BASE_pop": 4.0, "KD_pop": 0.1, "omega(BASE)": 0.4, **extra})
    # time to event: Weibull, IIV on the scale, censored at 12 (about 30%)
    m = 100
    scale = 10.0 * np.exp(rng.normal(0, 0.3, m))
    T = scale * (-np.log(rng.random(m))) ** (1 / 1.5)
    h, H = HAZARDS["weibull"]
    spec = ModelSpec(
        "tte", ClosedForm("h", h), {"SCALE": 8.0, "SHAPE": 1.2}, iiv=IIV(["SCALE"], sd=[0.3]),
        error=Outcome("tte", cumulative=H),
    )  # fmt: skip
    out["tte"] = (
        spec,
        _tte_data(np.minimum(T, 12.0), T < 12.0),
        {"SCALE_pop": 10.0, "SHAPE_pop": 1.5, "omega(SCALE)": 0.3},
    )
    return out


@pytest.mark.sampling
def test_each_outcome_recovers_its_truth_with_iiv():
    """Binary, ordinal (4 categories), Poisson, negative binomial (40 subjects x 6) and Weibull
    time to event (100 subjects, IIV on the scale, ~30% censored), each fitted with 2 x 500 draws.

    Of the 18 truths, 1.8 are expected outside their 90% intervals by chance; the test allows 4
    (P(more than 4 | calibrated) = 2.8% for independent intervals), so a biased likelihood, which
    moves several intervals at once, fails it. The issue's "at most one" holds for only 45% of
    data sets of a calibrated method; ``benchmarks/outcomes.py`` found 9 of 90 outside over seeds
    0-4 (10%). This seed misses 3: omega(B0) of the binary model (6 binary samples per subject say
    little about it) and the correlated pair BASE, KD of the Poisson model."""
    outside, table = [], []
    for kind, (spec, data, truths) in simulated_outcomes().items():
        post = fit(spec, data, chains=2, draws=500, seed=1, progressbar=False, diagnostics=False).posterior
        for name, truth in truths.items():
            if name.startswith("omega("):
                draws = post["omega_sd"].sel(iiv=name[6:-1]).values.ravel()[:, None]
            else:
                draws = post[name].values.reshape(-1, np.size(truth))
            lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
            for j, t in enumerate(np.atleast_1d(truth)):
                table.append((kind, name, j, t, lo[j], hi[j]))
                if not lo[j] <= t <= hi[j]:
                    outside.append((kind, name, j))
    censored = 1 - simulated_outcomes()["tte"][1].obs_dv.mean()
    assert 0.2 < censored < 0.4
    print(*table, sep="\n")
    assert len(outside) <= 4, outside


def test_joint_pk_and_binary_response_likelihood():
    """A joint model: concentrations (cp, proportional error) and a yes/no response whose logit is
    an Emax of the same concentration (resp). Each row's log-likelihood is its own family's:
    normal for cp, Bernoulli for resp (scipy, 1e-8)."""
    from nlmebayes import ResidualError, datasets

    theo = datasets.theophylline()
    rows = theo.records[["ID", "TIME", "AMT", "DV", "EVID", "CMT"]].copy()
    rng = np.random.default_rng(4)
    resp = rows[rows["EVID"] == 0].assign(DVID="resp")
    resp["DV"] = rng.integers(0, 2, len(resp)).astype(float)
    df = pd.concat([rows.assign(DVID="cp"), resp]).sort_values(["ID", "TIME", "EVID"], kind="stable")
    data = read_nonmem(df.drop(columns="EVID").reset_index(drop=True))
    spec = ModelSpec(
        "joint",
        ClosedForm("pkpd", {"cp": "C", "resp": "E0 + EMAX * C / (EC50 + C)"}, pk="1cpt_oral"),
        [
            Parameter("KA", 1.5),
            Parameter("CL", 2.7),
            Parameter("V", 31.5),
            Parameter("E0", -2.0, scale="linear"),
            Parameter("EMAX", 4.0),
            Parameter("EC50", 5.0),
        ],  # fmt: skip
        error={"cp": ResidualError("proportional", prop=0.2), "resp": Outcome("binary")},
    )
    ll = _pointwise(spec, data, {"sigma_cp_prop_log__": np.log(0.2)})
    dose = np.zeros(data.n_subjects)
    np.add.at(dose, data.dose_subject, data.dose_amt)
    k, t = 2.7 / 31.5, data.obs_time
    conc = dose[data.obs_subject] * 1.5 / (31.5 * (1.5 - k)) * (np.exp(-k * t) - np.exp(-1.5 * t))
    cp = data.obs_output == "cp"
    p = 1 / (1 + np.exp(-(-2.0 + 4.0 * conc / (5.0 + conc))))
    expected = np.where(
        cp,
        stats.norm.logpdf(data.obs_dv, conc, np.maximum(0.2 * conc, 1e-8)),
        stats.bernoulli.logpmf(data.obs_dv, p),
    )
    finite = conc > 0  # the pre-dose sample (C = 0) has a floored SD in the model
    np.testing.assert_allclose(ll[finite | ~cp], expected[finite | ~cp], rtol=0, atol=1e-8)


def test_hazard_driven_by_a_pk_model():
    """A hazard ``LAMBDA exp(BETA C)`` of the 1-cpt oral concentration after each theophylline
    subject's dose: the cumulative hazard comes from 32-node Gauss-Legendre quadrature with C
    predicted at the nodes; each row's log-likelihood equals scipy's adaptive quadrature of the
    same hazard (hand-written C) to 1e-8."""
    from scipy.integrate import quad

    from nlmebayes import datasets

    theo = datasets.theophylline()
    doses = theo.records.loc[theo.records["EVID"] == 1, ["ID", "TIME", "AMT", "CMT"]].assign(DV=0.0)
    rng = np.random.default_rng(6)
    event_t = rng.uniform(2.0, 20.0, len(doses))
    events = doses.assign(TIME=event_t, AMT=0.0, CMT=2, DV=rng.integers(0, 2, len(doses)).astype(float))
    data = read_nonmem(
        pd.concat([doses, events]).sort_values(["ID", "TIME"], kind="stable").reset_index(drop=True)
    )
    spec = ModelSpec(
        "pk_hazard",
        ClosedForm("h", "LAMBDA * exp(BETA * C)", pk="1cpt_oral"),
        {"KA": 1.5, "CL": 2.7, "V": 31.5, "LAMBDA": 0.02, "BETA": 0.15},
        error=Outcome("tte"),
    )
    ll = _pointwise(spec, data)
    k = 2.7 / 31.5
    for j, (dose, t, y) in enumerate(zip(doses["AMT"], data.obs_time, data.obs_dv, strict=True)):

        def hazard(s, dose=dose):
            c = dose * 1.5 / (31.5 * (1.5 - k)) * (np.exp(-k * s) - np.exp(-1.5 * s))
            return 0.02 * np.exp(0.15 * c)

        H = quad(hazard, 0.0, t, epsabs=1e-13, epsrel=1e-13)[0]
        assert abs(ll[j] - (y * np.log(hazard(t)) - H)) < 1e-8


def test_kaplan_meier_with_ties_and_censoring():
    """Product-limit estimate: 2 of 4 events at t=1 give 1 - 2/4, the censored t=2 leaves it, the
    last event at t=3 ends it."""
    from nlmebayes.diagnostics.km_vpc import kaplan_meier

    s = kaplan_meier(np.array([1.0, 1.0, 2.0, 3.0]), np.array([1, 1, 0, 1]), np.array([0.5, 1.0, 2.5, 3.0]))
    np.testing.assert_allclose(s, [1.0, 0.5, 0.5, 0.0])


@pytest.mark.sampling
def test_kaplan_meier_vpc_tells_a_wrong_hazard_apart():
    """Weibull (shape 3) event times with IIV on the scale, 100 subjects, 28% censored at 12.
    Fitted with the Weibull hazard, the observed Kaplan-Meier curve stays inside the simulated
    5-95% band (measured 0% of 100 grid times outside); with a constant hazard it leaves the band
    over half the time (measured 52%): the check sees the misfit, and compare() prefers the Weibull
    model."""
    from nlmebayes.diagnostics.km_vpc import km_vpc
    from nlmebayes.plots import km_vpc_plot

    rng = np.random.default_rng(0)
    scale = 10.0 * np.exp(rng.normal(0, 0.3, 100))
    T = scale * (-np.log(rng.random(100))) ** (1 / 3.0)
    data = _tte_data(np.minimum(T, 12.0), T < 12.0)
    outside, results = {}, []
    for hazard, params in (("weibull", {"SCALE": 8.0, "SHAPE": 1.2}), ("constant", {"LAMBDA": 0.1})):
        h, H = HAZARDS[hazard]
        spec = ModelSpec(hazard, ClosedForm("h", h), params, error=Outcome("tte", cumulative=H))
        result = fit(spec, data, chains=2, draws=300, seed=1, progressbar=False, diagnostics=False)
        check = km_vpc(result, n=200)
        outside[hazard] = check.fraction_outside
        results.append(result)
    assert outside["weibull"] < 0.1 and outside["constant"] > 0.3, outside
    # compare() ranks outcome models by the conditional LOO (measured elpd difference 18.5, its SE 5.1)
    from nlmebayes.diagnostics.comparison import compare

    table = compare(results)
    assert table.index[0] == "weibull" and table.loc["constant", "weight"] < 0.05
    fig = km_vpc_plot(check=check)
    assert fig.nlme_data["survival"].shape == (100, 6)
