"""The text report of a fit.

Model, data, sampler run, parameter table, variability, OFV and shrinkage, and the diagnostics' warnings. Read
from the stored results; nothing is refitted.
"""

from __future__ import annotations

import numpy as np

from nlmebayes.diagnostics.convergence import sampler_diagnostics
from nlmebayes.diagnostics.shrinkage import shrinkage_table
from nlmebayes.report.tables import parameter_table, variance_decomposition

__all__ = ["report"]


def _fmt(x: float) -> str:
    return f"{x:.4g}" if np.isfinite(x) else "nan"


def _parameterisation_lines(spec, attrs) -> list[str]:
    """Which etas the sampler saw centred, with the pilot's conditional SD / omega."""
    if not spec.iiv or "nlmebayes_centered" not in attrs:
        return []
    centred = list(attrs["nlmebayes_centered"])
    ratios = dict(attrs.get("nlmebayes_centering_ratios") or {})
    partial = dict(attrs.get("nlmebayes_partial_weights") or {})

    def one(p):
        return f"{p} ({ratios[p]:.2f})" if p in ratios else p

    def weighed(p):
        q1, _, q3 = partial[p]
        return f"{p} ({ratios[p]:.2f}; weights {q1:.2f}-{q3:.2f})" if p in ratios else p

    others = [p for p in spec.iiv_parameters if p not in centred and p not in partial]
    parts = []
    if centred:
        parts.append("centred " + ", ".join(one(p) for p in centred))
    if partial:
        parts.append("partially centred " + ", ".join(weighed(p) for p in partial))
    if others:
        parts.append("non-centred " + ", ".join(one(p) for p in others))
    lines = ["Etas sampled " + "; ".join(parts) + (" (pilot conditional SD / omega)" if ratios else "")]
    if partial:
        lines.append(
            "  partially centred: each subject weighs centred (1) against non-centred (0) by how much "
            "its data say; weights of the middle half of the subjects shown"
        )
    return lines


def report(result, ci: float = 0.95) -> str:
    """A text report: model, data, sampler run, parameter table and diagnostic warnings."""
    spec, data = result.spec, result.data
    d = sampler_diagnostics(result)
    attrs = result.idata.attrs
    lines = [
        f"Model {spec.name}: {getattr(spec.structural, 'name', spec.structural)}, "
        f"IIV on {', '.join(spec.iiv_parameters) or 'none'}, "
        + ", ".join(f"{e.kind}{f' ({o})' if o else ''}" for o, e in spec.errors.items())
        + (" outcome" if spec.outcomes and len(spec.outcomes) == len(spec.errors) else " residual error"),
        f"Data {data.source}: {data.n_subjects} subjects, {data.n_obs} observations, {data.n_doses} doses"
        + _censored_text(spec, data),
        f"NUTS ({attrs.get('nlmebayes_sampler', '?')}): {d['chains']} chains x {d['draws']} draws"
        + (
            f" in {attrs['nlmebayes_sampling_seconds']:.1f} s"
            if "nlmebayes_sampling_seconds" in attrs
            else ""
        )
        + f"; divergences {d['divergences']}, max R-hat "
        + (f"{d['max_rhat']:.3f}, " if np.isfinite(d["max_rhat"]) else "n/a (one chain), ")
        + f"min bulk ESS {d['min_ess_bulk']:.0f}",
    ]
    lines += _parameterisation_lines(spec, attrs)
    lines += [""]
    lines += _parameter_lines(result, ci)
    if spec.iov or spec.covariates:
        lines += _variability_lines(result)
    lines += _candidate_lines(result)
    lines += _marginal_lines(result)
    lines += _conflict_lines(result)
    if d["warnings"]:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in d["warnings"]]
    else:
        lines += ["", "Diagnostics: no divergences, R-hat and ESS within limits."]
    return "\n".join(lines)


def _candidate_lines(result) -> list[str]:
    """Candidate covariate effects of a full covariate model (horseshoe), if any."""
    if result.spec.candidates is None:
        return []
    from nlmebayes.search.covariate_model import candidate_effects

    tab = candidate_effects(result)
    lines = [
        "",
        "Candidate covariate effects (regularised horseshoe; factor on the parameter over the covariate's "
        "5th-95th percentiles, or level vs reference, 90% interval; * interval excludes 1):",
    ]
    for r in tab.itertuples():
        name = f"{r.parameter}~{r.covariate}" + (
            "" if r.level is None or r.level != r.level else f"[{r.level}]"
        )
        lines.append(
            f"  {'*' if r.excludes_zero else ' '} {name:<18} {r.kind:<12} factor {r.factor:.3g} "
            f"[{r.factor_lower:.3g}, {r.factor_upper:.3g}]  P(sign) {r.p_sign:.2f}  "
            f"inclusion {r.inclusion:.2f}"
        )
    return lines + ["  select a submodel with nlmebayes.search.select_covariates(result)"]


