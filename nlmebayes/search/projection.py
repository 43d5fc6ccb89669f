r"""Projection-predictive covariate selection from the full covariate model.

Piironen, Paasiniemi & Vehtari (2020) select a submodel by projecting the posterior of a good
reference model (here the full covariate model, :mod:`.covariate_model`) onto it and measuring how
much predictive performance is lost. In an NLME model the covariates act on the distribution of
the individual parameters only: for subject i, ``log P_i ~ N(mu(x_i), Omega)`` and the data
depend on ``P_i`` alone. So the projection of one posterior draw onto a submodel S (its
covariates, same structural and error model) is the Gaussian KL projection of that population
distribution, averaged over the subjects, in closed form:

.. math::

    \beta_S = \arg\min \sum_i \lVert \mu(x_i) - X_{S,i} \beta \rVert^2, \qquad
    \Omega_S = \Omega + \tfrac1N \sum_i r_i r_i^\top, \quad r_i = \mu(x_i) - X_{S,i} \beta_S,

per parameter with IIV (a diagonal Omega keeps only the diagonal of the added term). Since the
data given ``P_i`` are untouched, this is also the KL projection of the joint predictive of (P_i,
y_i). The individual parameters stay where they were: the projected etas are ``eta_i + r_i``.

The search path adds, one at a time, the candidate (all levels of a categorical one together)
that most lowers the projection's KL, ``N/2 * mean_draws log|Omega_S|/|Omega|``. Each submodel
on the path is scored by the marginal leave-one-subject-out elpd (PSIS-LOO over the projected
draws, the etas integrated out by importance sampling,
:func:`~nlmebayes.diagnostics.importance.marginal_loglik_draws`): how well the population model
predicts a new subject, which is what covariates are for. The suggested size is the smallest
whose elpd is within one SE (of the paired, per-subject difference) of the best size scored.
projpred compares with the reference model instead; here the full model, which carries every
noise effect, often predicts worse than the right submodel (by 2-8 elpd on
``tests/covariate_cases.py``), and within one SE of it even a model that lacks a real effect
can fall.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from nlmebayes.model.candidates import CandidateForm
from nlmebayes.model.spec import ModelSpec
from nlmebayes.search.covariate_model import fitted_forms, stacked_draws

__all__ = ["CovariateSelection", "select_covariates"]


@dataclass
class CovariateSelection:
    """The result of :func:`select_covariates`.

    Attributes
    ----------
    path : DataFrame
        One row per size scored (0 = no candidate effect; the last is the full model): the
        effect added, the projection's KL from the full model, the marginal elpd with its SE,
        the difference to the best size with the SE of the paired difference, and the smallest
        importance-sampling ESS over subjects and draws.
    selected : list of (str, str)
        The (parameter, covariate) pairs of the suggested size.
    spec : ModelSpec
        The base model plus the selected effects as ordinary covariate relations, their initial
        values at the projected posterior medians: ready to refit.
    effects : DataFrame
        The selected effects' projected posterior (median, 90% interval), one row per level.
    """

    path: pd.DataFrame
    selected: list
    spec: ModelSpec
    effects: pd.DataFrame

    def __repr__(self) -> str:
        chosen = ", ".join(f"{p}~{c}" for p, c in self.selected) or "none"
        return f"CovariateSelection(selected: {chosen})\n{self.path.to_string()}"


def select_covariates(
    result,
    *,
    max_size: int | None = None,
    n_eta: int = 200,
    max_draws: int = 400,
    seed: int | None = 0,
) -> CovariateSelection:
    """Select covariate effects by projection from a full-model fit (see the module docstring).

    Parameters
    ----------
    result : FitResult
        A fit of a spec with ``candidates`` (:func:`~nlmebayes.search.full_covariate_model`).
    max_size : int, optional
        Score the path up to this many effects (the full model is always scored, as reference).
    n_eta : int
        Importance-sampling points per subject for the marginal likelihood.
    max_draws : int
        Posterior draws used (thinned evenly).
    seed : int, optional
        Seeds the importance sampling.

    Returns
    -------
    CovariateSelection

    Examples
    --------
    >>> sel = select_covariates(full_fit)  # doctest: +SKIP
    >>> sel.selected  # doctest: +SKIP
    [('CL', 'WT'), ('V', 'SEX')]
    >>> refit = fit(sel.spec, data)  # doctest: +SKIP
    """
    from nlmebayes.diagnostics.importance import thinning_step
    from nlmebayes.diagnostics.population import unsupported

    spec, data = result.spec, result.data
    why = unsupported(spec, data) or ("inter-occasion variability" if spec.iov else None)
    if why:
        raise NotImplementedError(f"projection selection does not handle {why} yet")
    forms = fitted_forms(result)
    post = result.posterior.isel(draw=slice(None, None, thinning_step(result.posterior, max_draws)))
    proj = _Projection(spec, forms, post)
    order, kl = proj.forward_path()
    sizes = range(len(forms) + 1) if max_size is None else [*range(min(max_size, len(forms)) + 1), len(forms)]
    cm = _conditional_model(proj.all_effects_spec(), data)
    scored = {k: _score(proj, cm, order[:k], n_eta, seed) for k in sorted(set(sizes))}
    best = max(scored, key=lambda k: scored[k][0].sum())
    rows = []
    for k, (elpd_i, min_ess) in scored.items():
        d = elpd_i - scored[best][0]
        rows.append({
            "size": k,
            "added": "" if k == 0 else f"{forms[order[k - 1]].parameter}~{forms[order[k - 1]].covariate}",
            "kl": kl[k], "elpd": elpd_i.sum(), "se": float(np.sqrt(len(elpd_i) * np.var(elpd_i, ddof=1))),
            "elpd_diff": d.sum(), "se_diff": float(np.sqrt(len(d) * np.var(d, ddof=1))),
            "min_is_ess": min_ess,
        })  # fmt: skip
    path = pd.DataFrame(rows).set_index("size")
    size = int(path.index[path["elpd_diff"] + path["se_diff"] >= 0].min())
    chosen = [forms[j] for j in order[:size]]
    sub_spec, effects = proj.refit_spec(order[:size])
    return CovariateSelection(path, [(f.parameter, f.covariate) for f in chosen], sub_spec, effects)


class _Projection:
    """The full model's population part per draw, and its projection onto subsets of the forms."""

    def __init__(self, spec: ModelSpec, forms: list[CandidateForm], post: xr.Dataset):
        self.spec, self.forms, self.post = spec, forms, post
        self.base = dataclasses.replace(spec, candidates=None)
        self.params = sorted({f.parameter for f in forms}, key=spec.iiv_parameters.index)
        S = post.sizes["chain"] * post.sizes["draw"]
        self.S, self.n = S, forms[0].columns.shape[0]
        self.log_tv = {p: np.log(_draws(post[f"{p}_pop"], S).reshape(S)) for p in self.params}
        # mu[p]: (S, N), the log typical value of each subject from the candidates (the base
        # model's own covariate relations are kept as they are in every submodel)
        self.mu = {p: np.repeat(self.log_tv[p][:, None], self.n, axis=1) for p in self.params}
        for f in forms:
            theta = _draws(post[f.name], S).reshape(S, -1)
            self.mu[f.parameter] = self.mu[f.parameter] + theta @ f.columns.T
        self.omega2 = {p: _draws(post["omega_sd"].sel(iiv=p), S).reshape(S) ** 2 for p in self.params}

    def fit(self, subset) -> tuple[dict, dict]:
        """Per parameter: (intercept, coefficients per form in the subset) and residuals (S, N)."""
        coefs, resid = {}, {}
        for p in self.params:
            mine = [j for j in subset if self.forms[j].parameter == p]
            X = np.column_stack([np.ones(self.n), *[self.forms[j].columns for j in mine]])
            b = np.linalg.lstsq(X, self.mu[p].T, rcond=None)[0].T  # (S, 1 + columns)
            coefs[p] = (b[:, 0], _split(b[:, 1:], [self.forms[j] for j in mine], mine))
            resid[p] = self.mu[p] - b @ X.T
        return coefs, resid

    def kl(self, subset) -> float:
        _, resid = self.fit(subset)
        kl = sum(np.log1p(np.mean(resid[p] ** 2, axis=1) / self.omega2[p]) for p in self.params)
        return float(self.n / 2 * np.mean(kl))

    def forward_path(self) -> tuple[list[int], list[float]]:
        order: list[int] = []
        kl = [self.kl(order)]
        while len(order) < len(self.forms):
            tried = {j: self.kl([*order, j]) for j in range(len(self.forms)) if j not in order}
            best = min(tried, key=tried.__getitem__)
            order.append(best)
            kl.append(tried[best])
        return order, kl

    def all_effects_spec(self) -> ModelSpec:
        """The base model with every candidate as an ordinary relation.

        Each submodel is this model with the effects it lacks at 0, so one compiled model scores the path.
        """
        covs = [f.covariate_relation() for f in self.forms]
        return dataclasses.replace(self.base, covariates=[*self.base.covariates, *covs])

    def submodel(self, subset) -> xr.Dataset:
        """The projected posterior of a submodel, as draws of :meth:`all_effects_spec`'s variables."""
        coefs, resid = self.fit(subset)
        post = self.post.drop_vars(_horseshoe(self.post))
        shape = (post.sizes["chain"], post.sizes["draw"])
        for j, f in enumerate(self.forms):
            theta = coefs[f.parameter][1].get(j, np.zeros((self.S, len(f.labels))))
            if f.kind == "categorical":
                post[f.name] = (("chain", "draw", f"{f.name}_level"), theta.reshape(*shape, -1))
            else:
                post[f.name] = (("chain", "draw"), theta.reshape(shape))
        for p in self.params:
            post[f"log_{p}_pop"] = (("chain", "draw"), coefs[p][0].reshape(shape))
            post[f"{p}_pop"] = np.exp(post[f"log_{p}_pop"])
        return self._omega_eta(post, resid)

    def _omega_eta(self, post: xr.Dataset, resid: dict) -> xr.Dataset:
        """Omega + the residuals' covariance (within blocks); etas shifted by the residuals."""
        q = self.spec.iiv_parameters
        shape = (post.sizes["chain"], post.sizes["draw"])
        eta = post["eta"].transpose("chain", "draw", "subject", "iiv").values.copy()
        R = np.zeros((self.S, self.n, len(q)))
        for p in self.params:
            R[:, :, q.index(p)] = resid[p]
            eta[..., q.index(p)] += resid[p].reshape(*shape, self.n)
        post["eta"] = (("chain", "draw", "subject", "iiv"), eta)
        add = np.einsum("sni,snj->sij", R, R) / self.n
        from nlmebayes.diagnostics.population import omega_draws

        omega = omega_draws(post, self.spec)
        j = 0
        for k, block in enumerate(self.spec.iiv):
            m = len(block.parameters)
            sl = slice(j, j + m)
            omega[:, sl, sl] += add[:, sl, sl] if block.block else add[:, sl, sl] * np.eye(m)
            sd = np.sqrt(np.diagonal(omega[:, sl, sl], axis1=1, axis2=2))
            if block.block:
                corr = omega[:, sl, sl] / (sd[:, :, None] * sd[:, None, :])
                post[f"omega_corr_{k}"] = (post[f"omega_corr_{k}"].dims, corr.reshape(*shape, m, m))
            j += m
        sd_all = np.sqrt(np.diagonal(omega, axis1=1, axis2=2))
        post["omega_sd"] = (("chain", "draw", "iiv"), sd_all.reshape(*shape, len(q)))
        return post

    def refit_spec(self, subset) -> tuple[ModelSpec, pd.DataFrame]:
        """The submodel with the projected medians as initial values, and its effects table."""
        coefs, _ = self.fit(subset)
        covs, rows = [], []
        for j in subset:
            f = self.forms[j]
            theta = coefs[f.parameter][1][j]
            med = np.atleast_1d(np.median(theta, axis=0))
            lo, hi = np.atleast_1d(*np.quantile(theta, [0.05, 0.95], axis=0))
            for k, level in enumerate(f.levels or [None]):
                rows.append({"parameter": f.parameter, "covariate": f.covariate, "level": level,
                             "kind": f.kind, "effect": med[k], "effect_lower": lo[k],
                             "effect_upper": hi[k]})  # fmt: skip
            rel = f.covariate_relation(float(med[0]) if f.kind != "categorical" else 0.0)
            covs.append(rel)
        params = [
            dataclasses.replace(p, initial=float(np.exp(np.median(coefs[p.name][0]))))
            if p.name in coefs
            else p
            for p in self.base.parameters
        ]
        name = self.spec.name.removesuffix("_full") + "_selected"
        spec = dataclasses.replace(
            self.base, name=name, parameters=params, covariates=[*self.base.covariates, *covs]
        )
        return spec, pd.DataFrame(rows)


