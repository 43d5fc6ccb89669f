"""Individual forecasting (model-informed precision dosing): a new patient's parameters from a few levels.

Given the population posterior and a patient's covariates, dosing history and measured
concentrations, :func:`forecast` gives the posterior of the patient's random effects, and
:meth:`Forecast.predict` the predictions under any future regimen; :func:`recommend_dose` picks,
among candidate regimens, one that reaches a target with a stated probability.

Two methods:

* ``"full"`` (default): the population parameters are integrated over their posterior.
  Importance sampling: proposals pair a posterior draw with random effects from that draw's
  Omega (the prior), each weighted by the likelihood of the patient's observations; when the
  weights degenerate (effective sample size below ``min_ess``), a second round proposes the
  patient's etas from a defensive mixture of the prior and a Gaussian fitted to the first
  round's weighted draws. Exact in the limit of many proposals; every model part (IOV, levels,
  censoring, Student-t) enters through the same predictor and likelihood.
* ``"map"`` (fast): population parameters at their posterior median; the etas' mode (MAP, the
  Bayesian-feedback estimate of TDM software) by Newton's method, and their uncertainty by a
  Laplace approximation there. Occasion and group effects are set to draws from their prior.

Several patients can be forecast at once; each gets its own weights and draws.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from scipy import special, stats

from nlmebayes.data import EventData
from nlmebayes.model.likelihood import censoring
from nlmebayes.simulation.exposure import _evaluate, exposure
from nlmebayes.simulation.predict import to_grid
from nlmebayes.simulation.predictive import Z_PREFIX, Predictor, _stacked, n_samples, posterior_median
from nlmebayes.simulation.regimen import Regimen, continue_design

__all__ = ["Forecast", "forecast", "recommend_dose", "observation_loglik"]


@dataclass
class Forecast:
    """Posterior draws of one or more patients' random effects given their history.

    Attributes
    ----------
    result : FitResult
        The population fit.
    history : EventData
        The patients' doses and observations.
    method : str
        ``"full"`` or ``"map"``.
    values : dict
        Candidate values of the history predictor's free variables, each (rows, ...).
    index : array (draws, subjects)
        For each patient, the rows of ``values`` that are its posterior draws.
    ess : array (subjects,)
        Effective sample size of each patient's importance weights (``full``; for ``map`` the
        number of draws).
    labels : dict
        Dimension -> labels of the history predictor's coordinates (subjects, occasions).
    """

    result: object
    history: EventData
    method: str
    values: dict
    index: np.ndarray
    ess: np.ndarray
    labels: dict
    dims: dict

    def predict(self, design: EventData, *, residual: bool = False, seed: int | None = 0) -> xr.Dataset:
        """Predictions for the patients at ``design`` (e.g. :func:`continue_design`).

        Returns the same layout as :func:`~nlmebayes.simulation.predict`: ``ipred`` (and ``dv``)
        with dims ``(draw, subject, time, output)``, and the individual parameters.
        """
        pred = Predictor(self.result.spec, design)
        rng = np.random.default_rng(seed)
        subjects = [str(s) for s in pred.coords["subject"]]
        known = list(self.labels["subject"])
        missing = sorted(set(subjects) - set(known))
        if missing:
            raise ValueError(f"subjects {missing} of the design are not in the forecast's history")
        cols = np.array([known.index(s) for s in subjects])
        idx = self.index[:, cols]  # (draws, design subjects)
        rows = np.unique(idx)
        values = self._mapped(pred, rows, rng)
        got = pred.replicate(values, rng) if residual else pred(values)
        pos = np.searchsorted(rows, idx)  # (draws, design subjects)
        obs_s = pred.data.obs_subject
        arrays = {k: got[k][pos[:, obs_s], np.arange(pred.data.n_obs)] for k in ("ipred", "dv") if k in got}
        ds = to_grid(pred.data, arrays)
        s_idx = np.arange(pred.data.n_subjects)
        params = {p: (("draw", "subject"), v[pos, s_idx]) for p, v in got["parameters"].items()}
        ds = ds.assign(params)
        ds.attrs.update(level="forecast", method=self.method, residual=int(residual))
        return ds

    def _mapped(self, pred: Predictor, rows: np.ndarray, rng) -> dict:
        """Values for ``pred``'s variables at ``rows``; random effects matched by label, new ones drawn."""
        values = {}
        for name in pred.names:
            if not name.startswith(Z_PREFIX):
                values[name] = self.values[name][rows]
                continue
            dim = pred.dims[name][0]
            out = rng.standard_normal((len(rows), *pred.shapes[name]))
            if name in self.values:
                have = {lab: j for j, lab in enumerate(self.labels[self.dims[name][0]])}
                for j, lab in enumerate(pred.coords[dim]):
                    if str(lab) in have:
                        out[:, j] = self.values[name][rows, have[str(lab)]]
            values[name] = out
        return values


