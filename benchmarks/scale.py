"""How the default fit scales with the number of subjects (issue 13).

Designs: 100, 1,000 and 10,000 subjects; sparse (4 of 12 nominal times per subject, at random) and
rich (all 12);
1-cpt oral and 2-cpt IV bolus, simulated from known values. Per design it prints:

* the time of one log-density + gradient evaluation (numba, as nutpie runs it; median of repeats);
* for designs up to ``--fit-max`` subjects, a default ``fit`` (4 chains x 1000 draws): total wall
  time (reading the design excluded, compile included), min bulk ESS/s over the population
  parameters and their max R-hat;

then the log-log slope of per-gradient time against the number of observations between 1,000 and
10,000 subjects (1 = linear). First, a multiple-dose design (180 daily doses) with and without
dose trains: pairs, per-gradient time and peak memory.

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


def _multiple_dose_design(n_subjects: int, n_doses: int):
    """Daily 100 mg for ``n_doses`` days, one record per dose (as clinical data come), and six
    observations per subject: two on day 1, a trough and a peak mid-way, a trough and a peak at
    the end; simulated from ORAL's typical values."""
    import pandas as pd

    from nlmebayes import read_nonmem

    ids = np.repeat(np.arange(1, n_subjects + 1), n_doses)
    doses = pd.DataFrame(dict(ID=ids, TIME=24.0 * np.tile(np.arange(n_doses), n_subjects), AMT=100.0, DV=0.0))
    last = 24.0 * (n_doses - 1)
    obs_t = [1.0, 6.0, last / 2 - 0.5, last / 2 + 2, last - 0.5, last + 2]
    obs = pd.DataFrame(
        dict(ID=np.repeat(doses.ID.unique(), 6), TIME=np.tile(obs_t, n_subjects), AMT=0.0, DV=1.0)
    )
    df = pd.concat([doses, obs]).sort_values(["ID", "TIME"], kind="stable").reset_index(drop=True)
    df["EVID"] = (df["AMT"] > 0).astype(int)
    truth = {p.name: p.initial for p in ORAL.parameters}
    sd = np.array(ORAL.iiv[0].sd)
    sigma = {k: getattr(ORAL.error, k) for k in ORAL.error.sigma_names}
    return simulate(ORAL, read_nonmem(df), typical=truth, omega=np.diag(sd**2), sigma=sigma, seed=3)


def _trains_worker(conn, n_subjects, n_doses, trains):
    import resource

    data = _multiple_dose_design(n_subjects, n_doses)
    data = data if trains else data.without_trains()
    grad = gradient_time(ORAL, data)
    conn.send((len(data.pair_obs), grad, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def dose_trains(n_subjects: int = 1000, n_doses: int = 180) -> None:
    """Pairs, per-gradient time and peak memory with and without dose trains (each in a fresh
    process, so the peak resident memory is that variant's own)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = {}
    for trains in (True, False):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_trains_worker, args=(send, n_subjects, n_doses, trains))
        proc.start()
        out[trains] = recv.recv()
        proc.join()
    (p1, g1, m1), (p0, g0, m0) = out[True], out[False]
    print(
        f"multiple dosing, {n_subjects} subjects x {n_doses} daily doses, 6 observations each: "
        f"dose-observation pairs {p0} -> {p1} with trains; per-gradient {g0 * 1e3:.2f} -> {g1 * 1e3:.2f} ms "
        f"({g0 / g1:.1f}x); peak memory (build + compile + evaluate) {m0:.0f} -> {m1:.0f} MiB",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit-max", type=int, default=1000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--trains-only", action="store_true", help="only the multiple-dosing comparison")
    args = ap.parse_args()
    dose_trains()
    if args.trains_only:
        return
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
