"""MCMC diagnostics of the population parameters through ArviZ: trace, rank and pair plots."""

from __future__ import annotations

__all__ = ["population_variables", "trace_plot", "rank_plot", "pair_plot"]


def population_variables(result) -> list[str]:
    """Typical values, Omega SDs, pi/level SDs, covariate effects and residual SDs in the posterior."""
    post = result.posterior
    spec = result.spec
    names = [f"{p.name}_pop" for p in spec.parameters if not p.fixed]
    names += [c.name for c in spec.covariates if not c.fixed]
    names += [v for v in ("omega_sd", "pi_sd") if v in post]
    names += [v for v in post.data_vars if v.startswith(("level_sd_", "sigma_")) or v == "nu"]
    return [n for n in names if n in post]


def _figure(pc):
    """The matplotlib Figure of an ArviZ PlotCollection."""
    return pc.viz["figure"].item()


def trace_plot(result, var_names=None):
    """Trace and marginal density per chain (``arviz_plots.plot_trace_dist``); typical values by default.

    Examples
    --------
    >>> fig = trace_plot(result)  # doctest: +SKIP
    """
    import arviz_plots as azp

    names = var_names or population_variables(result)
    return _figure(azp.plot_trace_dist(result.idata, var_names=names, backend="matplotlib"))


def rank_plot(result, var_names=None):
    """Rank ECDF plot per chain (``arviz_plots.plot_rank``): chains that mix well lie inside the envelope."""
    import arviz_plots as azp

    names = var_names or population_variables(result)
    return _figure(azp.plot_rank(result.idata, var_names=names, backend="matplotlib"))


def pair_plot(result, var_names=None):
    """Pairwise scatter of the posterior draws of the typical values (``arviz_plots.plot_pair``).

    Strong ridges show correlated, possibly non-identifiable parameters (e.g. KA and V near flip-flop).
    """
    import arviz_plots as azp

    names = var_names or [f"{p.name}_pop" for p in result.spec.parameters if not p.fixed]
    return _figure(azp.plot_pair(result.idata, var_names=names, backend="matplotlib"))
