"""Prediction and replicated data from the posterior, at the fitted design or at another one.

One compiled function maps a batch of values of the model's free variables to IPRED and the
observation model's ``(mu, sd, nu)`` at every observation record of a design. What changes between
uses is where the values come from:

* **new subjects** (VPC, NONMEM's $SIM): population parameters from posterior draws, standard-normal
  ``z`` drawn afresh, so etas, kappas and group effects come from the posterior's Omega, pi and level
  SDs (parameter uncertainty + IIV + IOV + residual error);
* **the fitted subjects** (individual curves): every variable from the same posterior draw;
* **typical values** (PRED): population parameters at their posterior median, ``z = 0``.

The fitted sampler graph is not touched: a graph is built for the design and evaluated for all
draws in one vectorised call per chunk.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from pytensor.graph.replace import graph_replace

from nlmebayes.data import EventData
from nlmebayes.model.builder import build_model
from nlmebayes.model.compile import batched_function
from nlmebayes.model.likelihood import observation_params
from nlmebayes.model.spec import ModelSpec

__all__ = [
    "Predictor",
    "posterior_predictive",
    "prior_predictive",
    "population_prediction",
    "draw_indices",
    "n_samples",
    "posterior_median",
]

#: Free variables that are standard-normal random-effect innovations (not population parameters).
Z_PREFIX = "z_"


class Predictor:
    """Compiled IPRED and observation model of ``spec`` at the records of ``design``.

    Parameters
    ----------
    spec : ModelSpec
    design : EventData
        Doses, covariates and the records to predict at (its DV are not used).
    mode : str
        PyTensor compilation mode.

    Examples
    --------
    >>> from nlmebayes import ModelSpec, IIV, datasets
    >>> spec = ModelSpec("theo", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "V": 31.5},
    ...                  iiv=IIV(["CL"], sd=[0.3]))
    >>> p = Predictor(spec, datasets.theophylline())
    >>> sorted(p.shapes)
    ['log_CL_pop', 'log_KA_pop', 'log_V_pop', 'omega_sd_0_CL', 'sigma_add', 'z_0']
    """

    def __init__(self, spec: ModelSpec, design: EventData, mode: str = "FAST_COMPILE"):
        built = build_model(spec, design)
        model = built.model
        self.spec, self.built, self.data = spec, built, built.data
        free = list(model.free_RVs)
        mu, sd, nu = observation_params(model)
        ones = np.ones(self.data.n_obs)
        outs = [model["ipred"] * ones, mu * ones, sd * ones] + ([nu * ones] if nu is not None else [])
        self.has_nu = nu is not None
        # the individual parameters (subject level: before IOV), beside the predictions
        self.parameter_names = [n for n in spec.parameter_names if n in model.named_vars]
        outs += [model[n] * np.ones(self.data.n_subjects) for n in self.parameter_names]
        single = [rv.type(name=rv.name) for rv in free]
        outs = graph_replace(outs, dict(zip(free, single, strict=True)), strict=False)
        self._fn = batched_function(single, outs, mode=mode)
        self.names = [rv.name for rv in free]
        self.shapes = {
            rv.name: tuple(len(model.coords[d]) for d in model.named_vars_to_dims.get(rv.name, ()))
            or tuple(rv.type.shape)
            for rv in free
        }
        self.dims = {rv.name: tuple(model.named_vars_to_dims.get(rv.name, ())) for rv in free}
        self.coords = {k: list(v) for k, v in model.coords.items()}

    def __call__(self, values: dict) -> dict:
        """IPRED, ``mu``, ``sd`` (and ``nu``), each (batch, n_obs), for a batch of free-variable values.

        Also ``parameters``: the individual parameters by name, each (batch, n_subjects).
        """
        out = self._fn(*[np.asarray(values[n], dtype=float) for n in self.names])
        keys = ["ipred", "mu", "sd"] + (["nu"] if self.has_nu else [])
        got = dict(zip(keys, out[: len(keys)], strict=True))
        got["parameters"] = dict(zip(self.parameter_names, out[len(keys) :], strict=True))
        return got

    def replicate(self, values: dict, rng: np.random.Generator) -> dict:
        """As :meth:`__call__`, plus ``dv``: one replicated observation per record, on the DV scale."""
        out = self(values)
        if self.spec.outcomes:
            from nlmebayes.model.outcomes import draw_observations

            out["dv"] = draw_observations(self.spec, self.data, out["mu"], out["sd"], values, rng)
            return out
        e = rng.standard_t(out["nu"]) if self.has_nu else rng.standard_normal(out["mu"].shape)
        y = out["mu"] + out["sd"] * e
        out["dv"] = np.exp(y) if self.spec.log_scale_error else y
        return out


def n_samples(result) -> int:
    """Posterior draws of all chains together."""
    post = result.idata["posterior"]
    return post.sizes["chain"] * post.sizes["draw"]


def draw_indices(result, n: int, seed: int | None) -> np.ndarray:
    """``n`` posterior draws (chains stacked), without replacement when there are enough."""
    total = n_samples(result)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=n, replace=n > total))


def _stacked(result, name: str, idx: np.ndarray) -> np.ndarray:
    """Draws ``idx`` of ``name``, chains stacked (chain-major, as ``stack(chain, draw)``).

    A reshaped view of the stored array; only the rows asked for are copied (this runs once per
    batch of a prediction).
    """
    da = result.idata["posterior"][name].transpose("chain", "draw", ...)
    return da.values.reshape(-1, *da.shape[2:])[idx]


def posterior_median(result, name: str) -> np.ndarray:
    """Posterior median of ``name`` over all draws (chains pooled)."""
    return np.median(_stacked(result, name, np.arange(n_samples(result))), axis=0)


def _values(result, pred: Predictor, idx, rng, new_subjects: bool) -> dict:
    """Free-variable values for the draws ``idx``: posterior or fresh ``z``."""
    values = {}
    for name in pred.names:
        if not name.startswith(Z_PREFIX):
            values[name] = _stacked(result, name, idx)
        elif new_subjects:
            values[name] = rng.standard_normal((len(idx), *pred.shapes[name]))
        else:
            values[name] = _matched_z(result, pred, name, idx, rng)
    return values


def _matched_z(result, pred: Predictor, name: str, idx, rng) -> np.ndarray:
    """Posterior ``z`` of the design's subjects (occasions, groups) by label; fresh where unfitted.

    A subject of the design must be a fitted subject; an occasion or group the fit has not seen
    gets new innovations (a new occasion of a known subject).
    """
    post_z = _stacked(result, name, idx)
    dim = pred.dims[name][0]
    fitted = [str(v) for v in result.posterior[name][dim].values]
    wanted = pred.coords[dim]
    pos = {lab: i for i, lab in enumerate(fitted)}
    if dim == "subject" and not set(wanted) <= set(pos):
        raise ValueError(f"subjects {sorted(set(wanted) - set(pos))} were not fitted: predict them as new")
    out = rng.standard_normal((len(idx), *pred.shapes[name]))
    for j, lab in enumerate(wanted):
        if lab in pos:
            out[:, j] = post_z[:, pos[lab]]
    return out


def posterior_predictive(
    result,
    *,
    design: EventData | None = None,
    n: int = 500,
    seed: int | None = 0,
    new_subjects: bool = True,
    chunk: int = 250,
    predictor: Predictor | None = None,
) -> xr.Dataset:
    """Replicated data from the posterior at ``design`` (default: the fitted data).

    Parameters
    ----------
    result : FitResult
    design : EventData, optional
        Where to predict; its subjects must be fitted ones when ``new_subjects`` is False.
    n : int
        Replicates, each from its own posterior draw.
    seed : int, optional
        Seeds the choice of draws, the random effects and the residuals.
    new_subjects : bool
        True: new etas (and kappas, group effects) for every replicate, as a VPC needs. False: the
        fitted subjects' own posterior etas (individual prediction bands).
    chunk : int
        Replicates per compiled call (bounds memory).
    predictor : Predictor, optional
        A compiled :class:`Predictor` of this design to reuse.

    Returns
    -------
    xarray.Dataset
        ``ipred`` and ``dv`` (replicate, obs), the draw each replicate came from, and the
        design's observation time and subject index.

    Examples
    --------
    >>> sims = posterior_predictive(result, n=200, seed=1)  # doctest: +SKIP
    >>> sims["dv"].shape  # doctest: +SKIP
    (200, 132)
    """
    design = result.data if design is None else design
    pred = predictor or Predictor(result.spec, design)
    rng = np.random.default_rng(seed)
    idx = draw_indices(result, n, seed)
    ipred, dv = [], []
    for i in range(0, n, chunk):
        out = pred.replicate(_values(result, pred, idx[i : i + chunk], rng, new_subjects), rng)
        ipred.append(out["ipred"])
        dv.append(out["dv"])
    d = pred.data
    return xr.Dataset(
        {
            "ipred": (("replicate", "obs"), np.concatenate(ipred)),
            "dv": (("replicate", "obs"), np.concatenate(dv)),
            "draw_index": ("replicate", idx),
            "time": ("obs", d.obs_time),
            "subject_index": ("obs", d.obs_subject),
        },
        coords={"replicate": np.arange(n), "obs": np.arange(d.n_obs)},
        attrs={"new_subjects": int(new_subjects), "seed": -1 if seed is None else int(seed)},
    )


def population_prediction(
    result, design: EventData | None = None, *, predictor: Predictor | None = None
) -> np.ndarray:
    """PRED: the prediction at the posterior-median population parameters with all random effects 0.

    Covariate effects are included (PRED is per subject's covariates, as in NONMEM).
    """
    design = result.data if design is None else design
    pred = predictor or Predictor(result.spec, design)
    values = {}
    for name in pred.names:
        if name.startswith(Z_PREFIX):
            values[name] = np.zeros((1, *pred.shapes[name]))
        else:
            values[name] = posterior_median(result, name)[None]
    return pred(values)["ipred"][0]


def prior_predictive(
    spec: ModelSpec,
    data: EventData,
    *,
    n: int = 500,
    seed: int | None = 0,
    predictor: Predictor | None = None,
) -> xr.Dataset:
    """Replicated data with every free variable drawn from its prior, at the records of ``data``.

    What the priors say before the data are seen: if the bands miss the observations by orders of
    magnitude, a prior (or a unit) is wrong.

    Returns
    -------
    xarray.Dataset
        ``ipred`` and ``dv`` (replicate, obs), the design's ``time``, and each population variable's
        prior draws (dimension ``replicate``), e.g. ``log_CL_pop``.

    Examples
    --------
    >>> from nlmebayes import ModelSpec, datasets
    >>> spec = ModelSpec("theo", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "V": 31.5})
    >>> prior = prior_predictive(spec, datasets.theophylline(), n=100, seed=1)
    >>> prior["dv"].shape
    (100, 132)
    """
    import pymc as pm

    pred = predictor or Predictor(spec, data)
    free = pred.built.model.free_RVs
    draws = pm.draw(free, draws=n, random_seed=seed)
    values = dict(zip(pred.names, draws, strict=True))
    out = pred.replicate(values, np.random.default_rng(seed))
    d = pred.data
    population = {
        k: ("replicate", np.asarray(v, float))
        for k, v in values.items()
        if not k.startswith(Z_PREFIX) and np.ndim(v) == 1
    }
    return xr.Dataset(
        {
            "ipred": (("replicate", "obs"), out["ipred"]),
            "dv": (("replicate", "obs"), out["dv"]),
            "time": ("obs", d.obs_time),
            **population,
        },
        coords={"replicate": np.arange(n), "obs": np.arange(d.n_obs)},
    )
