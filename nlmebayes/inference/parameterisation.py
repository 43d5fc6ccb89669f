"""Centred or non-centred etas, chosen from how much the data say about each subject.

With sparse data a subject's eta is mostly its prior, and the non-centred form (``eta = omega z``,
``z`` standard normal) gives the sampler a round posterior; centred, the etas and omega form a funnel.
With rich data it is the other way round: each subject's parameter is pinned by its own data, and
non-centred ``z = eta / omega`` must move in concert with omega and the typical value (on a
120-subject, 19-samples-per-subject design, bulk ESS 25 per 1000 draws for the typical CL).

The pilot (:func:`run_pilot`) measures it: at the spec's initial values it finds each
subject's conditional mode of the etas and the curvature there (the FOCE-I Hessian of
:mod:`nlmebayes.diagnostics.ebe`, derivatives by central differences), and compares each eta's
conditional SD with its omega. A parameter is centred when the median subject's ratio is below
:func:`centring_threshold` of the number of subjects. For a normal-normal model with known
variances the break-even is at 1/sqrt(2) (Papaspiliopoulos, Roberts & Sköld 2007). With omega
sampled too, a centred eta's curvature moves with omega, and omega is the less certain the fewer
the subjects: Theophylline's V (ratio 0.60, 12 subjects) centred gave 61 divergences and a bulk
ESS of 360 in one of five seeds, while the same subjects replicated 10 times (120 subjects, the
same ratio) centred gave 2.4-2.9 times the ESS per second of the non-centred V in three of three.
So the threshold is 0.5 (the data carry three times the information Omega does) at 12 subjects
and rises to the break-even by 50.
Parameters without IIV get a pseudo-eta with a wide prior in the curvature, so an eta the data
pin only together with a shared parameter is not counted as informed. Models the pilot cannot
integrate exactly (IOV, levels, Student-t, M3) are piloted on their Gaussian core without those
parts: it only has to rank information, not compute a likelihood.

Where subjects differ in how much their data say (a few rich profiles among many sparse ones),
one choice per parameter fits neither group: such parameters are sampled partially centred
(:func:`partially_centred`), each subject with its own weight between the two forms
(:func:`centring_weights`). On 400 subjects, a quarter with 11 samples after one dose and the rest
with 2-3 samples at steady state, the median subject's KA and V ratios (0.90, 0.92) left them
non-centred, and the min bulk ESS over the population parameters was 637-807 per 4,000 draws;
partially centred it was 1,311-2,106, 2.45 times the ESS per second (median of 5 seeds, 1.70-2.93;
``benchmarks/sampling.py --designs mixed``). On 200 2-cpt IV subjects, 50 with 19 samples and 150
with 2, it was 3.48 times (3.34-5.30), and the plain choice missed R-hat <= 1.01 in 2 of 5
seeds. On designs whose subjects are alike (the rich oral and IV designs) partial centring
measured 0.77-1.02 times the ESS per second of the plain choice, so it is chosen only where the
weights spread (:data:`PARTIAL_SPREAD`).

The same pilot gives the chains their start (:func:`initial_point`): etas at the conditional
modes, so each subject starts in the mode its own data favour.

Whatever the sampler saw, the draws are stored as ``z`` (:func:`noncentred_draws`): results,
reports, plots and predictions never depend on the choice.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr
from pytensor.graph.replace import graph_replace

from nlmebayes.data import EventData
from nlmebayes.model.spec import IIV, ModelSpec, ResidualError

__all__ = [
    "Pilot",
    "run_pilot",
    "centred_parameters",
    "partially_centred",
    "centring_weights",
    "PARTIAL_SPREAD",
    "initial_point",
    "noncentred_draws",
    "centring_threshold",
]

#: Prior SD (log scale) of the pseudo-etas the pilot gives parameters without IIV.
PSEUDO_SD = 2.0

#: An ``auto`` parameter is sampled partially centred when the interquartile range of its
#: subjects' weights (:func:`centring_weights`) exceeds this: the middle half of the subjects
#: differ by more than a third of the way between centred and non-centred. The bundled and
#: benchmark designs with alike subjects have 0.02-0.25 (Theoph's V 0.19, pheno's CL 0.25); the
#: mixed rich/sparse design 0.45 (V) and 0.69 (KA).
PARTIAL_SPREAD = 0.3


def centring_threshold(n_subjects: int) -> float:
    """Centre an eta when the median subject's conditional SD / omega is below this.

    Centred, the prior's share of an eta's curvature is ``ratio**2``, and omega is known to a
    relative SD of about ``1 / sqrt(2 n)``: over +-2 SD the prior's curvature ``1 / omega**2``
    moves by about ``4 / sqrt(2 n)`` of itself. The threshold keeps the eta's curvature within
    20% over that range (``ratio**2 * 4 / sqrt(2 n) <= 0.2``), between 0.5 (the threshold before
    it depended on n, which small designs keep) and the break-even ``1 / sqrt(2)``. The 20% is set
    by the measurements in the module docstring: 0.5 up to 12 subjects (Theophylline's V at 0.60
    stays non-centred), 0.60 at 26, 0.71 from 50 up.

    Examples
    --------
    >>> [round(centring_threshold(n), 2) for n in (5, 12, 26, 50, 120)]
    [0.5, 0.5, 0.6, 0.71, 0.71]
    """
    return float(np.clip(np.sqrt(0.05 * np.sqrt(2 * n_subjects)), 0.5, np.sqrt(0.5)))


def centring_weights(ratios, n_subjects: int) -> np.ndarray:
    """Each subject's weight of the centred form, from its conditional SD / omega.

    ``w = 1 - (ratio / threshold)**2 / 2``, clipped to [0, 1], with the threshold of
    :func:`centring_threshold`: w = 1/2 at the threshold, where centred and non-centred break
    even, 1 for a subject its data pin exactly, 0 from ``sqrt(2)`` times the threshold. From 50
    subjects (threshold ``1/sqrt(2)``) this is ``1 - ratio**2``, the weight that makes the
    partially centred eta and the typical value independent in a normal model with known
    variances; with fewer subjects the weights are smaller, as the threshold is, because Omega is
    less certain. A ratio that is not a number (the pilot's predictions for a subject were not
    finite) gives 0: what is not known to be informed stays non-centred.

    Examples
    --------
    >>> np.round(centring_weights([0.0, 0.3, 0.7071, 1.0, np.nan], 120), 2).tolist()
    [1.0, 0.91, 0.5, 0.0, 0.0]
    >>> np.round(centring_weights([0.3], 12), 2).tolist()
    [0.82]
    """
    t = centring_threshold(n_subjects)
    r = np.nan_to_num(np.asarray(ratios, dtype=float), nan=np.inf)
    return np.clip(1.0 - 0.5 * (r / t) ** 2, 0.0, 1.0)


@dataclass
class Pilot:
    """What the pilot found at the spec's initial values.

    Attributes
    ----------
    ratios : dict
        IIV parameter -> median over subjects of conditional SD / omega.
    eta : array (subject, iiv)
        Conditional modes of the etas (EBEs), in ``spec.iiv_parameters`` order.
    pop : dict
        The population values used, by the builder's variable names.
    subject_ratios : array (subject, iiv)
        Each subject's conditional SD / omega (``ratios`` are their medians).
    """

    ratios: dict
    eta: np.ndarray
    pop: dict
    subject_ratios: np.ndarray


def run_pilot(spec: ModelSpec, data: EventData) -> Pilot | None:
    """Conditional modes and SDs of the etas at the spec's initial values (None without IIV).

    Parameters
    ----------
    spec : ModelSpec
    data : EventData

    Returns
    -------
    Pilot or None

    Examples
    --------
    >>> from nlmebayes import ModelSpec, IIV, datasets
    >>> spec = ModelSpec("theo", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "V": 31.5},
    ...                  iiv=IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.1]))
    >>> pilot = run_pilot(spec, datasets.theophylline())
    >>> {p: round(r, 2) for p, r in pilot.ratios.items()}  # doctest: +SKIP
    {'KA': 0.28, 'CL': 0.34, 'V': 0.6}
    """
    from nlmebayes.diagnostics.conditional import ConditionalModel
    from nlmebayes.diagnostics.ebe import JointObjective, conditional_modes

    if not spec.iiv:
        return None
    core = _gaussian_core(spec)
    q = len(core.iiv_parameters)
    # Estimated parameters without IIV get a pseudo-eta: held at 0 for the modes, then given a
    # wide prior for the curvature, so an eta that the data only pin together with a population
    # parameter (V_i with a shared KA near flip-flop) is not counted as informed.
    pseudo = [p.name for p in core.parameters if not p.fixed and p.name not in core.iiv_parameters]
    if pseudo:
        core = dataclasses.replace(core, iiv=[*core.iiv, IIV(pseudo, sd=[PSEUDO_SD] * len(pseudo))])
    cm = ConditionalModel(core, data, lean=True)
    sd = np.array([s for b in core.iiv for s in b.sd])
    pop = _initial_values(core, cm)
    f, R = cm.predict(pop, np.zeros((data.n_subjects, len(sd))))
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(R))):
        raise FloatingPointError("predictions not finite at the initial values")  # fit names the cause
    held = np.r_[sd[:q], np.full(len(pseudo), 1e-6)]
    with warnings.catch_warnings():
        # a pilot: an unconverged subject still ranks the information well enough
        warnings.simplefilter("ignore", RuntimeWarning)
        eta, _ = conditional_modes(JointObjective(cm, pop, np.diag(held**2)), maxiter=50)
        _, _, H, _ = JointObjective(cm, pop, np.diag(sd**2)).derivatives(eta)
    cond_sd = np.sqrt(np.diagonal(np.linalg.inv(H), axis1=1, axis2=2))[:, :q]
    each = cond_sd / sd[:q]
    ratio = np.nanmedian(each, axis=0)  # a subject whose curvature failed does not decide
    return Pilot(dict(zip(core.iiv_parameters[:q], map(float, ratio), strict=True)), eta[:, :q], pop, each)


def centred_parameters(spec: ModelSpec, pilot: Pilot | None) -> list[str]:
    """IIV parameters to sample centred: explicit choices, and ``auto`` ones by the pilot's ratios.

    A block Omega is centred as a whole when most of its parameters qualify. Without a pilot,
    ``auto`` parameters stay non-centred. ``auto`` parameters sampled partially centred
    (:func:`partially_centred`) are not in the list.
    """
    out = []
    partial = partially_centred(spec, pilot)
    for b in spec.iiv:
        if b.parameterisation == "centered":
            out += b.parameters
        elif b.parameterisation == "auto" and pilot is not None:
            threshold = centring_threshold(len(pilot.eta))  # one row of etas per subject
            ok = [pilot.ratios[p] < threshold for p in b.parameters]
            if b.block:
                out += b.parameters if 2 * sum(ok) > len(ok) else []
            else:
                out += [p for p, c in zip(b.parameters, ok, strict=True) if c and p not in partial]
    return out


def partially_centred(spec: ModelSpec, pilot: Pilot | None) -> dict[str, np.ndarray]:
    """IIV parameters to sample partially centred, with each subject's weight.

    ``partial`` blocks always; in ``auto`` diagonal blocks, the parameters whose weights
    (:func:`centring_weights`) have an interquartile range above :data:`PARTIAL_SPREAD`, the
    designs whose subjects differ in how much their data say. Never in a block Omega (it is
    centred or not as a whole). Without a pilot there are no weights: none.

    Examples
    --------
    >>> from nlmebayes import ModelSpec, IIV, datasets
    >>> spec = ModelSpec("theo", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "V": 31.5},
    ...                  iiv=IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.1]))
    >>> partially_centred(spec, run_pilot(spec, datasets.theophylline()))  # subjects alike
    {}
    """
    if pilot is None:
        return {}
    col = {p: j for j, p in enumerate(spec.iiv_parameters)}
    n = len(pilot.eta)
    out = {}
    for b in spec.iiv:
        if b.block or b.parameterisation not in ("auto", "partial"):
            continue
        for p in b.parameters:
            w = centring_weights(pilot.subject_ratios[:, col[p]], n)
            q1, q3 = np.quantile(w, [0.25, 0.75])
            if b.parameterisation == "partial" or q3 - q1 > PARTIAL_SPREAD:
                out[p] = w
    return out


def initial_point(built, spec: ModelSpec, pilot: Pilot) -> dict:
    """Starting values of the sampler: the spec's initial values, etas at the pilot's EBEs.

    ``z`` is the EBE over omega, a centred ``phi`` its typical value plus the EBE, a partially
    centred ``psi`` its mean plus ``omega**(w - 1)`` times the EBE; kappas and group effects start
    at 0. A block Omega starts at ``diag(sd^2)``: its packed Cholesky factor is given,
    because leaving it to PyMC's initial-point function made nutpie draw it from the SD prior,
    which failed ("cannot set WRITEABLE flag", scipy's ``halfnorm.rvs`` on a read-only array).
    """
    model = built.model
    point = {**built.starts, **pilot.pop}
    for k, block in enumerate(spec.iiv):
        point.update({f"omega_sd_{k}_{p}": s for p, s in zip(block.parameters, block.sd, strict=True)})
        if block.block and block.omega_prior == "inverse_wishart":
            # Omega at its prior scale's diag(sd^2)-like start: the chi-squares at their means
            point[f"omega_iw_c_{k}"] = block.iw_df - np.arange(len(block.parameters), dtype=float)
            point[f"omega_iw_z_{k}"] = np.zeros(len(block.parameters) * (len(block.parameters) - 1) // 2)
        elif block.block:
            point[f"omega_chol_{k}"] = _packed_diagonal(block.sd)
    for b, block in enumerate(spec.iov):
        point.update({f"pi_sd_{p}": s for p, s in zip(block.parameters, block.sd, strict=True)})
        if block.block:
            point[f"pi_chol_{b}"] = _packed_diagonal(block.sd)
    for lvl in spec.levels:
        point.update({f"level_sd_{lvl.column}_{p}": s for p, s in zip(lvl.parameters, lvl.sd, strict=True)})
    for rv in model.free_RVs:
        if rv.name.startswith(("z_iov", "z_level_")):
            point[rv.name] = np.zeros([len(model.coords[d]) for d in model.named_vars_to_dims[rv.name]])
    point = {rv.name: point[rv.name] for rv in model.free_RVs if rv.name in point}
    cols = {p: j for j, p in enumerate(spec.iiv_parameters)}
    sd = dict(zip(spec.iiv_parameters, [s for b in spec.iiv for s in b.sd], strict=True))
    for rv in model.free_RVs:
        if rv.name.startswith(("z_", "phi_", "psi_")) and rv.name not in point:
            params = list(model.coords[model.named_vars_to_dims[rv.name][1]])
            eta = pilot.eta[:, [cols[p] for p in params]]
            omega = np.array([sd[p] for p in params])
            if rv.name.startswith("z_"):
                point[rv.name] = eta / omega
            elif rv.name.startswith("phi_"):
                point[rv.name] = _evaluate(built.phi_means[rv.name], model, point) + eta
            else:
                w = np.stack([built.partial[p] for p in params], axis=-1)
                point[rv.name] = _evaluate(built.phi_means[rv.name], model, point) + omega ** (w - 1) * eta
    return point


def _packed_diagonal(sd) -> np.ndarray:
    """PyMC's packed lower triangle (row by row) of ``diag(sd)``: an LKJ Cholesky factor's value."""
    row, col = np.tril_indices(len(sd))
    return np.where(row == col, np.asarray(sd, dtype=float)[row], 0.0)


def _evaluate(expr, model, values: dict):
    """``expr`` at the given values of the model's free variables (all it depends on)."""
    import pytensor
    import pytensor.tensor as pt
    from pytensor.graph.traversal import ancestors

    free = {
        rv: pt.as_tensor_variable(np.asarray(values[rv.name], dtype=float))
        for rv in model.free_RVs
        if rv.name in values
    }
    out = graph_replace(expr, free, strict=False)
    left = [v.name for v in ancestors([out]) if v in set(model.free_RVs)]
    if left:
        raise ValueError(f"no starting value for {left}")
    return pytensor.function([], out, mode="FAST_COMPILE")()  # .eval() would compile with numba: ~1 s


def _gaussian_core(spec: ModelSpec) -> ModelSpec:
    """The spec without IOV, levels, Student-t tails, M3 censoring or candidate effects.

    Censored rows are dropped; candidate effects start at 0, where the model is the spec without them.
    """

    def normal(e: ResidualError) -> ResidualError:
        return dataclasses.replace(e, distribution="normal", nu=None)

    error = (
        {k: normal(e) for k, e in spec.error.items()} if isinstance(spec.error, dict) else normal(spec.error)
    )
    return dataclasses.replace(
        spec,
        iov=None,
        levels=None,
        candidates=None,
        error=error,
        observations=dataclasses.replace(spec.observations, blq="M1"),
    )


def _initial_values(spec: ModelSpec, cm) -> dict:
    """Population values of the pilot: the spec's initial values, by the builder's names."""
    values = {p.free_name: p.to_free(p.initial) for p in spec.parameters if not p.fixed}
    for c in spec.covariates:
        if not c.fixed:
            n_levels = cm.data.records[c.covariate].nunique()  # the builder's levels (any record)
            values[c.name] = np.full(n_levels - 1, c.theta) if c.kind == "categorical" else c.theta
    for name, _dvid, which, err in spec.sigma_terms:
        values[f"sigma_{name}"] = getattr(err, which)
    missing = [n for n in cm.pop_names if n not in values]
    if missing:
        raise ValueError(f"no initial value for {missing}")
    return {n: np.asarray(values[n], dtype=float) for n in cm.pop_names}


def noncentred_draws(built, idata: xr.DataTree, chunk: int = 1000) -> None:
    """Store the draws of (partially) centred etas as the standard-normal ``z`` of the non-centred model.

    ``built`` is the model the sampler ran (:func:`~nlmebayes.model.build_model` with ``centered``
    or ``partial``); its ``z_expressions`` are evaluated for all draws at once and replace
    ``phi_<k>``, ``psi_<k>`` (and a part-block ``z_<k>``) in ``idata.posterior``; changed in place.
    """
    if not built.z_expressions:
        return
    from nlmebayes.inference.derived import evaluate_draws

    model = built.model
    post = idata["posterior"].to_dataset()
    names = list(built.z_expressions)
    values = evaluate_draws(model, [built.z_expressions[n] for n in names], post, chunk)
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    drop = [n for n in post.data_vars if n.startswith(("phi_", "psi_")) or n in names]
    post = post.drop_vars(drop)
    post = post.drop_vars(
        [c for c in post.coords if c.endswith(("_c", "_p", "_nc")) and c.startswith("iiv_")]
    )
    for name, arr in zip(names, values, strict=True):
        dim = f"iiv_{name[2:]}"
        post[name] = xr.DataArray(
            arr.reshape(n_chain, n_draw, *arr.shape[1:]),
            dims=("chain", "draw", "subject", dim),
            coords={
                "chain": post["chain"],
                "draw": post["draw"],
                "subject": list(model.coords["subject"]),
                dim: list(model.coords[dim]),
            },
        )
    idata["posterior"] = xr.DataTree(post)
