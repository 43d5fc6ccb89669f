"""Default fit vs the pre-0.4 sampler set-up on two rich designs, and partial centring on a mixed one.

For each design (120 rich oral subjects, 120 rich 2-cpt IV subjects) and simulation seed, fits
the data twice with 4 chains x 1000 draws: the default (etas centred where the pilot finds the data
informative, chains started at the pilot's EBEs) and the old behaviour, reached through options
(every eta non-centred, PyMC's jittered start). Prints per fit the max R-hat and min bulk ESS over
the population parameters, the sampling time and min ESS/s; then per design the median ratio of
min ESS/s, new / old. ``--chains 2 --draws 300`` is the set-up of the issue's report, in which
the old behaviour split the rich oral chains between flip-flop modes.

The mixed designs (``--designs mixed mixed-iv``: 400 oral subjects, a quarter rich after one
dose, the rest with 2-3 samples at steady state; 200 2-cpt IV subjects, 50 with 19 samples and
150 with 2) also fit the spec as the default chose before partial centring
(:func:`designs.without_partial`) and print the ratio of min ESS/s, default / without partial.

``--designs messy``: 300 subjects, 2-cpt oral, a fifth rich after one dose and the rest sparse in
the last of ten doses (ADDL), 5% of the samples BLQ (M3), WT on CL and V, a block Omega on CL and
V: the features of a real analysis together, fitted by the default and the old set-up.

A short fit first pays numba's start-up, which would otherwise fall on the first default fit.

Run: .venv/bin/python benchmarks/sampling.py [--seeds 5] [--draws 1000] [--chains 4]
"""

from __future__ import annotations

import argparse
import warnings

import designs  # benchmarks/designs.py, next to this script
import numpy as np
from arviz_stats import ess, rhat

from nlmebayes import fit

POP = ("log_", "omega_sd_", "omega_chol", "sigma_", "theta_")


def population_diagnostics(result) -> tuple[float, float]:
    """Max R-hat and min bulk ESS over the population parameters."""
    post = result.posterior
    names = [v for v in post.data_vars if v.startswith(POP)]
    r = max(float(np.max(rhat(post[v]).values)) for v in names)
    e = min(float(np.min(ess(post[v], method="bulk").values)) for v in names)
    return r, e


def one(spec, data, draws, chains, seed, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(spec, data, draws=draws, tune=draws, chains=chains, seed=seed, diagnostics=False, **options)
    r, e = population_diagnostics(res)
    attrs = res.idata.attrs
    wall = attrs["nlmebayes_sampling_seconds"]
    partial = list(attrs["nlmebayes_partial_weights"])
    choice = f"{attrs['nlmebayes_centered']}" + (f", partially {partial}" if partial else "")
    return r, e, wall, e / wall, choice


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--designs", nargs="+", default=["oral", "iv"])
    args = ap.parse_args()
    cases = {  # name, data, spec, whether to compare with the fit without partial centring
        "oral": ("rich oral 120", designs.rich_oral, designs.ORAL, False),
        "iv": ("rich 2-cpt IV 120", designs.rich_iv, designs.IV, False),
        "mixed": ("mixed rich/sparse oral 400", designs.mixed_oral, designs.MIXED, True),
        "mixed-iv": ("mixed rich/sparse 2-cpt IV 200", designs.mixed_iv, designs.IV, True),
        "messy": ("2-cpt oral 300, ADDL, 5% BLQ, block omega", designs.messy_oral, designs.MESSY, False),
    }
    # The first fit in a process also pays numba's start-up (about 2 s): pay it before timing,
    # or it falls on the first seed's default fit alone and lowers that seed's ratio.
    one(designs.ORAL, designs.rich_oral(0), 20, 1, 0)
    for name, make, spec, compare in (cases[d] for d in args.designs):
        ratios, partial, ok = [], [], 0
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            data = make(seed)
            new = one(spec, data, args.draws, args.chains, seed)
            fits = [("default", new)]
            if compare:
                plain = one(designs.without_partial(spec, data), data, args.draws, args.chains, seed)
                partial.append(new[3] / plain[3])
                fits.append(("without partial", plain))
            old = one(designs.old_default(spec), data, args.draws, args.chains, seed, init="jitter")
            fits.append(("old", old))
            ok += new[0] <= 1.01 and new[1] >= 400
            ratios.append(new[3] / old[3])
            for label, (r, e, wall, eps, cen) in fits:
                print(
                    f"{name} seed {seed} {label:7s}: max R-hat {r:.3f}, min bulk ESS {e:.0f}, "
                    f"sampling {wall:.1f} s, min ESS/s {eps:.1f}, centred {cen}"
                )
        print(f"{name}: default meets R-hat <= 1.01 and ESS >= 400 in {ok} of {args.seeds} seeds")
        per_seed = ", ".join(f"{x:.1f}" for x in ratios)
        print(f"{name}: ESS/s default / old = {np.median(ratios):.1f} (median; per seed {per_seed})")
        if partial:
            per_seed = ", ".join(f"{x:.2f}" for x in partial)
            print(
                f"{name}: ESS/s default / without partial = {np.median(partial):.2f} "
                f"(median; per seed {per_seed})"
            )


if __name__ == "__main__":
    main()
