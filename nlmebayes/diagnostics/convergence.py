"""Sampler diagnostics of a fit.

Divergences, tree-depth hits, worst R-hat and ESS, and the warnings they give (with the flip-flop and design
warnings), from the stored draws.
"""

from __future__ import annotations

import numpy as np
from arviz_stats import ess, rhat

from nlmebayes.diagnostics.identifiability import flip_flop_warning, subject_flip_flop_warning

__all__ = ["sampler_diagnostics", "user_name", "RHAT_MAX", "ESS_MIN_PER_CHAIN"]

RHAT_MAX = 1.01  # Vehtari et al. (2021) recommend R-hat < 1.01
ESS_MIN_PER_CHAIN = 100  # and bulk/tail ESS > 100 per chain


def sampler_diagnostics(result) -> dict:
    """Sampler diagnostics: divergences, tree-depth hits, worst R-hat and ESS of free variables."""
    stats = result.idata["sample_stats"].to_dataset()
    post = result.idata["posterior"].to_dataset()
    n_chains = post.sizes["chain"]
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    depth = next(
        (int(stats[k].sum()) for k in ("maxdepth_reached", "reached_max_treedepth") if k in stats), 0
    )
    free = [
        v
        for v in post.data_vars
        if v.startswith(("log_", "z_", "theta_", "omega_sd_", "omega_chol", "sigma_"))
    ]
    worst_rhat, min_ess = 1.0, np.inf
    worst_var = worst_ess_var = ""
    for v in free:
        e = ess(post[v], method="bulk")
        if n_chains > 1:  # R-hat compares chains: with one there is nothing to compare
            r = rhat(post[v])
            rmax = float(np.nanmax(np.atleast_1d(r.values)))
            if rmax > worst_rhat:
                worst_rhat, worst_var = rmax, user_name(r, v)
        emin = float(np.nanmin(np.atleast_1d(e.values)))
        if emin < min_ess:
            min_ess, worst_ess_var = emin, user_name(-e, v)
    warnings = []
    if n_chains == 1:
        warnings.append("one chain: R-hat cannot be computed; run at least 2 chains to check convergence")
    if div:
        warnings.append(
            f"{div} divergent transitions: the posterior geometry is hard; raise "
            f"target_accept or reparameterise"
        )
    if worst_rhat > RHAT_MAX:
        warnings.append(f"R-hat up to {worst_rhat:.3f} (in {worst_var}) > {RHAT_MAX}: chains disagree")
    if min_ess < ESS_MIN_PER_CHAIN * n_chains:
        warnings.append(
            f"bulk ESS as low as {min_ess:.0f} (in {worst_ess_var}), below {ESS_MIN_PER_CHAIN} per chain "
            f"({ESS_MIN_PER_CHAIN * n_chains}): draw more" + _low_rank_hint(result, post)
        )
    if depth:
        warnings.append(f"{depth} draws hit the maximum tree depth")
    for ff in (flip_flop_warning(post, result.spec), subject_flip_flop_warning(post, result.spec)):
        if ff:
            warnings.append(ff)
    design = result.idata.attrs.get("nlmebayes_design_warnings", "")
    warnings += [w for w in str(design).split("\n") if w]
    return {
        "divergences": div,
        "max_treedepth_hits": depth,
        "max_rhat": worst_rhat if n_chains > 1 else float("nan"),
        "min_ess_bulk": min_ess,
        "chains": n_chains,
        "draws": post.sizes["draw"],
        "warnings": warnings,
    }


#: Posterior correlation of two typical values above which a diagonal mass matrix mixes slowly.
CORRELATION_HINT = 0.8


def _low_rank_hint(result, post) -> str:
    """Advice (``", or ..."``) to adapt a low-rank mass matrix, naming the correlated typical values.

    Given when the sampler adapted a diagonal mass matrix and the most correlated pair of typical
    values (log scale) exceeds :data:`CORRELATION_HINT`: a diagonal mass matrix cannot learn that
    direction.
    """
    if result.idata.attrs.get("nlmebayes_adaptation", "diag") != "diag":
        return ""
    names = [f"log_{p.name}_pop" for p in result.spec.parameters if f"log_{p.name}_pop" in post]
    if len(names) < 2:
        return ""
    x = np.array([post[v].values.ravel() for v in names])
    corr = np.corrcoef(x)
    np.fill_diagonal(corr, 0.0)
    i, j = np.unravel_index(int(np.nanargmax(np.abs(corr))), corr.shape)
    if not abs(corr[i, j]) > CORRELATION_HINT:
        return ""
    a, b = (user_name(None, names[k]) for k in (i, j))
    return (
        f", or let the sampler learn the correlation of {a} and {b} (r = {corr[i, j]:.2f}): "
        f'fit(..., adaptation="low_rank")'
    )


def user_name(stat, var: str) -> str:
    """The element of ``var`` where ``stat`` is largest, named as a pharmacometrician would.

    ``log_CL_pop`` -> "typical CL"; ``z_0`` at (subject 17, CL) -> "eta of subject 17 on CL";
    ``omega_sd_0_CL`` -> "omega(CL)"; ``omega_chol_0`` -> "the correlations of Omega block 1".

    Examples
    --------
    >>> import xarray as xr
    >>> coords = {"subject": ["17"], "iiv_0": ["KA", "CL"]}
    >>> r = xr.DataArray([[1.0, 1.2]], dims=("subject", "iiv_0"), coords=coords)
    >>> user_name(r, "z_0")
    'eta of subject 17 on CL'
    """
    if var.startswith("log_") and var.endswith("_pop"):
        return f"typical {var[4:-4]}"
    if var.startswith("omega_sd_"):
        return f"omega({var.split('_', 3)[3]})"
    if var.startswith("omega_chol_"):
        return f"the correlations of Omega block {int(var.rsplit('_', 1)[1]) + 1}"
    if var.startswith("z_") and stat.ndim == 2:
        i, j = np.unravel_index(int(np.nanargmax(stat.values)), stat.shape)
        labels = [stat[d].values if d in stat.coords else np.arange(stat.sizes[d]) for d in stat.dims]
        what = "kappa" if var == "z_iov" else "eta" if stat.dims[0] == "subject" else "effect"
        unit = {"subject": "subject", "occasion": "occasion"}.get(stat.dims[0], stat.dims[0])
        return f"{what} of {unit} {labels[0][i]} on {labels[1][j]}"
    return var
