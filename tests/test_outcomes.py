"""Non-continuous outcomes (issue 16 item 2): binary, ordinal, count and time-to-event likelihoods.

Each family's log-likelihood at fixed values equals scipy's distribution to 1e-8 (the time-to-event
ones: scipy's log density for events, log survival for censored rows), and each recovers its
simulation truth with IIV in a short fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytensor
import pytest
from scipy import optimize, special, stats

from nlmebayes import IIV, ClosedForm, ModelSpec, Outcome, Parameter, fit, read_nonmem
from nlmebayes.data import DataError
from nlmebayes.diagnostics.identifiability import design_warnings
from nlmebayes.model.builder import build_model
from nlmebayes.model.spec import HAZARDS
from tests.calibration import assert_calibrated_coverage, assert_converged


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
    for shape in (1.6, 0.7):  # below 1, H's gradient at t = 0 would be 0 * inf (_pointwise: finite)
        weibull = _tte_spec("weibull", {"SCALE": 8.0, "SHAPE": shape})
        dist = stats.weibull_min(shape, scale=8.0)
        expected = np.where(events == 1, dist.logpdf(times), dist.logsf(times))
        np.testing.assert_allclose(_pointwise(weibull, data), expected, rtol=0, atol=1e-8)
    lam, gam = 0.05, 0.15
    dist = stats.gompertz(lam / gam, scale=1 / gam)  # h(t) = c exp(t / scale) / scale
    expected = np.where(events == 1, dist.logpdf(times), dist.logsf(times))
    for exact in (True, False):
        spec = _tte_spec("gompertz", {"LAMBDA": lam, "GAMMA": gam}, exact=exact)
        np.testing.assert_allclose(_pointwise(spec, data), expected, rtol=0, atol=1e-8)


def test_a_cumulative_hazard_must_vanish_at_zero():
    """Rows that start at t = 0 take H(0) = 0 without evaluating H there, so an expression that is
    not 0 at 0 (not the hazard's integral from 0) is refused, with the model named."""
    data = _tte_data(np.array([2.0, 5.0]), np.array([1, 0]))
    spec = _tte_spec("constant", {"LAMBDA": 0.2})
    spec = dataclasses.replace(spec, error=Outcome("tte", cumulative="LAMBDA * t + 1"))
    with pytest.raises(ValueError, match=r"model constant: the cumulative hazard .* is 1 at t = 0"):
        build_model(spec, data)


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
        {"B0": -1.5, "SLOPE": 0.4, "omega(B0)": 0.8},
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
    truths = {"SLOPE": 0.4, "omega(SLOPE)": 0.3} | {f"cutpoint[{k}]": c for k, c in enumerate(cuts)}
    out["ordinal"] = (spec, _design(n, t, y), truths)
    # counts: mean BASE_i exp(-KD t), Poisson and negative binomial (alpha 3)
    base = 4.0 * np.exp(rng.normal(0, 0.4, n))
    mu = base[:, None] * np.exp(-0.1 * t)
    for kind, y, extra in (
        ("poisson", rng.poisson(mu), {}),
        ("negbin", rng.negative_binomial(3.0, 3.0 / (3.0 + mu)), {"alpha": 3.0}),
    ):
        f = ClosedForm("f", "BASE * exp(-KD * t)")
        spec = ModelSpec(kind, f, {"BASE": 3.0, "KD": 0.2}, iiv=IIV(["BASE"], sd=[0.3]), error=Outcome(kind))
        out[kind] = (spec, _design(n, t, y), {"BASE": 4.0, "KD": 0.1, "omega(BASE)": 0.4, **extra})
    # time to event: Weibull, IIV on the scale, repeated events (a single event per subject tells
    # the frailty from the hazard's shape only by the distribution's form; fits of it do not mix)
    scale = 10.0 * np.exp(rng.normal(0, 0.3, 60))
    h, H = HAZARDS["weibull"]
    spec = ModelSpec(
        "tte", ClosedForm("h", h), {"SCALE": 8.0, "SHAPE": 1.2}, iiv=IIV(["SCALE"], sd=[0.3]),
        error=Outcome("tte", cumulative=H),
    )  # fmt: skip
    out["tte"] = (
        spec,
        _repeated_events(scale, 1.5, FOLLOW_UP, MAX_EVENTS, rng),
        {"SCALE": 10.0, "SHAPE": 1.5, "omega(SCALE)": 0.3},
    )
    return out


FOLLOW_UP, MAX_EVENTS = 24.0, 3


def _repeated_events(scale, shape, follow_up, max_events, rng):
    """Events of a Weibull process (H(t) = (t / scale)^shape, calendar time) per subject: its
    increments of H between events are Exp(1). Follow-up stops at the ``max_events``-th event, or
    with a censored row at ``follow_up``."""
    rows = []
    for i, s in enumerate(scale):
        times = s * np.cumsum(rng.exponential(size=max_events)) ** (1 / shape)
        rows.append({"ID": i + 1, "TIME": 0.0, "DV": 0.0, "MDV": 1})
        rows += [{"ID": i + 1, "TIME": t, "DV": 1.0, "MDV": 0} for t in times[times < follow_up]]
        if times[-1] >= follow_up:
            rows.append({"ID": i + 1, "TIME": follow_up, "DV": 0.0, "MDV": 0})
    return read_nonmem(pd.DataFrame(rows))


# At most 5 of the 18 truths outside their 90% intervals and none outside 99.5%: a calibrated
# method passes with P = 0.91 (tests/calibration.py). "At most 1 of 18" would pass with P = 0.45.
RECOVERY_K = 5


def fit_outcomes(sim_seed: int, fit_seed: int = 1) -> list:
    """(result, truths) of each family of ``simulated_outcomes(sim_seed)``, fitted with 4 x 500
    draws as the recovery test fits them (also run over many seeds by ``benchmarks/outcomes.py``)."""
    return [
        (fit(spec, data, chains=4, draws=500, seed=fit_seed, progressbar=False, diagnostics=False), truths)
        for spec, data, truths in simulated_outcomes(sim_seed).values()
    ]


@pytest.mark.sampling
def test_each_outcome_recovers_its_truth_with_iiv():
    """Binary, ordinal (4 categories), Poisson, negative binomial (40 subjects x 6) and Weibull
    repeated time to event (60 subjects, IIV on the scale, up to 3 events in 24 h, ~30% of the
    subjects censored before their third): every fit converges and the truths are covered as a
    calibrated method covers them (``RECOVERY_K``). ``benchmarks/outcomes.py`` runs this over
    simulation seeds 0-19: 19 of 20 pass (34 of 360 truths outside their 90% intervals, 9.4%;
    per family 80-100% coverage). Seed 0 fails: its Poisson data lie far from their truth (see
    ``test_count_posterior_agrees_with_the_exact_marginal_likelihood``), so this test simulates
    from seed 1."""
    tte = simulated_outcomes(1)["tte"][1]
    censored = np.sum(tte.obs_dv == 0) / tte.n_subjects  # a subject's only DV = 0 row ends it
    assert 0.2 < censored < 0.4, censored
    fits = fit_outcomes(1)
    for result, _ in fits:
        assert_converged(result)
    assert_calibrated_coverage([r for r, _ in fits], [t for _, t in fits], k=RECOVERY_K)


@pytest.mark.sampling
def test_count_posterior_agrees_with_the_exact_marginal_likelihood():
    """Poisson counts with IIV (simulation seed 0): the posterior medians of BASE, KD and omega lie
    within 0.5 posterior SD (log scale) of the marginal likelihood's maximum computed without the
    package (60-node Gauss-Hermite quadrature over each subject's eta, scipy's Poisson pmf,
    Nelder-Mead). Measured 0.07-0.26 SD: the prior and the posterior's skew move a median that
    much at 40 subjects; a likelihood or an eta in the wrong place moves it by several SD.

    The maximum is KD = 0.048 for a truth of 0.1 (likelihood ratio at the truth 7.3 on 3 degrees
    of freedom, p = 0.06): this data set, not the fit, is far from its truth. That is why the
    recovery test, whose 99.5% guard it fails, simulates from seed 1."""
    spec, data, _ = simulated_outcomes(0)["poisson"]
    y = data.obs_dv.reshape(40, len(TIMES))
    x, w = np.polynomial.hermite_e.hermegauss(60)

    def nll(p):
        log_base, log_kd, log_omega = p
        mean = np.exp(log_base + np.exp(log_omega) * x[:, None, None] - np.exp(log_kd) * TIMES)
        ll = stats.poisson.logpmf(y[None], mean).sum(axis=-1)  # node x subject
        return -special.logsumexp(ll, b=w[:, None] / w.sum(), axis=0).sum()

    start = np.log([4.0, 0.1, 0.4])
    mle = optimize.minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10}).x
    result = fit(spec, data, chains=4, draws=500, seed=1, progressbar=False, diagnostics=False)
    assert_converged(result)
    post = result.posterior
    draws = [post["BASE_pop"], post["KD_pop"], post["omega_sd"].sel(iiv="BASE")]
    for name, d, m in zip(("BASE", "KD", "omega"), draws, mle, strict=True):
        log_d = np.log(d.values.ravel())
        assert abs(np.median(log_d) - m) < 0.5 * log_d.std(), (name, np.exp(np.median(log_d)), np.exp(m))
    assert 0.04 < np.exp(mle[1]) < 0.06


