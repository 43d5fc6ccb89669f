"""Calibrated assertions for sampling tests: coverage stated with its probability under a
correct model, and convergence checks, so that a test neither passes by seed choice nor on a
fit whose chains disagree."""

from __future__ import annotations

from math import comb

import numpy as np


def coverage_pass_probability(n: int, k: int, inner: float = 0.90, outer: float = 0.99) -> float:
    """P(at most ``k`` of ``n`` truths outside their ``inner`` intervals and none outside their
    ``outer`` intervals) when the intervals are calibrated and the parameters independent."""
    p_mid, p_in = outer - inner, inner
    return sum(comb(n, j) * p_mid**j * p_in ** (n - j) for j in range(k + 1))


def assert_calibrated_coverage(
    result, truth: dict, k: int, outer: float = 0.995, min_probability: float = 0.9
):
    """At most ``k`` truths outside the 90% intervals and none outside the ``outer`` intervals.

    ``truth`` maps parameter-table names to true values. The probability that a calibrated fit
    passes must be at least ``min_probability`` (computed, not assumed). The outer guard is
    99.5% by default: with 99% the guard alone would fail 1 - 0.99^10 = 10% of calibrated fits
    of ten parameters.
    """
    n = len(truth)
    prob = coverage_pass_probability(n, k, outer=outer)
    assert prob >= min_probability, f"<= {k} of {n} outside 90% passes with P = {prob:.3f} only"
    t90 = result.parameter_table(ci=0.90).set_index("parameter")
    t99 = result.parameter_table(ci=outer).set_index("parameter")

    def outside(tab, name, v):
        return not tab.loc[name, "lower"] < v < tab.loc[name, "upper"]

    miss90 = {
        p: (v, t90.loc[p, "lower"], t90.loc[p, "upper"]) for p, v in truth.items() if outside(t90, p, v)
    }
    miss99 = {
        p: (v, t99.loc[p, "lower"], t99.loc[p, "upper"]) for p, v in truth.items() if outside(t99, p, v)
    }
    assert len(miss90) <= k and not miss99, (
        f"outside 90%: {miss90}; outside {100 * outer:g}%: {miss99} (allowed {k} and 0: P = {prob:.3f} "
        f"under calibration)"
    )


def assert_converged(
    result, rhat_max: float = 1.05, ess_min: float = 100.0, divergence_rate: float = 0.01
) -> None:
    """Every reported population quantity has R-hat below ``rhat_max`` and bulk ESS above
    ``ess_min``, and at most ``divergence_rate`` of the draws diverged.

    With two chains of 500 draws R-hat's own noise is about +-0.01, so 1.05 (not the report's
    1.01) separates chains that disagree from chance.
    """
    tab = result.parameter_table().set_index("parameter")
    bad = tab[(tab["rhat"] > rhat_max) | (tab["ess_bulk"] < ess_min)][["rhat", "ess_bulk"]]
    assert bad.empty, f"not converged:\n{bad}"
    div = result.idata["sample_stats"]["diverging"].values
    assert np.mean(div) <= divergence_rate, f"{int(div.sum())} divergent draws of {div.size}"
