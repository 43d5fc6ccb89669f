"""Simulated designs with known truth for the VPC tests and ``benchmarks/vpc.py``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes import IIV, ModelSpec, ResidualError, read_nonmem
from nlmebayes.simulation import simulate

#: Nominal sampling times (h) after a single oral dose; actual times are jittered by up to 10%.
NOMINAL = [0.5, 1, 2, 3, 4, 6, 8, 12, 24]

#: The model fitted in every case: one compartment, first-order absorption, IIV on all three.
FITTED = ModelSpec(
    "vpc_1cpt_oral",
    "1cpt_oral",
    {"KA": 1.0, "CL": 4.0, "V": 40.0},
    iiv=IIV(["KA", "CL", "V"], sd=[0.3, 0.3, 0.3]),
    error=ResidualError("proportional", prop=0.15),
    # KA_i > k_i by construction: without it each subject may sit in its own flip-flop mode and
    # two chains disagree (issue 13); the truth (KA 1, k 0.1) is far from flip-flop.
    flip_flop_guard=True,
)


def design(n_subjects: int = 60, per_subject: int = 5, seed: int = 1):
    """``n_subjects`` subjects, 100 mg oral at time 0, each sampled at ``per_subject`` of the nominal
    times (drawn at random: a typical sparse-to-moderate clinical design), jittered by U(-10%, +10%)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n_subjects + 1):
        rows.append(dict(ID=i, TIME=0.0, AMT=100.0, DV=0.0, CMT=1))
        nominal = np.sort(rng.choice(NOMINAL, per_subject, replace=False))
        times = nominal * rng.uniform(0.9, 1.1, per_subject)
        rows += [dict(ID=i, TIME=round(float(t), 3), AMT=0.0, DV=1.0, CMT=2) for t in times]
    return read_nonmem(pd.DataFrame(rows), source="vpc design")


def true_model_data(seed: int = 2, n_subjects: int = 60):
    """Data simulated from the fitted model itself (KA 1, CL 4, V 40, omega 0.3 each, 15% error)."""
    return simulate(
        FITTED,
        design(n_subjects),
        typical={"KA": 1.0, "CL": 4.0, "V": 40.0},
        omega=np.diag([0.09, 0.09, 0.09]),
        sigma={"prop": 0.15},
        seed=seed,
    )


def two_compartment_data(seed: int = 2, n_subjects: int = 60):
    """Data simulated from a two-compartment model with a clear distribution phase (V2 = 3 V,
    Q = 1.5 CL): a one-compartment fit misses the early peak and the terminal phase."""
    spec = ModelSpec(
        "truth_2cpt_oral",
        "2cpt_oral",
        {"KA": 1.5, "CL": 4.0, "V": 15.0, "Q": 6.0, "V2": 45.0},
        iiv=IIV(["CL", "V"], sd=[0.3, 0.3]),
        error=ResidualError("proportional", prop=0.15),
    )
    return simulate(
        spec,
        design(n_subjects),
        typical={"KA": 1.5, "CL": 4.0, "V": 15.0, "Q": 6.0, "V2": 45.0},
        omega=np.diag([0.09, 0.09]),
        sigma={"prop": 0.15},
        seed=seed,
    )
