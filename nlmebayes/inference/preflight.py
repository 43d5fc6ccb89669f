"""Checks before and during sampling: a finite start, and progress.

Before: the log-density and its gradient are finite where the chains start. During: a guard
stops sampling with a message when no chain has finished a draw for ``stall_seconds``.

NUTS started where the density or its gradient is not finite does not fail: it tries, rejects and
tries again, silently, for as long as warm-up lasts (a turnover model with a Hill term
``C**GAM`` at ``C = 0`` ran for more than ten minutes without a message). The check takes a second
and, on failure, names what is not finite: the parameters whose gradient is NaN or infinite, the
observations (row, subject) whose log-likelihood is, and powers in the model's expressions that
are the usual cause (``x**P`` at ``x = 0`` has the derivative ``x**P * log(x)`` = NaN in ``P``).
"""

from __future__ import annotations

import re
import time

import numpy as np

from nlmebayes.data import id_label

__all__ = ["PreflightError", "check_start", "SamplingStalled", "StallGuard", "sample_with_guard"]


class PreflightError(FloatingPointError):
    """The log-density or its gradient is not finite at the starting point."""


def check_start(built, spec, start: dict | None) -> None:
    """Raise :class:`PreflightError` if logp or its gradient is not finite at ``start``.

    Parameters
    ----------
    built : BuiltModel
        The model to be sampled.
    spec : ModelSpec
    start : dict or None
        Starting values by free-variable name (natural scale), as given to the sampler; None for
        PyMC's initial point.
    """
    model = built.model
    point = _point(model, start)
    logp = float(model.compile_logp(mode="FAST_COMPILE")(point))
    grad = np.asarray(model.compile_dlogp(mode="FAST_COMPILE")(point))
    if np.isfinite(logp) and np.all(np.isfinite(grad)):
        return
    lines = [f"the log-density at the starting point is {logp} with a non-finite gradient"
             if np.isfinite(logp) else f"the log-density at the starting point is {logp}"]  # fmt: skip
    lines += _gradient_lines(model, point, grad)
    lines += _observation_lines(built, point)
    lines += _power_lines(spec)
    lines.append("NUTS cannot start here; change the initial values or the expressions named above.")
    raise PreflightError("\n  ".join(lines))


def _point(model, start: dict | None) -> dict:
    """Model's initial point (transformed space), with ``start``'s values where given."""
    from pymc.logprob.transforms import LogTransform

    point = model.initial_point()
    for rv in model.free_RVs:
        if start is None or rv.name not in start:
            continue
        value = np.asarray(start[rv.name], dtype=float)
        transform = model.rvs_to_transforms.get(rv)
        name = model.rvs_to_values[rv].name
        if transform is None:
            point[name] = value
        elif isinstance(transform, LogTransform):
            point[name] = np.log(value)
    return point


def _gradient_lines(model, point: dict, grad: np.ndarray) -> list[str]:
    bad, offset = [], 0
    for vv in model.value_vars:
        n = int(np.prod(np.shape(point[vv.name])))
        if not np.all(np.isfinite(grad[offset : offset + n])):
            bad.append(model.values_to_rvs[vv].name)
        offset += n
    return [f"gradient not finite with respect to: {', '.join(bad)}"] if bad else []


def _observation_lines(built, point: dict) -> list[str]:
    model, data = built.model, built.data
    per_obs = model.compile_logp(vars=[model["DV"]], sum=False, mode="FAST_COMPILE")(point)[0]
    bad = np.flatnonzero(~np.isfinite(per_obs))
    if not len(bad):
        return []
    subject = [id_label(data.ids[s]) for s in data.obs_subject[bad[:5]]]
    shown = ", ".join(
        f"row {int(data.obs_row[j])} (subject {s}, TIME {data.obs_time[j]:g})"
        for j, s in zip(bad[:5], subject, strict=True)
    )
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return [f"log-likelihood not finite at {len(bad)} observation(s) of {data.source}: {shown}{more}"]


def _power_lines(spec) -> list[str]:
    from nlmebayes.model.spec import ODE

    if not isinstance(spec.structural, ODE):
        return []
    ode = spec.structural
    texts = list(ode.rhs.values()) + list(ode.outputs.values()) + list(ode.initial.values())
    powers = sorted({"".join(m) for t in texts for m in re.findall(r"(\([^()]*\)|\w+)(\s*\*\*\s*)(\w+)", t)})
    if not powers:
        return []
    return [
        "likely cause: a power of a quantity that is 0 at the start ("
        + "; ".join(p.strip() for p in powers)
        + "): x**P at x = 0 has the derivative x**P * log(x), NaN in P. Write the term so it "
        "stays finite at 0, e.g. C**GAM -> (C + 1e-12)**GAM"
    ]


class SamplingStalled(RuntimeError):
    """No chain finished a draw for ``stall_seconds``: sampling was stopped, with the reason."""


class StallGuard:
    """nutpie progress callback that notices when no chain has finished a draw for a while.

    Parameters
    ----------
    seconds : float
        How long without a new draw in any chain counts as stalled.

    Examples
    --------
    >>> guard = StallGuard(seconds=60)
    >>> guard.stalled(now=guard.last_change + 61)
    True
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last_change = time.monotonic()
        self.done, self.total, self.tuning = 0, 0, True

    def __call__(self, progress) -> None:
        """Record the chains' progress (a list of ``nutpie.ChainProgress``)."""
        done = sum(p.finished_draws for p in progress)
        if done > self.done:
            self.done, self.last_change = done, time.monotonic()
        self.total = sum(p.total_draws for p in progress)
        self.tuning = any(p.tuning for p in progress)

    def stalled(self, now: float | None = None) -> bool:
        """True when no new draw has come for ``seconds``."""
        return (time.monotonic() if now is None else now) - self.last_change > self.seconds

    def message(self) -> str:
        """What stalled, where, and the usual causes."""
        phase = "warm-up" if self.tuning else "sampling"
        return (
            f"no chain finished a draw in {self.seconds:g} s ({self.done} of {self.total} draws done, "
            f"in {phase}); sampling was stopped. Usual causes: an ODE that is stiff for the "
            "solver (ODE(method='rosenbrock23')), parameter values where the solver or the "
            "density breaks down (check the initial values and priors), or a posterior with "
            "regions of extreme curvature. Try fit(..., draws=20, tune=20) and "
            "nlmebayes.inference.preflight.check_start; raise stall_seconds if a draw is "
            "genuinely this slow"
        )


def sample_with_guard(sample, seconds: float | None, poll: float = 0.05):
    """Run ``sample(blocking=False, progress_callback=...)`` and stop it when it stalls.

    ``sample`` is a partial of :func:`nutpie.sample`. Returns its trace; raises
    :class:`SamplingStalled` after ``seconds`` without a new draw (never, if None).
    """
    if seconds is None:
        return sample(blocking=True)
    guard = StallGuard(seconds)
    run = sample(blocking=False, progress_callback=guard)
    while not _finished(run):
        time.sleep(poll)
        if guard.stalled():
            run.abort()
            raise SamplingStalled(guard.message())
    return run.wait()


def _finished(run) -> bool:
    try:
        return bool(run.is_finished)  # a property; nutpie may raise TimeoutError while running
    except TimeoutError:
        return False
