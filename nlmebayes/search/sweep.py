"""Many fits at once on Dask distributed: candidate models, covariate steps, simulation studies.

``sweep`` sends one ``fit`` per spec to a Dask cluster: a ``LocalCluster`` of worker processes on
this machine by default, or any scheduler (``client=`` or ``scheduler="tcp://host:8786"``) when one
machine is not enough. Each fit is written to ``folder/<name>.nc`` by the worker the moment it
ends (to a temporary name first, then renamed, so a file is always whole): a rerun loads what is
there instead of refitting, and nothing finished is lost when a worker or the session dies. A
worker that dies mid-fit is replaced by its nanny and the fit is rerun elsewhere (Dask allows
three such losses per fit); an exception inside a fit is retried ``retries`` times.

Each fit runs its chains on ``threads_per_fit`` cores with BLAS held to as many threads, and a
local cluster gets ``cores // threads_per_fit`` workers, so fits do not oversubscribe the
machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["Sweep", "sweep"]


@dataclass
class Sweep:
    """The fits of a sweep.

    Attributes
    ----------
    results : dict
        name -> FitResult, in the order the specs were given.
    fitted, loaded : list of str
        Names fitted in this call, and names loaded from the folder (an earlier run).
    seconds : float
        Wall time of the call.
    """

    results: dict
    fitted: list = field(default_factory=list)
    loaded: list = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        """The fits side by side (:func:`nlmebayes.diagnostics.compare`): LOO, OFV, AIC, BIC."""
        from nlmebayes.diagnostics.comparison import compare

        return compare(self.results)


def sweep(
    specs,
    data,
    folder,
    *,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_fit: int = 1,
    retries: int = 2,
    progress: bool = True,
    **fit_kwargs,
) -> Sweep:
    """Fit every spec in parallel on Dask and save each fit as it ends.

    Parameters
    ----------
    specs : list of ModelSpec or dict name -> ModelSpec
        Names (spec names for a list) must differ: they name the files.
    data : EventData or dict name -> EventData
        One data set for all, or one per spec (simulation-estimation studies).
    folder : str or Path
        Where ``<name>.nc`` is written; existing files are loaded, not refitted.
    client : dask.distributed.Client, optional
        Use this client (and its cluster) as it is.
    scheduler : str, optional
        Address of a running scheduler, e.g. ``"tcp://10.0.0.5:8786"``.
    n_workers : int, optional
        Workers of the local cluster (default: cores // threads_per_fit).
    threads_per_fit : int
        Cores per fit (its chains run in parallel on them; BLAS gets as many threads).
    retries : int
        Reruns of a fit that raised.
    progress : bool
        Print a line as each fit ends.
    **fit_kwargs
        Passed to :func:`nlmebayes.fit` (draws, tune, chains, seed, ...).

    Returns
    -------
    Sweep

    Examples
    --------
    >>> runs = sweep([base, with_wt, with_wt_sex], data, "runs", draws=500)  # doctest: +SKIP
    >>> runs.table()[["elpd_loo_subject", "OFV", "AIC"]]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    specs = _named(specs)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.nc" for name in specs}
    todo = [name for name in specs if not paths[name].exists()]
    out = Sweep({}, fitted=todo, loaded=[n for n in specs if n not in todo])
    if todo:
        jobs = {n: (specs[n], data[n] if isinstance(data, dict) else data, paths[n]) for n in todo}
        client, own = _client(client, scheduler, n_workers, threads_per_fit, len(todo))
        try:
            _run(client, jobs, threads_per_fit, retries, progress, fit_kwargs)
        finally:
            if own:
                _close(client)
    out.results = {name: _load(paths[name]) for name in specs}
    out.seconds = time.perf_counter() - t0
    return out


def _named(specs) -> dict:
    if isinstance(specs, dict):
        return dict(specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"spec names must differ (they name the files), got {names}; pass a dict")
    return dict(zip(names, specs, strict=True))


def _run(client, jobs: dict, threads: int, retries: int, progress: bool, fit_kwargs: dict) -> None:
    """Submit every (spec, data, path) job; wait for all, printing each as it is saved."""
    from dask.distributed import as_completed

    futures = {}
    for name, (spec, data, path) in jobs.items():
        key = f"nlmebayes-fit-{name}-{os.urandom(4).hex()}"  # unique: a rerun is a new task
        args = (spec, data, str(path), threads, fit_kwargs)
        futures[client.submit(_fit_to_file, *args, retries=retries, pure=False, key=key)] = name
    for k, fut in enumerate(as_completed(futures), start=1):
        fut.result()  # raises the fit's error once its retries are spent
        if progress:
            print(f"[{k}/{len(jobs)}] {futures[fut]} saved to {jobs[futures[fut]][2]}", flush=True)


def _close(client) -> None:
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def _client(client, scheduler, n_workers, threads: int, n_fits: int):
    """(client, whether this call made it and must close it)."""
    from dask.distributed import Client, LocalCluster

    if client is not None:
        return client, False
    if scheduler is not None:
        return Client(scheduler), True
    n = n_workers or max(1, min(n_fits, (os.cpu_count() or 1) // threads))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), True


def _fit_to_file(spec, data, path: str, threads: int, fit_kwargs: dict) -> str:
    """Run on a worker: fit, write to a temporary file, rename it into place (atomic)."""
    from threadpoolctl import threadpool_limits

    from nlmebayes.inference import fit

    with threadpool_limits(threads):
        result = fit(spec, data, cores=threads, progressbar=False, **fit_kwargs)
    final = Path(path)
    partial = final.with_name(f".{final.stem}.{os.getpid()}.partial.nc")
    result.save(partial)
    os.replace(partial, final)
    return path


def _load(path: Path):
    from nlmebayes.results import FitResult

    return FitResult.load(path)
