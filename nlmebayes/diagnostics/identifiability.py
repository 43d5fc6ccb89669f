"""Identifiability checks.

Design problems found before sampling, and the flip-flop ambiguity of first-order absorption found in the
posterior.

Before sampling (:func:`design_warnings`, from the spec and the data only):

* IOV declared but every subject has a single occasion: kappa cannot be told from eta;
* IIV on a parameter while no subject has more than one observation: eta cannot be told from
  the residual error;
* a level (study, centre) with one group, or with one subject per group: its variance cannot be
  told from the typical value or from the IIV.

After sampling (:func:`flip_flop_warning`): in a one-compartment oral model the data fit as well
with absorption and elimination rates swapped (V rescaled), so the posterior of
``KA_pop / k_pop`` may sit on both sides of 1, across or within chains. ``flip_flop_guard=True``
in the spec (``KA = k + KA'``) removes the second mode.
"""

from __future__ import annotations

import numpy as np

from nlmebayes.data import EventData
from nlmebayes.model.spec import ModelSpec

__all__ = ["design_warnings", "flip_flop_warning", "subject_flip_flop_warning"]


def design_warnings(spec: ModelSpec, data: EventData) -> list[str]:
    """Warnings about random effects the design cannot identify (see the module docstring)."""
    out = []
    n_obs = np.bincount(data.obs_subject, minlength=data.n_subjects)
    if spec.iov:
        col = spec.iov[0].occasion
        occ = data.records.groupby("ID", sort=False)[col].nunique()
        if (occ <= 1).all():
            out.append(
                f"IOV on {', '.join(spec.iov_parameters)} but every subject has a single "
                f"occasion ({col}): kappa cannot be told apart from eta"
            )
    if spec.iiv and n_obs.max() <= 1:
        why = (
            "eta cannot be told apart from the residual error"
            if not spec.outcomes
            else "eta (a frailty) is told apart from the outcome's own randomness only by the shape of "
            "its distribution, so omega trades off against the model's other parameters (a hazard's "
            "shape) and chains may not mix: fix omega, or use repeated observations (events)"
        )
        out.append(
            f"IIV on {', '.join(spec.iiv_parameters)} but no subject has more than one observation: {why}"
        )
    out += _nonpositive_dv_warnings(spec, data)
    for lvl in spec.levels:
        groups = data.subject_covariates([lvl.column])[lvl.column]
        sizes = groups.value_counts()
        if len(sizes) < 2:
            out.append(f"level {lvl.column} has a single group: its variance is not identified")
        elif sizes.max() == 1:
            out.append(
                f"level {lvl.column} has one subject per group: its variance cannot be "
                f"told apart from the IIV"
            )
    return out


def _nonpositive_dv_warnings(spec: ModelSpec, data: EventData) -> list[str]:
    """Observations at or below 0 under an error model whose SD is proportional to the prediction.

    A DV of 0 is usually a BLQ record or a pre-dose sample: with proportional error it pulls the
    prediction (and so the residual SD) towards 0, where the density is very narrow.
    """
    errors = spec.error if isinstance(spec.error, dict) else {None: spec.error}
    out = []
    for output, err in errors.items():
        if err.kind != "proportional":  # an additive term keeps the SD away from 0
            continue
        rows = data.obs_output == str(output) if output is not None else np.ones(data.n_obs, bool)
        bad = rows & (data.obs_dv <= 0) & ((data.obs_cens if data.obs_cens is not None else 0) == 0)
        if bad.any():
            shown = ", ".join(str(int(r)) for r in data.obs_row[bad][:5])
            out.append(
                f"{int(bad.sum())} observation(s){f' of {output}' if output else ''} have DV <= 0 "
                f"(rows {shown}{' ...' if bad.sum() > 5 else ''}) with proportional error: mark them "
                f'censored (CENS, M3), ignore them ([observations] ignore = ["DV == 0"]) or add an '
                f"additive term"
            )
    return out


def flip_flop_warning(posterior, spec: ModelSpec, threshold: float = 0.05) -> str | None:
    """Warn of flip-flop: absorption and elimination rates not told apart by the posterior.

    A warning when the posterior puts more than ``threshold`` of its mass on each side of
    ``KA_pop = k_pop`` (``k = CL/V`` at the typical values), or chains disagree on the side.
    """
    if "KA" not in spec.parameter_names or spec.flip_flop_guard or "KA_pop" not in posterior:
        return None
    k = _elimination_rate(posterior, spec, "_pop")
    log_ratio = np.log(posterior["KA_pop"] / k)
    below = float((log_ratio < 0).mean())
    chain_sides = np.sign(log_ratio.median("draw").values)
    if min(below, 1 - below) > threshold or len(set(chain_sides)) > 1:
        return (
            f"flip-flop: P(KA < k) = {below:.2f} (chain medians of log(KA/k): "
            f"{', '.join(f'{x:.2f}' for x in log_ratio.median('draw').values)}); absorption "
            f"and elimination are not distinguished. Add IV data, or set flip_flop_guard=True "
            f"if absorption is known to be faster"
        )
    return None


def _elimination_rate(posterior, spec: ModelSpec, suffix: str):
    """The elimination rate K, or CL / V, from posterior variables ``<P><suffix>`` (else the spec's value)."""

    def value(p):
        return posterior[p + suffix] if p + suffix in posterior else spec.parameter(p).initial

    return value("K") if "K" in spec.parameter_names else value("CL") / value("V")


def subject_flip_flop_warning(posterior, spec: ModelSpec) -> str | None:
    """Warn when chains put a subject on different sides of ``KA_i = k_i``.

    With IIV on KA each subject can sit in its own flip-flop mode (``KA_i < k_i``, V_i scaled
    down), so chains can agree on the typical values and still disagree on some subjects, or
    split the typical values through them. Names the subjects.
    """
    if spec.flip_flop_guard or "KA" not in spec.iiv_parameters or "KA" not in posterior:
        return None
    k = _elimination_rate(posterior, spec, "")
    side = np.sign(np.log(posterior["KA"] / k).median("draw"))  # (chain, subject)
    split = (side.max("chain") != side.min("chain")).values
    if not split.any():
        return None
    subjects = [str(s) for s in posterior["KA"]["subject"].values[split]]
    shown = ", ".join(subjects[:8]) + (f" and {len(subjects) - 8} more" if len(subjects) > 8 else "")
    return (
        f"flip-flop per subject: chains disagree whether KA_i > CL_i/V_i for subject(s) {shown}; "
        f"each chain settled in its own mode for them, which also biases the typical values. Set "
        f"flip_flop_guard=True if absorption is known to be faster than elimination"
    )