@pytest.mark.sampling
def test_binary_posterior_is_the_exact_posterior_by_quadrature():
    """Binary with IIV, simulation seed 4, where all three truths fall outside their 90% intervals
    (``benchmarks/outcomes.py``). The posterior computed without the package, on a 50^3 grid of
    (B0, log SLOPE, omega) with each subject's eta integrated by 40-node Gauss-Hermite quadrature
    and the spec's priors (Normal(-1, 2), Normal(log 0.3, 2) on the log, HalfNormal(1)), has the
    sampler's 5/50/95% quantiles to 0.05 posterior SD (measured). Allowed 0.15: a 5% quantile of
    ~1,500 effective draws has a Monte Carlo SD of about 0.05 posterior SD. So such misses are the
    exact posterior's at this truth, not the sampler's or the likelihood's."""
    spec, data, _ = simulated_outcomes(4)["binary"]
    result = fit(spec, data, chains=4, draws=1000, seed=1, progressbar=False, diagnostics=False)
    assert_converged(result)
    post = result.posterior
    draws = [post["B0_pop"], np.log(post["SLOPE_pop"]), post["omega_sd"].sel(iiv="B0")]
    draws = [d.values.ravel() for d in draws]
    grids = [np.linspace(d.min() - 0.5, d.max() + 0.5, 50) for d in draws]
    grids[2] = np.linspace(1e-4, draws[2].max() + 0.5, 50)
    b0, log_slope, omega = grids
    y = data.obs_dv.reshape(40, len(TIMES))
    x, w = np.polynomial.hermite_e.hermegauss(40)
    # log p(y_i | eta) = sum_t y_t f_t - softplus(f_t), f_t = a + SLOPE t with a = B0 + eta: the
    # softplus sum is the same for every subject (same times), the rest needs two sums of y
    n_events, weighted = y.sum(axis=1), y @ TIMES
    slope = np.exp(log_slope)[:, None, None]
    log_post = np.empty((50, 50, 50))
    for i, b in enumerate(b0):
        a = b + omega[:, None] * x[None, :]  # (omega, node)
        softplus = np.logaddexp(0.0, a[None, :, :, None] + slope[..., None] * TIMES).sum(-1)
        ll = a[None, :, :, None] * n_events + slope[..., None] * weighted - softplus[..., None]
        log_post[i] = special.logsumexp(ll, b=(w / w.sum())[:, None], axis=2).sum(-1)
    log_post += (
        stats.norm(-1, 2).logpdf(b0)[:, None, None]
        + stats.norm(np.log(0.3), 2).logpdf(log_slope)[None, :, None]
        + stats.halfnorm(scale=1.0).logpdf(omega)[None, None, :]
    )
    p = np.exp(log_post - log_post.max())
    for axis, (grid, d) in enumerate(zip(grids, draws, strict=True)):
        marginal = p.sum(axis=tuple(a for a in range(3) if a != axis))
        cdf = (np.cumsum(marginal) - marginal / 2) / marginal.sum()  # at the cells' centres
        exact = np.interp([0.05, 0.5, 0.95], cdf, grid)
        sampled = np.quantile(d, [0.05, 0.5, 0.95])
        assert np.all(np.abs(exact - sampled) < 0.15 * d.std()), (axis, exact, sampled)


