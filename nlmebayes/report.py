"""Pharmacometric reporting from a posterior sample (never rebuilds the graph).

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

from nlmebayes.identifiability import flip_flop_warning

__all__ = ["parameter_table", "variance_decomposition", "report", "diagnostics"]

RHAT_MAX = 1.01  # Vehtari et al. (2021) recommend R-hat < 1.01
ESS_MIN_PER_CHAIN = 100  # and bulk/tail ESS > 100 per chain


def _row(name, kind, description, da: xr.DataArray, ci: float) -> dict:
    x = da.values.reshape(da.sizes["chain"], da.sizes["draw"])
    lo, hi = np.quantile(x, [(1 - ci) / 2, (1 + ci) / 2])
    return {
        "parameter": name, "kind": kind, "description": description,
        "median": float(np.median(x)), "mean": float(x.mean()), "sd": float(x.std(ddof=1)),
        "lower": float(lo), "upper": float(hi),
        "rhat": float(rhat(da)), "ess_bulk": float(ess(da, method="bulk")),
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
    DataFrame with one row per reported quantity and columns parameter, kind (theta, omega,
    sigma), description, median, mean, sd, lower, upper, rhat, ess_bulk, ess_tail.
    """
    post = result.idata["posterior"].to_dataset()
    spec = result.spec
    rows = []
    for p in spec.parameters:
        if p.fixed:
            continue
        rows.append(_row(p.name, "theta", "typical value", post[f"{p.name}_pop"], ci))
    for c in spec.covariates:
        if c.fixed:
            continue
        da = post[c.name]
        if c.kind == "categorical":
            for lv in da[da.dims[-1]].values:
                rows.append(_row(f"{c.name}[{lv}]", "theta", f"exp(theta): {c.covariate}={lv} vs "
                                 f"reference", da.sel({da.dims[-1]: lv}), ci))
        else:
            desc = {"power": f"({c.covariate}/{c.reference:g})^theta",
                    "exponential": f"exp(theta*({c.covariate}-{c.reference:g}))",
                    "linear": f"1+theta*({c.covariate}-{c.reference:g})",
                    "indicator": f"1+theta if {c.condition}"}[c.kind]
            rows.append(_row(c.name, "theta", f"{c.parameter} effect {desc}", da, ci))
    if "omega_sd" in post:
        lognormal = {p for b in spec.iiv if b.kind == "exponential" for p in b.parameters}
        for e in post["omega_sd"]["iiv"].values:
            sd = post["omega_sd"].sel(iiv=e, drop=True)
            rows.append(_row(f"omega2({e})", "omega", "IIV variance", sd**2, ci))
            rows.append(_row(f"omega({e})", "omega", "IIV SD", sd, ci))
            if e in lognormal:
                rows.append(_row(f"CV%({e})", "omega", "100*sqrt(exp(omega^2)-1)",
                                 100 * np.sqrt(np.expm1(sd**2)), ci))
        for k, block in enumerate(spec.iiv):
            if not block.block:
                continue
            corr = post[f"omega_corr_{k}"]
            ps = block.parameters
            for i in range(len(ps)):
                for j in range(i):
                    rows.append(_row(f"corr({ps[j]},{ps[i]})", "omega", "eta correlation",
                                     corr.isel({corr.dims[-2]: i, corr.dims[-1]: j}, drop=True), ci))
    if "pi_sd" in post:
        for e in post["pi_sd"]["iov"].values:
            sd = post["pi_sd"].sel(iov=e, drop=True)
            rows.append(_row(f"pi2({e})", "omega", "IOV variance (between occasions)", sd**2, ci))
            rows.append(_row(f"pi({e})", "omega", "IOV SD", sd, ci))
            rows.append(_row(f"CV%occ({e})", "omega", "100*sqrt(exp(pi^2)-1)",
                             100 * np.sqrt(np.expm1(sd**2)), ci))
    for lvl in spec.levels:
        for p in lvl.parameters:
            sd = post[f"level_sd_{lvl.column}_{p}"]
            rows.append(_row(f"var_{lvl.column}({p})", "omega",
                             f"variance between {lvl.column} groups", sd**2, ci))
            rows.append(_row(f"sd_{lvl.column}({p})", "omega", f"SD between {lvl.column} groups", sd, ci))
    if spec.residual_distribution == "student_t" and "nu" in post:
        rows.append(_row("nu", "sigma", "Student-t degrees of freedom", post["nu"], ci))
    for s, out, kind, _ in spec.sigma_terms:
        da = post[f"sigma_{s}"]
        unit = {"add": "DV units", "prop": "fraction of IPRED", "exp": "log scale"}[kind]
        rows.append(_row(f"sigma_{s}", "sigma", f"residual SD ({unit})" + (f", {out}" if out else ""),
                         da, ci))
        rows.append(_row(f"sigma2_{s}", "sigma", "residual variance (NONMEM SIGMA)", da**2, ci))
    return pd.DataFrame(rows)


