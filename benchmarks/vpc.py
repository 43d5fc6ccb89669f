"""VPC speed and correctness.

1. Pheno (59 neonates, 155 samples): after the fit, a VPC of 500 replicates (posterior draws, new
   etas, residual error; one compiled graph vectorised over replicates, no Python loop over them),
   timed end to end including the graph's compilation; median of ``--repeats`` runs. Target < 10 s.
   The pcVPC (which adds the PRED evaluation) is timed too.
2. Coverage: 60 subjects simulated from a 1-cpt oral model and fitted with it: share of (bin,
   percentile) cells whose observed percentile lies inside the simulated 90% interval (target >= 0.8),
   and the same for a 1-cpt fit to two-compartment data (should be low).

Run: .venv/bin/python benchmarks/vpc.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from nlmebayes import ModelSpec, datasets, fit  # noqa: E402
from nlmebayes.diagnostics.vpc import vpc  # noqa: E402
from tests.vpc_cases import FITTED, true_model_data, two_compartment_data  # noqa: E402


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    spec = ModelSpec.from_toml(ROOT / "models" / "pheno_1cpt_iv.toml")
    pheno = fit(spec, datasets.pheno(), draws=500, tune=500, chains=2, seed=1)
    t_vpc = timed(lambda: vpc(pheno, n=500, seed=1), args.repeats)
    t_pc = timed(lambda: vpc(pheno, n=500, seed=1, pred_corr=True), args.repeats)
    print(f"VPC pheno 500 replicates: {t_vpc:.2f} s")
    print(f"pcVPC pheno 500 replicates: {t_pc:.2f} s")
    true = fit(FITTED, true_model_data(), draws=500, tune=500, chains=2, seed=1)
    wrong = fit(FITTED, two_compartment_data(), draws=500, tune=500, chains=2, seed=1)
    print(f"VPC coverage (true model): {vpc(true, n=500, seed=1).coverage:.3f}")
    print(f"pcVPC coverage (true model): {vpc(true, n=500, seed=1, pred_corr=True).coverage:.3f}")
    print(f"VPC coverage (1-cpt fitted to 2-cpt data): {vpc(wrong, n=500, seed=1).coverage:.3f}")


if __name__ == "__main__":
    main()
