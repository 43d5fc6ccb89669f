"""The JAX backend against the default (numba) backend, on CPU or on a GPU when JAX has one.

Per design (1-cpt oral and 2-cpt IV bolus, sparse: 4 samples per subject; sizes from ``--sizes``):

* per-gradient time of the log-density + gradient, numba (as nutpie runs it, on the CPU) and
  JAX (jitted, on JAX's default device), median of repeats, and their ratio;
* for sizes up to ``--fit-max``: a ``fit`` (4 chains x ``--draws`` draws after as many warm-up) with each
  backend: wall time (compile included), min bulk ESS/s of the population parameters, max R-hat.

It prints the lines ``jax device: ...``, ``<design> <n> subjects: per-gradient numba X ms, jax Y ms,
ratio numba/jax Z`` and ``<design> <n> subjects: fit numba A s (ESS/s B), jax C s (ESS/s D), speed-up
A/C``.

Run: .venv/bin/python benchmarks/jax_backend.py [--sizes 1000 10000] [--fit-max 10000]
(needs ``pip install nlmebayes[jax]``; on a GPU machine, a CUDA build of jax).
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import numpy as np
import pytensor
import pytensor.tensor as pt
from pymc.model.transform.optimization import freeze_dims_and_data
from sampling import population_diagnostics  # benchmarks/sampling.py
from scale import design, gradient_time  # benchmarks/scale.py

from nlmebayes import fit
from nlmebayes.model import build_model


def jax_gradient_time(spec, data, repeats: int = 5) -> float:
    """Seconds per log-density + gradient evaluation in PyTensor's JAX mode (jitted), synchronised."""
    model = freeze_dims_and_data(build_model(spec, data, deterministics=False).model)
    logp = model.logp()
    grads = pt.grad(logp, model.value_vars)
    fn = pytensor.function(model.value_vars, [logp, *grads], mode="JAX")
    point = model.initial_point()
    args = [np.asarray(point[v.name], dtype=float) for v in model.value_vars]

    def once():
        jax.block_until_ready(fn.vm.jit_fn(*args)) if hasattr(fn.vm, "jit_fn") else fn(*args)

    once()
    t = time.perf_counter()
    once()
    n = max(3, int(0.2 / max(time.perf_counter() - t, 1e-6)))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            once()
        times.append((time.perf_counter() - t) / n)
    return float(np.median(times))


def timed_fit(spec, data, backend: str, draws: int, tune: int) -> tuple[float, float, float]:
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(spec, data, seed=1, diagnostics=False, backend=backend, draws=draws, tune=tune)
    wall = time.perf_counter() - t
    r, e = population_diagnostics(res)
    return wall, e / wall, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--fit-max", type=int, default=1000)
    ap.add_argument("--designs", nargs="+", default=["oral", "iv"])
    ap.add_argument("--draws", type=int, default=1000, help="draws and warm-up per chain of each fit")
    args = ap.parse_args()
    print(
        f"jax device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}",
        flush=True,
    )
    for kind in args.designs:
        for n in args.sizes:
            spec, data = design(kind, n, 4)
            g_n, g_j = gradient_time(spec, data), jax_gradient_time(spec, data)
            label = f"{kind} sparse {n} subjects"
            print(f"{label}: per-gradient numba {g_n * 1e3:.3f} ms, jax {g_j * 1e3:.3f} ms, "
                  f"ratio numba/jax {g_n / g_j:.2f}", flush=True)  # fmt: skip
            if n <= args.fit_max:
                wn, en, rn = timed_fit(spec, data, "numba", args.draws, args.draws)
                wj, ej, rj = timed_fit(spec, data, "jax", args.draws, args.draws)
                print(f"{label}: fit numba {wn:.1f} s (ESS/s {en:.2f}, R-hat {rn:.3f}), jax {wj:.1f} s "
                      f"(ESS/s {ej:.2f}, R-hat {rj:.3f}), speed-up {wn / wj:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
