"""Graph builder: a :class:`~nlmebayes.spec.ModelSpec` plus :class:`~nlmebayes.data.EventData`
becomes a PyMC model.

Variable names (the report and the results rely on them):

================  ==============================  =============================================
name              dims                            meaning
================  ==============================  =============================================
``log_P_pop``     ()                              free: log typical value of parameter P
``P_pop``         ()                              typical value on the natural scale
``theta_P_COV``   () or (level)                   covariate effect
``omega_sd``      (iiv)                           SD of each eta (sqrt of Omega's diagonal)
``omega_corr_<k>`` (iiv_k, iiv_k_)                   correlations (block Omega only)
``z_<k>``         (subject, iiv_<k>)              free: standard-normal etas of block k
``eta``           (subject, iiv)                  random effects (non-centred: omega x z)
``P``             (subject)                       individual parameter P_i
``ipred``         (obs)                           individual prediction (concentration)
``sigma_add``...  ()                              residual SDs
``DV``            (obs)                           the observed data (likelihood)
================  ==============================  =============================================
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytensor.tensor as pt

from nlmebayes.data import _OPS, DataError, EventData, _id_label
from nlmebayes.pk import get_model
from nlmebayes.spec import ModelSpec, Prior

__all__ = ["build_model", "compile_settings", "select_observations"]


@contextmanager
def compile_settings():
    """PyTensor settings under which nlmebayes compiles the graphs it builds (sampler density,
    derived quantities, OFV, MAP): numba fast-math off.

    With fast-math, a freshly compiled density and the same one loaded from PyTensor's disk
    cache differ in the last bit, and the same seed gave different draws on a model's first fit
    and on later ones. Without it they are bit-identical, at no measurable cost (Theoph, 2 x 2000
    iterations: analytic 7.45 vs 7.54 s, ODE 15.48 vs 15.69 s).
    """
    with pytensor.config.change_flags(numba__fastmath=False):
        yield


def _rv(name: str, prior: Prior, **kwargs):
    return getattr(pm, prior.dist)(name, **prior.args, **kwargs)


def select_observations(spec: ModelSpec, data: EventData) -> EventData:
    """The observations the spec describes: ``spec.observations`` may hold ``dvid`` (keep one
    observation type) and ``ignore`` (conditions such as ``"DV == 0"``, NONMEM's IGNORE)."""
    dvid = spec.observations.get("dvid")
    if dvid is not None:
        data = data.select_dvid(dvid)
    for cond in spec.observations.get("ignore", []):
        data = data.ignore(cond)
    blq = spec.observations.get("blq", "M3")
    if blq not in ("M3", "M1"):
        raise ValueError(f"observations.blq must be 'M3' (censored likelihood) or 'M1' (discard), "
                         f"got {blq!r}")
    if blq == "M1" and data.obs_cens is not None and np.any(data.obs_cens != 0):
        data = data.drop_censored()
    return data


def _effect(cov, values, theta):
    """Multiplicative covariate effect on a typical value, per subject."""
    if cov.kind == "power":
        return (values / cov.reference) ** theta
    if cov.kind == "exponential":
        return pt.exp(theta * (values - cov.reference))
    if cov.kind == "linear":
        return 1.0 + theta * (values - cov.reference)
    if cov.kind == "indicator":
        _, op, val = cov.parsed_condition()
        flag = _OPS[op](values, val).astype(float)
        return 1.0 + theta * flag
    raise AssertionError(cov.kind)


def build_model(spec: ModelSpec, data: EventData, *, deterministics: bool = True) -> pm.Model:
    """Build the PyMC model of ``spec`` for ``data``.

    The PK is one vectorised graph over all observations; etas are non-centred
    (``eta = omega * z`` or ``L z`` for a block); the likelihood ``DV`` is stored per observation.
    With ``deterministics=False`` the same density is built without the named deterministics
    (typical values, etas, individual parameters, IPRED): the sampler then neither compiles nor
    evaluates them per draw, and :func:`~nlmebayes.sampling.fit` computes them afterwards for all
    draws at once.
    """

    def det(name, var, dims=None):
        return pm.Deterministic(name, var, dims=dims) if deterministics else var

    struct = get_model(spec.structural)
    data = select_observations(spec, data)
    struct.check(data)
    names = spec.parameter_names
    try:
        struct.check_parameters(names)
    except ValueError as e:
        raise ValueError(f"model {spec.name}: {e}") from None

    eta_names = spec.iiv_parameters
    coords = {"subject": [str(_id_label(i)) for i in data.ids], "obs": np.arange(data.n_obs),
              "iiv": eta_names}
    for k, block in enumerate(spec.iiv):
        coords[f"iiv_{k}"] = block.parameters
    cat_levels = {}
    cov_table = data.subject_covariates(sorted({c.covariate for c in spec.covariates}))
    for c in spec.covariates:
        if c.kind == "categorical":
            levels = sorted(cov_table[c.covariate].unique(), key=str)
            ref = c.reference if c.reference in levels else levels[0]
            cat_levels[c.name] = (ref, [lv for lv in levels if lv != ref])
            coords[f"{c.name}_level"] = [str(lv) for lv in cat_levels[c.name][1]]
        elif cov_table[c.covariate].dtype == object:
            raise DataError(f"covariate {c.covariate} is not numeric; use kind='categorical' or an "
                            f"indicator condition", source=data.source, column=c.covariate)

    if spec.log_scale_error and np.any(data.obs_dv <= 0):
        j = int(np.flatnonzero(data.obs_dv <= 0)[0])
        raise DataError(f"exponential (log) residual error needs DV > 0, got {data.obs_dv[j]:g}",
                        source=data.source, row=int(data.obs_row[j]), column="DV")

    with pm.Model(coords=coords, name="") as model:
        tv = {}
        for p in spec.parameters:
            if p.fixed:
                tv[p.name] = pt.as_tensor_variable(p.initial)
                continue
            # The default prior is centred on log(initial), so sampling starts there.
            log_tv = _rv(f"log_{p.name}_pop", p.log_prior)
            tv[p.name] = det(f"{p.name}_pop", pt.exp(log_tv))

        # Typical value per subject: TV * product of covariate effects.
        tv_i = {n: tv[n] * pt.ones(data.n_subjects) for n in names}
        for c in spec.covariates:
            values = cov_table[c.covariate].to_numpy()
            if c.kind == "categorical":
                ref, others = cat_levels[c.name]
                theta = (pt.as_tensor_variable(np.full(len(others), c.theta)) if c.fixed else
                         _rv(c.name, c.effect_prior, dims=f"{c.name}_level"))
                lvl = np.array([others.index(v) if v in others else -1 for v in values])
                eff = pt.exp(pt.switch(lvl >= 0, pt.concatenate([theta, [0.0]])[lvl], 0.0))
            else:
                theta = (pt.as_tensor_variable(c.theta) if c.fixed else
                         _rv(c.name, c.effect_prior))
                eff = _effect(c, values.astype(float), theta)
            tv_i[c.parameter] = tv_i[c.parameter] * eff

        # Levels above the subject (study, centre): TV_i *= exp(gamma_g(i)), non-centred.
        for k, lvl in enumerate(spec.levels):
            groups = data.subject_covariates([lvl.column])[lvl.column].to_numpy()
            labels = list(pd.unique(groups))
            g_idx = np.array([labels.index(g) for g in groups])
            model.add_coord(f"{lvl.column}", [str(_id_label(g)) for g in labels])
            model.add_coord(f"level_{k}", lvl.parameters)
            zg = pm.Normal(f"z_level_{k}", 0.0, 1.0, dims=(lvl.column, f"level_{k}"))
            sd = pt.stack([_rv(f"level_sd_{lvl.column}_{p}", pr)
                           for p, pr in zip(lvl.parameters, lvl.priors(), strict=True)])
            gamma = det(f"gamma_{lvl.column}", zg * sd, dims=(lvl.column, f"level_{k}"))
            for j, p in enumerate(lvl.parameters):
                tv_i[p] = tv_i[p] * pt.exp(gamma[g_idx, j])

        # Random effects, non-centred.
        etas, sds = [], []
        for k, block in enumerate(spec.iiv):
            z = pm.Normal(f"z_{k}", 0.0, 1.0, dims=("subject", f"iiv_{k}"))
            priors = block.priors()
            if block.block:
                sd_dist = getattr(pm, priors[0].dist).dist(**priors[0].args, shape=len(block.parameters))
                chol, corr, sd = pm.LKJCholeskyCov(f"omega_chol_{k}", n=len(block.parameters),
                                                   eta=block.lkj_eta, sd_dist=sd_dist,
                                                   compute_corr=True, store_in_trace=deterministics)
                etas.append(z @ chol.T)
                sds.append(sd)
                model.add_coord(f"iiv_{k}_", block.parameters)
                det(f"omega_corr_{k}", corr, dims=(f"iiv_{k}", f"iiv_{k}_"))
            else:
                sd = pt.stack([_rv(f"omega_sd_{k}_{p}", pr) for p, pr in
                               zip(block.parameters, priors, strict=True)])
                etas.append(z * sd)
                sds.append(sd)
        params = dict(tv_i)
        if etas:
            eta = det("eta", pt.concatenate(etas, axis=1), dims=("subject", "iiv"))
            det("omega_sd", pt.concatenate(sds), dims="iiv")
            j = 0
            for block in spec.iiv:
                for p in block.parameters:
                    params[p] = (tv_i[p] * pt.exp(eta[:, j]) if block.kind == "exponential"
                                 else tv_i[p] + eta[:, j])
                    j += 1
        for n in names:
            params[n] = det(n, params[n], dims="subject")

        index = None
        if spec.iov:
            # One parameter row per (subject, occasion): P_ij = P_i * exp(kappa_ij). Each dose
            # uses its own occasion's parameters (exact when earlier occasions have washed out).
            occ_subject, dose_row = _occasions(spec, data)
            model.add_coord("occasion", [f"{_id_label(data.ids[s_])}:{_id_label(o)}"
                                         for s_, o in occ_subject])
            model.add_coord("iov", spec.iov_parameters)
            row_subject = np.array([s_ for s_, _ in occ_subject])
            z = pm.Normal("z_iov", 0.0, 1.0, dims=("occasion", "iov"))
            pi_sd = pt.stack([_rv(f"pi_sd_{p}", pr) for b in spec.iov
                              for p, pr in zip(b.parameters, b.priors(), strict=True)])
            det("pi_sd", pi_sd, dims="iov")
            kappa = det("kappa", z * pi_sd, dims=("occasion", "iov"))
            params = {n: v[row_subject] for n, v in params.items()}
            for j, p in enumerate(spec.iov_parameters):
                params[p] = params[p] * pt.exp(kappa[:, j])
            index = dose_row
        if spec.flip_flop_guard:
            k_el = params["K"] if "K" in params else params["CL"] / params["V"]
            params["KA"] = k_el + params["KA"]
            det("KA_individual", params["KA"], dims="occasion" if spec.iov else "subject")

        ipred = det("ipred", struct.concentration(data, params, index=index), dims="obs")

        sig = {name: _rv(f"sigma_{name}", e.prior(kind)) for name, _, kind, e in spec.sigma_terms}
        nu = None
        dv, limit = data.obs_dv, data.obs_limit
        if isinstance(spec.error, dict):
            # one output per DVID, each with its own error model (normal, not log-scale)
            outputs = data.obs_output
            sd = pt.zeros_like(ipred)
            for out, e in spec.errors.items():
                sd_k = _residual_sd(e.kind, {k: sig[f"{out}_{k}"] for k in e.sigma_names}, ipred)
                sd = pt.switch(outputs == out, sd_k, sd)
            mu, sd = ipred, pt.maximum(sd, 1e-8)
        else:
            err = spec.error
            if err.distribution == "student_t":
                nu = pt.as_tensor_variable(err.nu) if err.nu is not None else _rv("nu", err.prior("nu"))
            if err.kind == "exponential":
                # log-transform both sides: log(DV) ~ N(log(IPRED), sigma_exp)
                mu, sd = pt.log(pt.maximum(ipred, 1e-300)), sig["exp"]
                with np.errstate(divide="ignore"):
                    dv, limit = np.log(dv), np.log(limit)
            elif err.kind == "additive":
                mu, sd = ipred, sig["add"]  # scalar SD
            else:
                # A zero prediction (before the first dose) with proportional error has no
                # spread: floor it so the density stays finite.
                mu, sd = ipred, pt.maximum(_residual_sd(err.kind, sig, ipred), 1e-8)
        _likelihood(mu, sd, nu, dv, data.obs_cens, limit)
    model.nlme_data = data  # the data the graph was built for (after observation selection)
    return model


def _residual_sd(kind: str, sig: dict, ipred):
    """Residual SD of an additive/proportional/combined error (``sig`` by kind: add, prop)."""
    f = pt.abs(ipred)
    return {"additive": lambda: sig["add"] * pt.ones_like(f),
            "proportional": lambda: sig["prop"] * f,
            "combined": lambda: pt.sqrt(sig["add"] ** 2 + (sig["prop"] * f) ** 2),
            "combined_sd": lambda: sig["add"] + sig["prop"] * f}[kind]()


def _residual_dist(mu, sd, nu):
    return pm.Normal.dist(mu, sd) if nu is None else pm.StudentT.dist(nu=nu, mu=mu, sigma=sd)


def _likelihood(mu, sd, nu, dv, cens, limit):
    """``DV`` per observation: Normal or Student-t, and for censored observations (M3) the
    probability of the censoring interval: ``P(y < DV)`` for CENS = 1 (BLQ, DV = LLOQ),
    ``P(y > DV)`` for CENS = -1, ``P(LIMIT < y < DV)`` (or ``DV < y < LIMIT``) when LIMIT is given.
    """
    if cens is None or not np.any(cens != 0):
        if nu is None:
            return pm.Normal("DV", mu, sd, observed=dv, dims="obs")
        return pm.StudentT("DV", nu=nu, mu=mu, sigma=sd, observed=dv, dims="obs")
    cens = np.asarray(cens)
    has_lim = ~np.isnan(limit)
    # The other end of each interval; -inf/+inf where there is none.
    other = np.where(has_lim, limit, np.where(cens == 1, -np.inf, np.inf))
    lo_end = np.where(cens == 1, other, dv)  # for CENS -1 the interval starts at DV
    hi_end = np.where(cens == 1, dv, other)
    safe_lo = np.where(np.isfinite(lo_end), lo_end, 0.0)
    safe_hi = np.where(np.isfinite(hi_end), hi_end, 0.0)

    def logp(value, mu, sd, *nu_):
        base = _residual_dist(mu, sd, nu_[0] if nu_ else None)
        dens = pm.logp(base, value)
        lcdf_hi = pt.switch(np.isfinite(hi_end), pm.logcdf(base, safe_hi), 0.0)
        lcdf_lo = pt.switch(np.isfinite(lo_end), pm.logcdf(base, safe_lo), -np.inf)
        interval = pm.math.logdiffexp(lcdf_hi, lcdf_lo)
        return pt.switch(cens == 0, dens, interval)

    def random(mu, sd, *nu_, rng=None, size=None):
        # Replicates before censoring: what the assay would have measured.
        if nu_:
            return mu + sd * rng.standard_t(nu_[0], size=size)
        return rng.normal(mu, sd, size=size)

    args = (mu, sd) if nu is None else (mu, sd, nu)
    return pm.CustomDist("DV", *args, logp=logp, random=random, observed=dv, dims="obs")


def _occasions(spec: ModelSpec, data: EventData):
    """(subject, occasion) pairs in data order and each dose's row among them."""
    col = spec.iov[0].occasion
    if any(b.occasion != col for b in spec.iov):
        raise ValueError("all IOV blocks must use the same occasion column")
    if col == "OCC":
        d_occ, o_occ = data.dose_occ, data.obs_occ
    else:
        d_occ = data.records.set_index("_ROW").loc[data.dose_row, col].to_numpy()
        o_occ = data.records.set_index("_ROW").loc[data.obs_row, col].to_numpy()
    pairs = list(dict.fromkeys(zip(np.r_[data.dose_subject, data.obs_subject].tolist(),
                                   np.r_[d_occ, o_occ].tolist(), strict=True)))
    pos = {p: i for i, p in enumerate(pairs)}
    dose_row = np.array([pos[(s_, o)] for s_, o in zip(data.dose_subject.tolist(), d_occ.tolist(),
                                                        strict=True)], dtype=int)
    return pairs, dose_row