def test_replicates_follow_each_family():
    """``draw_observations`` (simulate, posterior predictive, VPC) at fixed predictions, 200,000
    draws each, against the families' own moments and probabilities within 5 Monte Carlo SEs:
    Bernoulli P(1) = expit(0.5) (probit: Phi(0.5)); ordinal category frequencies from the
    proportional odds model; Poisson mean and variance 3; negative binomial mean 3 and variance
    3 + 9 / alpha. Event times are refused with a pointer to the Kaplan-Meier VPC."""
    from scipy.special import expit, ndtr

    from nlmebayes.model.outcomes import draw_observations

    rng, n = np.random.default_rng(3), 200_000
    data = _design(1, np.array([1.0]), np.zeros((1, 1)))
    f = np.full((n, 1), 0.5)

    def draw(spec, params=None, pred=f):
        return draw_observations(spec, data, pred, np.zeros_like(pred), params or {}, rng)[:, 0]

    def close(got, want, sd):
        assert abs(np.mean(got) - want) < 5 * sd / np.sqrt(n), (np.mean(got), want)

    for link, p in (("logit", expit(0.5)), ("probit", ndtr(0.5))):
        close(draw(_linear("binary", link=link)), p, np.sqrt(p * (1 - p)))
    cuts = np.array([-1.0, 0.0, 1.5])
    y = draw(_linear("ordinal", categories=4), {"cutpoints": np.broadcast_to(cuts, (n, 3))})
    cdf = np.r_[expit(cuts - 0.5), 1.0]
    for k, pk in enumerate(np.diff(np.r_[0.0, cdf])):
        close(y == k, pk, np.sqrt(pk * (1 - pk)))
    mean = np.full((n, 1), 3.0)
    y = draw(_linear("poisson"), pred=mean)
    close(y, 3.0, np.sqrt(3.0))
    close((y - 3.0) ** 2, 3.0, np.sqrt(2 * 9 + 3))  # var of (y - mu)^2 for Poisson(3): 2 mu^2 + mu
    y = draw(_linear("negbin"), {"alpha": np.full(n, 2.0)}, pred=mean)
    close(y, 3.0, np.sqrt(3.0 + 9.0 / 2.0))
    assert abs(np.var(y) / (3.0 + 9.0 / 2.0) - 1) < 0.05
    spec, tte, _ = simulated_outcomes(0)["tte"]
    with pytest.raises(NotImplementedError, match="Kaplan-Meier VPC"):
        draw_observations(spec, tte, np.ones(tte.n_obs), np.zeros(tte.n_obs), {}, rng)


