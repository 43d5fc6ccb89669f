"""Likelihoods of non-continuous outcomes (:class:`~nlmebayes.model.spec.Outcome`), row by row.

Binary and ordinal (logit or probit), Poisson and negative binomial counts, and time to event
(hazard and cumulative hazard). One ``DV`` holds every observation; in a joint model each output
(DVID) has its own family, Gaussian outputs keep their residual error. Each family is evaluated on
its own rows only, so no family sees another's values (a log of a negative linear predictor, a
category index of a concentration) and every gradient stays finite.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.distributions.dist_math import normal_lcdf

from nlmebayes.data import DataError, EventData
from nlmebayes.model.likelihood import censored_logp, censoring
from nlmebayes.model.priors import random_variable
from nlmebayes.model.spec import ModelSpec, Outcome, Prior

__all__ = ["outcome_likelihood", "check_outcome_data", "log_cdf"]


def log_cdf(link: str, x):
    """``log F(x)`` of the link's distribution: logistic (``-softplus(-x)``) or standard normal.

    Examples
    --------
    >>> import pytensor.tensor as pt
    >>> round(float(log_cdf("logit", pt.as_tensor_variable(0.0)).eval()), 6)
    -0.693147
    """
    if link == "logit":
        return -pt.softplus(-x)
    # log(erfc) to rounding where Phi(x) > 3e-7; PyMC's erfcx form (rel. error ~1e-8) in the far tail.
    # Each branch sees only its own range, so neither gradient is evaluated where it is not finite.
    body = pt.log(0.5 * pt.erfc(-pt.maximum(x, -5.0) / np.sqrt(2.0)))
    return pt.switch(x > -5.0, body, normal_lcdf(0.0, 1.0, pt.minimum(x, -5.0)))


def check_outcome_data(spec: ModelSpec, data: EventData) -> None:
    """A DataError naming the row of the first DV an outcome cannot take (not 0/1, not a count...)."""
    for out, o in spec.outcomes.items():
        rows = np.arange(data.n_obs) if out is None else np.flatnonzero(data.obs_output == out)
        dv = data.obs_dv[rows]
        if o.kind in ("binary", "tte"):
            bad, want = ~np.isin(dv, (0.0, 1.0)), "0 or 1"
        elif o.kind == "ordinal":
            bad, want = ~np.isin(dv, np.arange(o.categories)), f"a category 0..{o.categories - 1}"
        else:
            bad, want = (dv < 0) | (dv != np.round(dv)), "a count (0, 1, 2, ...)"
        if data.obs_cens is not None:
            bad |= data.obs_cens[rows] != 0
        if bad.any():
            j = rows[int(np.flatnonzero(bad)[0])]
            raise DataError(
                f"{o.kind} outcome{f' {out}' if out else ''}: DV must be {want} (and not censored), "
                f"got {data.obs_dv[j]:g}",
                source=data.source,
                row=int(data.obs_row[j]),
                column="DV",
            )


def _suffix(out) -> str:
    return "" if out is None else f"_{out}"


def _family_parameters(out, o: Outcome) -> list:
    """The outcome's own free parameters: ordinal cut points, negative binomial alpha."""
    if o.kind == "ordinal":
        cuts = np.asarray(o.cutpoints, dtype=float)
        return [
            pm.Normal(
                f"cutpoints{_suffix(out)}",
                mu=cuts,
                sigma=2.0,
                transform=pm.distributions.transforms.ordered,
                initval=cuts,
            )
        ]
    if o.kind == "negbin":
        return [random_variable(f"alpha{_suffix(out)}", Prior("HalfNormal", {"sigma": 2.0 * o.dispersion}))]
    return []


def _family_logp(o: Outcome, y, f, extra: list, cumhaz):
    """Log-likelihood of the rows of one outcome (``y`` observed, ``f`` the prediction)."""
    if o.kind == "binary":
        return y * log_cdf(o.link, f) + (1.0 - y) * log_cdf(o.link, -f)
    if o.kind == "ordinal":
        return _ordinal_logp(o, y, f, extra[0])
    if o.kind == "poisson":
        mu = pt.maximum(f, 1e-300)
        return y * pt.log(mu) - mu - pt.gammaln(y + 1.0)
    if o.kind == "negbin":
        return pm.logp(pm.NegativeBinomial.dist(mu=pt.maximum(f, 1e-300), alpha=extra[0]), y)
    # time to event: an event adds log h(t); both pay the interval's cumulative hazard
    return y * pt.log(pt.maximum(f, 1e-300)) - cumhaz


def _ordinal_logp(o: Outcome, y, f, cuts):
    """``log P(Y = k)`` under proportional odds; every branch evaluated at finite arguments."""
    K = o.categories
    k = pt.cast(y, "int64")
    first = log_cdf(o.link, cuts[0] - f)  # k = 0
    last = log_cdf(o.link, f - cuts[K - 2])  # k = K - 1 (the link's distribution is symmetric)
    hi = pt.clip(k, 1, K - 2)
    middle = pm.math.logdiffexp(log_cdf(o.link, cuts[hi] - f), log_cdf(o.link, cuts[hi - 1] - f))
    return pt.switch(pt.eq(k, 0), first, pt.switch(pt.eq(k, K - 1), last, middle))