def observation_loglik(pred: Predictor, out: dict) -> np.ndarray:
    """Log-likelihood of each of ``pred``'s observations (batch, n_obs), as the model's ``DV``.

    Normal or Student-t on the modelling scale (log for exponential error); censored records (M3)
    contribute the probability of their censoring interval, and under M4 each record's term is
    divided by ``P(y > 0)``. Models with a non-continuous outcome are refused.
    """
    if pred.spec.outcomes:
        raise NotImplementedError(f"model {pred.spec.name}: forecasts weight Gaussian observations only")
    y, cens, lo, hi, m4 = censoring(pred.spec, pred.data)
    dist = stats.t(df=out["nu"]) if pred.has_nu else stats.norm
    ll = dist.logpdf((y - out["mu"]) / out["sd"]) - np.log(out["sd"])
    if np.any(cens != 0):
        l_hi = dist.logcdf((hi - out["mu"]) / out["sd"])
        l_lo = dist.logcdf((lo - out["mu"]) / out["sd"])
        with np.errstate(divide="ignore", invalid="ignore"):
            interval = l_hi + np.log1p(-np.exp(l_lo - l_hi))
        ll = np.where(cens == 0, ll, interval)
    if np.any(m4):
        ll = ll - np.where(m4, dist.logcdf(out["mu"] / out["sd"]), 0.0)
    return ll


def forecast(
    result,
    history: EventData,
    *,
    method: str = "full",
    draws: int = 1000,
    proposals: int = 20_000,
    min_ess: int = 500,
    seed: int | None = 0,
) -> Forecast:
    """The posterior of new patients' random effects given their history (see the module docstring).

    Parameters
    ----------
    result : FitResult
        The population fit (patients of ``history`` need not be, and usually are not, in it).
    history : EventData
        Covariates, doses and measured concentrations of one or more patients (NONMEM records,
        e.g. read with :func:`~nlmebayes.read_nonmem`); a patient without observations gets the
        population prediction for its covariates.
    method : {"full", "map"}
    draws : int
        Posterior draws per patient.
    proposals : int
        Importance-sampling proposals per round (``full``).
    min_ess : int
        Below this effective sample size, a second, adapted round is run (``full``); a warning
        names patients still below it afterwards.
    seed : int, optional

    Returns
    -------
    Forecast

    Examples
    --------
    >>> fc = forecast(result, patient, method="full")  # doctest: +SKIP
    >>> plan = Regimen(300, every=12, doses=4, start=24)
    >>> later = continue_design(patient, plan, grid(24, 72, 1), result.spec)  # doctest: +SKIP
    >>> fc.predict(later)["ipred"].quantile([0.05, 0.95], dim="draw")  # doctest: +SKIP
    """
    if method not in ("full", "map"):
        raise ValueError(f"method must be 'full' or 'map', got {method!r}")
    pred = Predictor(result.spec, history)
    rng = np.random.default_rng(seed)
    if method == "full":
        values, index, ess = _importance(result, pred, draws, proposals, min_ess, rng)
    else:
        values, index, ess = _laplace(result, pred, draws, rng)
    labels = {
        d: [str(v) for v in pred.coords[d]] for d in {pred.dims[n][0] for n in pred.names if pred.dims[n]}
    }
    labels.setdefault("subject", [str(v) for v in pred.coords["subject"]])
    dims = {n: pred.dims[n] for n in pred.names}
    return Forecast(result, pred.data, method, values, index, ess, labels, dims)


def _subject_z(pred: Predictor) -> list[str]:
    """The predictor's per-subject random-effect innovations (``z_0``, ``z_1``, ...)."""
    return [n for n in pred.names if n.startswith(Z_PREFIX) and pred.dims[n][:1] == ("subject",)]


