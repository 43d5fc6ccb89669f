"""Options no other test exercises (issue 20, item 6), each checked at one parameter point
against a hand computation: the individual predictions (IPRED) the graph builds and the
log-density of DV. Tolerance 1e-10 relative: the same closed forms, evaluated two ways."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from nlmebayes import IIV, Covariate, ModelSpec, ResidualError, read_nonmem
from nlmebayes.model.builder import build_model

TIMES = np.array([1.0, 4.0, 12.0])
DOSE = 100.0


def _data() -> pd.DataFrame:
    rows = []
    for i, (wt, age, sex) in enumerate([(50.0, 30.0, "F"), (70.0, 40.0, "M"), (90.0, 60.0, "M")], start=1):
        rows.append(dict(ID=i, TIME=0.0, AMT=DOSE, DV=np.nan, WT=wt, AGE=age, SEX=sex))
        rows += [
            dict(ID=i, TIME=t, AMT=0.0, DV=dv, WT=wt, AGE=age, SEX=sex)
            for t, dv in zip(TIMES, (6.0, 4.0, 1.5), strict=True)
        ]
    return pd.DataFrame(rows)


def _evaluate(spec: ModelSpec, point: dict):
    """IPRED and the per-observation DV log-density at ``point`` (other free variables at their
    initial values)."""
    model = build_model(spec, read_nonmem(_data())).model
    values = model.initial_point()
    values.update(point)
    # deterministics are graphs of the random variables: evaluate them at the value variables
    ipred = model.replace_rvs_by_values([model["ipred"]])[0]
    fn = model.compile_fn(
        [ipred, model.logp(vars=[model["DV"]], sum=False)[0]], mode="FAST_COMPILE", point_fn=True
    )
    return fn(values)


def _conc(cl, v):
    return DOSE / v[:, None] * np.exp(-(cl / v)[:, None] * TIMES[None, :])


DV = np.tile([6.0, 4.0, 1.5], 3)
BASE = dict(name="opt", structural="1cpt_iv", parameters={"CL": 2.0, "V": 20.0})
POP = {"log_CL_pop": np.log(2.0), "log_V_pop": np.log(20.0)}


@pytest.mark.parametrize(
    "kind,values,effect",
    [
        ("linear", "WT", lambda th, x: 1 + th * (x - 70.0)),
        ("exponential", "AGE", lambda th, x: np.exp(th * (x - 70.0))),
    ],
)
def test_linear_and_exponential_covariates(kind, values, effect):
    """CL_i = CL * (1 + theta (COV - ref)) and CL * exp(theta (COV - ref)); additive error."""
    spec = ModelSpec(**BASE, covariates=[Covariate("CL", values, kind, reference=70.0)],
                     error=ResidualError("additive", add=0.5))  # fmt: skip
    ipred, logp = _evaluate(spec, {**POP, f"theta_CL_{values}": 0.01, "sigma_add_log__": np.log(0.5)})
    cov = np.array({"WT": [50.0, 70.0, 90.0], "AGE": [30.0, 40.0, 60.0]}[values])
    expected = _conc(2.0 * effect(0.01, cov), np.full(3, 20.0)).ravel()
    np.testing.assert_allclose(ipred, expected, rtol=1e-10)
    np.testing.assert_allclose(logp, norm.logpdf(DV, expected, 0.5), rtol=1e-10)


def test_categorical_covariate():
    """CL_i = CL * exp(theta_level) for the non-reference level (reference "F")."""
    spec = ModelSpec(**BASE, covariates=[Covariate("CL", "SEX", "categorical", reference="F")],
                     error=ResidualError("additive", add=0.5))  # fmt: skip
    ipred, _ = _evaluate(spec, {**POP, "theta_CL_SEX": np.array([0.3]), "sigma_add_log__": np.log(0.5)})
    cl = 2.0 * np.exp(np.array([0.0, 0.3, 0.3]))
    np.testing.assert_allclose(ipred, _conc(cl, np.full(3, 20.0)).ravel(), rtol=1e-10)


def test_additive_iiv_and_exponential_error():
    """V_i = V + eta_i (additive IIV, eta = omega z) and log(DV) ~ N(log IPRED, sigma_exp)."""
    spec = ModelSpec(
        **BASE, iiv=IIV(["V"], sd=[2.0], kind="additive"), error=ResidualError("exponential", exp=0.2)
    )
    z = np.array([[-1.0], [0.5], [2.0]])
    point = {**POP, "z_0": z, "omega_sd_0_V_log__": np.log(2.0), "sigma_exp_log__": np.log(0.2)}
    ipred, logp = _evaluate(spec, point)
    v = 20.0 + 2.0 * z[:, 0]
    expected = _conc(np.full(3, 2.0), v).ravel()
    np.testing.assert_allclose(ipred, expected, rtol=1e-10)
    # the density is on the log scale: normal on log DV, no Jacobian (as NONMEM's log-transform
    # both sides)
    np.testing.assert_allclose(logp, norm.logpdf(np.log(DV), np.log(expected), 0.2), rtol=1e-10)


def test_steady_state_dose_after_earlier_doses():
    """SS=1 resets: the 500 mg given before it no longer counts; the SS bolus (no ADDL) brings
    the accumulation ``1 / (1 - exp(-k II))`` and then decays, and a later bolus adds its own
    decay (issue 20: SS had only been tested on a subject's first dose)."""
    from nlmebayes.pk import get_model

    df = pd.DataFrame(
        dict(
            ID=1,
            TIME=[0.0, 10.0, 30.0, 31.0, 36.0, 40.0],
            AMT=[500.0, 100.0, 0, 0, 50.0, 0],
            SS=[0, 1, 0, 0, 0, 0],
            II=[0.0, 12.0, 0, 0, 0, 0],
            EVID=[1, 1, 0, 0, 1, 0],
            DV=[np.nan, np.nan, 1.0, 1.0, np.nan, 1.0],
        )
    )
    k, v = 0.1, 20.0
    c = get_model("1cpt_iv").concentration(read_nonmem(df), dict(CL=2.0, V=20.0)).eval()

    # no further doses follow the SS record (ADDL 0): after its interval the decay continues
    def after_ss(t):
        return 100.0 / v * np.exp(-k * (t - 10.0)) / (1 - np.exp(-k * 12.0))

    expected = [after_ss(30.0), after_ss(31.0), after_ss(40.0) + 50.0 / v * np.exp(-k * 4.0)]
    np.testing.assert_allclose(c, expected, rtol=1e-10)