def outcome_likelihood(spec: ModelSpec, data: EventData, ipred, gaussian_sd, cumhaz=None):
    """``DV`` of a model with outcomes: a CustomDist whose log-density is each row's family.

    Parameters
    ----------
    spec : ModelSpec
        Its ``error`` holds at least one :class:`~nlmebayes.model.spec.Outcome`.
    data : EventData
    ipred : TensorVariable
        The structural prediction per observation (linear predictor, mean count or hazard).
    gaussian_sd : TensorVariable or None
        Residual SD per observation for the Gaussian outputs of a joint model.
    cumhaz : TensorVariable, optional
        Each time-to-event row's ``H(t) - H(t_prev)``.
    """
    check_outcome_data(spec, data)
    families = []  # (rows, outcome or None for Gaussian, its parameters)
    for out, e in spec.errors.items():
        rows = np.arange(data.n_obs) if out is None else np.flatnonzero(data.obs_output == out)
        families.append(
            (
                rows,
                e if isinstance(e, Outcome) else None,
                _family_parameters(out, e) if isinstance(e, Outcome) else [],
            )
        )
    # the Gaussian outputs' censored rows (BLQ concentrations beside a response) keep M3/M4
    _, cens, lo_end, hi_end, m4 = censoring(spec, data)
    params = [ipred, gaussian_sd if gaussian_sd is not None else pt.zeros(data.n_obs)]
    params += [cumhaz if cumhaz is not None else pt.zeros(data.n_obs)]
    params += [p for _, _, ps in families for p in ps]

    def logp(value, f, sd, dh, *extra):
        out = pt.zeros_like(f)
        j = 0
        for rows, o, ps in families:
            own = list(extra[j : j + len(ps)])
            j += len(ps)
            if o is None:
                args = (cens[rows], lo_end[rows], hi_end[rows], m4[rows])
                lp = censored_logp(value[rows], f[rows], sd[rows], None, *args)
            else:
                lp = _family_logp(o, value[rows], f[rows], own, dh[rows])
            out = pt.set_subtensor(out[rows], lp)
        return out

    names = [p.name for _, _, ps in families for p in ps]

    def random(f, sd, dh, *extra, rng=None, size=None):
        return draw_observations(spec, data, f, sd, dict(zip(names, extra, strict=True)), rng)

    # one vector-valued draw over all observations: cut points (k) and alpha () do not broadcast with (obs)
    extras = [f"(k{i})" if p.ndim else "()" for i, p in enumerate(params[3:])]
    signature = ",".join(["(obs)"] * 3 + extras) + "->(obs)"
    return pm.CustomDist(
        "DV", *params, logp=logp, random=random, signature=signature, observed=data.obs_dv, dims="obs"
    )


def draw_observations(spec: ModelSpec, data: EventData, f, sd, parameters: dict, rng) -> np.ndarray:
    """One replicate of each observation of a model with outcomes (numpy).

    ``f`` and ``sd`` are the prediction and the Gaussian outputs' residual SD, shaped (..., n_obs);
    ``parameters`` holds the outcomes' own (``cutpoints``, shaped (..., K-1), and ``alpha``,
    (...), with the output's suffix in a joint model). Binary and ordinal outcomes draw a category,
    counts a count, Gaussian outputs ``f + sd e`` (before censoring). Event times are drawn by
    :func:`nlmebayes.diagnostics.km_vpc.km_vpc`, not here.

    Examples
    --------
    >>> from nlmebayes import ClosedForm, ModelSpec, Outcome, read_nonmem
    >>> import pandas as pd
    >>> spec = ModelSpec("n", ClosedForm("f", "BASE"), {"BASE": 3.0}, error=Outcome("poisson"))
    >>> data = read_nonmem(pd.DataFrame({"ID": [1, 1], "TIME": [1.0, 2.0], "DV": [2.0, 4.0]}))
    >>> draw_observations(spec, data, np.full(2, 3.0), np.zeros(2), {}, np.random.default_rng(1))
    array([4., 4.])
    """
    f, sd = np.asarray(f, dtype=float), np.asarray(sd, dtype=float)
    y = np.empty(f.shape)
    for out, e in spec.errors.items():
        rows = np.arange(data.n_obs) if out is None else np.flatnonzero(data.obs_output == out)
        fr = f[..., rows]
        if not isinstance(e, Outcome):
            y[..., rows] = fr + sd[..., rows] * rng.standard_normal(fr.shape)
        elif e.kind in ("binary", "ordinal"):
            cdf = _link_cdf(e.link)
            if e.kind == "binary":
                y[..., rows] = rng.random(fr.shape) < cdf(fr)
            else:  # P(Y <= k) = F(c_k - f): the category is the number of cut points below u
                cuts = np.asarray(parameters[f"cutpoints{_suffix(out)}"], dtype=float)[..., None, :]
                y[..., rows] = (rng.random(fr.shape)[..., None] > cdf(cuts - fr[..., None])).sum(axis=-1)
        elif e.kind == "poisson":
            y[..., rows] = rng.poisson(np.maximum(fr, 0.0))
        elif e.kind == "negbin":
            alpha = np.asarray(parameters[f"alpha{_suffix(out)}"], dtype=float)[..., None]
            y[..., rows] = rng.negative_binomial(alpha, alpha / (alpha + np.maximum(fr, 1e-300)))
        else:
            raise NotImplementedError(
                f"model {spec.name}: event times are not drawn per row; the Kaplan-Meier VPC "
                f"(diagnostics.km_vpc) simulates them from the hazard"
            )
    return y


def _link_cdf(link: str):
    from scipy import special

    return special.expit if link == "logit" else special.ndtr
