"""Eight fits serially and as a Dask sweep on a 2-worker local cluster (issue 17).

The eight fits: the theophylline model with and without IIV on each parameter and with a WT
effect on CL or V (candidate models of one analysis), each 4 chains x 1000 draws, seed 1.
Serial: one ``fit`` after another in this process, as a user's loop would, nutpie running the
chains in parallel on the cores. Sweep: :func:`nlmebayes.search.sweep` with 2 workers and one
core per fit, fits written to a temporary folder. Prints

    sweep 8 fits: serial X s, dask 2 workers Y s, speed-up Z

Run on an otherwise idle machine: .venv/bin/python benchmarks/sweep.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from dataclasses import replace

import numpy as np

from nlmebayes import IIV, Covariate, ModelSpec, datasets, fit
from nlmebayes.search import sweep

BASE = ModelSpec.from_toml("models/theophylline_1cpt_oral.toml")


def candidates() -> list[ModelSpec]:
    wt = {p: Covariate(p, "WT", "power", reference=70.0, theta=0.75) for p in ("CL", "V")}
    iiv = {
        "all": ["KA", "CL", "V"],
        "no_ka": ["CL", "V"],
        "no_v": ["KA", "CL"],
        "no_cl": ["KA", "V"],
    }
    out = []
    for label, params in iiv.items():
        out.append(replace(BASE, name=f"iiv_{label}", iiv=IIV(params)))
        for p, cov in wt.items():
            if label in ("all", "no_ka") and len(out) < 8:
                out.append(replace(BASE, name=f"iiv_{label}_wt_{p}", iiv=IIV(params), covariates=[cov]))
    return out[:8]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    specs, data = candidates(), datasets.theophylline()
    assert len(specs) == 8, [s.name for s in specs]
    serial, dask = [], []
    for _ in range(args.repeats):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            for s in specs:
                fit(s, data, seed=1, progressbar=False)
            serial.append(time.perf_counter() - t)
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                sweep(specs, data, tmp, n_workers=2, progress=False, seed=1)
                dask.append(time.perf_counter() - t)
    x, y = float(np.median(serial)), float(np.median(dask))
    print(f"sweep 8 fits: serial {x:.1f} s, dask 2 workers {y:.1f} s, speed-up {x / y:.2f}")


if __name__ == "__main__":
    main()
