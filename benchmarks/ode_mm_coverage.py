"""Coverage of 90% posterior intervals for the Michaelis-Menten ODE population model.

The test ``tests/test_ode_fit.py`` fits one simulated data set; a calibrated 90% interval
misses its truth one time in ten, so the claim "90% intervals cover the truth" is about many
data sets. This script simulates ``--replicates`` data sets from ``models/mm_1cpt_oral_ode.toml``
with the test's design (30 subjects, 25/100/400 mg, 7 samples each), fits each with NUTS and
prints, per parameter and overall, the fraction of 90% intervals holding the truth with its
binomial standard error.

Run: .venv/bin/python benchmarks/ode_mm_coverage.py [--replicates 10] [--draws 500]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from nlmebayes import ModelSpec, fit, read_nonmem
from nlmebayes.simulation import simulate

ROOT = Path(__file__).parents[1]
TRUTH = dict(KA=1.0, V=30.0, VMAX=20.0, KM=2.0)
EXPECT = TRUTH | {"omega(VMAX)": 0.3, "omega(V)": 0.2, "sigma_prop": 0.1, "sigma_add": 0.05}


def design():
    rows = []
    for i in range(1, 31):
        amt = (25.0, 100.0, 400.0)[i % 3]
        rows.append(dict(ID=i, TIME=0.0, AMT=amt, DV=0.0, CMT=1))
        rows += [dict(ID=i, TIME=t, AMT=0.0, DV=1.0, CMT=2) for t in (0.5, 1, 2, 4, 8, 12, 24)]
    return read_nonmem(pd.DataFrame(rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--draws", type=int, default=500)
    args = ap.parse_args()
    spec = ModelSpec.from_toml(ROOT / "models" / "mm_1cpt_oral_ode.toml")
    covered = {k: [] for k in EXPECT}
    for rep in range(args.replicates):
        sim = simulate(
            spec,
            design(),
            typical=TRUTH,
            omega=np.diag([0.09, 0.04]),
            sigma={"add": 0.05, "prop": 0.1},
            seed=1000 + rep,
        )
        res = fit(
            spec,
            sim,
            draws=args.draws,
            tune=args.draws,
            chains=2,
            seed=rep,
            diagnostics=False,
            progressbar=False,
            adaptation="low_rank",  # as tests/test_ode_fit.py fits it
        )
        tab = res.parameter_table(ci=0.90).set_index("parameter")
        for k, v in EXPECT.items():
            covered[k].append(bool(tab.loc[k, "lower"] < v < tab.loc[k, "upper"]))
        print(f"replicate {rep}: {sum(c[-1] for c in covered.values())}/{len(EXPECT)} covered", flush=True)
    n = args.replicates
    print(f"\n90% interval coverage over {n} simulated data sets (target 0.90):")
    for k, c in covered.items():
        print(f"  {k:12s} {np.mean(c):.2f}")
    allc = np.concatenate([np.asarray(c) for c in covered.values()])
    se = np.sqrt(0.9 * 0.1 / allc.size)
    print(f"  overall      {allc.mean():.3f} of {allc.size} intervals (binomial SE at 0.90: {se:.3f})")


if __name__ == "__main__":
    main()
