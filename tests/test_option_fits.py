"""Each residual and covariate kind fitted to a small simulated data set (issue 20, item 6): the
log-density tests in ``test_options_logp.py`` check the formulas at a point; these check that a
fit of data simulated from known values recovers them, with converged chains and calibrated
coverage (``tests/calibration.py``). Data and fit seeds are the first ones tried."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nlmebayes import IIV, Covariate, ModelSpec, ResidualError, fit, read_nonmem
from nlmebayes.simulation import simulate
from tests.calibration import assert_calibrated_coverage, assert_converged

TIMES = (0.5, 1, 2, 4, 8, 12)


def _design(n: int = 30):
    """``n`` subjects, 100 mg IV bolus, six samples; weight, age and sex drawn once."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(1, n + 1):
        cov = dict(
            WT=float(np.round(rng.lognormal(np.log(70), 0.2), 1)),
            AGE=float(rng.integers(20, 81)),
            SEX=str(rng.choice(["F", "M"])),
        )
        rows.append(dict(ID=i, TIME=0.0, AMT=100.0, DV=np.nan, **cov))
        rows += [dict(ID=i, TIME=t, AMT=0.0, DV=1.0, **cov) for t in TIMES]
    return read_nonmem(pd.DataFrame(rows))


def _fit_simulated(spec, truth_sim: dict, seed: int = 1):
    sim = simulate(spec, _design(), seed=seed, **truth_sim)
    # 4 chains so that R-hat can see disagreement; 400 draws each
    return fit(spec, sim, draws=400, tune=400, chains=4, seed=seed, progressbar=False)


@pytest.mark.slow
def test_linear_exponential_and_categorical_covariates_are_recovered():
    """CL_i = CL (1 + theta_WT (WT - 70)) exp(theta_SEX[M]) exp(eta), V_i = V exp(theta_AGE
    (AGE - 50)) exp(eta); proportional error. At most 2 of the 8 truths outside their 90%
    intervals, none outside 99.5%: P = 0.93 under calibration."""
    spec = ModelSpec(
        name="covariate_kinds",
        structural="1cpt_iv",
        parameters={"CL": 2.0, "V": 20.0},
        covariates=[
            Covariate("CL", "WT", "linear", reference=70.0),
            Covariate("CL", "SEX", "categorical", reference="F"),
            Covariate("V", "AGE", "exponential", reference=50.0),
        ],
        iiv=IIV(["CL", "V"], sd=[0.2, 0.2]),
        error=ResidualError("proportional", prop=0.1),
    )
    res = _fit_simulated(
        spec,
        dict(
            typical={"CL": 2.5, "V": 25.0},
            thetas={"theta_CL_WT": 0.015, "theta_CL_SEX": np.array([0.3]), "theta_V_AGE": -0.01},
            omega=np.diag([0.25**2, 0.15**2]),
            sigma={"prop": 0.1},
        ),
    )
    assert_converged(res)
    truth = {"CL": 2.5, "V": 25.0, "theta_CL_WT": 0.015, "theta_CL_SEX[M]": 0.3, "theta_V_AGE": -0.01,
             "omega(CL)": 0.25, "omega(V)": 0.15, "sigma_prop": 0.1}  # fmt: skip
    assert_calibrated_coverage(res, truth, k=2)


@pytest.mark.slow
def test_additive_iiv_and_exponential_error_are_recovered():
    """V_i = V + eta_V (additive IIV), CL_i = CL exp(eta_CL), log DV = log IPRED + eps
    (exponential error). At most 1 of the 5 truths outside their 90% intervals, none outside
    99.5%: P = 0.90 under calibration."""
    spec = ModelSpec(
        name="additive_iiv_exp_error",
        structural="1cpt_iv",
        parameters={"CL": 2.0, "V": 20.0},
        iiv=[IIV(["CL"], sd=[0.2]), IIV(["V"], sd=[2.0], kind="additive")],
        error=ResidualError("exponential", exp=0.2),
    )
    res = _fit_simulated(
        spec,
        dict(typical={"CL": 2.5, "V": 25.0}, omega=np.diag([0.25**2, 4.0**2]), sigma={"exp": 0.15}),
    )
    assert_converged(res)
    truth = {"CL": 2.5, "V": 25.0, "omega(CL)": 0.25, "omega(V)": 4.0, "sigma_exp": 0.15}
    assert_calibrated_coverage(res, truth, k=1)
