"""NUTS sampling of a model: nutpie by default, PyMC's own NUTS as an option."""

from __future__ import annotations

import functools
import sys
import time
import warnings
from typing import Literal

import numpy as np
import pymc as pm
import pytensor

from nlmebayes.data import EventData
from nlmebayes.diagnostics.identifiability import design_warnings
from nlmebayes.diagnostics.marginal_group import add_marginal
from nlmebayes.diagnostics.population import unsupported
from nlmebayes.inference.derived import add_derived
from nlmebayes.inference.parameterisation import (
    Pilot,
    centred_parameters,
    initial_point,
    noncentred_draws,
    partially_centred,
    run_pilot,
)
from nlmebayes.inference.preflight import check_start, sample_with_guard
from nlmebayes.model.builder import build_model
from nlmebayes.model.compile import compile_settings
from nlmebayes.model.spec import ModelSpec
from nlmebayes.pk import get_model
from nlmebayes.pk.ode.system import ODESystem
from nlmebayes.results import FitResult

__all__ = ["fit", "Sampler"]

#: The NUTS implementations :func:`fit` can use.
Sampler = Literal["nutpie", "pymc"]
#: How nutpie evaluates the density: numba (CPU) or JAX (CPU or GPU; analytic models).
Backend = Literal["numba", "jax"]


def _interactive() -> bool:
    """True in a terminal or notebook session (progress bars), False in scripts and CI."""
    return bool(getattr(sys, "ps1", None)) or "ipykernel" in sys.modules


