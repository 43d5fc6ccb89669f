"""Simulation-based calibration (Talts et al. 2018) of a small population model, and how often
the recovery tests' designs pass their calibrated assertions over many data sets.

SBC: draw population parameters from the priors of a 1-cpt oral model (20 subjects, 8 samples
each, IIV on KA, CL, V, additive error), simulate a data set, fit it, and record the rank of
each true value among ``--thin`` posterior draws. Calibrated inference gives uniform ranks: a
chi-square test over 10 bins per parameter, and the coverage of the central 50% and 90%
intervals. Prints ``SBC min p-value: X`` and ``coverage90: ...``.

Seed sweep: the designs of ``tests/test_fit.py::test_parameter_recovery_block_omega_and_covariate``
and ``tests/test_variability.py::test_iov_recovered_...`` (``tests/calibration.py``) over
``--seeds`` simulation seeds, fitted as the tests fit them; prints how many pass
``assert_converged`` and ``assert_calibrated_coverage`` with the tests' k.

Run: .venv/bin/python benchmarks/calibration.py [--replicates 100] [--seeds 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).parents[1]))

from nlmebayes import IIV, ModelSpec, Parameter, Prior, ResidualError, fit, read_nonmem  # noqa: E402
from nlmebayes.simulation import simulate  # noqa: E402
from tests.calibration import (  # noqa: E402
    assert_calibrated_coverage,
    assert_converged,
    block_omega_recovery_case,
    iov_case,
)

TIMES = (0.5, 1, 2, 3.5, 5, 7, 12, 24)
# Informative priors (SBC draws its truths from them): typical values within ~x1.8 at 95%.
LOG_SD = 0.3
INITIAL = {"KA": 1.5, "CL": 2.7, "V": 31.5}
SPEC = ModelSpec(
    name="sbc",
    structural="1cpt_oral",
    parameters=[
        Parameter(n, v, Prior("Normal", {"mu": float(np.log(v)), "sigma": LOG_SD}))
        for n, v in INITIAL.items()
    ],
    iiv=IIV(["KA", "CL", "V"], sd=[0.3, 0.3, 0.3], sd_prior=Prior("HalfNormal", {"sigma": 0.4})),
    error=ResidualError("additive", add=0.5, priors={"add": Prior("HalfNormal", {"sigma": 0.5})}),
)
NAMES = ["log_KA_pop", "log_CL_pop", "log_V_pop", "omega(KA)", "omega(CL)", "omega(V)", "sigma_add"]


def _design(n_sub: int = 20) -> pd.DataFrame:
    rows = []
    for i in range(1, n_sub + 1):
        rows.append(dict(ID=i, TIME=0.0, AMT=320.0, CMT=1, DV=np.nan))
        rows += [dict(ID=i, TIME=t, AMT=0.0, CMT=2, DV=1.0) for t in TIMES]
    return pd.DataFrame(rows)


def _prior_draw(rng) -> dict:
    log_tv = {p.name: rng.normal(np.log(p.initial), LOG_SD) for p in SPEC.parameters}
    omega = np.abs(rng.normal(0, 0.4, 3))
    return {"log_tv": log_tv, "omega": omega, "sigma": abs(rng.normal(0, 0.5))}


def _posterior_draws(res, thin: int) -> dict:
    post = res.posterior
    flat = lambda da: da.stack(s=("chain", "draw")).values  # noqa: E731
    out = {f"log_{n}_pop": np.log(flat(post[f"{n}_pop"])) for n in ("KA", "CL", "V")}
    for j, n in enumerate(("KA", "CL", "V")):
        out[f"omega({n})"] = flat(post["omega_sd"].isel(iiv=j))
    out["sigma_add"] = flat(post["sigma_add"])
    idx = np.linspace(0, len(out["sigma_add"]) - 1, thin).astype(int)
    return {k: v[idx] for k, v in out.items()}


def sbc(replicates: int, thin: int, draws: int) -> None:
    design = read_nonmem(_design())
    ranks = {n: [] for n in NAMES}
    cover = {(n, lvl): [] for n in NAMES for lvl in (0.5, 0.9)}
    t0 = time.perf_counter()
    for r in range(replicates):
        rng = np.random.default_rng(1000 + r)
        truth_draw = _prior_draw(rng)
        sim = simulate(
            SPEC,
            design,
            typical={k: float(np.exp(v)) for k, v in truth_draw["log_tv"].items()},
            omega=np.diag(truth_draw["omega"] ** 2),
            sigma={"add": truth_draw["sigma"]},
            seed=2000 + r,
        )
        res = fit(SPEC, sim, draws=draws, tune=draws, chains=2, seed=r, diagnostics=False)
        post = _posterior_draws(res, thin)
        truth = {f"log_{k}_pop": v for k, v in truth_draw["log_tv"].items()}
        truth.update({f"omega({n})": truth_draw["omega"][j] for j, n in enumerate(("KA", "CL", "V"))})
        truth["sigma_add"] = truth_draw["sigma"]
        for n in NAMES:
            ranks[n].append(int(np.sum(post[n] < truth[n])))
            for lvl in (0.5, 0.9):
                lo, hi = np.quantile(post[n], [(1 - lvl) / 2, (1 + lvl) / 2])
                cover[(n, lvl)].append(lo < truth[n] < hi)
    elapsed = time.perf_counter() - t0
    print(f"SBC: {replicates} replicates, {thin} posterior draws each, {elapsed:.0f} s")
    pvals = {}
    for n in NAMES:
        counts = np.histogram(ranks[n], bins=10, range=(0, thin + 1))[0]
        pvals[n] = stats.chisquare(counts).pvalue
        c50, c90 = np.mean(cover[(n, 0.5)]), np.mean(cover[(n, 0.9)])
        print(f"  {n:12s} ranks {counts.tolist()}  chi2 p = {pvals[n]:.3f}  cov50 {c50:.2f}  cov90 {c90:.2f}")
    print(f"SBC min p-value: {min(pvals.values()):.3f}")
    print("coverage90: " + ", ".join(f"{n} {np.mean(cover[(n, 0.9)]):.2f}" for n in NAMES))


def seed_sweep(seeds: int) -> None:
    for label, case, k, settings in (
        ("block-omega recovery", block_omega_recovery_case, 3, dict(draws=500, tune=500, chains=4)),
        ("IOV", iov_case, 1, dict(draws=500, tune=500, chains=2)),
    ):
        passed, t0 = 0, time.perf_counter()
        for s in range(1, seeds + 1):
            spec, sim, truth = case(sim_seed=100 + s)
            res = fit(spec, sim, seed=s, diagnostics=False, **settings)
            try:
                assert_converged(res)
                assert_calibrated_coverage(res, truth, k=k)
                passed += 1
            except AssertionError as e:
                print(f"  {label} seed {100 + s}: {str(e).splitlines()[0][:150]}")
        print(
            f"{label}: {passed} of {seeds} seeds pass (target >= {int(np.ceil(0.9 * seeds))}), "
            f"{time.perf_counter() - t0:.0f} s"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--thin", type=int, default=99)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--skip-sbc", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()
    if not args.skip_sbc:
        sbc(args.replicates, args.thin, args.draws)
    if not args.skip_sweep:
        seed_sweep(args.seeds)


if __name__ == "__main__":
    main()
