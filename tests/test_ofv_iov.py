"""The marginal likelihood of models with inter-occasion variability (kappas integrated per subject).

No sampling: every number is evaluated at given population values (the simulation truth).
"""

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest

from nlmebayes import IIV, IOV, ModelSpec, ResidualError, read_nonmem
from nlmebayes.diagnostics import ConditionalModel, PopulationValues, marginal_likelihood, n_parameters
from nlmebayes.simulation import simulate
from tests.calibration import iov_case

TRUTH = PopulationValues(
    typical={"CL": 2.0, "V": 20.0},
    omega=np.diag([0.09, 0.04]),
    sigma={"prop": 0.08},
    pi_sd={"CL": 0.2, "V": 0.15},
)


def _occasions_design(n_subjects, times=(0.5, 2, 6, 12), n_occ=(3,)):
    """IV bolus 100 at the start of each occasion, 200 h apart (washed out: half-life ~7 h)."""
    rows = []
    for i in range(1, n_subjects + 1):
        for occ in range(1, n_occ[(i - 1) % len(n_occ)] + 1):
            t0 = 200.0 * (occ - 1)
            rows.append(dict(ID=i, TIME=t0, AMT=100.0, DV=0.0, OCC=occ))
            rows += [dict(ID=i, TIME=t0 + t, AMT=0.0, DV=1.0, OCC=occ) for t in times]
    return read_nonmem(pd.DataFrame(rows))


def test_iov_ofv_tends_to_the_iiv_model_as_pi_vanishes():
    """At pi = 1e-4 the kappas barely move a prediction: the IOV model's OFV is the IIV-only
    model's to O(pi^2 x information) (measured 0.006 on the 40 x 3 design; the issue asks < 0.01)."""
    spec, sim, _ = iov_case(sim_seed=2)
    tiny = dataclasses.replace(TRUTH, pi_sd={"CL": 1e-4, "V": 1e-4})
    with_iov = marginal_likelihood(spec, sim, tiny)
    without = marginal_likelihood(dataclasses.replace(spec, iov=None), sim, tiny)
    assert abs(with_iov.ofv - without.ofv) < 0.01
    # each variance counts once, as NONMEM's OMEGA BLOCK(1) SAME does
    assert with_iov.k == {"theta": 2, "omega": 4, "sigma": 1, "total": 7}
    assert n_parameters(spec, sim)["omega"] == 4


def test_iov_ofv_importance_sampling_and_the_approximations_on_40_subjects():
    """40 subjects x 3 occasions x 4 samples, IIV and IOV on CL and V (8 random effects per
    subject). Importance sampling is unbiased for the likelihood: two seeds agree to its Monte
    Carlo error (measured 0.18 apart; 0.5 allowed). FOCE-I is 0.71 above it; Laplace 3.1 above
    (0.05-0.11 per subject, every subject the same sign): with 4 samples per occasion each
    subject's posterior of its 8 random effects is not Gaussian enough for Laplace, and the
    quadrature test below confirms that it is the approximation, not the sampler."""
    spec, sim, _ = iov_case(sim_seed=2)
    cm = ConditionalModel(spec, sim)
    ofv = {
        f"{m}{s}": marginal_likelihood(spec, sim, TRUTH, method=m, conditional=cm, seed=s).ofv
        for m, s in (("focei", ""), ("laplace", ""), ("importance", 0), ("importance", 1))
    }
    assert abs(ofv["importance0"] - ofv["importance1"]) < 0.5
    ofv["importance"] = ofv["importance0"]
    assert 0 < ofv["focei"] - ofv["importance"] < 1.5
    assert 0 < ofv["laplace"] - ofv["importance"] < 4.0


@pytest.mark.parametrize("sim_seed", [2, 3])
def test_iov_laplace_and_importance_sampling_agree_on_a_rich_40_subject_design(sim_seed):
    """The issue's check, 40 subjects x 3 occasions, on a design where Laplace's approximation is
    good: 12 samples per occasion (0.25-24 h) and 3% proportional error. Laplace's excess over
    the exact marginal likelihood shrinks as (residual SD)^2 / (samples per occasion): measured
    3.1 at 4 samples and 8%, 0.57 at 12 and 5%, 0.28-0.33 here over simulation seeds 1-4 (the
    limit is 0.5). Importance sampling's two seeds differ by 0.07-0.13 here (0.3 allowed). So
    Laplace's IOV code agrees with an estimator that does not depend on its Gaussian
    approximation (importance sampling is exact up to Monte Carlo error); the test above and the
    quadrature below show that the gap on sparse designs is Laplace's own."""
    times = (0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24)
    spec, _, _ = iov_case()
    pv = dataclasses.replace(TRUTH, sigma={"prop": 0.03})
    sim = simulate(
        spec, _occasions_design(40, times), typical=pv.typical, omega=pv.omega, pi=pv.pi_sd, sigma=pv.sigma,
        seed=sim_seed,
    )  # fmt: skip
    cm = ConditionalModel(spec, sim)
    imp = [
        marginal_likelihood(spec, sim, pv, method="importance", conditional=cm, seed=s).ofv for s in (0, 1)
    ]
    laplace = marginal_likelihood(spec, sim, pv, method="laplace", conditional=cm).ofv
    assert abs(imp[0] - imp[1]) < 0.3
    assert abs(laplace - imp[0]) < 0.5