def fit(
    spec: ModelSpec,
    data: EventData,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    sampler: Sampler = "nutpie",
    target_accept: float | None = None,
    posterior_predictive: bool = False,
    progressbar: bool | None = None,
    cores: int | None = None,
    diagnostics: bool = True,
    marginal_loo: bool = False,
    n_sim: int = 1000,
    init: Literal["pilot", "jitter"] = "pilot",
    adaptation: Literal["diag", "low_rank"] = "diag",
    stall_seconds: float | None = 600.0,
    backend: Backend = "numba",
) -> FitResult:
    """Sample the posterior of ``spec`` given ``data`` with NUTS.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    data : EventData
        The data as read; the spec's observation selection is applied.
    draws, tune, chains : int
        Draws kept per chain, warm-up draws per chain, number of chains.
    seed : int, optional
        Seeds the sampler and posterior predictive draws; the same seed gives the same draws.
    sampler : {"nutpie", "pymc"}
        nutpie (compiled with numba, the default) or PyMC's NUTS.
    target_accept : float, optional
        NUTS target acceptance rate; default 0.8, and 0.99 for a spec with candidate covariate
        effects, whose horseshoe prior has funnels that longer steps diverge in (the 80-subject
        covariate problem of ``tests/covariate_cases.py``, 2 x 1000 draws: 9-113 divergences at
        0.95, 1-2 at 0.99 in the same wall time, as the sampler needs fewer restarted trajectories).
    posterior_predictive : bool
        Also draw replicated data (group ``posterior_predictive``).
    progressbar : bool, optional
        Default: shown in interactive sessions only.
    cores : int, optional
        Chains run in parallel on this many cores.
    diagnostics : bool
        At the posterior median of the population parameters, compute the EBEs, the FOCE-I OFV
        (AIC, BIC) and the residuals PRED, IPRED, IWRES, CWRES, NPDE (group ``marginal``, see
        :mod:`nlmebayes.diagnostics.ofv` and :mod:`nlmebayes.diagnostics.residuals`; about a
        second for small data).
    marginal_loo : bool
        Also integrate the etas out per posterior draw by importance sampling (group
        ``log_likelihood_marginal``), for the marginal leave-one-subject-out LOO.
    n_sim : int
        Simulated data sets for NPDE.
    init : {"pilot", "jitter"}
        Where the chains start. ``"pilot"`` (default): population parameters at the spec's
        initial values with a U(-1, 1) jitter on their unconstrained scale, etas at the pilot's
        conditional modes (EBEs), so every subject starts in the mode its own data favour and
        chains cannot settle on different sides of a per-subject flip-flop. ``"jitter"``: PyMC's
        default, every variable jittered (etas included), as before version 0.4.
    adaptation : {"diag", "low_rank"}
        nutpie's mass-matrix adaptation: diagonal (default), or diagonal plus a low-rank
        correction that learns strongly correlated directions (nutpie only). Low-rank pays where
        typical values are correlated in the posterior (VMAX and KM: 8x the min ESS/s; KA, TLAG
        and V) and costs where they are not (rich 120-subject designs: 0.13x oral, 0.02x IV);
        ``benchmarks/mass_matrix.py``. The report suggests it when it would help.
    stall_seconds : float or None
        Stop with :class:`~nlmebayes.inference.preflight.SamplingStalled`, saying why it may be,
        when no chain has finished a draw for this long (nutpie only; None: wait forever).
    backend : {"numba", "jax"}
        How nutpie evaluates the log-density and its gradient: numba on the CPU (default), or
        JAX (``pip install nlmebayes[jax]``; on a GPU when JAX has one). JAX takes the analytic
        models, whose graph it compiles op for op; ODE models need numba (their solver is a numba
        kernel). The log-density is the same to rounding (``tests/test_jax_backend.py``); which is
        faster depends on the device and the data size (``benchmarks/jax_backend.py``).

    Returns
    -------
    FitResult
        Posterior, sample stats, log-likelihood per observation, observed and constant data,
        together with the spec and the data.

    Examples
    --------
    >>> from nlmebayes import ModelSpec, datasets, fit
    >>> spec = ModelSpec.from_toml("models/theophylline_1cpt_oral.toml")  # doctest: +SKIP
    >>> result = fit(spec, datasets.theophylline(), seed=1)  # doctest: +SKIP
    >>> print(result.report())  # doctest: +SKIP
    """
    if sampler not in ("nutpie", "pymc"):
        raise ValueError(f"sampler must be 'nutpie' or 'pymc', got {sampler!r}")
    if init not in ("pilot", "jitter"):
        raise ValueError(f"init must be 'pilot' or 'jitter', got {init!r}")
    if adaptation not in ("diag", "low_rank"):
        raise ValueError(f"adaptation must be 'diag' or 'low_rank', got {adaptation!r}")
    if adaptation == "low_rank" and sampler != "nutpie":
        raise ValueError("adaptation='low_rank' is nutpie's; PyMC's NUTS adapts a diagonal mass matrix")
    check_backend(backend, spec, sampler)
    built = build_model(spec, data)
    design = design_warnings(spec, built.data)
    for w in design:
        warnings.warn(w, stacklevel=2)
    progressbar = _interactive() if progressbar is None else progressbar
    t_pilot = time.perf_counter()
    pilot = _pilot(spec, data)
    centered = centred_parameters(spec, pilot)
    partial = partially_centred(spec, pilot)
    asked = [p for b in spec.iiv if b.parameterisation == "partial" for p in b.parameters]
    if asked and pilot is None:
        warnings.warn(
            f"parameterisation='partial' weighs each subject by the pilot's conditional SD, and this "
            f"model has no pilot (non-continuous outcomes, or it failed): {asked} sampled non-centred",
            stacklevel=2,
        )
    t0 = time.perf_counter()
    settings = dict(
        backend=backend,
        adaptation=adaptation,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        target_accept=target_accept or (0.99 if spec.candidates is not None else 0.8),
        progressbar=progressbar,
        cores=cores,
        stall_seconds=stall_seconds,
    )
    idata = _sample(spec, data, (centered, partial), pilot if init == "pilot" else None, sampler, settings)
    wall = time.perf_counter() - t0
    add_derived(built.model, idata)
    t_derived = time.perf_counter() - t0 - wall
    if posterior_predictive:
        with built.model:
            pm.sample_posterior_predictive(
                idata, extend_inferencedata=True, random_seed=seed, progressbar=False
            )
    idata.attrs.update(
        nlmebayes_sampler=sampler,
        nlmebayes_adaptation=adaptation if sampler == "nutpie" else "pymc",
        nlmebayes_backend=backend if sampler == "nutpie" else "pymc",
        nlmebayes_sampling_seconds=wall,
        nlmebayes_pilot_seconds=t0 - t_pilot,
        nlmebayes_derived_seconds=t_derived,
        nlmebayes_seed=-1 if seed is None else int(seed),
        nlmebayes_design_warnings="\n".join(design),
        nlmebayes_centered=centered,
        nlmebayes_partial_weights={p: np.quantile(w, [0.25, 0.5, 0.75]).tolist() for p, w in partial.items()},
        nlmebayes_centering_ratios=pilot.ratios if pilot else {},
    )
    result = FitResult.from_sampling(idata, spec, built.data)
    if diagnostics or marginal_loo:
        _add_marginal_or_warn(result, marginal_loo=marginal_loo, n_sim=n_sim, seed=seed)
    return result


