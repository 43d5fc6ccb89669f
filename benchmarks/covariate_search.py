"""Covariate search on simulated data with known truth, and on pheno (issue 17).

The problem of ``tests/covariate_cases.py``: 80 subjects, 1-cpt oral, 8 candidate covariates on CL
and V (16 pairs, 18 effects with RACE's levels), 2 real: WT on CL (power 0.75), SEX on V (x1.2).
Per replicate: the full model under the horseshoe (2 chains x 1000), whether its 90% intervals
exclude 0 for the real effects and include it for the others, and the projection selection.
Then SCM (forward p 0.05, backward p 0.01, 2 Dask workers) on replicate 0, and pheno with 3 noise
covariates (seed 2026) next to WGT on CL and V and APGR < 5 on V.

Prints one line per replicate, then::

    projection selected exactly the 2 real effects in N of 5 replicates
    SCM (replicate 0): selected ...; K fits in X s
    time per approach (replicate 0): full model + projection X s, SCM Y s
    pheno: full model excludes 0 for ...; projection selected ...

Run: ``python benchmarks/covariate_search.py [--replicates 5] [--no-scm] [--no-pheno]``;
``--pheno-scm`` runs SCM on the pheno problem instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from nlmebayes import IIV, ModelSpec, ResidualError, datasets, fit, read_nonmem  # noqa: E402
from nlmebayes.search import candidate_effects, full_covariate_model, scm, select_covariates  # noqa: E402
from tests.covariate_cases import BASE, PAIRS, REAL, covariate_data  # noqa: E402

FIT = dict(chains=2, draws=1000, tune=1000, progressbar=False, diagnostics=False)


def _pairs(sel) -> str:
    return ", ".join(f"{p}~{c}" for p, c in sel) or "none"


def replicate(seed: int) -> tuple[bool, float]:
    data = covariate_data(80, seed=seed)
    t0 = time.perf_counter()
    result = fit(full_covariate_model(BASE, PAIRS, expected=2), data, seed=seed + 1, **FIT)
    t_fit = time.perf_counter() - t0
    tab = candidate_effects(result)
    real = np.array([(p, c) in REAL for p, c in zip(tab["parameter"], tab["covariate"], strict=True)])
    t1 = time.perf_counter()
    sel = select_covariates(result, max_size=5, seed=seed)
    t_sel = time.perf_counter() - t1
    exact = set(sel.selected) == REAL
    div = int(result.idata["sample_stats"]["diverging"].sum())
    print(
        f"replicate {seed}: full model real effects excluding 0: "
        f"{tab['excludes_zero'][real].sum()}/{real.sum()}, "
        f"null effects including 0: {(~tab['excludes_zero'][~real]).sum()}/{(~real).sum()}; "
        f"selected {_pairs(sel.selected)}; fit {t_fit:.0f} s ({div} divergences), selection {t_sel:.0f} s",
        flush=True,
    )
    return exact, t_fit + t_sel


def run_scm() -> float:
    data = covariate_data(80, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        res = scm(BASE, data, PAIRS, folder, progress=False, chains=2, draws=500, tune=500, seed=1)
    print(
        f"SCM (replicate 0): selected {_pairs(res.selected)}; {res.n_fits} fits in {res.seconds:.0f} s",
        flush=True,
    )
    return res.seconds


def pheno_data():
    """pheno with APGR < 5 as a column and 3 noise covariates (seed 2026)."""
    df = datasets.pheno().input_frame()
    rng = np.random.default_rng(2026)
    ids = df["ID"].unique()
    noise = {
        "N1": rng.normal(0, 1, len(ids)),
        "N2": np.exp(rng.normal(0, 0.3, len(ids))),
        "N3": rng.integers(0, 2, len(ids)),
    }
    for k, v in noise.items():
        df[k] = df["ID"].map(dict(zip(ids, v, strict=True)))
    df["APGRLOW"] = (df["APGR"] < 5).astype(int)
    data = read_nonmem(df, source="pheno + 3 noise covariates")
    base = ModelSpec("pheno", "1cpt_iv", {"CL": 0.006, "V": 1.3}, iiv=IIV(["CL", "V"], sd=[0.3, 0.3]),
                     error=ResidualError("proportional", prop=0.11))  # fmt: skip
    pairs = [("CL", "WGT"), ("V", "WGT"), ("V", "APGRLOW")] + [(p, c) for p in ("CL", "V") for c in noise]
    return data, base, pairs


def pheno() -> None:
    data, base, pairs = pheno_data()
    result = fit(full_covariate_model(base, pairs, expected=2), data, seed=1, **FIT)
    tab = candidate_effects(result)
    sel = select_covariates(result, seed=0)
    excl = [f"{r.parameter}~{r.covariate}" for r in tab.itertuples() if r.excludes_zero]
    apgr = tab[tab["covariate"] == "APGRLOW"].iloc[0]
    print(
        f"pheno: full model excludes 0 for {', '.join(excl) or 'none'}; "
        f"projection selected {_pairs(sel.selected)}; "
        f"APGR<5 on V factor {apgr.factor:.2f} [{apgr.factor_lower:.2f}, {apgr.factor_upper:.2f}]",
        flush=True,
    )
    print(sel.path.round(2).to_string())


def pheno_scm() -> None:
    data, base, pairs = pheno_data()
    with tempfile.TemporaryDirectory() as folder:
        res = scm(base, data, pairs, folder, progress=True, chains=2, draws=500, tune=500, seed=1)
    print(f"pheno SCM: selected {_pairs(res.selected)}; {res.n_fits} fits in {res.seconds:.0f} s")
    print(res.steps.round(2).to_string())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--no-scm", action="store_true")
    ap.add_argument("--no-pheno", action="store_true")
    ap.add_argument("--pheno-scm", action="store_true", help="only SCM on pheno")
    args = ap.parse_args()
    if args.pheno_scm:
        pheno_scm()
        return
    runs = [replicate(seed) for seed in range(args.replicates)]
    print(
        f"projection selected exactly the 2 real effects in {sum(e for e, _ in runs)} "
        f"of {len(runs)} replicates"
    )
    if not args.no_scm:
        t_scm = run_scm()
        print(
            f"time per approach (replicate 0): full model + projection {runs[0][1]:.0f} s, SCM {t_scm:.0f} s"
        )
    if not args.no_pheno:
        pheno()


if __name__ == "__main__":
    main()
