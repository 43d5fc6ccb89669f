r"""Graph builder.

A :class:`~nlmebayes.model.spec.ModelSpec` plus :class:`~nlmebayes.data.EventData` becomes a PyMC model, one
function per model part.

Variable names (the report and the results rely on them):

=================== ============================== =============================================
name                dims                           meaning
=================== ============================== =============================================
``log_P_pop``       ()                             free: log typical value of parameter P
``P_pop``           ()                             typical value on the natural scale
``theta_P_COV``     () or (level)                  covariate effect
``hs_z`` ...        (candidate)                    free: horseshoe of candidate effects
                                                   (``hs_z``, ``hs_lambda``, ``hs_tau``, ``hs_c2``;
                                                   ``beta_candidate`` standardised effects)
``omega_sd``        (iiv)                          SD of each eta (sqrt of Omega's diagonal)
``omega_corr_<k>``  (iiv_k, iiv_k\\_)               correlations (block Omega only)
``z_<k>``           (subject, iiv_<k>)             free: standard-normal etas of block k
``phi_<k>``         (subject, iiv_<k>)             free instead of ``z_<k>`` where centred: log P_i
                                                   (log-normal) or P_i (additive)
``psi_<k>``         (subject, iiv_<k>)             free instead of ``z_<k>`` where partially
                                                   centred (see below)
``eta``             (subject, iiv)                 random effects (non-centred: omega x z)
``P``               (subject)                      individual parameter P_i (with time-varying
                                                   covariates: at their reference values)
``P_period``        (period)                       P in each period, where parameters change
                                                   within a subject (ODE models with IOV or
                                                   time-varying covariates)
``ipred``           (obs)                          individual prediction (concentration)
``sigma_add``...    ()                             residual SDs
``DV``              (obs)                          the observed data (likelihood)
=================== ============================== =============================================

The order in which the parts create their random variables fixes the layout of the sampler's
parameter vector, and so the draws for a given seed: typical values, covariate effects, levels,
IIV, IOV, then the residual error.

Centred etas (``centered=`` of :func:`build_model`) change only what the sampler sees: the free
variable of a centred parameter is its transformed individual value ``phi`` (Monolix's notation)
with a Normal(log TV_i, omega) prior. The builder also returns the expression of the
standard-normal ``z`` of every such block, so the draws are stored as ``z`` and every later
computation uses the non-centred graph.

Partially centred etas (``partial=``) give each subject i a weight w_i in [0, 1] between the two
(Papaspiliopoulos, Roberts & Sköld 2003; Gorinova, Moore & Hoffman 2020): the free variable is
``psi_i ~ Normal(w_i mu_i, omega**w_i)`` and ``eta_i = omega**(1 - w_i) (psi_i - w_i mu_i)``,
with ``mu_i`` the centred prior mean (log TV_i). w = 1 is the centred ``phi``, w = 0 the
non-centred ``z``; in between, a subject whose data say as much as Omega does is neither pinned
to omega (as ``z`` is) nor to the typical value (as ``phi`` is). For a normal model with known
variances, ``w_i = 1 - (conditional SD / omega)**2`` makes ``psi_i`` and ``mu`` independent a
posteriori.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.tensor.basic import Alloc
from pytensor.tensor.elemwise import DimShuffle
from pytensor.tensor.variable import TensorConstant

from nlmebayes.data import OPS, DataError, EventData, id_label, parse_condition
from nlmebayes.data.periods import ParameterRows, parameter_rows
from nlmebayes.model import compile as _compile  # noqa: F401  (links PyTensor to scipy's BLAS first)
from nlmebayes.model.likelihood import add_likelihood
from nlmebayes.model.priors import random_variable
from nlmebayes.model.select import select_observations
from nlmebayes.model.spec import ModelSpec
from nlmebayes.pk import get_model

__all__ = ["BuiltModel", "build_model", "covariate_effect", "log_of", "occasions"]


@dataclass
class BuiltModel:
    """A PyMC model with the data it was built for and the index maps between them.

    Attributes
    ----------
    model : pymc.Model
        The graph: population parameters, random effects, ``ipred`` and the likelihood ``DV``.
    data : EventData
        The data the graph was built for (after the spec's observation selection).
    subjects : list of str
        Subject labels, in the order of the ``subject`` dimension.
    occasions : list of (int, object)
        (subject index, occasion) of each row of the ``occasion`` dimension (IOV models only).
    dose_index : int array or None
        Row of the individual-parameter arrays used by each dose: its occasion with IOV,
        else None (the dose's subject).
    categorical_levels : dict
        Categorical covariate effect name -> (reference level, other levels in order).
    centered : list of str
        IIV parameters sampled centred.
    partial : dict
        IIV parameter -> weights (subject,) of the partially centred ones.
    z_expressions : dict
        ``z_<k>`` -> its expression in the free variables, for blocks with (partially) centred
        parameters.
    phi_means : dict
        ``phi_<k>`` and ``psi_<k>`` -> its prior mean as an expression (``phi``: the log typical
        value per subject; ``psi``: the weights times that).
    starts : dict
        Starting values the builder knows best for some free variables (the horseshoe of
        candidate effects starts with every effect at 0 and its scales at their prior's).
    """

    model: pm.Model
    data: EventData
    subjects: list[str]
    occasions: list = field(default_factory=list)
    dose_index: np.ndarray | None = None
    categorical_levels: dict = field(default_factory=dict)
    centered: list = field(default_factory=list)
    partial: dict = field(default_factory=dict)
    z_expressions: dict = field(default_factory=dict)
    phi_means: dict = field(default_factory=dict)
    starts: dict = field(default_factory=dict)


def build_model(
    spec: ModelSpec, data: EventData, *, deterministics: bool = True, centered=None, partial=None
) -> BuiltModel:
    """Build the PyMC model of ``spec`` for ``data``.

    The PK is one vectorised graph over all observations; etas are non-centred
    (``eta = omega * z`` or ``L z`` for a block); the likelihood ``DV`` is stored per observation.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    data : EventData
        The data as read; the spec's observation selection is applied here.
    deterministics : bool
        With False the same density is built without the named deterministics (typical values,
        etas, individual parameters, IPRED): the sampler then neither compiles nor evaluates
        them per draw, and :func:`~nlmebayes.inference.fit` computes them afterwards for all
        draws at once.
    centered : collection of str, optional
        IIV parameters to sample centred (see the module docstring); default none: the
        non-centred graph, which every computation after sampling uses. :func:`~nlmebayes.fit`
        passes the spec's choices (``parameterisation``), ``"auto"`` resolved by a pilot.
    partial : dict, optional
        IIV parameter -> weights in [0, 1], one per subject: etas sampled partially centred (see
        the module docstring). Not for a block Omega, nor for a parameter in ``centered``.

    Returns
    -------
    BuiltModel

    Examples
    --------
    >>> from nlmebayes import ModelSpec, IIV, datasets
    >>> spec = ModelSpec("theo", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "V": 31.5},
    ...                  iiv=IIV(["CL"], sd=[0.3]))
    >>> built = build_model(spec, datasets.theophylline())
    >>> [v.name for v in built.model.free_RVs]
    ['log_KA_pop', 'log_CL_pop', 'log_V_pop', 'z_0', 'omega_sd_0_CL', 'sigma_add']
    """
    struct = get_model(spec.structural)
    data = select_observations(spec, data)
    struct.check(data)
    inputs = structural_inputs(spec, struct)
    try:
        struct.check_parameters(inputs)
    except ValueError as e:
        hint = "; write them in individual" if spec.individual else ""
        raise ValueError(f"model {spec.name}: {e}{hint}") from None
    _check_log_scale_data(spec, data)
    varying = _time_varying(spec, data)
    cov_table = data.subject_covariates(sorted({c.covariate for c in spec.covariates} - set(varying)))
    rows = _parameter_rows(spec, data, struct, varying)
    coords, cat_levels = _coords(spec, data, cov_table)

    def det(name, var, dims=None):
        return pm.Deterministic(name, var, dims=dims) if deterministics else var

    # which (subject, occasion) row of the parameters each dose uses: data only, known up front
    occ_subject, dose_index = occasions(spec, data) if spec.iov else ([], None)
    centered = centered or []
    unknown = set(centered) - set(spec.iiv_parameters)
    if unknown:
        raise ValueError(f"centered parameters {sorted(unknown)} have no IIV")
    partial = _check_partial(spec, data, partial or {}, centered)
    z_expressions: dict = {}
    phi_means: dict = {}
    starts: dict = {}
    with pm.Model(coords=coords, name="") as model:
        tv = _typical_values(spec, det)
        tv_i = _covariate_effects(spec, data, cov_table, cat_levels, tv, varying)
        if spec.candidates is not None:
            starts.update(_candidate_effects(spec, data, model, tv_i, det))
        _levels(spec, data, model, tv_i, det)
        params = _inter_individual(
            spec, model, tv_i, det, deterministics, (set(centered), partial), z_expressions, phi_means
        )
        if spec.iov:
            params = _inter_occasion(spec, data, model, params, det, occ_subject, deterministics)
        dims = "occasion" if spec.iov else "subject"
        owner = np.array([s_ for s_, _ in occ_subject]) if spec.iov else np.arange(data.n_subjects)
        if rows is not None:
            params = _periods(spec, data, model, params, rows, occ_subject, cat_levels, det)
            dims, owner = "period", rows.row_subject
        if spec.individual:
            params = _individual_expressions(spec, data, params, det, owner, dims, rows)
        if spec.flip_flop_guard:
            k_el = params["K"] if "K" in params else params["CL"] / params["V"]
            params["KA"] = k_el + params["KA"]
            det("KA_individual", params["KA"], dims=dims)
        given = {n: params[n] for n in inputs}
        index = rows if rows is not None else dose_index
        ipred = det("ipred", struct.concentration(data, given, index=index), dims="obs")
        add_likelihood(spec, data, ipred, _cumulative_hazard(spec, struct, data, given))
    return BuiltModel(
        model=model,
        data=data,
        subjects=list(coords["subject"]),
        occasions=occ_subject,
        dose_index=dose_index,
        categorical_levels=cat_levels,
        centered=[p for p in spec.iiv_parameters if p in set(centered)],
        partial=partial,
        z_expressions=z_expressions,
        phi_means=phi_means,
        starts=starts,
    )


def _time_varying(spec: ModelSpec, data: EventData) -> tuple[str, ...]:
    """The covariates the model uses (relations, individual expressions) that change within a subject."""
    from nlmebayes.model.expressions import expression_names

    used = {c.covariate for c in spec.covariates}
    used |= {n for e in spec.individual.values() for n in expression_names(e)} & set(data.covariate_names)
    return tuple(c for c in data.time_varying_covariates() if c in used)


def _parameter_rows(spec: ModelSpec, data: EventData, struct, varying) -> ParameterRows | None:
    """The periods of the individual parameters where they change within a subject, else None.

    Time-varying covariates need a structural model that switches parameters between records
    (``piecewise_parameters``: the ODE path, and the compartmental models by matrix
    exponentials); IOV uses periods there too, except in the compartmental models when no
    covariate varies and earlier occasions have washed out (``iov_by_dose``: one row per dose,
    superposition).
    """
    piecewise = getattr(struct, "piecewise_parameters", False)
    if varying and not piecewise:
        raise ValueError(
            f"model {spec.name}: covariates {list(varying)} change within a subject, and the "
            f"structural model {spec.structural!r} assumes constant parameters; use an ODE or a "
            "compartmental model, which switch parameters at the records as NONMEM does"
        )
    if not piecewise or not (varying or spec.iov):
        return None
    by_dose = getattr(struct, "iov_by_dose", None)
    if not varying and by_dose is not None and by_dose(data, spec.iov[0].occasion, _typical(spec, struct)):
        return None  # the closed forms' IOV, each dose with its occasion's parameters: washed out
    for c in spec.covariates:
        additive = c.parameter in spec.iiv_parameters and spec.eta_kind(c.parameter) != "lognormal"
        if c.covariate in varying and additive:
            raise ValueError(
                f"model {spec.name}: the time-varying covariate {c.covariate} acts on {c.parameter}, "
                "whose eta is additive; write the relation in individual expressions"
            )
    occasion = (spec.iov[0].occasion,) if spec.iov else ()
    return parameter_rows(data, occasion + tuple(varying))


def _typical(spec: ModelSpec, struct) -> dict | None:
    """The structural parameters' initial values, or None where expressions give them."""
    if spec.individual:
        return None
    names = set(struct.parameters) | {"K"}
    return {p.name: p.initial for p in spec.parameters if p.name in names}


def _periods(
    spec, data: EventData, model: pm.Model, params: dict, rows, occ_subject, cat_levels, det
) -> dict:
    """The parameters per period: the subject's (or occasion's) times the time-varying covariate effects."""
    model.add_coord("period", np.arange(rows.n_rows))
    owner = rows.row_subject
    if spec.iov:
        pos = {o: i for i, o in enumerate(occ_subject)}
        col = data.records[spec.iov[0].occasion].to_numpy()[rows.row_record]
        found = pd.Series(
            [pos.get((s_, o), np.nan) for s_, o in zip(owner.tolist(), col.tolist(), strict=True)]
        )
        # a period of records that are neither doses nor observations takes a neighbour's occasion
        found = found.groupby(owner).transform(lambda x: x.ffill().bfill())
        owner = found.to_numpy().astype(int)
    params = {n: v[owner] for n, v in params.items()}
    varying = set(rows.columns) - ({spec.iov[0].occasion} if spec.iov else set())
    first = data.records.groupby("_SUBJ", sort=True).first()
    for c in spec.covariates:
        if c.covariate in varying:  # the change from the subject's first value (_covariate_effects)
            theta = model[c.name] if not c.fixed else _theta(c, cat_levels)
            now = data.records[c.covariate].to_numpy()[rows.row_record]
            then = first[c.covariate].to_numpy()[rows.row_subject]
            change = _effect(c, now, cat_levels, theta) / _effect(c, then, cat_levels, theta)
            params[c.parameter] = params[c.parameter] * change
    for n in spec.parameter_names:
        params[n] = det(f"{n}_period", params[n], dims="period")
    return params


def structural_inputs(spec: ModelSpec, struct) -> list[str]:
    """The names the structural model receives.

    The spec's parameters; with ``individual`` expressions, those of the parameters and entries
    that the model takes (the rest are thetas and derived parameters).
    """
    if not spec.individual:
        return spec.parameter_names
    takes = set(struct.parameters) | set(struct.optional_parameters)
    return [n for n in spec.parameter_names + list(spec.individual) if n in takes]


def _individual_expressions(
    spec: ModelSpec, data: EventData, params: dict, det, rows, dims: str, periods=None
) -> dict:
    """Evaluate ``spec.individual`` in order, per row of the parameters (subject, occasion or period).

    ``rows`` is each row's subject. Names that are neither parameters, etas nor earlier entries
    are covariates: per subject, or per period with ``periods`` (time-varying ones).
    """
    from nlmebayes.model.expressions import expression_names
    from nlmebayes.pk.ode.expressions import parse_expression

    sym = {n: v * pt.ones(len(rows)) for n, v in params.items()}
    known = set(sym) | set(spec.individual)
    covs = sorted({n for e in spec.individual.values() for n in expression_names(e)} - known)
    missing = [c for c in covs if c not in data.covariate_names]
    if missing:
        raise ValueError(
            f"model {spec.name}: individual expressions use {missing}, which are not parameters, etas, "
            f"earlier entries or data columns; parameters {spec.parameter_names}, etas {spec.eta_names}"
        )
    for c in covs:
        if periods is not None and c in periods.columns:
            values = data.records[c].to_numpy(dtype=float)[periods.row_record]
        else:
            values = data.subject_covariates([c])[c].to_numpy(dtype=float)[rows]
        sym[c] = pt.as_tensor_variable(values)
    out = dict(params)
    for name, text in spec.individual.items():
        try:
            value = parse_expression(text, sym) * pt.ones(len(rows))
        except ValueError as e:
            raise ValueError(f"model {spec.name}, individual {name}: {e}") from None
        sym[name] = out[name] = det(name, value, dims=dims)
    return out


def _cumulative_hazard(spec: ModelSpec, struct, data: EventData, params: dict):
    """``H(t) - H(t_prev)`` per observation for a time-to-event outcome, else None."""
    tte = [(out, o) for out, o in spec.outcomes.items() if o.kind == "tte"]
    if not tte:
        return None
    if not hasattr(struct, "cumulative_hazard") or len(tte) > 1:
        raise ValueError(
            f"model {spec.name}: a time-to-event outcome needs a ClosedForm hazard (one per model)"
        )
    out, outcome = tte[0]
    return struct.cumulative_hazard(data, params, outcome, out)


def _check_log_scale_data(spec: ModelSpec, data: EventData) -> None:
    if spec.log_scale_error and np.any(data.obs_dv <= 0):
        j = int(np.flatnonzero(data.obs_dv <= 0)[0])
        raise DataError(
            f"exponential (log) residual error needs DV > 0, got {data.obs_dv[j]:g}",
            source=data.source,
            row=int(data.obs_row[j]),
            column="DV",
        )


def _coords(spec: ModelSpec, data: EventData, cov_table: pd.DataFrame) -> tuple[dict, dict]:
    """Model coordinates, and the levels of each categorical covariate (reference first)."""
    coords = {
        "subject": [str(id_label(i)) for i in data.ids],
        "obs": np.arange(data.n_obs),
        "iiv": spec.iiv_parameters,
    }
    for k, block in enumerate(spec.iiv):
        coords[f"iiv_{k}"] = block.parameters
    cat_levels = {}
    for c in spec.covariates:
        col = cov_table[c.covariate] if c.covariate in cov_table else data.records[c.covariate]
        if c.kind == "categorical":
            levels = sorted(col.unique(), key=str)
            ref = c.reference if c.reference in levels else levels[0]
            cat_levels[c.name] = (ref, [lv for lv in levels if lv != ref])
            coords[f"{c.name}_level"] = [str(lv) for lv in cat_levels[c.name][1]]
        elif col.dtype == object:
            raise DataError(
                f"covariate {c.covariate} is not numeric; use kind='categorical' or an indicator condition",
                source=data.source,
                column=c.covariate,
            )
    return coords, cat_levels


def _typical_values(spec: ModelSpec, det) -> dict:
    """Typical values on the natural scale; estimated ones as ``exp(log_P_pop)``."""
    tv = {}
    for p in spec.parameters:
        if p.fixed:
            tv[p.name] = pt.as_tensor_variable(p.initial)
        elif p.scale == "linear":
            tv[p.name] = random_variable(p.free_name, p.free_prior)
        else:
            # The default prior is centred on log(initial), so sampling starts there.
            log_tv = random_variable(p.free_name, p.free_prior)
            tv[p.name] = det(f"{p.name}_pop", pt.exp(log_tv))
    for e in spec.eta_names:  # an eta of its own: TV 0, additive
        tv[e] = pt.as_tensor_variable(0.0)
    return tv


def _covariate_effects(spec: ModelSpec, data: EventData, cov_table, cat_levels, tv, varying=()) -> dict:
    """Typical value per subject: TV * product of covariate effects.

    A time-varying covariate enters at the subject's first value here, and its changes from
    there per period (:func:`_periods`): so the centred etas' means carry each subject's own
    level of the covariate, as for a constant one, and the effect's theta does not trade off
    against them.
    """
    tv_i = {n: tv[n] * pt.ones(data.n_subjects) for n in tv}
    first = data.records.groupby("_SUBJ", sort=True).first()
    for c in spec.covariates:
        values = (first if c.covariate in varying else cov_table)[c.covariate].to_numpy()
        tv_i[c.parameter] = tv_i[c.parameter] * _effect(c, values, cat_levels, _theta(c, cat_levels))
    return tv_i


def _theta(c, cat_levels):
    """The effect parameter(s) of covariate relation ``c``: a random variable unless fixed."""
    if c.kind == "categorical":
        n = len(cat_levels[c.name][1])
        if c.fixed:
            return pt.as_tensor_variable(np.full(n, c.theta))
        return random_variable(c.name, c.effect_prior, dims=f"{c.name}_level")
    return pt.as_tensor_variable(c.theta) if c.fixed else random_variable(c.name, c.effect_prior)


def _effect(c, values, cat_levels, theta):
    """The multiplicative effect of covariate relation ``c`` at ``values``."""
    if c.kind == "categorical":
        others = cat_levels[c.name][1]
        lvl = np.array([others.index(v) if v in others else -1 for v in values])
        return pt.exp(pt.switch(lvl >= 0, pt.concatenate([theta, [0.0]])[lvl], 0.0))
    return covariate_effect(c.kind, values.astype(float), theta, c.reference, c.condition)


def _candidate_effects(spec: ModelSpec, data: EventData, model: pm.Model, tv_i: dict, det) -> dict:
    """Candidate effects under a regularised horseshoe (Piironen & Vehtari 2017, appendix C.1).

    ``beta_j = z_j tau lambda~_j`` with ``lambda~_j^2 = c^2 lambda_j^2 / (c^2 + tau^2 lambda_j^2)``,
    local scales ``lambda_j ~ HalfCauchy(1)``, global ``tau ~ HalfCauchy(tau0)``, slab
    ``c^2 ~ InvGamma(nu/2, nu s^2/2)``; everything non-centred. ``beta`` is per standardised
    column; ``theta = beta / scale`` is the effect in the unit of the covariate, stored under the
    same name an ordinary covariate relation would have. Returns the starting values: effects
    at 0 (the model without them), scales at their prior's.
    """
    from nlmebayes.model.candidates import candidate_forms

    cand = spec.candidates
    assert cand is not None
    cov = data.subject_covariates(sorted({c for _, c in cand.pairs}))
    forms = candidate_forms(cand, cov)
    labels = [lab for f in forms for lab in f.labels]
    D = len(labels)
    model.add_coord("candidate", labels)
    sd0 = {p: s for b in spec.iiv for p, s in zip(b.parameters, b.sd or [], strict=True)}
    omega = float(np.mean([sd0[f.parameter] for f in forms]))
    # Piironen & Vehtari's tau0 with the IIV SD as the noise of log P_i across subjects
    p0 = min(cand.expected, D - 0.5)
    tau0 = p0 / (D - p0) * omega / np.sqrt(data.n_subjects)
    z = pm.Normal("hs_z", 0.0, 1.0, dims="candidate")
    lam = pm.HalfCauchy("hs_lambda", 1.0, dims="candidate")
    tau = pm.HalfCauchy("hs_tau", tau0)
    nu, s = cand.slab_df, cand.slab_scale
    c2 = pm.InverseGamma("hs_c2", nu / 2, nu * s**2 / 2)
    lam_t = pt.sqrt(c2 * lam**2 / (c2 + tau**2 * lam**2))
    beta = det("beta_candidate", z * tau * lam_t, dims="candidate")
    j = 0
    for f in forms:
        n = len(f.labels)
        theta = beta[j : j + n] / f.scale
        if f.kind == "categorical":
            model.add_coord(f"{f.name}_level", [str(v) for v in f.levels])
            det(f.name, theta, dims=f"{f.name}_level")
        else:
            det(f.name, theta[0])
        tv_i[f.parameter] = tv_i[f.parameter] * pt.exp(pt.dot(f.columns, theta))
        j += n
    return {"hs_z": np.zeros(D), "hs_lambda": np.ones(D), "hs_tau": tau0, "hs_c2": s**2}


def covariate_effect(kind: str, values, theta, reference: float = 1.0, condition: str | None = None):
    """Multiplicative covariate effect on a typical value, per subject (not categorical).

    Examples
    --------
    >>> import numpy as np
    >>> float(covariate_effect("power", np.array([140.0]), 0.75, reference=70.0)[0])
    1.681792830507429
    """
    if kind == "power":
        return (values / reference) ** theta
    if kind == "exponential":
        return pt.exp(theta * (values - reference))
    if kind == "linear":
        return 1.0 + theta * (values - reference)
    if kind == "indicator":
        _, op, val = parse_condition(condition)
        flag = OPS[op](values, val).astype(float)
        return 1.0 + theta * flag
    raise AssertionError(kind)


def _levels(spec: ModelSpec, data: EventData, model: pm.Model, tv_i: dict, det) -> None:
    """Levels above the subject (study, centre): TV_i *= exp(gamma_g(i)), non-centred."""
    for k, lvl in enumerate(spec.levels):
        groups = data.subject_covariates([lvl.column])[lvl.column].to_numpy()
        labels = list(pd.unique(groups))
        g_idx = np.array([labels.index(g) for g in groups])
        model.add_coord(f"{lvl.column}", [str(id_label(g)) for g in labels])
        model.add_coord(f"level_{k}", lvl.parameters)
        zg = pm.Normal(f"z_level_{k}", 0.0, 1.0, dims=(lvl.column, f"level_{k}"))
        sd = pt.stack(
            [
                random_variable(f"level_sd_{lvl.column}_{p}", pr)
                for p, pr in zip(lvl.parameters, lvl.priors(), strict=True)
            ]
        )
        gamma = det(f"gamma_{lvl.column}", zg * sd, dims=(lvl.column, f"level_{k}"))
        for j, p in enumerate(lvl.parameters):
            tv_i[p] = tv_i[p] * pt.exp(gamma[g_idx, j])


def _inter_individual(
    spec: ModelSpec,
    model: pm.Model,
    tv_i: dict,
    det,
    store: bool,
    choice: tuple,
    z_expressions: dict,
    phi_means: dict,
) -> dict:
    """Etas per IIV block and the individual parameters ``P`` (subject).

    A log-normal ``P_i`` is ``exp(log TV_i + eta)``, with ``log TV_i`` read off the typical
    value's graph (:func:`log_of`), and a centred one ``exp(phi)``: no exp/log round trips and
    no column joins between the free variables and the structural model, which halves the
    compiled density of a model like theophylline's (124 -> 64 nodes; compile 4.3 -> 2.6 s).
    With the deterministics (``store``) every parameter goes through the stored ``eta``, which
    later computations replace by etas of their own. ``choice`` is (centred parameters, partially
    centred parameter -> weights).
    """
    centered, partial = choice
    etas, sds, cols = [], [], {}
    for k, block in enumerate(spec.iiv):
        cen = [p in centered for p in block.parameters]
        weights = [partial.get(p) for p in block.parameters]
        if not any(cen) and all(w is None for w in weights):
            # z before omega: the order of the sampler's parameter vector (and so the draws of a
            # seed) is what it was before centring existed
            z = pm.Normal(f"z_{k}", 0.0, 1.0, dims=("subject", f"iiv_{k}"))
            sd, chol = _omega(model, k, block, det, store)
            eta = z @ chol.T if block.block else z * sd
            cols.update({p: ("eta", eta[:, j]) for j, p in enumerate(block.parameters)})
        else:
            sd, chol = _omega(model, k, block, det, store)
            kinds = [spec.eta_kind(p) for p in block.parameters]
            eta, z_expressions[f"z_{k}"], means, block_cols = _centred_block(
                model, k, block, (cen, weights), tv_i, sd, chol, kinds
            )
            phi_means.update(means)
            cols.update(block_cols)
        etas.append(eta)
        sds.append(sd)
    params = dict(tv_i)
    if etas:
        eta = det("eta", pt.concatenate(etas, axis=1), dims=("subject", "iiv"))
        det("omega_sd", pt.concatenate(sds), dims="iiv")
        if store:  # later computations substitute the etas through this node (ConditionalModel)
            cols = {p: ("eta", eta[:, j]) for j, p in enumerate(spec.iiv_parameters)}
    for p, (what, value) in cols.items():
        lognormal = spec.eta_kind(p) == "lognormal"
        if what == "phi":  # the centred free variable is log P_i (log-normal) or P_i itself
            params[p] = pt.exp(value) if lognormal else value
        else:
            params[p] = pt.exp(log_of(tv_i[p]) + value) if lognormal else tv_i[p] + value
    for n in spec.parameter_names:
        params[n] = det(n, params[n], dims="subject")
    return params


def log_of(x):
    """``log(x)`` for a positive typical value, read off the graph that built it.

    Typical values are products of ``exp(log_P_pop)``, covariate effects (powers of data,
    exponentials) and ``pt.ones`` broadcasts: the log of such a product is the sum of the
    factors' logs, which PyTensor's rewrites do not find on their own. Any other node is
    logged as it is. The result broadcasts against ``x`` (it may lack the ones' axis or a
    leading broadcast axis).

    Examples
    --------
    >>> import numpy as np, pytensor.tensor as pt
    >>> a = pt.dscalar("a")
    >>> x = pt.exp(a) * (np.array([35.0, 140.0]) / 70.0) ** 0.75 * pt.ones(2)
    >>> np.round(log_of(x).eval({a: 1.0}), 6).tolist()
    [0.48014, 1.51986]
    """
    node = x.owner
    if node is None:
        return pt.log(x)
    op, scalar = node.op, getattr(node.op, "scalar_op", None)
    if isinstance(scalar, ps.Exp):
        return node.inputs[0]
    if isinstance(scalar, ps.Mul):
        logs = [log_of(i) for i in node.inputs if not _ones(i)]
        return functools.reduce(operator.add, logs) if logs else pt.as_tensor_variable(0.0)
    if isinstance(scalar, ps.Pow):
        base = _constant(node.inputs[0])
        if base is not None and np.all(base > 0):  # data ** theta: theta log(data), folded
            return node.inputs[1] * pt.log(node.inputs[0])
    if isinstance(op, DimShuffle):
        n_in = node.inputs[0].ndim
        k = len(op.new_order) - n_in
        if k >= 0 and tuple(op.new_order) == ("x",) * k + tuple(range(n_in)):
            # axes added on the left only: the log broadcasts as the value did
            return log_of(node.inputs[0])
    return pt.log(x)


def _constant(x):
    """The values of a constant tensor (through dim-shuffles: for checks on all of them), else None."""
    while x.owner is not None and isinstance(x.owner.op, DimShuffle):
        x = x.owner.inputs[0]
    return x.data if isinstance(x, TensorConstant) else None


def _ones(x) -> bool:
    """True for ``pt.ones(...)``/constant ones (a broadcast that contributes nothing to a log)."""
    if x.owner is not None and isinstance(x.owner.op, Alloc):
        x = x.owner.inputs[0]  # the value it fills with
    value = _constant(x)
    return value is not None and np.all(value == 1.0)


def _omega(model: pm.Model, k: int, block, det, store: bool):
    """SDs of block ``k`` and, for a block Omega, its Cholesky factor (else None)."""
    if block.block and block.omega_prior == "inverse_wishart":
        return _inverse_wishart(model, k, block, det)
    return _sd_and_cholesky(
        model, block, det, store, f"omega_sd_{k}_", f"omega_chol_{k}", f"omega_corr_{k}", f"iiv_{k}"
    )


def _sd_and_cholesky(
    model: pm.Model, block, det, store: bool, sd_prefix: str, chol: str, corr: str, dim: str
):
    """SDs of an IIV or IOV block and, for a block (correlated) one, its Cholesky factor (else None).

    Variables: ``<sd_prefix><parameter>`` (diagonal), or ``chol`` (LKJ) with the correlations stored as
    ``corr`` over ``(dim, dim_)``.
    """
    priors = block.priors()
    if not block.block:
        sd = pt.stack(
            [random_variable(f"{sd_prefix}{p}", pr) for p, pr in zip(block.parameters, priors, strict=True)]
        )
        return sd, None
    if any(pr.dist != priors[0].dist or pr.args.keys() != priors[0].args.keys() for pr in priors):
        raise ValueError(f"block over {block.parameters}: give every SD prior one distribution")
    # One prior per SD: the distribution's arguments as vectors (LKJCholeskyCov takes one sd_dist).
    args = {k: np.array([pr.args[k] for pr in priors], dtype=float) for k in priors[0].args}
    sd_dist = getattr(pm, priors[0].dist).dist(**args, shape=len(block.parameters))
    chol_, corr_, sd = pm.LKJCholeskyCov(
        chol,
        n=len(block.parameters),
        eta=block.lkj_eta,
        sd_dist=sd_dist,
        compute_corr=True,
        store_in_trace=store,
    )
    if dim not in model.coords:
        model.add_coord(dim, block.parameters)
    model.add_coord(f"{dim}_", block.parameters)
    det(corr, corr_, dims=(dim, f"{dim}_"))
    return sd, chol_


def _inverse_wishart(model: pm.Model, k: int, block, det):
    """SDs and Cholesky factor of ``Omega ~ IW(S, df)``, by the Bartlett decomposition of its inverse.

    ``Omega^-1 = (L A)(L A)'`` with ``L = chol(S^-1)`` and ``A`` lower triangular, ``A_jj^2 ~
    chi2(df - j)`` (j = 0..q-1), ``A_ij ~ N(0, 1)`` below the diagonal: a Wishart(S^-1, df) draw
    (Bartlett 1933). Free variables ``omega_iw_c_<k>`` (the chi-squares) and ``omega_iw_z_<k>``.
    """
    q = len(block.parameters)
    df = float(block.iw_df)
    L = np.linalg.cholesky(np.linalg.inv(np.asarray(block.inverse_wishart_scale(), dtype=float)))
    c = pm.ChiSquared(f"omega_iw_c_{k}", nu=df - np.arange(q), shape=q)
    rows, cols = np.tril_indices(q, -1)
    A = pt.diag(pt.sqrt(c))
    if len(rows):
        zo = pm.Normal(f"omega_iw_z_{k}", 0.0, 1.0, shape=len(rows))
        A = pt.set_subtensor(A[rows, cols], zo)
    B = pt.as_tensor_variable(L) @ A  # Omega^-1 = B B'
    binv = pt.linalg.solve_triangular(B, pt.eye(q), lower=True)
    omega = binv.T @ binv
    chol = pt.linalg.cholesky(omega)
    sd = pt.sqrt(pt.diag(omega))
    model.add_coord(f"iiv_{k}_", block.parameters)
    det(f"omega_corr_{k}", omega / (sd[:, None] * sd[None, :]), dims=(f"iiv_{k}", f"iiv_{k}_"))
    return sd, chol


def _centred_block(model: pm.Model, k: int, block, choice: tuple, tv_i: dict, sd, chol, kinds: list):
    """Etas of block ``k`` with (partially) centred free variables; the block's ``z``; their means.

    ``choice`` is (centred flag, partial weights or None) per parameter. ``phi = log TV_i + eta``
    (log-normal) or ``TV_i + eta`` (additive). A block Omega is centred as a whole
    (``phi ~ MvNormal(mean, chol)``); in a diagonal block the centred parameters share ``phi_<k>``,
    the partially centred ones ``psi_<k>`` (:func:`_partial_columns`), the others keep their
    standard-normal ``z``. The returned ``z`` (all parameters of the block, in order) is
    ``eta / omega`` or ``chol^-1 eta``; the means are by free variable name. Last, per parameter,
    ``("phi", column)`` for a centred one and ``("eta", column)`` for the others (see
    :func:`_inter_individual`).
    """
    cen, weights = choice
    if block.block:
        mean = _centred_mean(tv_i, block, kinds, range(len(cen)))
        phi = pm.MvNormal(f"phi_{k}", mu=mean, chol=chol, dims=("subject", f"iiv_{k}"))
        eta = phi - mean
        z = pt.linalg.solve_triangular(chol, eta.T, lower=True).T
        return eta, z, {f"phi_{k}": mean}, {p: ("phi", phi[:, j]) for j, p in enumerate(block.parameters)}
    c_idx = [j for j, c in enumerate(cen) if c]
    p_idx = [j for j, w in enumerate(weights) if w is not None]
    n_idx = [j for j in range(len(cen)) if j not in c_idx and j not in p_idx]

    def dim(suffix: str, idx: list) -> str:  # the block's own coordinate when one kind has it all
        if len(idx) == len(cen):
            return f"iiv_{k}"
        model.add_coord(f"iiv_{k}_{suffix}", [block.parameters[j] for j in idx])
        return f"iiv_{k}_{suffix}"

    cols_eta, cols_z, cols, means = [None] * len(cen), [None] * len(cen), {}, {}
    if c_idx:
        # the centred columns only, each taken apart: a stack of all and a slice of it would put a
        # join and its gradient's split into the compiled density
        mean = _centred_mean(tv_i, block, kinds, c_idx)
        phi = pm.Normal(
            f"phi_{k}", mu=mean, sigma=pt.stack([sd[j] for j in c_idx]), dims=("subject", dim("c", c_idx))
        )
        means[f"phi_{k}"] = mean
        for i, j in enumerate(c_idx):
            cols_eta[j] = phi[:, i] - mean[..., i]
            cols_z[j] = cols_eta[j] / sd[j]
            cols[block.parameters[j]] = ("phi", phi[:, i])
    if p_idx:
        mean = _centred_mean(tv_i, block, kinds, p_idx)
        w = np.stack([weights[j] for j in p_idx], axis=-1)
        z_p, means[f"psi_{k}"] = _partial_columns(
            f"psi_{k}", mean, w, [sd[j] for j in p_idx], dim("p", p_idx)
        )
        for i, j in enumerate(p_idx):
            cols_z[j] = z_p[:, i]
            cols_eta[j] = z_p[:, i] * sd[j]
            cols[block.parameters[j]] = ("eta", cols_eta[j])
    if n_idx:
        z = pm.Normal(f"z_{k}", 0.0, 1.0, dims=("subject", dim("nc", n_idx)))
        for i, j in enumerate(n_idx):
            cols_eta[j] = z[:, i] * sd[j]
            cols_z[j] = z[:, i]
            cols[block.parameters[j]] = ("eta", cols_eta[j])
    return pt.stack(cols_eta, axis=1), pt.stack(cols_z, axis=1), means, cols


def _centred_mean(tv_i: dict, block, kinds: list, idx):
    """The centred prior mean of the block's columns ``idx``: log TV_i (log-normal) or TV_i."""
    means = [
        log_of(tv_i[block.parameters[j]]) if kinds[j] == "lognormal" else tv_i[block.parameters[j]]
        for j in idx
    ]
    if any(m.ndim for m in means):  # covariates make some per subject
        means = pt.broadcast_arrays(*means)
    return pt.stack(means, axis=-1)


def _partial_columns(name: str, mean, w: np.ndarray, sds: list, dim: str):
    """Partially centred free variable ``name`` (module docstring); returns its ``z`` and mean.

    ``psi ~ Normal(w mean, omega**w)``, so ``z = (psi - w mean) / omega**w`` is standard normal.
    ``omega**w`` is written ``exp(w log omega)``: one exponential per element, and its inverse
    the exponential of the negative instead of a division.
    """
    log_scale = w * pt.log(pt.stack(sds))  # (subject, columns)
    shift = w * mean
    psi = pm.Normal(name, mu=shift, sigma=pt.exp(log_scale), dims=("subject", dim))
    return (psi - shift) * pt.exp(-log_scale), shift


def _check_partial(spec: ModelSpec, data: EventData, partial: dict, centered) -> dict:
    """``partial`` of :func:`build_model`, checked: weights as float arrays (subject,)."""
    in_block = {p for b in spec.iiv if b.block for p in b.parameters}
    out = {}
    for p, w in partial.items():
        if p not in spec.iiv_parameters:
            raise ValueError(f"partially centred parameter {p!r} has no IIV")
        if p in in_block or p in set(centered):
            why = "is in a block Omega" if p in in_block else "is also centred"
            raise ValueError(f"partially centred parameter {p!r} {why}")
        w = np.asarray(w, dtype=float)
        if w.shape != (data.n_subjects,) or not np.all((w >= 0) & (w <= 1)):
            raise ValueError(
                f"partial weights of {p!r}: expected {data.n_subjects} values (one per subject) "
                f"in [0, 1], got shape {w.shape}"
            )
        out[p] = w
    return out


def _inter_occasion(
    spec: ModelSpec, data: EventData, model: pm.Model, params: dict, det, occ_subject: list, store: bool
) -> dict:
    """One parameter row per (subject, occasion).

    P_ij = P_i * exp(kappa_ij). Each dose uses its own occasion's parameters (exact when earlier occasions
    have washed out).
    """
    model.add_coord("occasion", [f"{id_label(data.ids[s_])}:{id_label(o)}" for s_, o in occ_subject])
    model.add_coord("iov", spec.iov_parameters)
    row_subject = np.array([s_ for s_, _ in occ_subject])
    z = pm.Normal("z_iov", 0.0, 1.0, dims=("occasion", "iov"))
    if not any(b.block for b in spec.iov):
        pi_sd = pt.stack(
            [
                random_variable(f"pi_sd_{p}", pr)
                for b in spec.iov
                for p, pr in zip(b.parameters, b.priors(), strict=True)
            ]
        )
        kappa = z * pi_sd
    else:
        sds, cols, j = [], [], 0
        for b, block in enumerate(spec.iov):
            n = len(block.parameters)
            sd, chol = _sd_and_cholesky(
                model, block, det, store, "pi_sd_", f"pi_chol_{b}", f"pi_corr_{b}", f"iov_{b}"
            )
            sds.append(sd)
            cols.append(z[:, j : j + n] @ chol.T if block.block else z[:, j : j + n] * sd)
            j += n
        pi_sd, kappa = pt.concatenate(sds), pt.concatenate(cols, axis=1)
    det("pi_sd", pi_sd, dims="iov")
    kappa = det("kappa", kappa, dims=("occasion", "iov"))
    params = {n: v[row_subject] for n, v in params.items()}
    for j, p in enumerate(spec.iov_parameters):
        params[p] = params[p] * pt.exp(kappa[:, j])
    return params


def occasions(spec: ModelSpec, data: EventData) -> tuple[list, np.ndarray]:
    """(subject, occasion) pairs in data order and each dose's row among them.

    Parameters
    ----------
    spec : ModelSpec
        A model with IOV (all blocks on one occasion column).
    data : EventData
        The data.

    Returns
    -------
    pairs : list of (int, object)
        Subject index and occasion of each (subject, occasion) row.
    dose_row : int array
        Row of ``pairs`` of each dose event.
    """
    col = spec.iov[0].occasion
    if any(b.occasion != col for b in spec.iov):
        raise ValueError("all IOV blocks must use the same occasion column")
    if col == "OCC":
        d_occ, o_occ = data.dose_occ, data.obs_occ
    else:
        d_occ = data.records.set_index("_ROW").loc[data.dose_row, col].to_numpy()
        o_occ = data.records.set_index("_ROW").loc[data.obs_row, col].to_numpy()
    pairs = list(
        dict.fromkeys(
            zip(
                np.r_[data.dose_subject, data.obs_subject].tolist(), np.r_[d_occ, o_occ].tolist(), strict=True
            )
        )
    )
    pos = {p: i for i, p in enumerate(pairs)}
    dose_row = np.array(
        [pos[(s_, o)] for s_, o in zip(data.dose_subject.tolist(), d_occ.tolist(), strict=True)], dtype=int
    )
    return pairs, dose_row
