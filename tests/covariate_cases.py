"""A simulated covariate-search problem with known truth (issue 17), shared by tests and benchmarks.

80 subjects, 1-compartment oral, 6 samples each. Eight candidate covariates, of which two are real:
CL = 4 (WT/70)^0.75 and V = 40 * 1.2 for SEX = 1. The others are noise, and some are correlated
with the real ones, as in clinical data: BSA follows WT (r ~ 0.9), CRCL follows WT and AGE, HT
follows WT (r ~ 0.6); AGE, ALB, SEX (on CL) and RACE (3 levels) carry nothing.
"""

from __future__ import annotations

import numpy as np

from nlmebayes import IIV, Covariate, ModelSpec, ResidualError
from nlmebayes.simulation import simulate
from nlmebayes.simulation.design import sampling_design

COVARIATES = ["WT", "BSA", "CRCL", "AGE", "HT", "ALB", "SEX", "RACE"]
#: Every candidate covariate on CL and on V: 16 pairs, 17 effects (RACE has 3 levels).
PAIRS = [(p, c) for p in ("CL", "V") for c in COVARIATES]
REAL = {("CL", "WT"), ("V", "SEX")}
TRUTH = {"KA": 1.0, "CL": 4.0, "V": 40.0}
OMEGA_SD = [0.3, 0.25, 0.2]
TIMES = [0.5, 1, 2, 4, 6, 8, 12, 24]

BASE = ModelSpec(
    "base",
    "1cpt_oral",
    TRUTH,
    iiv=IIV(["KA", "CL", "V"], sd=OMEGA_SD),
    error=ResidualError("proportional", prop=0.1),
)


def covariate_data(n: int = 80, seed: int = 0, per_subject: int = 6):
    """Simulated data of the covariate-search problem (see the module docstring)."""
    rng = np.random.default_rng(seed)
    wt = np.exp(rng.normal(np.log(70), 0.3, n))
    age = rng.uniform(20, 80, n)
    covs = {
        "WT": wt,
        "BSA": 1.8 * (wt / 70) ** 0.65 * np.exp(rng.normal(0, 0.14, n)),
        "CRCL": (140 - age) * wt / 72 * np.exp(rng.normal(0, 0.25, n)),
        "AGE": age,
        "HT": 170 * (wt / 70) ** 0.15 * np.exp(rng.normal(0, 0.05, n)),
        "ALB": rng.normal(40, 5, n),
        "SEX": rng.integers(0, 2, n),
        "RACE": rng.integers(1, 4, n),
    }
    design = sampling_design(
        n, TIMES, amt=100.0, obs_cmt=2, covariates=covs, per_subject=per_subject, seed=seed
    )
    truth = ModelSpec(
        "truth",
        "1cpt_oral",
        TRUTH,
        covariates=[
            Covariate("CL", "WT", "power", reference=70.0, theta=0.75, fixed=True),
            Covariate("V", "SEX", "indicator", theta=0.2, fixed=True, condition="SEX == 1"),
        ],
        iiv=BASE.iiv,
        error=BASE.error,
    )
    omega = np.diag(np.array(OMEGA_SD) ** 2)
    return simulate(truth, design, typical=TRUTH, omega=omega, sigma={"prop": 0.1}, seed=seed)
