"""A check before sampling: the log-density and its gradient are finite where the chains start.

NUTS started where the density or its gradient is not finite does not fail: it tries, rejects and
tries again, silently, for as long as warm-up lasts (a turnover model with a Hill term
``C**GAM`` at ``C = 0`` ran for more than ten minutes without a message). The check takes a second
and, on failure, names what is not finite: the parameters whose gradient is NaN or infinite, the
observations (row, subject) whose log-likelihood is, and powers in the model's expressions that
are the usual cause (``x**P`` at ``x = 0`` has the derivative ``x**P * log(x)`` = NaN in ``P``).
"""

from __future__ import annotations

import re

import numpy as np

from nlmebayes.data import id_label

__all__ = ["PreflightError", "check_start"]


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
