"""Individual-parameter expressions and closed-form models (issue 15, items 2 and 3).

1. The biexponential of ``tests/expression_models.py`` (6 subjects x 11 samples, a 2x2 block
   {A1 additive, K1 log-normal} and an additive eta on A2) fitted with the default ``fit``
   (2 chains x 1000) on data simulated with several seeds: how many of the 9 truths lie outside
   their 90% interval per seed, and in all (about 10% expected).
2. The theophylline model as (KA, V, K) with CL = K V and as (KA, CL, K) with V = CL / K, both with
   a full 3x3 block Omega (4 chains x 2000): the largest difference of the posterior medians of the
   individual KA, CL and V over the posterior SD (issue 15: <= 0.1).

Run: .venv/bin/python benchmarks/expression_models.py [--seeds 5] [--draws 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from nlmebayes import IIV, ModelSpec, datasets, fit  # noqa: E402
from tests.expression_models import biexponential, biexponential_coverage, biexponential_data  # noqa: E402


def coverage(seeds: int, draws: int) -> None:
    outside_all, total = 0, 0
    for seed in range(seeds):
        result = fit(
            biexponential(), biexponential_data(seed), chains=2, draws=draws, seed=seed, progressbar=False
        )
        cov = biexponential_coverage(result)
        outside = [k for k, (t, lo, hi) in cov.items() if not lo <= t <= hi]
        outside_all += len(outside)
        total += len(cov)
        print(f"biexponential seed {seed}: {len(outside)} of {len(cov)} outside 90% intervals {outside}")
    share = 100 * outside_all / total
    print(f"biexponential: {outside_all} of {total} truths outside their 90% intervals ({share:.0f}%)")


def kvk_invariance(draws: int) -> None:
    data = datasets.theophylline()
    iiv = dict(sd=[0.6, 0.2, 0.3], block=True)
    kvk = ModelSpec("kvk", "1cpt_oral", {"KA": 1.5, "V": 31.5, "K": 0.0857},
                    iiv=IIV(["KA", "V", "K"], **iiv), individual={"CL": "K * V"})  # fmt: skip
    kck = ModelSpec("kck", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "K": 0.0857},
                    iiv=IIV(["KA", "CL", "K"], **iiv), individual={"V": "CL / K"})  # fmt: skip
    post = [fit(s, data, chains=4, draws=draws, seed=1, progressbar=False).posterior for s in (kvk, kck)]
    worst = 0.0
    for p in ("KA", "CL", "V"):
        a, b = (x[p].stack(s=("chain", "draw")) for x in post)
        sd = np.sqrt(0.5 * (a.var("s") + b.var("s")))
        worst = max(worst, float((np.abs(a.median("s") - b.median("s")) / sd).max()))
    print(f"(KA, V, K) vs (KA, CL, K): max |median difference| / posterior SD of KA_i CL_i V_i = {worst:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    coverage(args.seeds, args.draws)
    kvk_invariance(2 * args.draws)


if __name__ == "__main__":
    main()