def variance_decomposition(result, ci: float = 0.95) -> pd.DataFrame:
    """Between-subject variance of each parameter with IIV, split into what the covariates
    explain and what is left to the random effects (posterior median and interval).

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
            eta = post["eta"].sel(iiv=p, drop=True)
            ind = post[p]
            tv = np.log(ind) - eta if block.kind == "exponential" else ind - eta
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


def diagnostics(result) -> dict:
    """Sampler diagnostics: divergences, tree-depth hits, worst R-hat and ESS of free variables."""
    stats = result.idata["sample_stats"].to_dataset()
    post = result.idata["posterior"].to_dataset()
    n_chains = post.sizes["chain"]
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    depth = next((int(stats[k].sum()) for k in ("maxdepth_reached", "reached_max_treedepth")
                  if k in stats), 0)
    free = [v for v in post.data_vars if v.startswith(("log_", "z_", "theta_", "omega_sd_",
                                                       "omega_chol", "sigma_"))]
    worst_rhat, min_ess = 1.0, np.inf
    worst_var = ""
    for v in free:
        r = rhat(post[v])
        e = ess(post[v], method="bulk")
        rmax = float(np.nanmax(np.atleast_1d(r.values)))
        if rmax > worst_rhat:
            worst_rhat, worst_var = rmax, v
        min_ess = min(min_ess, float(np.nanmin(np.atleast_1d(e.values))))
    warnings = []
    if div:
        warnings.append(f"{div} divergent transitions: the posterior geometry is hard; raise "
                        f"target_accept or reparameterise")
    if worst_rhat > RHAT_MAX:
        warnings.append(f"R-hat up to {worst_rhat:.3f} (in {worst_var}) > {RHAT_MAX}: chains disagree")
    if min_ess < ESS_MIN_PER_CHAIN * n_chains:
        warnings.append(f"bulk ESS as low as {min_ess:.0f}, below {ESS_MIN_PER_CHAIN} per chain "
                        f"({ESS_MIN_PER_CHAIN * n_chains}): draw more")
    if depth:
        warnings.append(f"{depth} draws hit the maximum tree depth")
    ff = flip_flop_warning(post, result.spec)
    if ff:
        warnings.append(ff)
    design = result.idata.attrs.get("nlmebayes_design_warnings", "")
    warnings += [w for w in str(design).split("\n") if w]
    return {"divergences": div, "max_treedepth_hits": depth, "max_rhat": worst_rhat,
            "min_ess_bulk": min_ess, "chains": n_chains, "draws": post.sizes["draw"],
            "warnings": warnings}


def _fmt(x: float) -> str:
    return f"{x:.4g}" if np.isfinite(x) else "nan"


def report(result, ci: float = 0.95) -> str:
    """A text report: model, data, sampler run, parameter table and diagnostic warnings."""
    spec, data = result.spec, result.data
    d = diagnostics(result)
    attrs = result.idata.attrs
    lines = [
        f"Model {spec.name}: {getattr(spec.structural, 'name', spec.structural)}, "
        f"IIV on {', '.join(spec.iiv_parameters) or 'none'}, "
        + ", ".join(f"{e.kind}{f' ({o})' if o else ''}" for o, e in spec.errors.items())
        + " residual error",
        f"Data {data.source}: {data.n_subjects} subjects, {data.n_obs} observations, "
        f"{data.n_doses} doses",
        f"NUTS ({attrs.get('nlmebayes_sampler', '?')}): {d['chains']} chains x {d['draws']} draws"
        + (f" in {attrs['nlmebayes_sampling_seconds']:.1f} s" if "nlmebayes_sampling_seconds" in attrs
           else "")
        + f"; divergences {d['divergences']}, max R-hat {d['max_rhat']:.3f}, "
        f"min bulk ESS {d['min_ess_bulk']:.0f}",
        "",
    ]
    tab = parameter_table(result, ci=ci)
    pct = f"{100 * ci:g}%"
    header = (f"{'parameter':<22} {'median':>10} {pct + ' interval':>23} {'sd':>9} {'R-hat':>6} "
              f"{'ESS bulk':>8} {'ESS tail':>8}  description")
    lines.append(header)
    lines.append("-" * len(header))
    for kind, title in (("theta", "Fixed effects"), ("omega", "Inter-individual variability"),
                        ("sigma", "Residual error")):
        sub = tab[tab["kind"] == kind]
        if sub.empty:
            continue
        lines.append(title)
        for _, r in sub.iterrows():
            interval = f"[{_fmt(r['lower'])}, {_fmt(r['upper'])}]"
            lines.append(f"  {r['parameter']:<20} {_fmt(r['median']):>10} {interval:>23} "
                         f"{_fmt(r['sd']):>9} {r['rhat']:>6.3f} {r['ess_bulk']:>8.0f} "
                         f"{r['ess_tail']:>8.0f}  {r['description']}")
    if spec.iov or spec.covariates:
        vd = variance_decomposition(result)
        if not vd.empty:
            lines += ["", "Between-subject variability (posterior medians)"]
            for _, r in vd.iterrows():
                text = (f"  {r['parameter']:<8} omega2 {_fmt(r['omega2'])}, covariates explain "
                        f"{100 * r['covariate_share']:.0f}%")
                if "pi2" in r and np.isfinite(r.get("pi2", np.nan)):
                    text += (f"; IOV pi2 {_fmt(r['pi2'])}, between-occasion share of the random "
                             f"variance {100 * r['iov_fraction']:.0f}%")
                lines.append(text)
    lines += _marginal_lines(result)
    if d["warnings"]:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in d["warnings"]]
    else:
        lines += ["", "Diagnostics: no divergences, R-hat and ESS within limits."]
    return "\n".join(lines)


def _marginal_lines(result) -> list[str]:
    """OFV/AIC/BIC and shrinkage, from the stored ``marginal`` group (nothing is recomputed)."""
    if "marginal" not in result.idata.children:
        return []
    from nlmebayes.shrinkage import shrinkage_table

    at = result.idata["marginal"].attrs
    lines = ["", f"Marginal likelihood ({str(at['method']).upper()}, at the {at['evaluated_at']}): "
             f"OFV {at['ofv']:.3f} (-2LL without N log 2pi), -2LL {at['m2ll']:.3f}, "
             f"AIC {at['aic']:.3f}, BIC {at['bic']:.3f} (k = {at['k']}, N = {at['n_obs']})"]
    if result.spec.iiv:
        tab = shrinkage_table(result)
        lines += ["", "Shrinkage (%)", "  " + f"{'':<8}" + "".join(f"{c:>18}" for c in tab.columns)]
        for name, row in tab.iterrows():
            lines.append("  " + f"{name:<8}" + "".join(
                f"{'' if not np.isfinite(v) else f'{v:.1f}':>18}" for v in row.values))
    return lines
