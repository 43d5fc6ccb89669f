"""Simulated designs of the sampling benchmarks (issue 13): rich oral, rich 2-cpt IV, sparse/rich at scale."""

from __future__ import annotations

import dataclasses

import numpy as np

from nlmebayes import IIV, ModelSpec, ResidualError, datasets
from nlmebayes.simulation import simulate
from nlmebayes.simulation.design import replicate_subjects, sampling_design

#: Theophylline's model and values (nlmixr2's estimates, rounded): the rich oral design's truth.
ORAL_TRUTH = {"KA": 1.5, "CL": 2.7, "V": 31.5}
ORAL_OMEGA2 = [0.4, 0.08, 0.02]
ORAL = ModelSpec(
    "rich_oral",
    "1cpt_oral",
    ORAL_TRUTH,
    iiv=IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.1]),
    error=ResidualError("additive", add=0.7),
)

#: A 2-compartment IV bolus drug, proportional error: the rich IV design's truth.
IV_TRUTH = {"CL": 5.0, "V": 20.0, "Q": 10.0, "V2": 50.0}
IV_OMEGA2 = [0.09, 0.09, 0.09, 0.09]
IV = ModelSpec(
    "rich_2cpt_iv",
    "2cpt_iv",
    {k: v * 1.2 for k, v in IV_TRUTH.items()},
    iiv=IIV(["CL", "V", "Q", "V2"], sd=[0.3, 0.3, 0.3, 0.3]),
    error=ResidualError("proportional", prop=0.1),
)
IV_TIMES = [0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 36, 48]


def rich_oral(seed: int):
    """Theophylline's 12 subjects x 10 (120 subjects, 11 samples each), simulated."""
    design = replicate_subjects(datasets.theophylline(), 10)
    return simulate(
        ORAL, design, typical=ORAL_TRUTH, omega=np.diag(ORAL_OMEGA2), sigma={"add": 0.7}, seed=seed
    )


def rich_iv(seed: int, n_subjects: int = 120):
    """120 subjects x 19 samples after a 1000 mg bolus, 2-cpt, 10% proportional error."""
    design = sampling_design(n_subjects, IV_TIMES, amt=1000.0, seed=seed)
    return simulate(IV, design, typical=IV_TRUTH, omega=np.diag(IV_OMEGA2), sigma={"prop": 0.1}, seed=seed)


def old_default(spec: ModelSpec) -> ModelSpec:
    """The spec as fit sampled it before issue 13: every eta non-centred, no flip-flop guard."""
    iiv = [dataclasses.replace(b, parameterisation="noncentered") for b in spec.iiv]
    return dataclasses.replace(spec, iiv=iiv)
