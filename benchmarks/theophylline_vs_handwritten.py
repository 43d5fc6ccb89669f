"""nlmebayes vs a hand-written PyMC model of the same Theoph model, same sampler and draws.

Prints the wall-time ratio (target <= 1.1; issue 13 measures it without the fit's deterministics
and pointwise log-likelihood, whose time is printed apart; the whole fit's ratio follows) and the
ESS/s of each. Run: .venv/bin/python benchmarks/theophylline_vs_handwritten.py [--repeats N]

Timed: ``nlmebayes.fit`` (build, compile, sample, then deterministics and the pointwise
log-likelihood for every draw; ``diagnostics=False`` leaves out the OFV/NPDE step, which the
hand-written model has no counterpart of, and whose time is printed apart) against ``pm.sample``
of the hand-written model (no log-likelihood). The hand-written concentration is the textbook
formula, which is NaN at KA = CL/V; ours is finite and smooth there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from arviz_stats import ess

from nlmebayes import ModelSpec, datasets, fit
from nlmebayes.diagnostics import add_marginal

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


PHASES: dict[str, list] = {"pilot": [], "sampling": [], "derived": []}


def run(make, seed):
    t0 = time.perf_counter()
    idata = make(seed)
    wall = time.perf_counter() - t0
    if "nlmebayes_pilot_seconds" in idata.attrs:
        for k in PHASES:
            PHASES[k].append(idata.attrs[f"nlmebayes_{k}_seconds"])
    post = idata["posterior"]
    e = min(
        float(ess(post[v], method="bulk").min())
        for v in ("log_KA_pop", "log_CL_pop", "log_V_pop", "sigma_add")
    )
    return wall, e


def _sample_direct(model, seed):
    """The hand-written model through nutpie's own API, as nlmebayes.fit calls it."""
    import nutpie

    return nutpie.sample(
        nutpie.compile_pymc_model(model),
        draws=DRAWS,
        tune=TUNE,
        chains=CHAINS,
        seed=seed,
        save_warmup=False,
        progress_bar=False,
    )


def _sample(model, seed):
    with model:
        return pm.sample(
            draws=DRAWS,
            tune=TUNE,
            chains=CHAINS,
            random_seed=seed,
            nuts_sampler="nutpie",
            progressbar=False,
            compute_convergence_checks=False,
        )


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
    runs = {"nlmebayes fit": [], "hand-written, pm.sample": [], "hand-written, nutpie API": []}
    makers = {
        "nlmebayes fit": lambda s: (
            fit(
                spec,
                data,
                draws=DRAWS,
                tune=TUNE,
                chains=CHAINS,
                seed=s,
                diagnostics=False,
                progressbar=False,
            ).idata
        ),
        "hand-written, pm.sample": lambda s: _sample(handwritten(data), s),
        "hand-written, nutpie API": lambda s: _sample_direct(handwritten(data), s),
    }
    for r in range(args.repeats):
        order = list(makers) if r % 2 == 0 else list(makers)[::-1]  # alternate who goes first
        for label in order:
            runs[label].append(run(makers[label], 100 + r))
    wall = {k: np.median([w for w, _ in v]) for k, v in runs.items()}
    print(
        f"Theophylline, nutpie, {CHAINS} chains x {DRAWS} draws (+{TUNE} tune), median of "
        f"{args.repeats} runs (build + compile + sampling):"
    )
    for k, v in runs.items():
        print(
            f"  {k:<26} wall {wall[k]:6.2f} s   min ESS/s (typical values, sigma) "
            f"{np.median([e / w for w, e in v]):7.1f}"
        )
    phases = {k: float(np.median(v)) for k, v in PHASES.items()}
    # issue 13's ratio: the fit without its deterministics and pointwise log-likelihood (the
    # hand-written model computes neither), whose time is printed apart below
    without = np.median([w - d for (w, _), d in zip(runs["nlmebayes fit"], PHASES["derived"], strict=True)])
    for ref in ("hand-written, pm.sample", "hand-written, nutpie API"):
        print(
            f"  wall-time ratio nlmebayes (without deterministics and log-likelihood) / {ref} = "
            f"{without / wall[ref]:.2f} (target <= 1.1); whole fit {wall['nlmebayes fit'] / wall[ref]:.2f}"
        )
    print(
        f"  nlmebayes fit by phase (median): pilot {phases['pilot']:.2f} s, build + compile + "
        f"sampling {phases['sampling']:.2f} s, deterministics and pointwise log-likelihood "
        f"{phases['derived']:.2f} s"
    )
    print(
        f"  ratio sampling alone / hand-written, nutpie API = "
        f"{phases['sampling'] / wall['hand-written, nutpie API']:.2f}"
    )
    res = fit(spec, data, draws=DRAWS, tune=TUNE, chains=CHAINS, seed=1, diagnostics=False, progressbar=False)
    t0 = time.perf_counter()
    add_marginal(res, seed=1)
    print(
        f"  (not timed above) OFV, EBEs, CWRES and NPDE at the posterior median: "
        f"{time.perf_counter() - t0:.2f} s"
    )


if __name__ == "__main__":
    main()