def _draws(da: xr.DataArray, S: int) -> np.ndarray:
    return stacked_draws(da).reshape(S, -1)


def _split(b: np.ndarray, forms: list[CandidateForm], idx: list[int]) -> dict:
    """Coefficient columns per form: (S, levels) for a categorical one, else (S,)."""
    out, c = {}, 0
    for j, f in zip(idx, forms, strict=True):
        m = f.columns.shape[1]
        out[j] = b[:, c : c + m] if f.kind == "categorical" else b[:, c]
        c += m
    return out


def _horseshoe(post: xr.Dataset) -> list[str]:
    return [n for n in post.data_vars if n.startswith("hs_") or n == "beta_candidate"]


def _conditional_model(spec: ModelSpec, data):
    from nlmebayes.diagnostics.conditional import ConditionalModel

    # numba: a few seconds to compile, then every importance-sampling batch runs ~5x faster
    return ConditionalModel(spec, data, mode="NUMBA", lean=True)


def _score(proj: _Projection, cm, subset, n_eta: int, seed) -> tuple[np.ndarray, float]:
    """Pointwise (per subject) marginal PSIS-LOO elpd of a projected submodel, and the IS ESS."""
    from nlmebayes.diagnostics.importance import marginal_loglik_draws
    from nlmebayes.diagnostics.loo import psis_loo

    post = proj.submodel(subset)
    ll = marginal_loglik_draws(post, cm.spec, cm, n_eta=n_eta, max_draws=proj.S, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = psis_loo(ll, post)
    return np.asarray(lo.elpd_i).ravel(), float(ll.attrs["min_is_ess"])
