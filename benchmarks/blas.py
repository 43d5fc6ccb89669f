"""Block-omega theophylline fit time with PyTensor's C backend linked to scipy's OpenBLAS vs
without BLAS (issue 19).

PyTensor installed with pip finds no BLAS and falls back to NumPy for the matrix products it
compiles in C; nlmebayes now links it to the OpenBLAS in scipy's wheel
(``nlmebayes.model.compile.scipy_blas_ldflags``). "Before" is reproduced by setting
``PYTENSOR_FLAGS=blas__ldflags=`` (the value PyTensor settled on, without its warning).

Each fit runs in a fresh process (the flags are read once per process), after one untimed
warm-up per setting so that both read compiled code from the disk cache; the two settings
alternate. Prints the median wall time of ``fit`` and its phases.

Run: .venv/bin/python benchmarks/blas.py [--repeats 5] [--draws 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

_SCRIPT = """
import dataclasses, json, sys, time
from nlmebayes import IIV, ModelSpec, datasets, fit
from nlmebayes.demo import model_path
import pytensor
spec = ModelSpec.from_toml(model_path("theophylline_1cpt_oral"))
spec = dataclasses.replace(spec, iiv=[IIV(["KA", "CL", "V"], sd=[0.5, 0.3, 0.2], block=True)])
draws = int(sys.argv[1])
t0 = time.perf_counter()
res = fit(spec, datasets.theophylline(), draws=draws, tune=draws, chains=4, seed=1, progressbar=False)
wall = time.perf_counter() - t0
attrs = res.idata.attrs
out = {k: attrs[f"nlmebayes_{k}_seconds"] for k in ("pilot", "sampling", "derived")}
out["wall"] = wall
out["linked"] = "scipy_dgemm_" in pytensor.config.blas__ldflags
print(json.dumps(out))
"""

SETTINGS = {
    "without BLAS (NumPy fallback)": {"PYTENSOR_FLAGS": "blas__ldflags="},
    "scipy's OpenBLAS linked": {},
}


def run(env_extra: dict, draws: int) -> dict:
    env = os.environ | env_extra
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(draws)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    for env in SETTINGS.values():
        run(env, args.draws)  # warm the disk caches
    times: dict[str, list[dict]] = {k: [] for k in SETTINGS}
    for r in range(args.repeats):
        order = list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]
        for label in order:
            times[label].append(run(SETTINGS[label], args.draws))
    print(f"block-omega theophylline fit, 4 x {args.draws} draws, median of {args.repeats} fresh processes:")
    med = {}
    for label, runs in times.items():
        m = {k: float(np.median([r[k] for r in runs])) for k in ("wall", "pilot", "sampling", "derived")}
        med[label] = m
        linked = {r["linked"] for r in runs}
        print(
            f"  {label}: fit {m['wall']:.2f} s (pilot {m['pilot']:.2f}, build + compile + sampling "
            f"{m['sampling']:.2f}, derived {m['derived']:.2f}); BLAS linked: {sorted(linked)}"
        )
    before, after = med["without BLAS (NumPy fallback)"], med["scipy's OpenBLAS linked"]
    print(f"fit time linked / without BLAS: {after['wall'] / before['wall']:.2f}")


if __name__ == "__main__":
    main()
