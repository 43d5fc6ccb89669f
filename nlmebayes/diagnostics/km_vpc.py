"""Kaplan-Meier visual predictive check of a time-to-event outcome, as numbers.

The observed Kaplan-Meier curve of the time to each subject's first event (its only time-to-event
row, or the first of repeated events; censored where its follow-up ends without one) is compared
with the curves of replicates simulated from the posterior: for each of ``n`` posterior draws,
every subject's first event time is drawn from its individual hazard by inverting the cumulative
hazard on a fine grid (``H(T) = -log U``) and censored where the subject's follow-up ends (its
censoring time, or the last time in the data for a subject whose follow-up ends with an event).
Per time on a grid, the observed survival is compared with the 5th-95th percentile band of the
simulated ones. :func:`nlmebayes.plots.km_vpc_plot` draws the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["KaplanMeierVPC", "kaplan_meier", "km_vpc"]


@dataclass
class KaplanMeierVPC:
    """Observed and simulated survival on a time grid.

    Attributes
    ----------
    table : DataFrame
        ``time``, ``observed``, ``sim_lo``, ``sim_median``, ``sim_hi`` and ``inside`` (observed
        within the band).
    n_sim : int
    """

    table: pd.DataFrame
    n_sim: int

    @property
    def fraction_outside(self) -> float:
        """Share of grid times where the observed survival lies outside the simulated band."""
        return float(1.0 - self.table["inside"].mean())


def kaplan_meier(times, events, grid) -> np.ndarray:
    """Kaplan-Meier survival at ``grid`` (right-continuous), for one or a batch of samples.

    ``times`` and ``events`` are (n,) or (B, n); returns (len(grid),) or (B, len(grid)).

    Examples
    --------
    >>> kaplan_meier(np.array([1.0, 2.0, 3.0]), np.array([1, 0, 1]), np.array([0.5, 1.0, 2.5, 3.0])).tolist()
    [1.0, 0.6666666666666667, 0.6666666666666667, 0.0]
    """
    t, e = np.atleast_2d(times), np.atleast_2d(events).astype(bool)
    order = np.argsort(t, axis=1, kind="stable")
    t, e = np.take_along_axis(t, order, 1), np.take_along_axis(e, order, 1)
    n = t.shape[1]
    at_risk = n - np.arange(n)  # ties: each row steps once, which multiplies out the same
    factor = np.where(e, 1.0 - 1.0 / at_risk, 1.0)
    surv = np.cumprod(factor, axis=1)
    idx = np.array([np.searchsorted(row, grid, side="right") for row in t])  # events at or before
    out = np.where(idx > 0, np.take_along_axis(surv, np.maximum(idx - 1, 0), 1), 1.0)
    return out[0] if np.ndim(times) == 1 else out


def km_vpc(result, n: int = 200, seed: int = 0, n_grid: int = 100) -> KaplanMeierVPC:
    """Kaplan-Meier VPC of a fitted time-to-event model (a :class:`~nlmebayes.model.spec.ClosedForm` hazard).

    Parameters
    ----------
    result : FitResult
    n : int
        Replicates (posterior draws, taken evenly over the chains).
    seed : int
    n_grid : int
        Times from 0 to the last time in the data.

    Returns
    -------
    KaplanMeierVPC

    Examples
    --------
    >>> check = km_vpc(result, n=200)  # doctest: +SKIP
    >>> check.fraction_outside  # doctest: +SKIP
    """
    spec, data = result.spec, result.data
    tte = [(out, o) for out, o in spec.outcomes.items() if o.kind == "tte"]
    if not tte:
        raise ValueError(f"model {spec.name} has no time-to-event outcome")
    out, _ = tte[0]
    rows = np.arange(data.n_obs) if out is None else np.flatnonzero(data.obs_output == out)
    subj, t_obs, ev, follow_up = _first_events(data.obs_subject[rows], data.obs_time[rows], data.obs_dv[rows])
    start = data.records.groupby("_SUBJ", sort=True)["TIME"].min().to_numpy(dtype=float)[subj]
    fine = np.linspace(0.0, 1.0, 401)
    times = start[:, None] + (follow_up - start)[:, None] * fine[None, :]  # (subjects, 401)
    hazard = _hazard_function(spec, out, result.posterior, subj)
    rng = np.random.default_rng(seed)
    post = result.posterior
    total = post.sizes["chain"] * post.sizes["draw"]
    picks = np.linspace(0, total - 1, n).round().astype(int)
    grid = np.linspace(0.0, float(t_obs.max()), n_grid)
    sims = np.empty((n, n_grid))
    for i, d in enumerate(picks):
        # midpoint rule: a hazard that is infinite at t = 0 (Weibull, SHAPE < 1) stays integrable
        h = hazard(d, 0.5 * (times[:, 1:] + times[:, :-1]))
        H = np.concatenate([np.zeros((len(subj), 1)), np.cumsum(h * np.diff(times), 1)], 1)
        target = -np.log(rng.random(len(subj)))
        event = H[:, -1] >= target
        t_sim = np.array(
            [np.interp(target[j], H[j], times[j]) if event[j] else follow_up[j] for j in range(len(subj))]
        )
        sims[i] = kaplan_meier(t_sim, event, grid)
    observed = kaplan_meier(t_obs, ev, grid)
    lo, med, hi = np.quantile(sims, [0.05, 0.5, 0.95], axis=0)
    table = pd.DataFrame(
        {"time": grid, "observed": observed, "sim_lo": lo, "sim_median": med, "sim_hi": hi,
         "inside": (observed >= lo - 1e-12) & (observed <= hi + 1e-12)}
    )  # fmt: skip
    return KaplanMeierVPC(table=table, n_sim=n)


def _first_events(subj, t_obs, ev):
    """Each subject's first time-to-event row, and how long a simulated first event would be seen.

    The first row is its first event, or its censoring. The time seen is the subject's censoring
    time when its follow-up ends censored. When it ends with an event (follow-up stopped at a last
    event, or a single-event design) it is the last time in the data: a first event is never
    censored by a stop at a later one.
    """
    subjects, first = np.unique(subj, return_index=True)
    last = len(subj) - 1 - np.unique(subj[::-1], return_index=True)[1]
    follow_up = np.where(ev[last] == 1, t_obs.max(), t_obs[last])
    return subjects, t_obs[first], ev[first], follow_up


def _hazard_function(spec, output, posterior, subj):
    """``(draw, times) -> h``: the hazard expression at each subject's parameters of a posterior draw."""
    import pytensor
    import pytensor.tensor as pt

    from nlmebayes.model.expressions import expression_names
    from nlmebayes.pk.ode.expressions import parse_expression

    structural = spec.structural
    if getattr(structural, "pk", None) is not None:
        raise NotImplementedError(
            "the Kaplan-Meier VPC of a hazard driven by a PK model is not supported yet"
        )
    expr = structural.outputs[output]
    names = sorted(expression_names(expr) - {"t"})
    vectors = {n: pt.dvector(n) for n in names}
    t = pt.dmatrix("t")
    h = parse_expression(expr, {**{n: v[:, None] for n, v in vectors.items()}, "t": t}) * pt.ones_like(t)
    fn = pytensor.function([*vectors.values(), t], h, mode="FAST_COMPILE")
    flat = {}
    for n in names:
        da = posterior[n]
        values = da.values.reshape(-1, *da.shape[2:])
        flat[n] = values if values.ndim == 2 else np.repeat(values[:, None], int(subj.max()) + 1, 1)

    def hazard(d, times):
        return fn(*[flat[n][d][subj] for n in names], times)

    return hazard
