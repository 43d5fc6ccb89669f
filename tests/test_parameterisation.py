"""Centred and non-centred etas: the same model, the pilot's choice, the sampler's start (issue 13)."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
import xarray as xr

from nlmebayes import IIV, Covariate, FitResult, ModelSpec, ResidualError, datasets, fit, read_nonmem
from nlmebayes.diagnostics import subject_flip_flop_warning
from nlmebayes.inference.parameterisation import (
    PARTIAL_SPREAD,
    centred_parameters,
    centring_threshold,
    centring_weights,
    initial_point,
    noncentred_draws,
    partially_centred,
    run_pilot,
)
from nlmebayes.model import build_model
from nlmebayes.simulation import simulate
from nlmebayes.simulation.design import replicate_subjects, sampling_design
from tests.calibration import assert_converged

THEO = ModelSpec(
    "theo",
    "1cpt_oral",
    {"KA": 1.5, "CL": 2.7, "V": 31.5},
    iiv=IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.1]),
    error=ResidualError("additive", add=0.7),
)
BLOCK = dataclasses.replace(THEO, iiv=[IIV(["KA"], sd=[0.6]), IIV(["CL", "V"], sd=[0.3, 0.2], block=True)])
# estimated power and exponential effects: the centred means are read off these typical values'
# graphs (builder.log_of), a fixed linear one is logged as it is
COVARIATES = dataclasses.replace(
    THEO,
    covariates=[
        Covariate("CL", "WT", "power", reference=70.0, theta=0.75),
        Covariate("V", "WT", "exponential", reference=70.0, theta=0.01),
        Covariate("KA", "WT", "linear", reference=70.0, theta=0.01, fixed=True),
    ],
)


def _logp(model, values: dict) -> float:
    """Log density (transforms' Jacobians included) at constrained values of the free variables."""
    point = {}
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        tr = model.rvs_to_transforms.get(rv)
        x = np.asarray(values[rv.name], dtype=float)
        point[value.name] = (
            tr.forward(pt.as_tensor_variable(x), *rv.owner.inputs).eval() if tr is not None else x
        )
    return float(model.compile_logp(mode="FAST_COMPILE")(point))


def _values(spec, data, rng):
    """Population values and standard-normal z for the non-centred model of ``spec``."""
    built = build_model(spec, data)
    values = {}
    for rv in built.model.free_RVs:
        shape = tuple(len(built.model.coords[d]) for d in built.model.named_vars_to_dims.get(rv.name, ()))
        if rv.name.startswith("z_"):
            values[rv.name] = rng.standard_normal(shape)
        elif rv.name.startswith("omega_chol"):
            values[rv.name] = pm.draw(rv, random_seed=1)
        else:
            values[rv.name] = (
                np.exp(rng.normal(np.log(0.3), 0.2)) if "sd" in rv.name else rng.normal(0.3, 0.1)
            )
    values.update({f"log_{p.name}_pop": np.log(p.initial) + 0.1 for p in spec.parameters})
    return built, values


@pytest.mark.parametrize(
    ("spec", "centred", "partial"),
    [
        (THEO, ["KA", "CL", "V"], []),
        (THEO, ["CL"], []),
        (BLOCK, ["CL", "V"], []),
        (BLOCK, ["KA"], []),
        (COVARIATES, ["KA", "CL"], []),
        (THEO, [], ["KA", "CL", "V"]),
        (THEO, ["CL"], ["V"]),
        (BLOCK, ["CL", "V"], ["KA"]),
        (COVARIATES, ["V"], ["KA", "CL"]),
    ],
    ids=[
        "all",
        "one of a diagonal block",
        "block omega",
        "beside a block",
        "covariates",
        "all partial",
        "centred, partial and non-centred",
        "partial beside a block",
        "partial with covariates",
    ],
)
def test_centred_model_is_the_same_density_and_gives_back_z(spec, centred, partial):
    """phi = log TV_i + eta is a shift and scaling of z: the centred log density equals the
    non-centred one minus log|d phi / d z| = sum over subjects of log omega (log det L for a block),
    to rounding; and the stored draws, turned back into z, are the z they came from. A partially
    centred psi = w mu + omega**w z (mu = log TV_i) has log|d psi / d z| = sum of w log omega;
    the weights include 0 and 1, the non-centred and centred ends."""
    data = datasets.theophylline()
    rng = np.random.default_rng(0)
    nc, values = _values(spec, data, rng)
    weights = {p: np.r_[0.0, 1.0, rng.uniform(0, 1, data.n_subjects - 2)] for p in partial}
    cen = build_model(spec, data, centered=centred, partial=weights)
    # phi from z through the non-centred graph's own eta and typical values
    eta = nc.model["eta"]
    fn = pm.compile(
        [rv for rv in nc.model.free_RVs],
        [eta, *[nc.model[f"{p}"] for p in spec.iiv_parameters]],
        on_unused_input="ignore",
    )
    eta_v, *ind = fn(**values)
    cols = {p: j for j, p in enumerate(spec.iiv_parameters)}
    c_values = {k: v for k, v in values.items() if not k.startswith("z_")}
    log_jac = 0.0
    for k, block in enumerate(spec.iiv):
        ps = block.parameters
        z = values[f"z_{k}"]
        cen_ps = [p for p in ps if p in centred]
        par_ps = [p for p in ps if p in partial]
        if not cen_ps and not par_ps:
            c_values[f"z_{k}"] = z
            continue
        if cen_ps:
            c_values[f"phi_{k}"] = np.log(np.stack([ind[cols[p]] for p in cen_ps], axis=1))
        for p in par_ps:
            log_jac += np.sum(weights[p]) * np.log(values[f"omega_sd_{k}_{p}"])
        if par_ps:
            c_values[f"psi_{k}"] = np.stack(
                [
                    weights[p] * (np.log(ind[cols[p]]) - eta_v[:, cols[p]])
                    + values[f"omega_sd_{k}_{p}"] ** weights[p] * z[:, ps.index(p)]
                    for p in par_ps
                ],
                axis=1,
            )
        nc_ps = [j for j, p in enumerate(ps) if p not in centred and p not in partial]
        if nc_ps:
            c_values[f"z_{k}"] = z[:, nc_ps]
        if block.block:
            chol = np.linalg.cholesky(_block_cov(values[f"omega_chol_{k}"], len(ps)))
            log_jac += data.n_subjects * np.sum(np.log(np.diag(chol)))
        else:
            log_jac += data.n_subjects * sum(np.log(values[f"omega_sd_{k}_{p}"]) for p in cen_ps)
    np.testing.assert_allclose(_logp(cen.model, c_values), _logp(nc.model, values) - log_jac, rtol=1e-10)
    # the draws stored as z: two chains x one draw of the same values
    post = xr.Dataset(
        {
            k: xr.DataArray(
                np.broadcast_to(v, (2, 1, *np.shape(v))).copy(),
                dims=("chain", "draw", *[f"{k}_d{i}" for i in range(np.ndim(v))]),
            )
            for k, v in c_values.items()
        }
    )
    for rv in cen.model.free_RVs:
        dims = cen.model.named_vars_to_dims.get(rv.name, ())
        if dims:
            post[rv.name] = post[rv.name].rename(dict(zip(post[rv.name].dims[2:], dims, strict=True)))
    idata = xr.DataTree.from_dict({"posterior": post})
    noncentred_draws(cen, idata)
    back = idata["posterior"].to_dataset()
    assert not [v for v in back.data_vars if v.startswith(("phi_", "psi_"))]
    for k in range(len(spec.iiv)):
        np.testing.assert_allclose(back[f"z_{k}"].values[0, 0], values[f"z_{k}"], atol=1e-10)
        assert back[f"z_{k}"].dims == ("chain", "draw", "subject", f"iiv_{k}")
    assert eta_v.shape == (data.n_subjects, 3)


def _block_cov(packed, n):
    """Covariance from PyMC's packed lower-triangular Cholesky factor."""
    L = np.zeros((n, n))
    L[np.tril_indices(n)] = packed
    return L @ L.T


def _iv_spec(**iiv):
    return ModelSpec(
        "iv",
        "2cpt_iv",
        {"CL": 5.0, "V": 20.0, "Q": 10.0, "V2": 50.0},
        iiv=IIV(["CL", "V", "Q", "V2"], sd=[0.3] * 4, **iiv),
        error=ResidualError("proportional", prop=0.1),
    )


def _iv_data(n, times, seed=1):
    design = sampling_design(n, times, amt=1000.0, seed=seed)
    return simulate(
        _iv_spec(),
        design,
        typical={"CL": 5.0, "V": 20.0, "Q": 10.0, "V2": 50.0},
        omega=np.diag([0.09] * 4),
        sigma={"prop": 0.1},
        seed=seed,
    )


RICH = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 8, 12, 24, 48]


