"""Individual-parameter expressions and closed-form models (issue 15, items 2 and 3).

1. The biexponential of ``tests/expression_models.py`` (6 subjects x 11 samples, a 2x2 block
   {A1 additive, K1 log-normal} and an additive eta on A2) fitted with the default ``fit``
   (2 chains x 1000) on data simulated with several seeds: how many of the 9 truths lie outside
   their 90% interval per seed, and in all (about 10% expected).
2. The theophylline model as (KA, V, K) with CL = K V and as (KA, CL, K) with V = CL / K, both with
   a full 3x3 block Omega (4 chains x 2 --draws): the largest difference of the posterior medians of
   the typical values and the omegas of KA, CL, V, K over the posterior SD (issue 15: <= 0.1), on
   the 12 subjects and on the design replicated 10 times, with LKJ and with mapped inverse-Wishart
   priors on Omega (see :func:`kvk_invariance`).

Run: .venv/bin/python benchmarks/expression_models.py [--seeds 5] [--draws 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from nlmebayes import IIV, ModelSpec, datasets, fit  # noqa: E402
from nlmebayes.simulation import simulate  # noqa: E402
from nlmebayes.simulation.design import replicate_subjects  # noqa: E402
from tests.expression_models import (  # noqa: E402
    biexponential,
    biexponential_coverage,
    biexponential_data,
    log_scale_summary,
)


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
    """(KA, V, K) with CL = K V against (KA, CL, K) with V = CL / K, each with a full block.

    The likelihoods are the same (tests/test_individual_expressions.py: OFV to 1e-6). With the
    default LKJ(2) and half-normal SD priors the priors are not: those on the etas of (KA, V, K) do
    not map to those on (KA, CL, K), and on 12 subjects the Omega prior carries much of what is
    known about Omega (even on 120 it shows where the mapped correlation is strong). An
    inverse-Wishart prior maps onto itself (IW(S, df) -> IW(M S M', df)): given the mapped scale,
    the two parameterisations have the same posterior up to the typical values' weak priors.
    """
    for prior in ("lkj", "inverse_wishart"):
        _kvk_against_kck(prior, draws)


def _kvk_against_kck(prior: str, draws: int) -> None:
    iiv = dict(sd=[0.6, 0.2, 0.3], block=True)
    kvk_iiv, kck_iiv = dict(iiv), dict(iiv)
    if prior == "inverse_wishart":
        # IW(S, df) on the (KA, V, K) etas is IW(M S M', df) on (KA, CL, K): eta_CL = eta_V + eta_K
        S = np.diag([0.6, 0.2, 0.3]) ** 2
        M = np.array([[1.0, 0, 0], [0, 1, 1], [0, 0, 1]])
        kvk_iiv.update(omega_prior=prior, iw_df=5.0, iw_scale=S.tolist())
        kck_iiv.update(omega_prior=prior, iw_df=5.0, iw_scale=(M @ S @ M.T).tolist())
    kvk = ModelSpec("kvk", "1cpt_oral", {"KA": 1.5, "V": 31.5, "K": 0.0857},
                    iiv=IIV(["KA", "V", "K"], **kvk_iiv), individual={"CL": "K * V"})  # fmt: skip
    kck = ModelSpec("kck", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "K": 0.0857},
                    iiv=IIV(["KA", "CL", "K"], **kck_iiv), individual={"V": "CL / K"})  # fmt: skip
    omega = np.array([[0.40, 0.01, 0.0], [0.01, 0.02, 0.005], [0.0, 0.005, 0.04]])
    big = simulate(kvk, replicate_subjects(datasets.theophylline(), 10), seed=0, omega=omega,
                   typical={"KA": 1.5, "V": 31.5, "K": 0.0857}, sigma={"add": 0.7})  # fmt: skip
    for label, data in (("theophylline, 12 subjects", datasets.theophylline()), ("replicated, 120", big)):
        fits = [fit(s, data, chains=4, draws=draws, seed=1, progressbar=False).posterior for s in (kvk, kck)]
        a, b = log_scale_summary(fits[0], "kvk"), log_scale_summary(fits[1], "kck")
        diff = {
            k: abs(np.median(a[k]) - np.median(b[k])) / np.sqrt(0.5 * (a[k].var() + b[k].var())) for k in a
        }
        worst = max(diff, key=diff.get)
        print(
            f"(KA, V, K) vs (KA, CL, K), {prior} prior, {label}: max |median difference| / posterior SD over "
            f"typical values and omegas = {diff[worst]:.3f} ({worst})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--skip-coverage", action="store_true")
    args = ap.parse_args()
    if not args.skip_coverage:
        coverage(args.seeds, args.draws)
    kvk_invariance(2 * args.draws)


if __name__ == "__main__":
    main()