def test_simulate_a_count_model_and_refuse_a_binary_vpc():
    """``simulate`` of the Poisson model draws counts whose mean over 40 subjects x 6 times is
    that of their simulated means BASE exp(eta - KD t) (measured 3.17 against 3.06; within 15%,
    about 4 SEs of a mean of 240 Poisson counts near 3), and
    ``vpc`` refuses a binary fit by name instead of comparing percentiles of 0/1 data."""
    from nlmebayes.diagnostics.vpc import vpc
    from nlmebayes.simulation import simulate

    spec, data, _ = simulated_outcomes(1)["poisson"]
    out = simulate(spec, data, typical={"BASE": 4.0, "KD": 0.1}, omega=np.diag([0.16]), seed=1)
    assert np.array_equal(out.obs_dv, np.round(out.obs_dv)) and out.obs_dv.min() >= 0
    expected = out.records.attrs["ipred"].mean()
    assert abs(out.obs_dv.mean() / expected - 1) < 0.15, (out.obs_dv.mean(), expected)
    spec, data, _ = simulated_outcomes(1)["binary"]
    result = fit(spec, data, chains=1, draws=20, tune=20, seed=1, progressbar=False, diagnostics=False)
    with pytest.raises(NotImplementedError, match="a VPC of percentiles does not fit a binary outcome"):
        vpc(result, n=10)


def test_single_event_frailty_is_warned_about():
    """IIV on a hazard with one event (or censoring) per subject: the frailty's variance is told
    from the hazard's shape only by the distribution's form (Weibull: omega^2 + (pi^2 / 6) /
    SHAPE^2 is the variance of log T), so ``fit`` warns; repeated events do not."""
    spec, repeated, _ = simulated_outcomes(0)["tte"]
    single = _tte_data(np.array([3.0, 12.0, 7.5]), np.array([1, 0, 1]))
    assert any("shape of its distribution" in w for w in design_warnings(spec, single))
    assert design_warnings(spec, repeated) == []