def _quadrature_m2ll(data, pv, subject, n_points=15):
    """-2 log p(y_i) of one subject by adaptive Gauss-Hermite quadrature, written independently
    of nlmebayes' graph: the 1-cpt IV bolus in closed form with CL_ik = CL exp(eta + kappa_k),
    random effects (eta, kappa_1, kappa_2, kappa_3), the grid centred on the mode found by
    scipy and scaled by the inverse Hessian there (15^4 points)."""
    from scipy.optimize import minimize

    rec = data.records
    obs = rec[(rec["_SUBJ"] == subject) & rec["_IS_OBS"]]
    occ = obs["OCC"].to_numpy().astype(int) - 1
    t = obs["TIME"].to_numpy() - 200.0 * occ
    y = obs["DV"].to_numpy()
    cl, v, sd = pv.typical["CL"], pv.typical["V"], pv.sigma["prop"]
    var = np.r_[pv.omega[0, 0], [pv.pi_sd["CL"] ** 2] * 3]

    def objective(b):  # -2 log p(y, b), b of shape (..., 4)
        b = np.atleast_2d(b)
        cli = cl * np.exp(b[:, :1] + b[:, 1:][:, occ])
        f = 100.0 / v * np.exp(-cli / v * t)
        R = (sd * f) ** 2
        return np.sum(np.log(2 * np.pi * R) + (y - f) ** 2 / R, axis=1) + np.sum(
            b**2 / var + np.log(2 * np.pi * var), axis=1
        )

    mode = minimize(lambda b: objective(b)[0], np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    h = 1e-4
    H = np.array(
        [
            [
                (
                    objective(mode + h * (np.eye(4)[a] + np.eye(4)[c]))
                    - objective(mode + h * (np.eye(4)[a] - np.eye(4)[c]))
                    - objective(mode - h * (np.eye(4)[a] - np.eye(4)[c]))
                    + objective(mode - h * (np.eye(4)[a] + np.eye(4)[c]))
                )[0]
                / (4 * h * h)
                for c in range(4)
            ]
            for a in range(4)
        ]
    )
    L = np.linalg.cholesky(np.linalg.inv(H / 2))  # H / 2: the Hessian of -log p(y, b)
    x, w = np.polynomial.hermite_e.hermegauss(n_points)  # weight exp(-x^2 / 2)
    z = np.array(list(itertools.product(x, repeat=4)))
    wz = np.prod(np.array(list(itertools.product(w, repeat=4))), axis=1)
    o = objective(mode + z @ L.T)
    log_terms = np.log(wz) - o / 2 + np.sum(z**2, axis=1) / 2
    top = log_terms.max()
    return -2 * (np.log(np.linalg.det(L)) + top + np.log(np.sum(np.exp(log_terms - top))))


def test_iov_ofv_against_independent_quadrature():
    """IIV and IOV on CL only (4 random effects per subject), 3 subjects: per-subject -2LL by
    importance sampling (20,000 points) against adaptive Gauss-Hermite quadrature of the same
    likelihood written without nlmebayes (measured within 0.012; 0.03 allowed, the sampler's
    Monte Carlo error); Laplace is 0.055-0.065 above the quadrature and FOCE-I 0.09 below to
    0.07 above (0.15 allowed for both: their approximation error at 4 samples per occasion).
    The one-node quadrature (the Laplace approximation written independently) equals our Laplace
    to 1e-4."""
    spec = ModelSpec(
        "iov_cl",
        "1cpt_iv",
        {"CL": 2.0, "V": 20.0},
        iiv=IIV(["CL"], sd=[0.3]),
        iov=IOV(["CL"], sd=[0.2]),
        error=ResidualError("proportional", prop=0.1),
    )
    pv = PopulationValues(
        typical={"CL": 2.0, "V": 20.0}, omega=np.diag([0.09]), sigma={"prop": 0.08}, pi_sd={"CL": 0.2}
    )
    design = _occasions_design(3)
    sim = simulate(spec, design, typical=pv.typical, omega=pv.omega, pi=pv.pi_sd, sigma=pv.sigma, seed=2)
    cm = ConditionalModel(spec, sim)
    ref = np.array([_quadrature_m2ll(sim, pv, i) for i in range(3)])
    got = {
        m: marginal_likelihood(spec, sim, pv, method=m, conditional=cm, n_is=20000).subject_m2ll
        for m in ("importance", "laplace", "focei")
    }
    np.testing.assert_allclose(got["importance"], ref, atol=0.03)
    np.testing.assert_allclose(got["laplace"], ref, atol=0.15)
    np.testing.assert_allclose(got["focei"], ref, atol=0.15)
    # the same quadrature with one node is the Laplace approximation: ours equals it (to the
    # finite-difference Hessian's error), so the gap above is Laplace's, not the code's
    one_node = np.array([_quadrature_m2ll(sim, pv, i, n_points=1) for i in range(3)])
    np.testing.assert_allclose(got["laplace"], one_node, atol=1e-4)


@pytest.mark.parametrize("method", ["focei", "laplace"])
def test_subjects_with_fewer_occasions_carry_empty_slots_that_change_nothing(method):
    """Subjects with 1, 2 and 3 occasions in one data set: every subject carries 3 kappa slots,
    and a slot it lacks must cancel exactly (see the ofv module docstring). Each subject's -2LL
    equals the one computed from a data set of that subject alone (its own number of slots), to
    the EBEs' convergence (1e-6)."""
    spec, _, _ = iov_case(sim_seed=2)
    design = _occasions_design(3, n_occ=(1, 2, 3))
    sim = simulate(
        spec, design, typical=TRUTH.typical, omega=TRUTH.omega, pi=TRUTH.pi_sd, sigma=TRUTH.sigma, seed=4
    )
    whole = marginal_likelihood(spec, sim, TRUTH, method=method)
    assert ConditionalModel(spec, sim).n_slots == 3 and whole.eta.shape == (3, 2 + 3 * 2)
    frame = sim.input_frame()
    for i, ident in enumerate(sim.ids):
        alone = read_nonmem(frame[frame["ID"] == ident].reset_index(drop=True))
        one = marginal_likelihood(spec, alone, TRUTH, method=method)
        assert whole.subject_m2ll[i] == pytest.approx(one.subject_m2ll[0], abs=1e-6)
    ds = whole.to_dataset(spec)
    # the kappa EBEs of occasions a subject does not have are missing, not 0
    assert ds["kappa_ebe"].sizes == {"subject": 3, "occasion_slot": 3, "iov": 2}
    assert np.isnan(ds["kappa_ebe"].values[0, 1:]).all() and np.isfinite(ds["kappa_ebe"].values[2]).all()


def _block_iov_case():
    """The 40 x 3 design with correlated kappas (corr(CL, V) 0.6 between occasions)."""
    from nlmebayes import IOV

    spec, sim, _ = iov_case(sim_seed=2)
    block = dataclasses.replace(spec, iov=IOV(["CL", "V"], sd=[0.15, 0.1], block=True))
    pi = np.array([[0.04, 0.6 * 0.2 * 0.15], [0.6 * 0.2 * 0.15, 0.0225]])
    data = simulate(block, sim, typical=TRUTH.typical, omega=TRUTH.omega, pi=pi, sigma=TRUTH.sigma, seed=5)
    return spec, block, data, dataclasses.replace(TRUTH, pi=pi)


def test_block_iov_ofv():
    """Block IOV (NONMEM's $OMEGA BLOCK(2) SAME): with zero correlation it is the diagonal model
    (same OFV to rounding); counted as 3 elements. On data with correlated kappas, importance
    sampling is reproducible across seeds (measured 0.02 apart; 0.5 allowed), FOCE-I is 1.85 from
    it (2.5 allowed; the diagonal IOV model's FOCE-I error on this design is 0.7, and its Laplace
    error 3.1, see above), and the block model fits far better than the diagonal one at the truth
    (OFV 27.5 lower; 10 required)."""
    diagonal, block, data, pop = _block_iov_case()
    uncorrelated = dataclasses.replace(pop, pi=np.diag([0.2**2, 0.15**2]))
    assert (
        abs(
            marginal_likelihood(block, data, uncorrelated).ofv
            - marginal_likelihood(diagonal, data, TRUTH).ofv
        )
        < 1e-8
    )
    assert n_parameters(block, data)["omega"] == 2 + 3
    cm = ConditionalModel(block, data)
    imp = [
        marginal_likelihood(block, data, pop, method="importance", conditional=cm, seed=s).ofv for s in (0, 1)
    ]
    focei = marginal_likelihood(block, data, pop, conditional=cm).ofv
    assert abs(imp[0] - imp[1]) < 0.5
    assert abs(focei - np.mean(imp)) < 2.5
    assert marginal_likelihood(diagonal, data, TRUTH).ofv - focei > 10


@pytest.mark.sampling
def test_block_iov_fit_recovers_the_kappa_correlation():
    """2 x 300 draws on the correlated 40 x 3 design: the kappa correlation's 95% interval holds
    the truth 0.6 (measured median 0.61, [0.41, 0.76]) and the report lists it."""
    _, block, data, _ = _block_iov_case()
    from nlmebayes import fit

    result = fit(block, data, chains=2, draws=300, seed=1, progressbar=False)
    corr = result.posterior["pi_corr_0"].isel(iov_0=1, iov_0_=0).values.ravel()
    lo, hi = np.quantile(corr, [0.025, 0.975])
    assert lo < 0.6 < hi
    assert "corr_occ(CL,V)" in result.report()
