"""First-use compile time of the sampler's density, per analytic model (issue 13: 3-cpt < 20 s).

Each model is compiled in a fresh process with empty PyTensor and numba caches (first use on a
new machine): build the graph, then ``nutpie.compile_pymc_model`` as ``fit`` calls it. A second
compile in the same caches shows the cached cost.

Run: .venv/bin/python benchmarks/compile_time.py [--models 1cpt_oral 2cpt_iv 3cpt_iv]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = """
import time
t0 = time.perf_counter()
import nutpie, pytensor
from nlmebayes import IIV, ModelSpec, ResidualError
from nlmebayes.model import build_model
from nlmebayes.model.compile import compile_settings
from nlmebayes.pk import get_model
from nlmebayes.simulation.design import sampling_design
name = {name!r}
struct = get_model(name)
values = dict(CL=5.0, V=20.0, Q=10.0, V2=50.0, Q3=2.0, V3=100.0, KA=1.0)
params = {{p: values[p] for p in struct.parameters}}
spec = ModelSpec("m", name, params, iiv=IIV(["CL", "V"], sd=[0.3, 0.3]), error=ResidualError("proportional"))
oral = "KA" in params
d = sampling_design(20, [0.1, 0.5, 1, 2, 4, 8, 12, 24], amt=100.0, obs_cmt=2 if oral else 1)
t1 = time.perf_counter()
bare = build_model(spec, d, deterministics=False).model
with pytensor.config.change_flags(traceback__limit=0), compile_settings():
    nutpie.compile_pymc_model(bare)
print(f"{{time.perf_counter() - t1:.1f}}")
"""


def compile_seconds(name: str, cache: str) -> float:
    env = dict(os.environ, PYTENSOR_FLAGS=f"compiledir={cache}/pytensor", NUMBA_CACHE_DIR=f"{cache}/numba")
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(name=name)], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["1cpt_oral", "2cpt_iv", "3cpt_iv", "3cpt_oral"])
    args = ap.parse_args()
    for name in args.models:
        with tempfile.TemporaryDirectory() as cache:
            first = compile_seconds(name, cache)
            cached = compile_seconds(name, cache)
        print(f"compile {name} first use: {first:.1f} s (cached: {cached:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
