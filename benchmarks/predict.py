"""Speed of prediction from the posterior (issue 14).

A theophylline fit (1-cpt oral, IIV on KA, CL, V; 2 chains x 500 draws) predicts 1,000 new
subjects on 320 mg every 12 h, 14 doses, at 50 times over two weeks, for 1,000 posterior draws
(population level: new etas per draw): 5 x 10^7 predictions, from 3.8 x 10^8 dose-observation
terms. Timed end to end (design, compilation, evaluation, the (draw, subject, time) array);
the median of ``--repeats`` runs is printed, and the first run (which compiles from cold) apart.
Target < 30 s on 2 cores.

Run: .venv/bin/python benchmarks/predict.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from nlmebayes import ModelSpec, datasets, fit  # noqa: E402
from nlmebayes.simulation import Regimen, predict, regimen_design  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    spec = ModelSpec.from_toml(ROOT / "models" / "theophylline_1cpt_oral.toml")
    result = fit(spec, datasets.theophylline(), chains=2, draws=500, tune=500, seed=1, progressbar=False)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        design = regimen_design(spec, Regimen(320.0, every=12, doses=14), np.linspace(0.5, 168, 50), 1000)
        p = predict(result, design, level="population", draws=1000, seed=1)
        times.append(time.perf_counter() - t0)
    shape = dict(p["ipred"].sizes)
    print(f"shape {shape}, first run {times[0]:.1f} s, runs {[round(t, 1) for t in times]}")
    print(f"predict 1000 subjects x 1000 draws x 50 times: {statistics.median(times):.1f} s")


if __name__ == "__main__":
    main()
