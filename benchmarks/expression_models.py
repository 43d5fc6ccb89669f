"""Individual-parameter expressions and closed-form models (issue 15, items 2 and 3).

1. The biexponential of ``tests/expression_models.py`` (6 subjects x 11 samples, a 2x2 block
   {A1 additive, K1 log-normal} and an additive eta on A2) fitted with the default ``fit``
   (2 chains x 1000) on data simulated with several seeds: how many of the 9 truths lie outside
   their 90% interval per seed, and in all (about 10% expected).
2. The theophylline model as (KA, V, K) with CL = K V and as (KA, CL, K) with V = CL / K, both with
   a full 3x3 block Omega (4 chains x 2 --draws): the largest difference of the posterior medians of
   the typical values and the omegas of KA, CL, V, K over the posterior SD (issue 15: <= 0.1), on
   the 12 subjects and on the design replicated 10 times (see :func:`kvk_invariance`).

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
from tests.expression_models import biexponential, biexponential_coverage, biexponential_data  # noqa: E402


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


def _log_scale_summary(post, form: str) -> dict:
    """Posterior draws of the typical KA, CL, V, K and the SDs of their etas, whichever the form.

    eta_CL = eta_V + eta_K (form "kvk": Omega over KA, V, K) or eta_V = eta_CL - eta_K ("kck")."""
    sd = post["omega_sd"].values.reshape(-1, 3)
    corr = post["omega_corr_0"].values.reshape(-1, 3, 3)
    om = corr * sd[:, :, None] * sd[:, None, :]
    var_third = om[:, 1, 1] + om[:, 2, 2] + (2 if form == "kvk" else -2) * om[:, 1, 2]
    tv = {p: post[f"{p}_pop"].values.ravel() for p in ("KA", "K", "V" if form == "kvk" else "CL")}
    if form == "kvk":
        tv["CL"] = tv["K"] * tv["V"]
        omega = {"KA": sd[:, 0], "V": sd[:, 1], "K": sd[:, 2], "CL": np.sqrt(var_third)}
    else:
        tv["V"] = tv["CL"] / tv["K"]
        omega = {"KA": sd[:, 0], "CL": sd[:, 1], "K": sd[:, 2], "V": np.sqrt(var_third)}
    return {**{f"{p}_pop": v for p, v in tv.items()}, **{f"omega({p})": v for p, v in omega.items()}}


def kvk_invariance(draws: int) -> None:
    """(KA, V, K) with CL = K V against (KA, CL, K) with V = CL / K, each with a full block.

    The likelihoods are the same (tests/test_individual_expressions.py: OFV to 1e-6), but the
    priors are not: LKJ(2) and half-normal SDs on the etas of (KA, V, K) do not map to those on
    (KA, CL, K). On the 12 theophylline subjects the Omega prior shows (it carries much of the
    information about Omega); on the design replicated 10 times (120 subjects, simulated from the
    (KA, V, K) model) the likelihood dominates and the posteriors agree.
    """
    iiv = dict(sd=[0.6, 0.2, 0.3], block=True)
    kvk = ModelSpec("kvk", "1cpt_oral", {"KA": 1.5, "V": 31.5, "K": 0.0857},
                    iiv=IIV(["KA", "V", "K"], **iiv), individual={"CL": "K * V"})  # fmt: skip
    kck = ModelSpec("kck", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "K": 0.0857},
                    iiv=IIV(["KA", "CL", "K"], **iiv), individual={"V": "CL / K"})  # fmt: skip
    omega = np.array([[0.40, 0.01, 0.0], [0.01, 0.02, 0.005], [0.0, 0.005, 0.04]])
    big = simulate(kvk, replicate_subjects(datasets.theophylline(), 10), seed=0, omega=omega,
                   typical={"KA": 1.5, "V": 31.5, "K": 0.0857}, sigma={"add": 0.7})  # fmt: skip
    for label, data in (("theophylline, 12 subjects", datasets.theophylline()), ("replicated, 120", big)):
        fits = [fit(s, data, chains=4, draws=draws, seed=1, progressbar=False).posterior for s in (kvk, kck)]
        a, b = _log_scale_summary(fits[0], "kvk"), _log_scale_summary(fits[1], "kck")
        diff = {
            k: abs(np.median(a[k]) - np.median(b[k])) / np.sqrt(0.5 * (a[k].var() + b[k].var())) for k in a
        }
        worst = max(diff, key=diff.get)
        print(
            f"(KA, V, K) vs (KA, CL, K), {label}: max |median difference| / posterior SD over typical values "
            f"and omegas = {diff[worst]:.3f} ({worst})"
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
