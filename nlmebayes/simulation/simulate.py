"""Simulation from a model with known parameter values (truth for recovery studies, VPCs)."""

from __future__ import annotations

import numpy as np
import pymc as pm

from nlmebayes.data import EventData, read_nonmem
from nlmebayes.model.builder import build_model
from nlmebayes.model.spec import ModelSpec

__all__ = ["simulate"]


def simulate(
    spec: ModelSpec,
    data: EventData,
    *,
    typical: dict[str, float],
    omega: np.ndarray | None = None,
    thetas: dict[str, float] | None = None,
    sigma: dict[str, float] | None = None,
    pi: dict[str, float] | np.ndarray | None = None,
    level_sd: dict[str, dict[str, float]] | None = None,
    nu: float | None = None,
    seed: int,
) -> EventData:
    """Simulate observations at the data's observation records.

    Parameters
    ----------
    spec : ModelSpec
    data : EventData
        Design: doses, observation times, covariates (its DV values are replaced).
    typical : dict
        Typical values on the natural scale, e.g. ``{"CL": 2.7, "V": 31.5, "KA": 1.5}``.
    omega : array (n_iiv, n_iiv), optional
        Covariance of the etas, ordered as ``spec.iiv_parameters``. Etas are drawn from it.
    thetas : dict, optional
        Covariate effects by name (``theta_CL_WT``).
    sigma : dict, optional
        Residual SDs, e.g. ``{"add": 0.5, "prop": 0.1}``.
    pi : dict or array, optional
        IOV SDs by parameter (``{"CL": 0.15}``), or the covariance of the kappas over
        ``spec.iov_parameters`` (block IOV); kappas are drawn per (subject, occasion).
    level_sd : dict, optional
        SDs of the random effects above the subject, by column and parameter
        (``{"STUDY": {"CL": 0.3}}``); one effect is drawn per group.
    nu : float, optional
        Student-t degrees of freedom when the spec estimates them.
    seed : int
        Seeds the etas, kappas, group effects and the residuals.

    Returns
    -------
    EventData
        The same design with simulated DV; the etas drawn are in ``records.attrs["eta"]`` and
        the true individual predictions in ``records.attrs["ipred"]``.
    """
    built = build_model(spec, data)
    model, data = built.model, built.data
    rng = np.random.default_rng(seed)
    values = {spec.parameter(k).free_name: spec.parameter(k).to_free(v) for k, v in typical.items()}
    values.update(thetas or {})
    values.update({f"sigma_{k}": v for k, v in (sigma or {}).items()})
    values.update(_random_effects(spec, model, data.n_subjects, rng, omega, pi, level_sd))
    if nu is not None:
        values["nu"] = nu
    missing = [
        v.name
        for v in model.free_RVs
        if v.name not in values and not v.name.startswith(("z_", "omega_", "pi_sd_", "pi_chol_", "level_sd_"))
    ]
    if missing:
        raise ValueError(f"give values for {missing}")
    with pm.do(model, values) as m:
        ipred, dv = pm.draw([m["ipred"], m["DV"]], random_seed=rng)
    if spec.log_scale_error:
        dv = np.exp(dv)
    df = data.input_frame()
    df.loc[data.records["_IS_OBS"].to_numpy(), "DV"] = dv
    out = read_nonmem(df, source=f"simulated from {spec.name}")
    out.records.attrs["eta"] = values.get("eta")
    out.records.attrs["kappa"] = values.get("kappa")
    out.records.attrs["ipred"] = ipred
    return out


def _random_effects(spec: ModelSpec, model, n_subjects: int, rng, omega, pi, level_sd) -> dict:
    """Draw the etas (per subject), kappas (per occasion) and group effects (per level group)."""
    values = {}
    n_iiv = len(spec.iiv_parameters)
    if n_iiv:
        if omega is None:
            raise ValueError("the model has IIV: give omega (covariance of the etas)")
        values["eta"] = rng.multivariate_normal(np.zeros(n_iiv), np.asarray(omega), size=n_subjects)
    if spec.iov and isinstance(pi, np.ndarray):  # the covariance of the kappas (block IOV)
        r = len(spec.iov_parameters)
        if pi.shape != (r, r):
            raise ValueError(f"pi as a matrix must be the {r}x{r} covariance over {spec.iov_parameters}")
        values["kappa"] = rng.multivariate_normal(np.zeros(r), pi, size=len(model.coords["occasion"]))
    elif spec.iov:
        sds = np.array([(pi or {})[p] if p in (pi or {}) else np.nan for p in spec.iov_parameters])
        if np.isnan(sds).any():
            raise ValueError(f"the model has IOV on {spec.iov_parameters}: give pi (SD) for each")
        values["kappa"] = rng.standard_normal((len(model.coords["occasion"]), len(sds))) * sds
    for lvl in spec.levels:
        given = (level_sd or {}).get(lvl.column, {})
        if set(given) != set(lvl.parameters):
            raise ValueError(f"give level_sd[{lvl.column!r}] for {lvl.parameters}")
        sds = np.array([given[p] for p in lvl.parameters])
        values[f"gamma_{lvl.column}"] = rng.standard_normal((len(model.coords[lvl.column]), len(sds))) * sds
    return values