def _split(pred: Predictor, names: list[str], Z: np.ndarray) -> dict:
    """``Z`` (..., subjects, Q), all per-subject innovations side by side, back into ``z_k`` blocks."""
    edges = np.cumsum([0, *(pred.shapes[n][1] for n in names)])
    return {n: Z[..., edges[i] : edges[i + 1]] for i, n in enumerate(names)}


def _subject_loglik(pred: Predictor, values: dict) -> np.ndarray:
    """Log-likelihood of each patient's observations, (batch, subjects)."""
    return pred.data.sum_by_subject(observation_loglik(pred, pred(values)))


def _population_rows(result, pred: Predictor, rows: np.ndarray) -> dict:
    return {n: _stacked(result, n, rows) for n in pred.names if not n.startswith(Z_PREFIX)}


#: Random-effect proposals per population draw in the ``full`` method.
INNER = 10


def _importance(result, pred: Predictor, draws: int, proposals: int, min_ess: int, rng):
    """Nested importance sampling; an adapted second round when the weights degenerate.

    Rows are population draws ``theta_k`` (K = proposals / INNER), shared by all patients, so that
    predicting needs one evaluation per row whatever the number of patients. For each row and
    patient, INNER proposals of the random effects give the patient's likelihood given
    ``theta_k`` (their mean) and one of them, picked by its weight, is the row's value for that
    patient: a draw from ``p(eta | theta_k, y)``. Each patient's draws are then rows resampled by
    that likelihood, i.e. from ``p(theta, eta | y) ~ p(theta | data) p(eta | theta) p(y | theta, eta)``.
    """
    K = max(1, proposals // INNER)
    theta = rng.permutation(np.resize(rng.permutation(n_samples(result)), K))
    pop = _population_rows(result, pred, np.repeat(theta, INNER))
    z = {n: rng.standard_normal((K * INNER, *pred.shapes[n])) for n in pred.names if n.startswith(Z_PREFIX)}
    logw = _batched_loglik(pred, pop | z)
    if _ess(logw).min() < min_ess and _subject_z(pred):
        z, logw = _adapted_round(pred, pop, z, logw, rng)
    inner = logw.reshape(K, INNER, -1)  # (K, INNER, N)
    marginal = special.logsumexp(inner, axis=1)  # log p(y_s | theta_k) + const
    ess = _ess(marginal)
    low = [pred.coords["subject"][i] for i in np.flatnonzero(ess < min_ess)]
    if low:
        warnings.warn(
            f"forecast: effective sample size below {min_ess} for patients {low} "
            f"(min {ess.min():.0f}); increase proposals or use method='map'",
            stacklevel=3,
        )
    pick = np.argmax(inner + rng.gumbel(size=inner.shape), axis=1)  # (K, N): one proposal by weight
    values = {n: v[::INNER] for n, v in pop.items()}
    values |= _picked(pred, z, pick, K)
    index = np.stack([_resample(m, draws, rng) for m in marginal.T], axis=1)
    return values, index, ess


def _picked(pred: Predictor, z: dict, pick: np.ndarray, K: int) -> dict:
    """Each row's random effects: for each patient (its occasions), the proposal picked for it."""
    owner = {"subject": np.arange(pred.data.n_subjects)}
    if pred.built.occasions:
        owner["occasion"] = np.array([s for s, _ in pred.built.occasions])
    out = {}
    for n, v in z.items():
        v = v.reshape(K, INNER, *v.shape[1:])
        who = owner.get(pred.dims[n][0], np.zeros(v.shape[2], int))  # a group: its first patient's
        j = pick[:, who]  # (K, rows of the dimension)
        out[n] = np.take_along_axis(v, j[:, None, :, None], axis=1)[:, 0]
    return out


def _batched_loglik(pred: Predictor, values: dict, batch: int = 2000) -> np.ndarray:
    n = len(next(iter(values.values())))
    return np.concatenate(
        [_subject_loglik(pred, {k: v[i : i + batch] for k, v in values.items()}) for i in range(0, n, batch)]
    )


def _weights(logw: np.ndarray) -> np.ndarray:
    """Normalised importance weights ``exp(logw)`` along the first axis."""
    w = np.exp(logw - logw.max(axis=0))
    return w / w.sum(axis=0)


def _ess(logw: np.ndarray) -> np.ndarray:
    w = _weights(logw)
    return 1.0 / np.sum(w * w, axis=0)


def _resample(logw: np.ndarray, n: int, rng) -> np.ndarray:
    """Systematic resampling of ``n`` indices by the weights ``exp(logw)``."""
    c = np.cumsum(_weights(logw))
    return np.minimum(np.searchsorted(c, (rng.uniform() + np.arange(n)) / n), len(c) - 1)


def _adapted_round(pred: Predictor, pop: dict, z: dict, logw: np.ndarray, rng):
    """Second round: each patient's etas from 0.5 N(0, I) + 0.5 N(m, 2 C) fitted to round one.

    The population rows and the other random effects keep their prior proposals; the weight of a
    patient's proposal is its likelihood times the prior over the mixture density of its etas.
    """
    names = _subject_z(pred)
    Z = np.concatenate([z[n] for n in names], axis=2)  # (M, subjects, Q)
    M, N, Q = Z.shape
    w = _weights(logw)
    mean = np.einsum("ms,msq->sq", w, Z)
    dev = Z - mean
    cov = 2.0 * np.einsum("ms,msq,msr->sqr", w, dev, dev) + 1e-6 * np.eye(Q)
    chol = np.linalg.cholesky(cov)
    fitted = rng.uniform(size=(M, N)) < 0.5
    e = rng.standard_normal((M, N, Q))
    new = np.where(fitted[..., None], mean + np.einsum("sqr,msr->msq", chol, e), e)
    z = dict(z) | _split(pred, names, new)
    log_prior = stats.norm.logpdf(new).sum(axis=2)
    log_fit = np.stack(
        [stats.multivariate_normal(mean[i], cov[i]).logpdf(new[:, i]) for i in range(N)], axis=1
    )
    log_q = np.logaddexp(np.log(0.5) + log_prior, np.log(0.5) + log_fit)
    return z, _batched_loglik(pred, pop | z) + log_prior - log_q


def _laplace(result, pred: Predictor, draws: int, rng):
    """Etas' mode at the population posterior median, and draws from the Laplace approximation."""
    pop = {n: posterior_median(result, n) for n in pred.names if not n.startswith(Z_PREFIX)}
    names = _subject_z(pred)
    N, Q = pred.data.n_subjects, sum(pred.shapes[n][1] for n in names)
    other = {n: np.zeros(pred.shapes[n]) for n in pred.names if n.startswith(Z_PREFIX) and n not in names}

    def objective(Z):  # Z (batch, N, Q) -> -log posterior per subject (batch, N)
        values = {k: np.broadcast_to(v, (len(Z), *np.shape(v))) for k, v in {**pop, **other}.items()}
        values |= _split(pred, names, Z)
        return 0.5 * np.sum(Z * Z, axis=2) - _subject_loglik(pred, values)

    zhat, H = _newton(objective, np.zeros((N, Q)))
    cov = np.linalg.inv(H)
    chol = np.linalg.cholesky(0.5 * (cov + np.swapaxes(cov, 1, 2)))
    Z = zhat + np.einsum("sqr,msr->msq", chol, rng.standard_normal((draws, N, Q)))
    values = {k: np.broadcast_to(v, (draws, *np.shape(v))).copy() for k, v in pop.items()}
    values |= _split(pred, names, Z)
    for n in other:
        values[n] = rng.standard_normal((draws, *pred.shapes[n]))
    index = np.repeat(np.arange(draws)[:, None], N, axis=1)
    return values, index, np.full(N, float(draws))


def _newton(objective, Z, h: float = 1e-4, tol: float = 1e-4, maxiter: int = 50):
    """Minimise a per-subject objective of (N, Q) by damped Newton steps, all subjects at once.

    Gradient and Hessian by central differences; each patient's objective depends only on its
    own row, so one batched evaluation perturbs a column for every patient at once.
    """
    N = Z.shape[0]
    for _ in range(maxiter):
        g, H = _derivatives(objective, Z, h)
        if np.max(np.abs(g)) < tol:
            break
        w, V = np.linalg.eigh(0.5 * (H + np.swapaxes(H, 1, 2)))
        # |eigenvalues|, at least the prior's curvature 1: a descent direction where the
        # objective is not convex (far from the mode), of bounded length
        step = np.einsum("sqr,sr,spr,sp->sq", V, 1.0 / np.maximum(np.abs(w), 1.0), V, g)
        alphas = 0.5 ** np.arange(20)
        trial = Z[None] - alphas[:, None, None] * step[None]
        f = objective(np.concatenate([Z[None], trial]))  # (1 + len(alphas), N)
        f = np.where(np.isfinite(f), f, np.inf)  # argmin would take a NaN for the best
        best = np.argmin(f, axis=0)  # 0: no step improves
        Z = np.where((best > 0)[:, None], trial[np.maximum(best - 1, 0), np.arange(N)], Z)
    g, H = _derivatives(objective, Z, h)
    H = 0.5 * (H + np.swapaxes(H, 1, 2))
    w, V = np.linalg.eigh(H)
    H = np.einsum("sqr,sr,spr->sqp", V, np.maximum(w, 1e-6), V)
    return Z, H


def _derivatives(objective, Z, h):
    """Central-difference gradient (N, Q) and Hessian (N, Q, Q) of a per-subject objective."""
    N, Q = Z.shape
    E = np.eye(Q) * h
    fs = objective(Z[None] + np.concatenate([E, -E])[:, None, :])
    g = ((fs[:Q] - fs[Q:]) / (2 * h)).T
    pairs = np.array(
        [Z + (a * E[j] + b * E[k]) for j in range(Q) for k in range(Q) for a in (1, -1) for b in (1, -1)]
    )
    fp = objective(pairs).reshape(Q, Q, 2, 2, N)
    H = (fp[:, :, 0, 0] - fp[:, :, 0, 1] - fp[:, :, 1, 0] + fp[:, :, 1, 1]) / (4 * h * h)
    return g, np.moveaxis(H, -1, 0)


def recommend_dose(
    fc: Forecast,
    candidates: Mapping[str, Regimen] | Sequence[Regimen],
    times,
    condition,
    *,
    start: float | None = None,
    end: float | None = None,
    probability: float = 0.8,
    threshold: float | None = None,
) -> pd.DataFrame:
    """For each patient, the first candidate regimen that reaches a target with ``probability``.

    Parameters
    ----------
    fc : Forecast
    candidates : mapping label -> Regimen, or sequence of Regimen
        In order of preference (e.g. ascending dose); regimens start after the history.
    times : array
        Prediction times (absolute) covering the target window.
    condition : str or callable
        On the :func:`~nlmebayes.simulation.exposure` metrics of the window, e.g.
        ``"Ctrough >= 10"`` or ``"(AUC >= 300) & (AUC <= 600)"``.
    start, end : float, optional
        The window the metrics are computed over (default: all of ``times``).
    probability : float
        Required posterior probability of reaching the target.
    threshold : float, optional
        For ``T_above`` in the condition.

    Returns
    -------
    pandas.DataFrame
        One row per patient and candidate: ``subject``, ``regimen``, ``probability``,
        ``recommended`` (True for the chosen one: the first candidate reaching ``probability``,
        else the one with the highest probability), ``met``.

    Examples
    --------
    >>> cands = {f"{a} mg q12h": Regimen(a, every=12, doses=6, start=24) for a in (100, 200, 300)}
    >>> recommend_dose(fc, cands, grid(84, 96, 0.5), "Ctrough >= 4", probability=0.8)  # doctest: +SKIP
    """
    cands = dict(candidates) if isinstance(candidates, Mapping) else {r.label: r for r in candidates}
    rows = []
    for label, regimen in cands.items():
        design = continue_design(fc.history, regimen, times, fc.result.spec)
        m = exposure(fc.predict(design), start=start, end=end, threshold=threshold)
        if "output" in m.dims:
            if m.sizes["output"] > 1:
                raise ValueError("several model outputs: select one in the condition's callable")
            m = m.isel(output=0)
        p = _evaluate(condition, m).mean("draw").values
        rows += [
            {"subject": s, "regimen": label, "probability": float(v)}
            for s, v in zip(m["subject"].values, p, strict=True)
        ]
    out = pd.DataFrame(rows)
    out["met"] = out["probability"] >= probability
    out["recommended"] = False
    for _, grp in out.groupby("subject", sort=False):
        met = grp[grp["met"]]
        pick = met.index[0] if len(met) else grp["probability"].idxmax()
        out.loc[pick, "recommended"] = True
    return out
