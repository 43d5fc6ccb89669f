"""Informative priors from a previous analysis (the role of NONMEM's ``$PRIOR NWPRI``).

Every estimated population quantity gets a prior centred on the previous estimate with the
previous uncertainty, on the scale the sampler uses:

- typical values: ``Normal`` on log(TV) (the spec's ``log_prior``);
- covariate effects: ``Normal`` (indicators ``TruncatedNormal`` with lower -1, so 1 + theta > 0);
- omega and sigma SDs: ``LogNormal`` (normal on the log SD); a block Omega keeps its LKJ prior on
  the correlations.

From a :class:`~nlmebayes.results.FitResult` the centre and spread are the mean and SD of the
posterior draws on that scale; from NONMEM's ``.ext`` (:class:`~nlmebayes.io.NonmemEstimates`) the
estimate and its standard error, carried to the log scale by the delta method
(SD(log x) = SE(x)/x; for a variance omega^2, SD(log omega) = SE(omega^2) / (2 omega^2)).

``weight`` scales the prior precision, NWPRI's degrees-of-freedom idea in one number: 1 takes the
previous analysis at face value, 0.5 counts it as half as many subjects (SDs times sqrt(2)).
The spec stays free of PyMC: the source is read through its posterior arrays or its estimates.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from nlmebayes.model.spec import ModelSpec, Prior

__all__ = ["informative_priors"]


def informative_priors(
    spec: ModelSpec, source, *, weight: float = 1.0, nonmem_names: dict | None = None
) -> ModelSpec:
    """``spec`` with priors centred on a previous analysis of the same model.

    Parameters
    ----------
    spec : ModelSpec
        The model to fit to the new data (its parameters, covariates and IIV must be in ``source``).
    source : FitResult or NonmemEstimates
        A previous fit (posterior draws) or NONMEM's ``.ext`` estimates with standard errors.
    weight : float
        Multiplies the prior precision (> 0); 1 by default.
    nonmem_names : dict, optional
        With NONMEM estimates: our name -> NONMEM label (``ConvertedModel.nonmem_names``).

    Returns
    -------
    ModelSpec

    Examples
    --------
    >>> old = fit(spec, data_a)  # doctest: +SKIP
    >>> new = fit(informative_priors(spec, old), data_b)  # doctest: +SKIP
    >>> prior_data_conflict(new)  # doctest: +SKIP
    """
    if not weight > 0:
        raise ValueError(f"weight must be > 0, got {weight}")
    moments = _moments_from_fit if hasattr(source, "idata") else _moments_from_nonmem(nonmem_names)
    get = _checked(moments, source, spec)
    scale = 1.0 / math.sqrt(weight)
    params = [
        p if p.fixed else replace(p, prior=_normal(*get(_tv_kind(p), p.name), scale)) for p in spec.parameters
    ]
    covs = [_covariate_prior(c, get, scale) for c in spec.covariates]
    iiv = [replace(b, sd_prior=[_lognormal(*get("omega", p), scale) for p in b.parameters]) for b in spec.iiv]
    priors = {k: _lognormal(*get("sigma", k), scale) for k in spec.sigma_names}
    error = replace(spec.error, priors={**spec.error.priors, **priors})
    return replace(spec, parameters=params, covariates=covs, iiv=iiv, error=error)


def _checked(moments, source, spec):
    def get(kind: str, name: str) -> tuple[float, float]:
        try:
            mu, sd = moments(source, spec, kind, name)
        except KeyError:
            raise ValueError(f"the previous analysis has no estimate of {kind} {name}") from None
        if not (np.isfinite(mu) and np.isfinite(sd) and sd > 0):
            raise ValueError(f"the previous analysis gives {kind} {name} no finite uncertainty ({mu}, {sd})")
        return float(mu), float(sd)

    return get


def _covariate_prior(c, get, scale: float):
    if c.fixed:
        return c
    if c.kind == "categorical":
        raise ValueError(f"{c.name}: informative priors for categorical effects are not supported")
    mu, sd = get("theta", c.name)
    if c.kind == "indicator":
        return replace(c, prior=Prior("TruncatedNormal", {"mu": mu, "sigma": sd * scale, "lower": -1.0}))
    return replace(c, prior=_normal(mu, sd, scale))


def _normal(mu: float, sd: float, scale: float) -> Prior:
    return Prior("Normal", {"mu": mu, "sigma": sd * scale})


def _lognormal(mu: float, sd: float, scale: float) -> Prior:
    return Prior("LogNormal", {"mu": mu, "sigma": sd * scale})


def draws_on_prior_scale(post, kind: str, name: str) -> np.ndarray:
    """Posterior draws of a quantity on the scale its prior is written on (flattened).

    ``kind``: ``"log"`` (log typical value of parameter ``name``), ``"linear"`` (the typical value
    of a linear-scale parameter), ``"theta"`` (covariate effect
    ``name``), ``"omega"`` (log IIV SD of parameter ``name``) or ``"sigma"`` (log residual SD
    ``sigma_<name>``). :func:`informative_priors` and the prior-data conflict check both read
    the draws through this.
    """
    if kind == "log":
        x = post[f"log_{name}_pop"].values
    elif kind == "linear":
        x = post[f"{name}_pop"].values
    elif kind == "theta":
        x = post[name].values
    elif kind == "omega":
        x = np.log(post["omega_sd"].sel(iiv=name).values)
    elif kind == "sigma":
        x = np.log(post[f"sigma_{name}"].values)
    else:
        raise ValueError(f"kind must be 'log', 'linear', 'theta', 'omega' or 'sigma', got {kind!r}")
    return np.ravel(x)


def _tv_kind(p) -> str:
    """The scale a typical value's prior is written on: "log" or "linear" (see ``Parameter.scale``)."""
    return "log" if p.scale == "log" else "linear"


def _moments_from_fit(result, spec, kind: str, name: str) -> tuple[float, float]:
    """Mean and SD of the draws on the prior's scale (log for TVs and SDs)."""
    x = draws_on_prior_scale(result.idata["posterior"], kind, name)
    return float(np.mean(x)), float(np.std(x, ddof=1))


def _moments_from_nonmem(names: dict | None):
    if names is None:
        raise ValueError("NONMEM estimates need nonmem_names (our name -> THETA/OMEGA/SIGMA label)")

    def moments(est, spec, kind: str, name: str) -> tuple[float, float]:
        if not est.se:
            raise ValueError("the .ext file has no standard errors ($COVARIANCE): they set the prior SDs")
        if kind in ("log", "linear", "theta"):
            label = names[name]
            x, se = est.estimates[label], est.se[label]
            return (math.log(x), se / x) if kind == "log" else (x, se)
        key = f"omega2({name})" if kind == "omega" else f"sigma2_{name}"
        if key in names:  # a variance: log SD = log(var) / 2
            var, se = est.estimates[names[key]], est.se[names[key]]
            return 0.5 * math.log(var), se / (2 * var)
        label = names[f"sigma_{name}"]  # a THETA that is the SD itself
        x, se = abs(est.estimates[label]), est.se[label]
        return math.log(x), se / x

    return moments