def _pilot(spec: ModelSpec, data: EventData) -> Pilot | None:
    """The pilot (:func:`~nlmebayes.inference.parameterisation.run_pilot`); None if it fails.

    Models with non-continuous outcomes have no pilot (its EBEs assume Gaussian data): their
    etas are non-centred and the sampler starts from PyMC's defaults.
    """
    if spec.outcomes:
        return None
    try:
        with pytensor.config.change_flags(traceback__limit=0):
            return run_pilot(spec, data)
    except (NotImplementedError, FloatingPointError, ArithmeticError, ValueError) as e:
        # A pilot that fails may mean a density NUTS cannot start on (then it would retry in
        # silence for the whole warm-up): check, and name the cause, before sampling.
        check_start(build_model(spec, data, deterministics=False), spec, None)
        warnings.warn(
            f"parameterisation pilot failed ({e}): etas non-centred, sampler starts from PyMC's defaults",
            stacklevel=3,
        )
        return None


def _sample(
    spec: ModelSpec,
    data: EventData,
    choice: tuple,
    pilot: Pilot | None,
    sampler: str,
    settings: dict,
):
    """Sample the bare density (no deterministics); ``settings`` are :func:`_run_sampler`'s.

    Deterministics and the pointwise log-likelihood follow for all draws in one vectorised
    evaluation (cheaper than compiling them into the sampler). nutpie is called directly:
    pm.sample would also build PyMC's own step methods (gradients included) before handing over.
    Graph-building stack traces are switched off: they cost ~10% of the compile time and only
    serve PyTensor's error messages.
    """
    centered, partial = choice
    built = build_model(spec, data, deterministics=False, centered=centered, partial=partial)
    start = initial_point(built, spec, pilot) if pilot is not None else None
    idata = _run_sampler(built.model, start, sampler, **settings)
    noncentred_draws(built, idata)
    return idata


def check_backend(backend: str, spec: ModelSpec, sampler: str) -> None:
    """Refuse a backend that cannot run this model, saying what would."""
    if backend not in ("numba", "jax"):
        raise ValueError(f"backend must be 'numba' or 'jax', got {backend!r}")
    if backend == "numba":
        return
    if sampler != "nutpie":
        raise ValueError("backend='jax' is nutpie's; PyMC's NUTS runs the C backend")
    if isinstance(get_model(spec.structural), ODESystem):
        name = getattr(spec.structural, "name", spec.structural)
        raise ValueError(
            f"backend='jax' samples analytic models only: the ODE model {name!r} is "
            "solved by a numba kernel that JAX cannot trace; use backend='numba' (the default)"
        )
    try:
        import jax  # noqa: F401
    except ImportError:
        raise ImportError("backend='jax' needs JAX: pip install 'nlmebayes[jax]'") from None


def _run_sampler(
    bare,
    start: dict | None,
    sampler: str,
    *,
    backend,
    adaptation,
    draws,
    tune,
    chains,
    seed,
    target_accept,
    progressbar,
    cores,
    stall_seconds,
):
    """Nutpie or PyMC's NUTS from ``start``; nutpie jitters only the population variables.

    Without a start every variable is jittered except a (partially) centred ``phi`` or ``psi``,
    which starts at its prior mean: jittered, it can start where the gradient is not finite.
    """
    skip = ("phi_", "psi_") if start is None else ("z_", "phi_", "psi_")
    pop = {rv for rv in bare.free_RVs if not rv.name.startswith(skip)}
    quiet = pytensor.config.change_flags(traceback__limit=0)
    if sampler == "nutpie":
        import nutpie

        jax = {"backend": "jax", "gradient_backend": "jax"} if backend == "jax" else {}
        with quiet, compile_settings():
            compiled = nutpie.compile_pymc_model(bare, initial_points=start, jitter_rvs=pop, **jax)
        run = functools.partial(
            nutpie.sample,
            compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            seed=seed,
            save_warmup=False,
            progress_bar=progressbar,
            target_accept=target_accept,
            adaptation=adaptation,
        )
        return sample_with_guard(run, stall_seconds)
    # PyMC's NUTS compiles inside pm.sample and then samples in Python: the collector stays on
    with quiet, compile_settings(pause_gc=False), bare:
        return pm.sample(
            nuts_sampler="pymc",  # PyMC >= 6 would pick nutpie when it is installed
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=seed,
            target_accept=target_accept,
            progressbar=progressbar,
            cores=cores,
            compute_convergence_checks=False,
            initvals=start,
        )


def _add_marginal_or_warn(result: FitResult, *, marginal_loo: bool, n_sim: int, seed) -> None:
    why = unsupported(result.spec, result.data)
    if why:
        warnings.warn(
            f"OFV, EBEs, CWRES/NPDE and the marginal LOO are skipped: the marginal "
            f"likelihood does not handle {why} yet",
            stacklevel=3,
        )
        result.idata.attrs["nlmebayes_marginal_skipped"] = why
    else:
        add_marginal(result, marginal_loo=marginal_loo, n_sim=n_sim, seed=seed)
