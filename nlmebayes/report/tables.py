"""Posterior summaries in pharmacometric terms (never rebuilds the graph).

The parameter table gives typical values on the natural scale, covariate effects, omega as
variance, SD and CV% (``100 * sqrt(exp(omega^2) - 1)`` for log-normal IIV, as nlmixr2 and
Monolix report it), eta correlations and residual sigma (SD and variance), each with the
posterior median, mean, SD, a central credible interval, R-hat and bulk/tail ESS.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from arviz_stats import ess, rhat

__all__ = ["parameter_table", "variance_decomposition"]


def _row(name, kind, description, da: xr.DataArray, ci: float) -> dict:
    x = da.values.reshape(da.sizes["chain"], da.sizes["draw"])
    lo, hi = np.quantile(x, [(1 - ci) / 2, (1 + ci) / 2])
    return {
        "parameter": name,
        "kind": kind,
        "description": description,
        "median": float(np.median(x)),
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)),
        "lower": float(lo),
        "upper": float(hi),
        "rhat": float(rhat(da)),
        "ess_bulk": float(ess(da, method="bulk")),
        "ess_tail": float(ess(da, method="tail")),
    }


def parameter_table(result, ci: float = 0.95) -> pd.DataFrame:
    """Posterior summary of the population parameters in pharmacometric terms.

    Parameters
    ----------
    result : FitResult
    ci : float
        Probability of the central (equal-tailed) credible interval; 0.95 by default.

    Returns
    -------
    DataFrame with one row per reported quantity and columns parameter, nonmem (THETA(n),
    OMEGA(i,j), SIGMA(n,n) where NONMEM has a name for the quantity), kind (theta, omega, sigma,
    derived: half-lives and V = CL/K from the typical values, draw by draw),
    description, median, mean, sd, rse% (100 sd / |median|), lower, upper, rhat, ess_bulk,
    ess_tail.
    """
    post = result.idata["posterior"].to_dataset()
    spec = result.spec
    rows = _theta_rows(spec, post, ci) + _omega_rows(spec, post, ci) + _sigma_rows(spec, post, ci)
    rows += _derived_rows(spec, post, ci)
    tab = pd.DataFrame(rows)
    # RSE%: the posterior SD relative to the median, the analogue of NONMEM's $COV RSE
    with np.errstate(divide="ignore", invalid="ignore"):
        tab.insert(tab.columns.get_loc("sd") + 1, "rse%", 100 * tab["sd"] / tab["median"].abs())
    tab.insert(1, "nonmem", _nonmem_names(spec, tab))
    return tab


def _nonmem_names(spec, tab: pd.DataFrame) -> list[str]:
    """NONMEM's name of each row ('' where NONMEM has none: SDs, CV%).

    THETA(n) in table order; OMEGA(i,i) for IIV (then IOV) variances and OMEGA(i,j) beside an
    eta correlation (NONMEM estimates the covariance there); SIGMA(n,n) for residual variances.
    """
    order = list(spec.iiv_parameters) + [f"occ:{p}" for p in spec.iov_parameters]
    index = {p: i + 1 for i, p in enumerate(order)}
    names, theta, sigma = [], 0, 0
    for name, kind in zip(tab["parameter"], tab["kind"], strict=True):
        label = ""
        if kind == "theta":
            theta += 1
            label = f"THETA({theta})"
        elif name.startswith("omega2("):
            i = index[name[7:-1]]
            label = f"OMEGA({i},{i})"
        elif name.startswith("pi2("):
            i = index[f"occ:{name[4:-1]}"]
            label = f"OMEGA({i},{i})"
        elif name.startswith("corr("):
            a, b = name[5:-1].split(",")
            label = f"OMEGA({index[b]},{index[a]})"
        elif name.startswith("sigma2_"):
            sigma += 1
            label = f"SIGMA({sigma},{sigma})"
        names.append(label)
    return names


def _theta_rows(spec, post, ci: float) -> list[dict]:
    """Typical values and covariate effects."""
    rows = []
    for p in spec.parameters:
        if p.fixed:
            continue
        # with the flip-flop guard the sampled "KA" is the excess over elimination: KA_i = k_i + KA'
        what = (
            "typical KA - k (guarded: KA_i = k_i + this)"
            if spec.flip_flop_guard and p.name == "KA"
            else "typical value"
        )
        rows.append(_row(p.name, "theta", what, post[f"{p.name}_pop"], ci))
    for c in spec.covariates:
        if c.fixed:
            continue
        da = post[c.name]
        if c.kind == "categorical":
            for lv in da[da.dims[-1]].values:
                rows.append(
                    _row(
                        f"{c.name}[{lv}]",
                        "theta",
                        f"exp(theta): {c.covariate}={lv} vs reference",
                        da.sel({da.dims[-1]: lv}),
                        ci,
                    )
                )
        else:
            desc = {
                "power": f"({c.covariate}/{c.reference:g})^theta",
                "exponential": f"exp(theta*({c.covariate}-{c.reference:g}))",
                "linear": f"1+theta*({c.covariate}-{c.reference:g})",
                "indicator": f"1+theta if {c.condition}",
            }[c.kind]
            rows.append(_row(c.name, "theta", f"{c.parameter} effect {desc}", da, ci))
    return rows


def _omega_rows(spec, post, ci: float) -> list[dict]:
    """IIV variances, SDs, CV% and correlations; IOV; levels above the subject."""
    rows = []
    if "omega_sd" in post:
        lognormal = {p for p in spec.iiv_parameters if spec.eta_kind(p) == "lognormal"}
        for e in post["omega_sd"]["iiv"].values:
            sd = post["omega_sd"].sel(iiv=e, drop=True)
            rows.append(_row(f"omega2({e})", "omega", "IIV variance", sd**2, ci))
            rows.append(_row(f"omega({e})", "omega", "IIV SD", sd, ci))
            if e in lognormal:
                rows.append(
                    _row(f"CV%({e})", "omega", "100*sqrt(exp(omega^2)-1)", 100 * np.sqrt(np.expm1(sd**2)), ci)
                )
        for k, block in enumerate(spec.iiv):
            if not block.block:
                continue
            corr = post[f"omega_corr_{k}"]
            ps = block.parameters
            for i in range(len(ps)):
                for j in range(i):
                    rows.append(
                        _row(
                            f"corr({ps[j]},{ps[i]})",
                            "omega",
                            "eta correlation",
                            corr.isel({corr.dims[-2]: i, corr.dims[-1]: j}, drop=True),
                            ci,
                        )
                    )
    if "pi_sd" in post:
        for e in post["pi_sd"]["iov"].values:
            sd = post["pi_sd"].sel(iov=e, drop=True)
            rows.append(_row(f"pi2({e})", "omega", "IOV variance (between occasions)", sd**2, ci))
            rows.append(_row(f"pi({e})", "omega", "IOV SD", sd, ci))
            rows.append(
                _row(f"CV%occ({e})", "omega", "100*sqrt(exp(pi^2)-1)", 100 * np.sqrt(np.expm1(sd**2)), ci)
            )
    for b, block in enumerate(spec.iov):
        if not block.block:
            continue
        corr = post[f"pi_corr_{b}"]
        for i, a in enumerate(block.parameters):
            for j, c in enumerate(block.parameters[:i]):
                da = corr.isel({corr.dims[-2]: i, corr.dims[-1]: j}, drop=True)
                rows.append(_row(f"corr_occ({c},{a})", "omega", "kappa correlation", da, ci))
    for lvl in spec.levels:
        for p in lvl.parameters:
            sd = post[f"level_sd_{lvl.column}_{p}"]
            rows.append(
                _row(f"var_{lvl.column}({p})", "omega", f"variance between {lvl.column} groups", sd**2, ci)
            )
            rows.append(_row(f"sd_{lvl.column}({p})", "omega", f"SD between {lvl.column} groups", sd, ci))
    return rows


def _derived_rows(spec, post, ci: float) -> list[dict]:
    """Quantities computed from the typical values, draw by draw: half-lives, V from CL/K."""
    rows = []
    tv = {p: post[f"{p}_pop"] for p in ("CL", "V", "K", "KA") if f"{p}_pop" in post}
    if "CL" in tv and "K" in tv and "V" not in tv:
        tv["V"] = tv["CL"] / tv["K"]
        rows.append(_row("V (= CL/K)", "derived", "typical volume from CL and K", tv["V"], ci))
    if "K" in tv and "V" in tv and "CL" not in tv:
        tv["CL"] = tv["K"] * tv["V"]
        rows.append(_row("CL (= K*V)", "derived", "typical clearance from K and V", tv["CL"], ci))
    k = tv["K"] if "K" in tv else tv["CL"] / tv["V"] if "CL" in tv and "V" in tv else None
    if k is not None:
        rows.append(
            _row(
                "t1/2", "derived", "ln2 V/CL: elimination half-life (k10 with peripherals)", np.log(2) / k, ci
            )
        )
    if "KA" in tv:
        ka = tv["KA"] + k if spec.flip_flop_guard and k is not None else tv["KA"]
        rows.append(_row("t1/2,abs", "derived", "ln2/KA: absorption half-life", np.log(2) / ka, ci))
    return rows


def _sigma_rows(spec, post, ci: float) -> list[dict]:
    """Residual SDs and variances (and Student-t degrees of freedom)."""
    rows = []
    if spec.residual_distribution == "student_t" and "nu" in post:
        rows.append(_row("nu", "sigma", "Student-t degrees of freedom", post["nu"], ci))
    for s, out, kind, _ in spec.sigma_terms:
        da = post[f"sigma_{s}"]
        unit = {"add": "DV units", "prop": "fraction of IPRED", "exp": "log scale"}[kind]
        rows.append(
            _row(f"sigma_{s}", "sigma", f"residual SD ({unit})" + (f", {out}" if out else ""), da, ci)
        )
        rows.append(_row(f"sigma2_{s}", "sigma", "residual variance (NONMEM SIGMA)", da**2, ci))
    for out, o in spec.outcomes.items():
        sfx = "" if out is None else f"_{out}"
        if o.kind == "ordinal":
            cuts = post[f"cutpoints{sfx}"]
            for k in range(o.categories - 1):
                da = cuts.isel({cuts.dims[-1]: k}, drop=True)
                rows.append(
                    _row(
                        f"cutpoint{sfx}[{k}]", "sigma", f"{o.link} cut point between {k} and {k + 1}", da, ci
                    )
                )
        elif o.kind == "negbin":
            rows.append(
                _row(
                    f"alpha{sfx}",
                    "sigma",
                    "negative binomial dispersion (var = mu + mu^2/alpha)",
                    post[f"alpha{sfx}"],
                    ci,
                )
            )
    return rows


def variance_decomposition(result, ci: float = 0.95) -> pd.DataFrame:
    """Split the between-subject variance of each parameter into covariates and random effects.

    Posterior median and interval of what the covariates explain and what is left to the etas.

    For log-normal IIV, per draw: ``var_cov = Var_i(log TV_i)`` over subjects (TV_i the typical
    value given subject i's covariates), ``omega^2`` the IIV variance, and the covariates' share
    ``var_cov / (var_cov + omega^2)``. Additive IIV uses TV_i itself. With IOV on the parameter,
    ``pi2`` and the between-occasion fraction ``pi^2 / (pi^2 + omega^2)`` of the random variability.
    """
    post = result.posterior
    spec = result.spec
    lo, hi = (1 - ci) / 2, (1 + ci) / 2
    rows = []
    for block in spec.iiv:
        for p in block.parameters:
            if p not in spec.parameter_names:  # an eta of its own: no typical value to explain
                continue
            eta = post["eta"].sel(iiv=p, drop=True)
            ind = post[p]
            tv = np.log(ind) - eta if spec.eta_kind(p) == "lognormal" else ind - eta
            var_cov = tv.var("subject").values.ravel()
            om2 = (post["omega_sd"].sel(iiv=p, drop=True) ** 2).values.ravel()
            share = var_cov / (var_cov + om2)
            row = {"parameter": p}
            parts = [("omega2", om2), ("covariate_variance", var_cov), ("covariate_share", share)]
            if "pi_sd" in post and p in post["pi_sd"]["iov"].values:
                pi2 = (post["pi_sd"].sel(iov=p, drop=True) ** 2).values.ravel()
                parts += [("pi2", pi2), ("iov_fraction", pi2 / (pi2 + om2))]
            for name, x in parts:
                row[name] = float(np.median(x))
                row[f"{name}_lower"], row[f"{name}_upper"] = (float(v) for v in np.quantile(x, [lo, hi]))
            rows.append(row)
    return pd.DataFrame(rows)
