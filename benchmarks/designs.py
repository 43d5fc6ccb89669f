"""Simulated designs of the sampling benchmarks (issue 13): rich oral, rich 2-cpt IV, sparse/rich at scale."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from nlmebayes import IIV, Covariate, ModelSpec, ResidualError, datasets, read_nonmem
from nlmebayes.inference.parameterisation import centring_threshold, run_pilot
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
    return _simulate_iv(design, seed)


def mixed_iv(seed: int, n_rich: int = 50, n_sparse: int = 150):
    """The rich IV design's 19 samples for ``n_rich`` subjects, 2 of those times at random for
    ``n_sparse`` more (IDs after the rich ones), 2-cpt, 10% proportional error."""
    rich = sampling_design(n_rich, IV_TIMES, amt=1000.0, seed=seed).input_frame()
    sparse = sampling_design(n_sparse, IV_TIMES, amt=1000.0, per_subject=2, seed=seed + 100).input_frame()
    sparse["ID"] += n_rich
    design = read_nonmem(pd.concat([rich, sparse], ignore_index=True))
    return _simulate_iv(design, seed)


def _simulate_iv(design, seed: int):
    """The IV design's truth simulated at ``design``'s records."""
    return simulate(IV, design, typical=IV_TRUTH, omega=np.diag(IV_OMEGA2), sigma={"prop": 0.1}, seed=seed)


def old_default(spec: ModelSpec) -> ModelSpec:
    """The spec as fit sampled it before issue 13: every eta non-centred, no flip-flop guard."""
    iiv = [dataclasses.replace(b, parameterisation="noncentered") for b in spec.iiv]
    return dataclasses.replace(spec, iiv=iiv)


#: A 1-cpt oral drug given to two kinds of subjects (the mixed design's truth): WT on CL.
MIXED_TRUTH = {"KA": 1.0, "CL": 4.0, "V": 40.0}
MIXED_OMEGA2 = [0.25, 0.09, 0.04]
MIXED = ModelSpec(
    "mixed_oral",
    "1cpt_oral",
    MIXED_TRUTH,
    covariates=[Covariate("CL", "WT", "power", reference=70.0, theta=0.75)],
    iiv=IIV(["KA", "CL", "V"], sd=[0.5, 0.3, 0.2]),
    error=ResidualError("combined", add=0.05, prop=0.15),
)
MIXED_RICH_TIMES = [0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 24]


def _rich_and_sparse(seed, n_subjects, weight, rich_fraction, amt, rich_times, sparse_times, decimals=None):
    """A phase-1 and a phase-2 population in one data set: one dose of ``amt`` at 0 into the depot
    for each subject, ten 12-hourly (ADDL) for the sparse ones, the first ``rich_fraction`` of them
    rich; weights log-normal (``weight`` = median kg, log SD). Samples at ``rich_times(rng)`` or
    ``sparse_times(rng)``, called in subject order after the weights are drawn from the seed's
    generator, rounded to ``decimals`` if given."""
    rng = np.random.default_rng(seed)
    wt = np.exp(rng.normal(np.log(weight[0]), weight[1], n_subjects)).round(1)
    rows = []
    for i in range(n_subjects):
        rich = i < rich_fraction * n_subjects
        base = dict(ID=i + 1, WT=wt[i], II=0.0, ADDL=0)
        rows.append(
            {**base, "TIME": 0.0, "DV": 0.0, "AMT": amt, "EVID": 1, "MDV": 1, "CMT": 1}
            | ({} if rich else {"II": 12.0, "ADDL": 9})
        )
        times = rich_times(rng) if rich else sparse_times(rng)
        times = times if decimals is None else [round(t, decimals) for t in times]
        rows += [{**base, "TIME": t, "DV": 1.0, "AMT": 0.0, "EVID": 0, "MDV": 0, "CMT": 2} for t in times]
    return read_nonmem(pd.DataFrame(rows))


def mixed_oral(seed: int, n_subjects: int = 400, rich_fraction: float = 0.25):
    """A phase-1 and a phase-2 population in one analysis: a quarter of the subjects with 11
    samples after one 100 mg dose (times +-5%), the rest with 2-3 samples at random times in the
    last of ten 12-hourly doses (ADDL); weights log-normal around 70 kg."""
    design = _rich_and_sparse(
        seed,
        n_subjects,
        (70.0, 0.2),
        rich_fraction,
        100.0,
        lambda rng: np.array(MIXED_RICH_TIMES) * (1 + rng.uniform(-0.05, 0.05, len(MIXED_RICH_TIMES))),
        lambda rng: np.sort(rng.uniform(108.0, 120.0, rng.integers(2, 4))),
    )
    return simulate(
        MIXED,
        design,
        typical=MIXED_TRUTH,
        omega=np.diag(MIXED_OMEGA2),
        thetas={"theta_CL_WT": 0.75},
        sigma={"add": 0.05, "prop": 0.15},
        seed=seed,
    )


#: A 2-cpt oral drug as a phase 1 + phase 2 analysis meets it (the messy design's truth): WT on
#: CL and V, a block Omega on CL and V, IIV on KA, combined error, samples below 0.3 censored.
MESSY_TRUTH = {"CL": 5.0, "V": 50.0, "Q": 8.0, "V2": 100.0, "KA": 1.2}
MESSY_OMEGA = np.array([[0.09, 0.03, 0.0], [0.03, 0.04, 0.0], [0.0, 0.0, 0.25]])  # corr(CL, V) 0.5
MESSY = ModelSpec(
    "messy_2cpt_oral",
    "2cpt_oral",
    {k: 1.3 * v for k, v in MESSY_TRUTH.items()},
    covariates=[
        Covariate("CL", "WT", "power", reference=70.0, theta=0.75),
        Covariate("V", "WT", "power", reference=70.0, theta=1.0),
    ],
    iiv=[IIV(["CL", "V"], sd=[0.3, 0.2], block=True), IIV(["KA"], sd=[0.5])],
    error=ResidualError("combined", add=0.05, prop=0.15),
)
MESSY_RICH_TIMES = [0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 24, 48]


def messy_oral(seed: int, n_subjects: int = 300, rich_fraction: float = 0.2, lloq: float = 0.3):
    """A fifth of the subjects with 11 samples after one 200 mg dose (times +-5%), the rest with
    a trough and 1-3 samples in the last of ten 12-hourly doses (ADDL); weights log-normal around
    75 kg; samples below ``lloq`` censored (CENS = 1, DV = LLOQ: about 5%)."""
    design = _rich_and_sparse(
        seed,
        n_subjects,
        (75.0, 0.25),
        rich_fraction,
        200.0,
        lambda rng: np.array(MESSY_RICH_TIMES) * rng.uniform(0.95, 1.05, len(MESSY_RICH_TIMES)),
        lambda rng: np.sort(np.r_[107.9, rng.uniform(108.2, 120.0, rng.integers(1, 4))]),
        decimals=3,
    )
    sim = simulate(
        MESSY,
        design,
        typical=MESSY_TRUTH,
        omega=MESSY_OMEGA,
        thetas={"theta_CL_WT": 0.75, "theta_V_WT": 1.0},
        sigma={"add": 0.05, "prop": 0.15},
        seed=seed,
    )
    df = sim.input_frame()
    blq = (df["MDV"] == 0) & (df["DV"] < lloq)
    df["CENS"] = blq.astype(int)
    df.loc[blq, "DV"] = lloq
    return read_nonmem(df)


def without_partial(spec: ModelSpec, data) -> ModelSpec:
    """The spec as fit sampled it before partial centring (0.5): each IIV parameter centred or
    not as a whole, by its median subject's conditional SD / omega, written out explicitly (one
    diagonal block per parameter: the same model)."""
    pilot = run_pilot(spec, data)
    threshold = centring_threshold(data.n_subjects)
    iiv = [
        IIV([p], sd=[s], parameterisation="centered" if pilot.ratios[p] < threshold else "noncentered")
        for b in spec.iiv
        for p, s in zip(b.parameters, b.sd, strict=True)
    ]
    return dataclasses.replace(spec, iiv=iiv)
