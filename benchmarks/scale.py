"""How the default fit scales with the number of subjects (issue 13).

Designs: 100, 1,000 and 10,000 subjects; sparse (4 of 12 nominal times per subject, at random) and
rich (all 12);
1-cpt oral and 2-cpt IV bolus, simulated from known values. Per design it prints:

* the time of one log-density + gradient evaluation (numba, as nutpie runs it; median of repeats);
* for designs up to ``--fit-max`` subjects, a default ``fit`` (4 chains x 1000 draws): total wall
  time (reading the design excluded, compile included), min bulk ESS/s over the population
  parameters and their max R-hat;

then the log-log slope of per-gradient time against the number of observations between 1,000 and
10,000 subjects (1 = linear).

Run: .venv/bin/python benchmarks/scale.py [--fit-max 1000] [--sizes 100 1000 10000]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
from pymc.model.transform.optimization import freeze_dims_and_data
from sampling import population_diagnostics  # benchmarks/sampling.py

from nlmebayes import IIV, ModelSpec, ResidualError, fit
from nlmebayes.model import build_model
from nlmebayes.model.compile import compile_settings
from nlmebayes.simulation import simulate
from nlmebayes.simulation.design import sampling_design

ORAL = ModelSpec(
    "oral",
    "1cpt_oral",
    {"KA": 1.0, "CL": 4.0, "V": 40.0},
    iiv=IIV(["KA", "CL", "V"], sd=[0.4, 0.3, 0.2]),
    error=ResidualError("combined", add=0.05, prop=0.15),
)
IV = ModelSpec(
    "iv",
    "2cpt_iv",
    {"CL": 5.0, "V": 20.0, "Q": 10.0, "V2": 50.0},
    iiv=IIV(["CL", "V", "Q", "V2"], sd=[0.3, 0.3, 0.3, 0.3]),
    error=ResidualError("proportional", prop=0.15),
)
TIMES = {
    "oral": [0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24],
    "iv": [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 8, 12, 24, 48],
}


def design(kind: str, n: int, per_subject: int, seed: int = 1):
    spec = ORAL if kind == "oral" else IV
    obs_cmt = 2 if kind == "oral" else 1
    d = sampling_design(n, TIMES[kind], amt=100.0, obs_cmt=obs_cmt, per_subject=per_subject, seed=seed)
    truth = {p.name: p.initial for p in spec.parameters}
    sd = np.array([s for b in spec.iiv for s in b.sd])
    sigma = {k: getattr(spec.error, k) for k in spec.error.sigma_names}
    return spec, simulate(spec, d, typical=truth, omega=np.diag(sd**2), sigma=sigma, seed=seed)


def gradient_time(spec, data, repeats: int = 5) -> float:
    """Seconds per log-density + gradient evaluation, compiled with numba as nutpie does."""
    # nutpie freezes dims and data to constants before compiling, so must this
    model = freeze_dims_and_data(build_model(spec, data, deterministics=False).model)
    logp = model.logp()
    grads = pt.grad(logp, model.value_vars)
    with compile_settings():
        fn = pytensor.function(model.value_vars, [logp, *grads], mode="NUMBA", trust_input=True)
    point = model.initial_point()
    args = [np.asarray(point[v.name], dtype=float) for v in model.value_vars]
    fn(*args)
    n = max(3, int(0.2 / max(_once(fn, args), 1e-6)))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn(*args)
        times.append((time.perf_counter() - t) / n)
    return float(np.median(times))


def _once(fn, args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def data_layer(n_records: int = 1_000_000) -> None:
    """Read a NONMEM-style CSV of ``n_records`` records and build the model graph for it."""
    import tempfile
    from pathlib import Path

    from nlmebayes import read_nonmem

    n_subjects = n_records // 5  # one dose and four observations each
    df = sampling_design(n_subjects, TIMES["oral"], amt=100.0, obs_cmt=2, per_subject=4).input_frame()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        df.to_csv(path, index=False)
        t = time.perf_counter()
        data = read_nonmem(path)
        t_read = time.perf_counter() - t
        build_model(ORAL, data, deterministics=False)
        t_all = time.perf_counter() - t
    print(
        f"data layer: read {len(df)} records in {t_read:.1f} s, read + build the graph in {t_all:.1f} s "
        f"({data.n_subjects} subjects, {data.n_obs} observations)",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit-max", type=int, default=1000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    data_layer(args.records)
    for kind in ("oral", "iv"):
        for per in (4, 12):
            grad = {}
            for n in args.sizes:
                spec, data = design(kind, n, per)
                grad[n] = gradient_time(spec, data)
                line = (
                    f"{kind} {'sparse' if per == 4 else 'rich'} {n} subjects ({data.n_obs} obs): "
                    f"per-gradient {grad[n] * 1e3:.3f} ms ({grad[n] / data.n_obs * 1e9:.0f} ns/obs)"
                )
                if n <= args.fit_max:
                    t = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        res = fit(spec, data, seed=1, diagnostics=False)
                    wall = time.perf_counter() - t
                    r, e = population_diagnostics(res)
                    line += f", fit 4 x 1000 {wall:.1f} s, min ESS/s {e / wall:.1f}, max R-hat {r:.3f}"
                print(line, flush=True)
            if 1000 in grad and 10000 in grad:
                slope = np.log(grad[10000] / grad[1000]) / np.log(10.0)
                label = f"{kind} {'sparse' if per == 4 else 'rich'}"
                print(f"{label}: per-gradient slope 1k -> 10k subjects = {slope:.2f}")


if __name__ == "__main__":
    main()