def test_pilot_centres_what_the_data_inform():
    """Twelve samples per subject pin CL, V, Q, V2 (conditional SD / omega 0.10 to 0.41, below
    the 0.5 that centres at any number of subjects); one late sample per subject says almost
    nothing about V (ratio near 1). Explicit choices override the pilot."""
    rich = run_pilot(_iv_spec(), _iv_data(30, RICH))
    assert len(rich.eta) == 30
    assert max(rich.ratios.values()) < 0.5 <= centring_threshold(30), rich.ratios
    assert centred_parameters(_iv_spec(), rich) == ["CL", "V", "Q", "V2"]
    sparse = run_pilot(_iv_spec(), _iv_data(30, [24.0]))
    assert sparse.ratios["V"] > 0.9, sparse.ratios
    assert "V" not in centred_parameters(_iv_spec(), sparse)
    assert centred_parameters(_iv_spec(parameterisation="noncentered"), rich) == []
    assert centred_parameters(_iv_spec(parameterisation="centered"), sparse) == ["CL", "V", "Q", "V2"]
    # no pilot (it failed): auto stays non-centred
    assert centred_parameters(_iv_spec(), None) == []


def _mixed_data(n_rich=10, n_sparse=30, seed=4):
    """Theophylline's model; ``n_rich`` subjects with 11 samples after one dose, ``n_sparse`` with
    two samples in the last of ten 12-hourly doses (ADDL): subjects that differ in what their
    data say about KA and V."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_rich + n_sparse):
        rich = i < n_rich
        dose = dict(ID=i + 1, TIME=0.0, DV=0.0, AMT=320.0, EVID=1, MDV=1, CMT=1)
        rows.append({**dose, "II": 0.0 if rich else 12.0, "ADDL": 0 if rich else 9})
        times = [0.25, 0.5, 1, 2, 3.5, 5, 7, 9, 12, 24, 36] if rich else np.sort(rng.uniform(108, 120, 2))
        for t in times:
            rows.append(dict(ID=i + 1, TIME=float(t), DV=1.0, AMT=0.0, EVID=0, MDV=0, CMT=2, II=0.0, ADDL=0))
    design = read_nonmem(pd.DataFrame(rows))
    return simulate(
        THEO,
        design,
        typical={"KA": 1.5, "CL": 2.7, "V": 31.5},
        omega=np.diag([0.36, 0.09, 0.04]),
        sigma={"add": 0.7},
        seed=seed,
    )


def test_pilot_centres_partially_where_subjects_differ():
    """Rich subjects pin KA (weights near 1), two samples at steady state say little about it
    (near 0): KA's weights spread beyond PARTIAL_SPREAD and it is sampled partially centred, not
    centred or non-centred. Theophylline's alike subjects get no partial centring. Explicit
    choices override the pilot; a block Omega is never partial; without a pilot, none."""
    data = _mixed_data()
    pilot = run_pilot(THEO, data)
    partial = partially_centred(THEO, pilot)
    assert "KA" in partial, pilot.ratios
    w = partial["KA"]
    assert np.median(w[:10]) > 0.7 and np.median(w[10:]) < 0.3, (w[:10], w[10:])
    assert np.subtract(*np.quantile(w, [0.75, 0.25])) > PARTIAL_SPREAD
    assert not set(partial) & set(centred_parameters(THEO, pilot))
    np.testing.assert_allclose(
        w, centring_weights(pilot.subject_ratios[:, 0], data.n_subjects), rtol=0, atol=0
    )
    forced = dataclasses.replace(
        THEO, iiv=IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.1], parameterisation="partial")
    )
    assert list(partially_centred(forced, pilot)) == ["KA", "CL", "V"]
    assert centred_parameters(forced, pilot) == []
    plain = dataclasses.replace(
        forced, iiv=IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.1], parameterisation="noncentered")
    )
    assert partially_centred(plain, pilot) == {}
    assert partially_centred(BLOCK, run_pilot(BLOCK, data)).keys() <= {"KA"}
    assert partially_centred(THEO, None) == {}
    assert partially_centred(THEO, run_pilot(THEO, datasets.theophylline())) == {}


def test_partial_centring_is_checked():
    data = datasets.theophylline()
    ones = np.ones(data.n_subjects)
    with pytest.raises(ValueError, match="needs a diagonal block"):
        IIV(["CL", "V"], block=True, parameterisation="partial")
    with pytest.raises(ValueError, match="'F' has no IIV"):
        build_model(THEO, data, partial={"F": ones})
    with pytest.raises(ValueError, match="'CL' is in a block Omega"):
        build_model(BLOCK, data, partial={"CL": ones})
    with pytest.raises(ValueError, match="'KA' is also centred"):
        build_model(THEO, data, centered=["KA"], partial={"KA": ones})
    with pytest.raises(ValueError, match="expected 12 values"):
        build_model(THEO, data, partial={"KA": np.ones(3)})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        build_model(THEO, data, partial={"KA": 2 * ones})
    spec = dataclasses.replace(THEO, iiv=IIV(["KA"], sd=[0.6], parameterisation="partial"))
    assert ModelSpec.from_toml(spec.to_toml()) == spec


def test_initial_point_puts_etas_at_their_conditional_modes():
    data = datasets.theophylline()
    pilot = run_pilot(THEO, data)
    for centred in ([], ["KA", "CL"]):
        built = build_model(THEO, data, deterministics=False, centered=centred)
        start = initial_point(built, THEO, pilot)
        assert set(start) == {rv.name for rv in built.model.free_RVs}
        assert start["log_CL_pop"] == pytest.approx(np.log(2.7))
        if not centred:
            np.testing.assert_allclose(start["z_0"], pilot.eta / np.array([0.6, 0.3, 0.1]))
        else:
            tv = np.log([1.5, 2.7])
            np.testing.assert_allclose(start["phi_0"], tv + pilot.eta[:, :2])
            np.testing.assert_allclose(start["z_0"], pilot.eta[:, 2:] / 0.1)
    # partially centred: psi = w log TV + omega**w z with z = eta / omega, so its z is the EBE's
    w = np.linspace(0, 1, data.n_subjects)
    built = build_model(THEO, data, deterministics=False, centered=["CL"], partial={"V": w})
    start = initial_point(built, THEO, pilot)
    np.testing.assert_allclose(start["psi_0"][:, 0], w * np.log(31.5) + 0.1**w * pilot.eta[:, 2] / 0.1)
    np.testing.assert_allclose(start["z_0"], pilot.eta[:, :1] / 0.6)


def test_parameterisation_round_trips_and_is_checked(tmp_path):
    spec = _iv_spec(parameterisation="centered")
    assert ModelSpec.from_toml(spec.to_toml()) == spec
    with pytest.raises(ValueError, match="parameterisation must be one of"):
        IIV(["CL"], parameterisation="centred")
    with pytest.raises(ValueError, match="have no IIV"):
        build_model(THEO, datasets.theophylline(), centered=["F"])


def test_subject_flip_flop_warning_names_the_subject():
    """Two chains agree on subject 1 (KA_i = 1.5 > k_i = 0.1) and disagree on subject 2."""
    ka = np.full((2, 50, 2), 1.5)
    ka[1, :, 1] = 0.05
    coords = {"subject": ["1", "2"]}
    post = xr.Dataset(
        {
            "KA": (("chain", "draw", "subject"), ka),
            "CL": (("chain", "draw", "subject"), np.full((2, 50, 2), 3.0)),
            "V": (("chain", "draw", "subject"), np.full((2, 50, 2), 30.0)),
        },
        coords=coords,
    )
    text = subject_flip_flop_warning(post, THEO)
    assert text is not None and "subject(s) 2;" in text
    post["KA"][1, :, 1] = 1.5
    assert subject_flip_flop_warning(post, THEO) is None
    assert subject_flip_flop_warning(post, dataclasses.replace(THEO, flip_flop_guard=True)) is None


@pytest.mark.sampling
def test_rich_design_default_fit_centres_and_converges():
    """40 subjects x 12 samples, 2-cpt IV (shrinkage ~5%): the default fit centres all four etas
    and converges; non-centred, the same draws budget leaves the typical values far from it
    (bulk ESS of CL_pop ~20-30 per 1000 draws on the 120-subject version, benchmarks/sampling.py)."""
    data = _iv_data(40, RICH, seed=2)
    res = fit(_iv_spec(), data, draws=400, tune=400, chains=2, seed=3, diagnostics=False)
    assert res.idata.attrs["nlmebayes_centered"] == ["CL", "V", "Q", "V2"]
    assert_converged(res)
    assert "Etas sampled centred CL" in res.report()
    # the stored draws are the non-centred z: eta = omega * z to rounding
    post = res.posterior
    np.testing.assert_allclose(
        post["eta"].values, (post["z_0"] * post["omega_sd"].values[..., None, :]).values, atol=1e-12
    )


@pytest.mark.sampling
def test_partial_without_a_pilot_warns_and_samples_non_centred(monkeypatch):
    """Models without a pilot (non-continuous outcomes, a failed pilot) have no per-subject
    weights: a block that asks for partial centring is sampled non-centred, and fit says so."""
    spec = dataclasses.replace(
        THEO, iiv=IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.1], parameterisation="partial")
    )
    monkeypatch.setattr(sys.modules["nlmebayes.inference.fit"], "_pilot", lambda spec, data: None)
    with pytest.warns(UserWarning, match=r"parameterisation='partial'.*no pilot.*\['KA', 'CL', 'V'\]"):
        res = fit(spec, datasets.theophylline(), draws=20, tune=20, chains=1, seed=1, diagnostics=False)
    assert res.idata.attrs["nlmebayes_partial_weights"] == {}
    assert res.idata.attrs["nlmebayes_centered"] == []


@pytest.mark.sampling
def test_mixed_design_default_fit_centres_partially_and_converges(tmp_path):
    """The mixed rich/sparse design: the default fit samples KA partially centred, converges, and
    stores the draws as the non-centred z (eta = omega z to rounding, no psi left); the report
    says so, also after saving and loading.

    2 x 1000 draws: with 2 x 400 the min bulk ESS over the population parameters was below the
    100 that ``assert_converged`` asks in 10 of 20 seeds (11 of 20 before the closed dose-train
    formula, which moved the draws by rounding only; ESS 40-140), so the test passed by its seed's
    luck; with 2 x 1000 it was 124-270 in 8 of 8 seeds (R-hat <= 1.022)."""
    data = _mixed_data()
    res = fit(THEO, data, draws=1000, tune=600, chains=2, seed=3, diagnostics=False)
    assert "KA" in res.idata.attrs["nlmebayes_partial_weights"]
    assert_converged(res)
    assert "partially centred KA" in res.report()
    back = FitResult.load(res.save(tmp_path / "mixed.nc"))
    assert back.idata.attrs["nlmebayes_partial_weights"] == res.idata.attrs["nlmebayes_partial_weights"]
    assert "partially centred KA" in back.report()
    post = res.posterior
    assert not [v for v in post.data_vars if v.startswith(("phi_", "psi_"))]
    np.testing.assert_allclose(
        post["eta"].values, (post["z_0"] * post["omega_sd"].values[..., None, :]).values, atol=1e-12
    )


@pytest.mark.sampling
def test_rich_oral_replicated_theophylline_converges_by_default():
    """Theophylline's design x 4 (48 subjects), simulated from its model with IIV on KA: each
    subject could settle in its own flip-flop mode; started at the EBEs the two chains agree.
    V's ratio (0.60) is centred at 48 subjects (threshold 0.70), not at Theophylline's 12 (0.5)."""
    design = replicate_subjects(datasets.theophylline(), 4)
    data = simulate(
        THEO,
        design,
        typical={"KA": 1.5, "CL": 2.7, "V": 31.5},
        omega=np.diag([0.4, 0.08, 0.02]),
        sigma={"add": 0.7},
        seed=5,
    )
    res = fit(THEO, data, draws=400, tune=400, chains=2, seed=6, diagnostics=False)
    assert res.idata.attrs["nlmebayes_centered"] == ["KA", "CL", "V"]
    assert_converged(res)
    assert "flip-flop" not in res.report()
    theo = fit(THEO, datasets.theophylline(), draws=50, tune=50, chains=1, seed=6, diagnostics=False)
    assert theo.idata.attrs["nlmebayes_centered"] == ["KA", "CL"]
