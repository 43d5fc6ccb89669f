"""ODE path vs the closed form, and vs ``pymc.ode.DifferentialEquation``.

1. Full NUTS fit of the theophylline model (12 subjects, IIV on KA, CL, V), analytic
   (``1cpt_oral``) against ODE (``1cpt_oral_ode``), same draws and seed: wall-time ratio
   (issue 13: target <= 3).
2. A subset small enough for ``pm.ode``: subject 1 alone, typical values and sigma only, the
   same model written with ``pm.ode.DifferentialEquation`` and with nlmebayes' ODE, both
   compiled and sampled by nutpie with the same draws: speed-up of the sampling (target >= 20),
   per gradient, and with compilation included.

Run: .venv/bin/python benchmarks/ode_vs_analytic.py [--draws N] [--repeats N]
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
    fit(
        spec,
        datasets.theophylline(),
        draws=draws,
        tune=draws,
        chains=4,
        seed=seed,
        diagnostics=False,
        progressbar=False,
    )
    return time.perf_counter() - t0


def subset():
    data = datasets.theophylline()
    df = data.input_frame()
    return data.__class__, df[df["ID"] == df["ID"].iloc[0]].reset_index(drop=True)


def _nutpie_run(model, draws: int, seed: int) -> tuple[float, float, int]:
    """Compile ``model`` for nutpie and sample one chain: (compile s, sampling s, gradients)."""
    import nutpie

    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model)
    t1 = time.perf_counter()
    tr = nutpie.sample(compiled, draws=draws, tune=draws, chains=1, seed=seed, progress_bar=False)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, int(tr.sample_stats["n_steps"].sum())


def pm_ode_model(df) -> pm.Model:
    obs = df[df["AMT"] == 0]
    t_obs = obs["TIME"].to_numpy()
    dose = float(df.loc[df["AMT"] > 0, "AMT"].iloc[0])

    def rhs(y, t, p):
        ka, cl, v = p[0], p[1], p[2]
        return [-ka * y[0], ka * y[0] - cl / v * y[1]]

    keep = t_obs > 0  # pm.ode integrates from t0 = 0 and reports later times
    ode = pm.ode.DifferentialEquation(func=rhs, times=t_obs[keep], n_states=2, n_theta=3, t0=0.0)
    with pm.Model() as model:
        ka = pm.LogNormal("KA", np.log(1.57), 2.0)
        cl = pm.LogNormal("CL", np.log(2.72), 2.0)
        v = pm.LogNormal("V", np.log(31.5), 2.0)
        sol = ode(y0=[dose, 0.0], theta=[ka, cl, v])
        sigma = pm.HalfNormal("sigma", 1.4)
        pm.Normal("DV", sol[:, 1] / v, sigma, observed=obs["DV"].to_numpy()[keep])
    return model


def ours_model(df) -> pm.Model:
    from nlmebayes import read_nonmem
    from nlmebayes.model.builder import build_model

    data = read_nonmem(df[(df["AMT"] > 0) | (df["TIME"] > 0)].reset_index(drop=True))
    spec = ModelSpec(
        name="theo1",
        structural="1cpt_oral_ode",
        parameters={"KA": 1.57, "CL": 2.72, "V": 31.5},
        error=ResidualError("additive", add=0.7),
    )
    return build_model(spec, data, deterministics=False).model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--ode-draws", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    # First use of each model compiles it (numba) and fills PyTensor's on-disk cache; pay that
    # for both before timing, and report it.
    w_a = full_fit("1cpt_oral", 20, 0)
    w_o = full_fit("1cpt_oral_ode", 20, 0)
    # alternating, so that a slow spell of the machine hits both models
    runs = [
        (full_fit("1cpt_oral", args.draws, 1), full_fit("1cpt_oral_ode", args.draws, 1))
        for _ in range(args.repeats)
    ]
    a, o = np.median(runs, axis=0)
    ratio = np.median([ode / ana for ana, ode in runs])
    print(
        f"Theophylline full NUTS fit, 4 chains x {args.draws} draws (+{args.draws} tune), "
        f"build + compile + sampling, median of {args.repeats} runs:"
    )
    print(
        f"  analytic {a:7.2f} s   ODE {o:7.2f} s   ratio ODE / analytic = {ratio:.2f} (issue 13 target <= 3)"
    )
    print("  each run (analytic, ODE): " + ", ".join(f"({ana:.2f}, {ode:.2f})" for ana, ode in runs))
    print(
        f"  (first use in this process, 20 draws, compilation included: analytic {w_a:.1f} s, "
        f"ODE {w_o:.1f} s)"
    )
    _, df = subset()
    pc, ps, pg = _nutpie_run(pm_ode_model(df), args.ode_draws, 2)
    oc, os_, og = _nutpie_run(ours_model(df), args.ode_draws, 2)
    print(
        f"Subject 1 only, typical values + sigma, nutpie, 1 chain x {args.ode_draws} draws "
        f"(+{args.ode_draws} tune):"
    )
    print(
        f"  pm.ode.DifferentialEquation: compile {pc:6.2f} s  sampling {ps:7.2f} s  "
        f"({pg} gradients, {1e3 * ps / pg:.3f} ms each)"
    )
    print(
        f"  nlmebayes ODE:               compile {oc:6.2f} s  sampling {os_:7.2f} s  "
        f"({og} gradients, {1e3 * os_ / og:.3f} ms each)"
    )
    print(
        f"  speed-up: sampling {ps / os_:.1f}x, per gradient {(ps / pg) / (os_ / og):.1f}x "
        f"(target >= 20); compile + sampling {(pc + ps) / (oc + os_):.1f}x"
    )


if __name__ == "__main__":
    main()