def _conflict_lines(result) -> list[str]:
    """Prior-data conflict of the parameters with given (informative) priors, if any."""
    from nlmebayes.diagnostics.prior_conflict import CONFLICT_P, prior_data_conflict

    tab = prior_data_conflict(result)
    if tab.empty:
        return []
    flagged = tab[tab["conflict"]]
    lines = [
        "",
        f"Prior-data conflict ({len(tab)} parameters with given priors; flagged at p < {CONFLICT_P}):",
    ]
    if flagged.empty:
        return lines + ["  none: the data agree with the priors"]
    return lines + [
        f"  - {r.parameter}: the data say {r.data_mean:.3g} +/- {r.data_sd:.2g}, the prior "
        f"{r.prior_mean:.3g} +/- {r.prior_sd:.2g} ({r.scale} scale; z = {r.z:.1f}, p = {r.p:.1g})"
        for r in flagged.itertuples()
    ]


def _parameter_lines(result, ci: float) -> list[str]:
    """The parameter table as text, by kind (fixed effects, variability, residual error)."""
    tab = parameter_table(result, ci=ci)
    pct = f"{100 * ci:g}%"
    lines = []
    header = (
        f"{'parameter':<22} {'NONMEM':<11} {'median':>10} {pct + ' interval':>23} {'sd':>9} {'RSE%':>6} "
        f"{'R-hat':>6} {'ESS bulk':>8} {'ESS tail':>8}  description"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for kind, title in (
        ("theta", "Fixed effects"),
        ("omega", "Inter-individual variability"),
        ("sigma", "Residual error" if not result.spec.outcomes else "Residual error and outcome parameters"),
        ("derived", "Derived from the typical values"),
    ):
        sub = tab[tab["kind"] == kind]
        if sub.empty:
            continue
        lines.append(title)
        for _, r in sub.iterrows():
            interval = f"[{_fmt(r['lower'])}, {_fmt(r['upper'])}]"
            lines.append(
                f"  {r['parameter']:<20} {r['nonmem']:<11} {_fmt(r['median']):>10} {interval:>23} "
                f"{_fmt(r['sd']):>9} {r['rse%']:>6.1f} {r['rhat']:>6.3f} {r['ess_bulk']:>8.0f} "
                f"{r['ess_tail']:>8.0f}  {r['description']}"
            )
    return lines


def _variability_lines(result) -> list[str]:
    """How much of the between-subject variance the covariates (and IOV) explain."""
    lines: list[str] = []
    vd = variance_decomposition(result)
    if not vd.empty:
        lines += ["", "Between-subject variability (posterior medians)"]
        for _, r in vd.iterrows():
            text = (
                f"  {r['parameter']:<8} omega2 {_fmt(r['omega2'])}, covariates explain "
                f"{100 * r['covariate_share']:.0f}%"
            )
            if "pi2" in r and np.isfinite(r.get("pi2", np.nan)):
                text += (
                    f"; IOV pi2 {_fmt(r['pi2'])}, between-occasion share of the random "
                    f"variance {100 * r['iov_fraction']:.0f}%"
                )
            lines.append(text)
    return lines


def _marginal_lines(result) -> list[str]:
    """OFV/AIC/BIC and shrinkage, from the stored ``marginal`` group (nothing is recomputed)."""
    if "marginal" not in result.idata.children:
        return []
    at = result.idata["marginal"].attrs
    lines = [
        "",
        f"Marginal likelihood ({str(at['method']).upper()}, at the {at['evaluated_at']}): "
        f"OFV {at['ofv']:.3f} (-2LL without N log 2pi), -2LL {at['m2ll']:.3f}, "
        f"AIC {at['aic']:.3f}, BIC {at['bic']:.3f} (k = {at['k']}, N = {at['n_obs']})",
        "  comparable with NONMEM's OFV at the same values; at other values (e.g. NONMEM's estimates): "
        "nlmebayes.diagnostics.ofv.marginal_likelihood(spec, data, PopulationValues(...))",
    ]
    if result.spec.iiv:
        tab = shrinkage_table(result)
        lines += ["", "Shrinkage (%)", "  " + f"{'':<8}" + "".join(f"{c:>18}" for c in tab.columns)]
        for name, row in tab.iterrows():
            lines.append(
                "  "
                + f"{name:<8}"
                + "".join(f"{'' if not np.isfinite(v) else f'{v:.1f}':>18}" for v in row.values)
            )
    return lines


def _censored_text(spec, data) -> str:
    """``", 32 censored (M3)"``, or nothing without censored observations."""
    n = 0 if data.obs_cens is None else int(np.count_nonzero(data.obs_cens))
    return f", {n} censored ({spec.observations.blq})" if n else ""
