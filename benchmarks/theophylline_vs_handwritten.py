"""nlmebayes vs a hand-written PyMC model of the same Theoph model, same sampler and draws.

Prints the wall-time ratio (target <= 1.1) and ESS/s of each. Run: .venv/bin/python
benchmarks/theophylline_vs_handwritten.py [--repeats N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from arviz_stats import ess

from nlmebayes import ModelSpec, build_model, datasets

DRAWS, TUNE, CHAINS = 1000, 1000, 4


def handwritten(data):
    """The nlmixr2 one.compartment model, written directly in PyMC (non-centred etas)."""
    obs_t, subj = data.obs_time, data.obs_subject
    dose = data.dose_amt[np.argsort(data.dose_subject)]
    with pm.Model(coords={"subject": np.arange(data.n_subjects), "iiv": ["KA", "CL", "V"]}) as m:
        log_ka = pm.Normal("log_KA_pop", np.log(1.57), 2.0)
        log_cl = pm.Normal("log_CL_pop", np.log(2.72), 2.0)
        log_v = pm.Normal("log_V_pop", np.log(31.5), 2.0)
        z = pm.Normal("z", 0, 1, dims=("subject", "iiv"))
        om = pt.stack([pm.HalfNormal(f"omega_{p}", s) for p, s in (("KA", 1.2), ("CL", 0.6), ("V", 0.5))])
        eta = z * om
        ka = pt.exp(log_ka + eta[:, 0])[subj]
        cl = pt.exp(log_cl + eta[:, 1])[subj]
        v = pt.exp(log_v + eta[:, 2])[subj]
        k = cl / v
        c = dose[subj] * ka / (v * (ka - k)) * (pt.exp(-k * obs_t) - pt.exp(-ka * obs_t))
        sigma = pm.HalfNormal("sigma_add", 1.4)
        pm.Normal("DV", c, sigma, observed=data.obs_dv)
    return m


def run(model, seed):
    t0 = time.perf_counter()
    with model:
        idata = pm.sample(draws=DRAWS, tune=TUNE, chains=CHAINS, random_seed=seed,
                          nuts_sampler="nutpie", progressbar=False, compute_convergence_checks=False)
    wall = time.perf_counter() - t0
    post = idata["posterior"]
    e = min(float(ess(post[v], method="bulk").min()) for v in ("log_KA_pop", "log_CL_pop", "log_V_pop",
                                                                "sigma_add"))
    return wall, e


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = datasets.theophylline()
    spec = ModelSpec.from_toml(Path(__file__).parents[1] / "models" / "theophylline_1cpt_oral.toml")
    # The first numba compile in a process pays a one-off warm-up of several seconds: pay it
    # before timing, and alternate which model goes first.
    with handwritten(data):
        pm.sample(draws=10, tune=10, chains=1, nuts_sampler="nutpie", progressbar=False)
    ours, hand = [], []
    for r in range(args.repeats):
        seed = 100 + r
        pair = [("ours", lambda: build_model(spec, data)), ("hand", lambda: handwritten(data))]
        for label, make in (pair if r % 2 == 0 else pair[::-1]):
            (ours if label == "ours" else hand).append(run(make(), seed))
    ow = np.median([w for w, _ in ours])
    hw = np.median([w for w, _ in hand])
    oe = np.median([e / w for w, e in ours])
    he = np.median([e / w for w, e in hand])
    print(f"Theophylline, nutpie, {CHAINS} chains x {DRAWS} draws (+{TUNE} tune), median of "
          f"{args.repeats} runs (compile + sampling):")
    print(f"  nlmebayes     wall {ow:7.2f} s   min ESS/s (typical values, sigma) {oe:8.1f}")
    print(f"  hand-written  wall {hw:7.2f} s   min ESS/s (typical values, sigma) {he:8.1f}")
    print(f"  wall-time ratio nlmebayes / hand-written = {ow / hw:.2f} (target <= 1.1)")


if __name__ == "__main__":
    main()
