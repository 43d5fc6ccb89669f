"""Coverage of the non-continuous outcomes (issue 16 item 2) over simulated data sets.

The five families of ``tests/test_outcomes.py`` (binary, ordinal, Poisson, negative binomial with
IIV on 40 subjects x 6; Weibull time to event with IIV on the scale, 100 subjects, ~30% censored),
each fitted with 2 chains x ``--draws`` per seed. Prints, per seed, the truths outside their 90%
intervals, and the share over all seeds (10% expected for calibrated intervals).

Run: .venv/bin/python benchmarks/outcomes.py [--seeds 5] [--draws 1000]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from nlmebayes import fit  # noqa: E402
from tests.test_outcomes import simulated_outcomes  # noqa: E402


def misses(seed: int, draws: int) -> tuple[list, int]:
    outside, n = [], 0
    for kind, (spec, data, truths) in simulated_outcomes(seed).items():
        post = fit(
            spec, data, chains=2, draws=draws, seed=seed, progressbar=False, diagnostics=False
        ).posterior
        for name, truth in truths.items():
            if name.startswith("omega("):
                draws_ = post["omega_sd"].sel(iiv=name[6:-1]).values.ravel()[:, None]
            else:
                draws_ = post[name].values.reshape(-1, np.size(truth))
            lo, hi = np.quantile(draws_, [0.05, 0.95], axis=0)
            for j, t in enumerate(np.atleast_1d(truth)):
                n += 1
                if not lo[j] <= t <= hi[j]:
                    outside.append(f"{kind}:{name}" + (f"[{j}]" if np.size(truth) > 1 else ""))
    return outside, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    total_out, total = 0, 0
    for seed in range(args.seeds):
        outside, n = misses(seed, args.draws)
        total_out, total = total_out + len(outside), total + n
        print(f"outcomes seed {seed}: {len(outside)} of {n} truths outside their 90% intervals {outside}")
    share = 100 * total_out / total
    print(f"outcomes: {total_out} of {total} truths outside their 90% intervals ({share:.0f}%)")


if __name__ == "__main__":
    main()
