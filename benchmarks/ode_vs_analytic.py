"""ODE path vs the closed form, and vs ``pymc.ode.DifferentialEquation``.

1. Full NUTS fit of the theophylline model (12 subjects, IIV on KA, CL, V), analytic
   (``1cpt_oral``) against ODE (``1cpt_oral_ode``), same draws and seed: wall-time ratio
   (target <= 5).
2. A subset small enough for ``pm.ode``: subject 1 alone, typical values and sigma only, the
   same model written with ``pm.ode.DifferentialEquation`` and with nlmebayes' ODE, both sampled
   by nutpie with the same draws: speed-up (target >= 20).

Run: .venv/bin/python benchmarks/ode_vs_analytic.py [--draws N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pymc as pm

from nlmebayes import ModelSpec, ResidualError, datasets, fit

ROOT = Path(__file__).parents[1]


def full_fit(structural: str, draws: int, seed: int) -> float:
    spec = ModelSpec.from_toml(ROOT / "models" / "theophylline_1cpt_oral.toml")
    spec = dataclasses.replace(spec, structural=structural, name=structural)
    t0 = time.perf_counter()
    fit(spec, datasets.theophylline(), draws=draws, tune=draws, chains=4, seed=seed,
        diagnostics=False, progressbar=False)
    return time.perf_counter() - t0


def subset():
    data = datasets.theophylline()
    df = data.input_frame()
    return data.__class__, df[df["ID"] == df["ID"].iloc[0]].reset_index(drop=True)


def pm_ode_fit(df, draws: int, seed: int) -> float:
    obs = df[df["AMT"] == 0]
    t_obs = obs["TIME"].to_numpy()
    dose = float(df.loc[df["AMT"] > 0, "AMT"].iloc[0])

    def rhs(y, t, p):
        ka, cl, v = p[0], p[1], p[2]
        return [-ka * y[0], ka * y[0] - cl / v * y[1]]

    keep = t_obs > 0  # pm.ode integrates from t0 = 0 and reports later times
    ode = pm.ode.DifferentialEquation(func=rhs, times=t_obs[keep], n_states=2, n_theta=3, t0=0.0)
    with pm.Model():
        ka = pm.LogNormal("KA", np.log(1.57), 2.0)
        cl = pm.LogNormal("CL", np.log(2.72), 2.0)
        v = pm.LogNormal("V", np.log(31.5), 2.0)
        sol = ode(y0=[dose, 0.0], theta=[ka, cl, v])
        sigma = pm.HalfNormal("sigma", 1.4)
        pm.Normal("DV", sol[:, 1] / v, sigma, observed=obs["DV"].to_numpy()[keep])
        t0 = time.perf_counter()
        pm.sample(draws=draws, tune=draws, chains=1, random_seed=seed, nuts_sampler="nutpie",
                  progressbar=False, compute_convergence_checks=False)
    return time.perf_counter() - t0


def ours_subset_fit(df, draws: int, seed: int) -> float:
    from nlmebayes import read_nonmem

    data = read_nonmem(df[(df["AMT"] > 0) | (df["TIME"] > 0)].reset_index(drop=True))
    spec = ModelSpec(name="theo1", structural="1cpt_oral_ode",
                     parameters={"KA": 1.57, "CL": 2.72, "V": 31.5},
                     error=ResidualError("additive", add=0.7))
    t0 = time.perf_counter()
    fit(spec, data, draws=draws, tune=draws, chains=1, seed=seed, diagnostics=False,
        progressbar=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--ode-draws", type=int, default=200)
    args = ap.parse_args()
    full_fit("1cpt_oral", 20, 0)  # pay numba's first-use warm-up before timing
    a = full_fit("1cpt_oral", args.draws, 1)
    o = full_fit("1cpt_oral_ode", args.draws, 1)
    print(f"Theophylline full NUTS fit, 4 chains x {args.draws} draws (+{args.draws} tune), "
          f"build + compile + sampling:")
    print(f"  analytic {a:7.2f} s   ODE {o:7.2f} s   ratio ODE / analytic = {o / a:.2f} (target <= 5)")
    _, df = subset()
    p = pm_ode_fit(df, args.ode_draws, 2)
    s = ours_subset_fit(df, args.ode_draws, 2)
    print(f"Subject 1 only, 1 chain x {args.ode_draws} draws (+{args.ode_draws} tune), nutpie:")
    print(f"  pm.ode.DifferentialEquation {p:7.2f} s   nlmebayes ODE {s:7.2f} s   "
          f"speed-up = {p / s:.1f}x (target >= 20)")


if __name__ == "__main__":
    main()