def test_joint_pk_and_binary_response_likelihood():
    """A joint model: concentrations (cp, proportional error) and a yes/no response whose logit is
    an Emax of the same concentration (resp). Each row's log-likelihood is its own family's:
    normal for cp, Bernoulli for resp (scipy, 1e-8). Concentrations below 1 are BLQ (CENS = 1,
    DV = LLOQ 1): their term is the normal's log-CDF at the LLOQ (M3), as in a model without the
    response (they used to be taken as measured values of 1). PyMC's normal log-CDF is good to
    ~1e-8 relative."""
    from nlmebayes import ResidualError, datasets

    theo = datasets.theophylline()
    rows = theo.records[["ID", "TIME", "AMT", "DV", "EVID", "CMT"]].copy()
    rng = np.random.default_rng(4)
    resp = rows[rows["EVID"] == 0].assign(DVID="resp")
    resp["DV"] = rng.integers(0, 2, len(resp)).astype(float)
    cp_rows = rows.assign(DVID="cp", CENS=((rows["EVID"] == 0) & (rows["DV"] < 1.0)).astype(int))
    cp_rows.loc[cp_rows["CENS"] == 1, "DV"] = 1.0
    df = pd.concat([cp_rows, resp.assign(CENS=0)]).sort_values(["ID", "TIME", "EVID"], kind="stable")
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
    normal = stats.norm(conc, np.maximum(0.2 * conc, 1e-8))
    blq = data.obs_cens == 1
    assert cp[blq].all() and blq.sum() > 5
    expected = np.select(
        [cp & ~blq, blq],
        [normal.logpdf(data.obs_dv), normal.logcdf(data.obs_dv)],
        stats.bernoulli.logpmf(data.obs_dv, p),
    )
    finite = conc > 0  # the pre-dose sample (C = 0) has a floored SD in the model
    np.testing.assert_allclose(ll[finite | ~cp], expected[finite | ~cp], rtol=1e-7, atol=1e-8)


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


def test_kaplan_meier_vpc_of_repeated_events_takes_the_first():
    """Subject 1: events at 2 and 5, censored at 8; subject 2: censored at 3; subject 3: events at 4
    and 9 (follow-up stopped at its last event). First events (2, censored 3, 4), seen until 8, 3
    and the data's last time 9."""
    from nlmebayes.diagnostics.km_vpc import _first_events

    subj = np.array([0, 0, 0, 1, 2, 2])
    t = np.array([2.0, 5.0, 8.0, 3.0, 4.0, 9.0])
    ev = np.array([1, 1, 0, 0, 1, 1])
    subjects, first_t, first_ev, seen = _first_events(subj, t, ev)
    np.testing.assert_array_equal(subjects, [0, 1, 2])
    np.testing.assert_array_equal(first_t, [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(first_ev, [1, 0, 1])
    np.testing.assert_array_equal(seen, [8.0, 3.0, 9.0])


@pytest.mark.sampling
def test_kaplan_meier_vpc_of_repeated_events_tells_a_wrong_hazard_apart():
    """The recovery test's repeated-event data (Weibull, shape 1.5, IIV on the scale): the time to
    the first event stays inside the simulated 5-95% band for the Weibull model (measured 0-1% of
    100 grid times outside over simulation seeds 0-3) and leaves it for a constant hazard
    (30-69%)."""
    from nlmebayes.diagnostics.km_vpc import km_vpc

    spec, data, _ = simulated_outcomes(1)["tte"]
    h, H = HAZARDS["constant"]
    constant = ModelSpec("constant", ClosedForm("h", h), {"LAMBDA": 0.1}, error=Outcome("tte", cumulative=H))
    outside = {}
    for model in (spec, constant):
        result = fit(model, data, chains=4, draws=500, seed=1, progressbar=False, diagnostics=False)
        assert_converged(result)
        outside[model.name] = km_vpc(result, n=200).fraction_outside
    assert outside["tte"] < 0.1 and outside["constant"] > 0.2, outside


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
