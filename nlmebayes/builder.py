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

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from nlmebayes.data import _OPS, DataError, EventData
from nlmebayes.pk import get_model
from nlmebayes.spec import ModelSpec, Prior

__all__ = ["build_model", "select_observations"]


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

    if spec.error.kind == "exponential" and np.any(data.obs_dv <= 0):
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

        ipred = det("ipred", struct.concentration(data, params), dims="obs")

        err = spec.error
        sig = {k: _rv(f"sigma_{k}", err.prior(k)) for k in err.sigma_names}
        dv = data.obs_dv
        if err.kind == "exponential":
            # log-transform both sides: log(DV) ~ N(log(IPRED), sigma_exp)
            pm.Normal("DV", pt.log(pt.maximum(ipred, 1e-300)), sig["exp"], observed=np.log(dv),
                      dims="obs")
        elif err.kind == "additive":
            pm.Normal("DV", ipred, sig["add"], observed=dv, dims="obs")  # scalar SD
        else:
            f = pt.abs(ipred)
            sd = {"proportional": lambda: sig["prop"] * f,
                  "combined": lambda: pt.sqrt(sig["add"] ** 2 + (sig["prop"] * f) ** 2),
                  "combined_sd": lambda: sig["add"] + sig["prop"] * f}[err.kind]()
            # A zero prediction (before the first dose) with proportional error has no spread:
            # floor it so the density stays finite.
            pm.Normal("DV", ipred, pt.maximum(sd, 1e-8), observed=dv, dims="obs")
    model.nlme_data = data  # the data the graph was built for (after observation selection)
    return model


def _id_label(x):
    return int(x) if isinstance(x, float) and float(x).is_integer() else x
