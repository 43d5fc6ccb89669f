"""Covariate screening and sweeps on Dask (issue 17 items 1 and 5)."""

import threading
import time

import numpy as np
import pytest

from nlmebayes import IIV, ModelSpec, ResidualError, fit
from nlmebayes.search import covariate_screening, sweep
from nlmebayes.simulation import simulate
from nlmebayes.simulation.design import sampling_design

BASE = ModelSpec(
    "base",
    "1cpt_oral",
    {"KA": 1.0, "CL": 4.0, "V": 40.0},
    iiv=IIV(["KA", "CL", "V"], sd=[0.3, 0.3, 0.2]),
    error=ResidualError("proportional", prop=0.1),
)
TIMES = [0.5, 1, 2, 4, 6, 8, 12, 24]


def _covariate_data(n: int = 40, seed: int = 3):
    """CL = 4 (WT/70)^0.75; AGE, CRCL-like noise and SEX carry no effect."""
    rng = np.random.default_rng(seed)
    wt = np.exp(rng.normal(np.log(70), 0.25, n))
    covs = {
        "WT": wt,
        "AGE": rng.uniform(20, 80, n),
        "SEX": rng.integers(0, 2, n),
        "HT": rng.normal(170, 10, n),
    }
    design = sampling_design(n, TIMES, amt=100.0, obs_cmt=2, covariates=covs, per_subject=5, seed=seed)
    truth = ModelSpec(
        "truth", "1cpt_oral", BASE.parameters, covariates=[_wt_on_cl()], iiv=BASE.iiv, error=BASE.error
    )
    omega = np.diag(np.array([0.3, 0.3, 0.2]) ** 2)
    return simulate(truth, design, typical={"KA": 1.0, "CL": 4.0, "V": 40.0}, omega=omega,
                    sigma={"prop": 0.1}, seed=seed)  # fmt: skip


def _wt_on_cl():
    from nlmebayes import Covariate

    return Covariate("CL", "WT", "power", reference=70.0, theta=0.75, fixed=True)


@pytest.mark.sampling
def test_screening_ranks_the_real_covariate_effect_first():
    data = _covariate_data()
    result = fit(BASE, data, chains=2, draws=300, tune=300, seed=1, progressbar=False, diagnostics=False)
    tab = covariate_screening(result)
    assert len(tab) == 3 * 4 and set(tab["kind"]) == {"continuous", "categorical"}
    top = tab.iloc[0]
    assert (top["parameter"], top["covariate"]) == ("CL", "WT")
    # 40 subjects, WT spread 25% (log SD), omega(CL) 0.3: the eta-log(WT) correlation is ~0.5,
    # p ~ 1e-3 after 12 tests; the fitted slope estimates the exponent 0.75 (SE ~0.2, shrunk).
    assert top["p_adjusted"] < 0.01 and 0.3 < top["effect"] < 1.2
    # No other pair survives the Bonferroni correction (measured: the next is KA-SEX, 0.085).
    assert (tab.iloc[1:]["p_adjusted"] > 0.05).all(), tab
    assert tab["shrinkage"].between(-30, 100).all() and not tab["in_model"].any()


def _kill_a_busy_worker(client, done: threading.Event) -> list:
    """Kill the process of the first worker seen fitting; its nanny starts a new one."""
    import os

    killed = []
    while not done.is_set() and not killed:
        busy = [w for w, tasks in client.processing().items() if tasks]
        if busy:
            time.sleep(2.0)  # mid-fit
            client.run(os._exit, 1, workers=[busy[0]], on_error="ignore")
            killed.append(busy[0])
        time.sleep(0.2)
    return killed


@pytest.mark.sampling
def test_sweep_survives_a_killed_worker_and_resumes_from_its_folder(tmp_path):
    from dask.distributed import Client, LocalCluster

    data = _covariate_data(n=12)
    specs = [BASE.__class__(**{**BASE.__dict__, "name": f"m{k}"}) for k in range(3)]
    # PyMC's sampler: its C code is cached on disk, where nutpie would numba-compile in each worker.
    kw = dict(chains=1, draws=100, tune=100, seed=1, diagnostics=False, sampler="pymc", init="jitter")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            done, killed = threading.Event(), []
            killer = threading.Thread(target=lambda: killed.extend(_kill_a_busy_worker(client, done)))
            killer.start()
            try:
                first = sweep(specs, data, tmp_path, client=client, progress=False, **kw)
            finally:
                done.set()
                killer.join()
    assert killed, "no worker was killed: the test did not test recovery"
    assert first.fitted == ["m0", "m1", "m2"] and first.loaded == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.nc", "m1.nc", "m2.nc"]  # no partial files
    # The same seed and data: the three fits agree draw for draw, the killed one included.
    draws = [r.idata["posterior"]["log_CL_pop"].values for r in first.results.values()]
    assert all(np.array_equal(d, draws[0]) for d in draws)
    table = first.table()  # compare() across the sweep: identical fits, identical scores
    assert sorted(table.index) == ["m0", "m1", "m2"] and np.ptp(table["elpd_loo_observation"]) < 1e-9
    again = sweep(specs, data, tmp_path, progress=False, **kw)  # no cluster is started: nothing to fit
    assert again.fitted == [] and again.loaded == ["m0", "m1", "m2"]
    np.testing.assert_array_equal(again.results["m1"].idata["posterior"]["log_CL_pop"].values, draws[1])
