"""nutpie's mass-matrix adaptation: diagonal (the default) vs low-rank modified, on the designs the
tests and benchmarks use (issue 13, item 2).

Each design is fitted twice with the same data, seed and draws, once per adaptation, after an
untimed short fit that puts the compiled model in the disk cache (the sampling time includes
loading it, not compiling it). Prints per
fit the max R-hat and min bulk ESS over the population parameters (``sampling.population_diagnostics``),
the sampling time and min ESS/s; then the ratio of min ESS/s, low-rank / diagonal, per design and
its median over the designs.

Designs: theophylline (12 subjects, real data), pheno (59, real), Michaelis-Menten ODE (30,
simulated as in ``tests/test_ode_fit.py``), a study level (80 subjects in 10 studies, as in
``tests/test_variability.py``), and the rich oral and rich 2-cpt IV designs of 120 subjects
(``designs.py``).

Run: .venv/bin/python benchmarks/mass_matrix.py [--draws 1000] [--chains 4] [--designs ...]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import designs  # benchmarks/designs.py, next to this script
import numpy as np
import pandas as pd
from sampling import population_diagnostics  # benchmarks/sampling.py

sys.path.insert(0, str(Path(__file__).parents[1]))

from nlmebayes import IIV, Level, ModelSpec, ResidualError, datasets, fit, read_nonmem  # noqa: E402
from nlmebayes.demo import model_path  # noqa: E402
from nlmebayes.simulation import simulate  # noqa: E402


def mm_ode():
    spec = ModelSpec.from_toml(model_path("mm_1cpt_oral_ode"))
    rows = []
    for i in range(1, 31):
        rows.append(dict(ID=i, TIME=0.0, AMT=(25.0, 100.0, 400.0)[i % 3], DV=0.0, CMT=1))
        rows += [dict(ID=i, TIME=t, AMT=0.0, DV=1.0, CMT=2) for t in (0.5, 1, 2, 4, 8, 12, 24)]
    truth = dict(KA=1.0, V=30.0, VMAX=20.0, KM=2.0)
    sim = simulate(spec, read_nonmem(pd.DataFrame(rows)), typical=truth, omega=np.diag([0.09, 0.04]),
                   sigma={"add": 0.05, "prop": 0.1}, seed=5)  # fmt: skip
    return spec, sim


def study_level():
    rows = []
    for i in range(1, 81):
        rows.append(dict(ID=i, TIME=0.0, AMT=100.0, DV=0.0, STUDY=(i - 1) // 8 + 1))
        rows += [dict(ID=i, TIME=t, AMT=0.0, DV=1.0, STUDY=(i - 1) // 8 + 1) for t in (1, 4, 8, 12, 24)]
    spec = ModelSpec(name="study", structural="1cpt_iv", parameters={"CL": 2.0, "V": 20.0},
                     iiv=IIV(["CL", "V"], sd=[0.2, 0.2]), levels=Level("STUDY", ["CL"], sd=[0.3]),
                     error=ResidualError("proportional", prop=0.1))  # fmt: skip
    sim = simulate(spec, read_nonmem(pd.DataFrame(rows)), typical={"CL": 2.0, "V": 20.0},
                   omega=np.diag([0.04, 0.04]), level_sd={"STUDY": {"CL": 0.4}}, sigma={"prop": 0.1},
                   seed=5)  # fmt: skip
    return spec, sim


CASES = {
    "theophylline": lambda: (
        ModelSpec.from_toml(model_path("theophylline_1cpt_oral")),
        datasets.theophylline(),
    ),
    "pheno": lambda: (ModelSpec.from_toml(model_path("pheno_1cpt_iv")), datasets.pheno()),
    "mm_ode": mm_ode,
    "study_level": study_level,
    "rich_oral_120": lambda: (designs.ORAL, designs.rich_oral(1)),
    "rich_iv_120": lambda: (designs.IV, designs.rich_iv(1)),
}


def one(spec, data, draws, chains, adaptation):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(spec, data, draws=draws, tune=draws, chains=chains, seed=1, diagnostics=False,
                  adaptation=adaptation, progressbar=False)  # fmt: skip
    r, e = population_diagnostics(res)
    wall = res.idata.attrs["nlmebayes_sampling_seconds"]
    return r, e, wall, e / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--designs", nargs="+", default=list(CASES))
    args = ap.parse_args()
    ratios = {}
    for name in args.designs:
        spec, data = CASES[name]()
        # an untimed short fit first: both timed fits then load the compiled model from the cache
        one(spec, data, 20, 1, "diag")
        out = {a: one(spec, data, args.draws, args.chains, a) for a in ("diag", "low_rank")}
        for a, (r, e, wall, eps) in out.items():
            print(f"{name} {a:8s}: max R-hat {r:.3f}, min bulk ESS {e:.0f}, sampling {wall:.1f} s, "
                  f"min ESS/s {eps:.1f}", flush=True)  # fmt: skip
        ratios[name] = out["low_rank"][3] / out["diag"][3]
        print(f"{name}: min ESS/s low-rank / diagonal = {ratios[name]:.2f}", flush=True)
    per = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
    print(f"min ESS/s low-rank / diagonal: median {np.median(list(ratios.values())):.2f} ({per})")


if __name__ == "__main__":
    main()
