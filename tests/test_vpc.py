"""VPC, pcVPC and censored VPC: right numbers, not only drawn.

The core (binning, prediction correction, percentile statistics) is checked against hand
computations; the whole check against data simulated from known truth: the true model's VPC must
cover the observed percentiles, a misspecified model's must not.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from nlmebayes import datasets, fit, read_nonmem
from nlmebayes.diagnostics.binning import auto_bins, bin_index, natural_breaks, quantile_bins
from nlmebayes.diagnostics.vpc import prediction_correct, time_after_dose, vpc, vpc_statistics
from tests.calibration import assert_converged
from tests.vpc_cases import FITTED, true_model_data, two_compartment_data

SETTINGS = dict(draws=500, tune=500, chains=2, seed=1)


# ------------------------------------------------------------------ the numerical core (no sampling)
def test_natural_breaks_is_the_least_squares_partition():
    """Against brute force over every split of 9 distinct values into 3 classes."""
    x = np.array([0.5, 1.0, 1.1, 2.0, 4.0, 4.4, 8.0, 12.0, 24.0])

    def sse(groups):
        return sum(((g - g.mean()) ** 2).sum() for g in groups)

    best = min(
        itertools.combinations(range(1, len(x)), 2),
        key=lambda c: sse(np.split(x, list(c))),
    )
    expected = [x[best[0] - 1], x[best[1] - 1], x[-1]]
    np.testing.assert_array_equal(natural_breaks(x, 3), expected)


def test_bins_follow_nominal_times_on_theophylline():
    """Theoph's actual times scatter around 11 nominal times: 10 natural breaks put 0, 2, 3.5, 5,
    7, 9, 12 and 24 h in bins of their own (0.25-0.63 and 0.77-1.15 h share two bins)."""
    t = datasets.theophylline().obs_time
    edges = auto_bins(t, max_bins=10)
    np.testing.assert_array_equal(edges, [0.0, 0.63, 1.15, 2.13, 3.82, 5.1, 7.17, 9.38, 12.15, 24.65])
    assert np.bincount(bin_index(t, edges)).tolist() == [12, 23, 13, 12, 12, 12, 12, 12, 12, 12]
    assert len(quantile_bins(t, 4)) == 4
    assert len(auto_bins([1.0, 2.0, 2.0, 3.0])) == 3  # few distinct times: one bin each


def test_time_after_dose_with_repeated_doses():
    df = pd.DataFrame(
        dict(
            ID=1,
            TIME=[0, 1, 12, 13, 30],
            AMT=[10, 0, 10, 0, 0],
            DV=[0, 1, 0, 2, 3],
            II=[0, 0, 12, 0, 0],
            ADDL=[0, 0, 1, 0, 0],
        )
    )
    # doses at 0 and 12 (explicit) plus 24 (ADDL on the second): 1 - 0, 13 - 12, 30 - 24
    np.testing.assert_allclose(time_after_dose(read_nonmem(df)), [1.0, 1.0, 6.0])


def test_prediction_correction_by_hand():
    """Two bins; PRED_bin is the median PRED of each. pcY = Y * PRED_bin / PRED (lower bound 0);
    the variability correction rescales the deviation from PRED_bin by median_bin(sd) / sd_j."""
    y = np.array([2.0, 6.0, 10.0, 4.0, 9.0])
    pred = np.array([1.0, 3.0, 5.0, 2.0, 3.0])
    bins = np.array([0, 0, 0, 1, 1])
    sims = np.array([[1.0, 3.0, 4.0, 2.0, 3.0], [3.0, 3.0, 6.0, 2.0, 3.0]])
    y_pc, s_pc = prediction_correct(y, pred, bins, sims=sims)
    # bin 0: PRED_bin 3 -> factors 3, 1, 0.6; bin 1: PRED_bin 2.5 -> 1.25, 0.8333
    np.testing.assert_allclose(y_pc, [6.0, 6.0, 6.0, 5.0, 7.5])
    np.testing.assert_allclose(s_pc[0], [3.0, 3.0, 2.4, 2.5, 2.5])
    y_v, _ = prediction_correct(y, pred, bins, sims=sims, variability=True)
    # sd over the two replicates of pc sims: bin 0 [3, 0, 0.6] (median 0.6), bin 1 [0, 0]
    sd0 = np.array([3.0, 0.0, 0.6])
    expected0 = 3.0 + (y_pc[:3] - 3.0) * np.where(sd0 > 0, 0.6 / np.where(sd0 > 0, sd0, 1), 1.0)
    np.testing.assert_allclose(y_v[:3], expected0)
    np.testing.assert_allclose(y_v[3:], y_pc[3:])  # zero spread: left as it is


def test_vpc_statistics_by_hand():
    """One bin, 3 observations, 3 replicates: the observed median, the replicate medians and their
    interval; with censoring, percentiles below the BLQ fraction are undefined."""
    y = np.array([1.0, 2.0, 3.0])
    sims = np.array([[1.0, 2.0, 4.0], [0.0, 3.0, 5.0], [2.0, 2.0, 2.0]])
    pct, cen = vpc_statistics(y, sims, np.zeros(3, int), quantiles=(0.5,), ci=0.5)
    row = pct.iloc[0]
    assert row["observed"] == 2.0
    # replicate medians 2, 3, 2 -> 25/50/75% quantiles 2, 2, 2.5
    assert (row["sim_lo"], row["sim_median"], row["sim_hi"]) == (2.0, 2.0, 2.5)
    assert row["inside"] == 1.0 and cen is None
    blq = np.array([True, False, False])
    sim_blq = sims < 1.5
    pct, cen = vpc_statistics(
        y, sims, np.zeros(3, int), quantiles=(0.05, 0.5), blq=blq, sim_blq=sim_blq, lloq=1.5
    )
    assert np.isnan(pct.iloc[0]["observed"]) and pct.iloc[1]["observed"] == 2.0
    assert cen.iloc[0]["observed"] == pytest.approx(1 / 3)
    # simulated BLQ fractions 1/3, 1/3, 0 -> median 1/3
    assert cen.iloc[0]["sim_median"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------ known truth (sampling)
@pytest.fixture(scope="module")
def true_fit():
    return fit(FITTED, true_model_data(), **SETTINGS)


@pytest.mark.sampling
def test_vpc_covers_the_true_model(true_fit):
    """60 subjects simulated from the fitted model: the observed 5/50/95th percentiles fall in the
    simulated 90% intervals in >= 80% of the 30 (bin, percentile) cells, for VPC and pcVPC. Under
    the model each cell is covered with probability ~0.9 (less correlated cells make it noisier),
    so 80% is a margin of about 2.5 binomial SDs (sqrt(0.9 * 0.1 / 30) = 0.055)."""
    # CL's bulk ESS is ~90 at these settings (non-centred etas, issue 13): enough for percentiles
    assert_converged(true_fit, ess_min=80)
    for pc in (False, True):
        check = vpc(true_fit, n=500, seed=1, pred_corr=pc)
        assert len(check.percentiles) == 30
        assert check.coverage >= 0.8, (pc, check.percentiles)


@pytest.mark.sampling
def test_vpc_flags_a_misspecified_model():
    """A one-compartment model fitted to two-compartment data (V2 = 3 V, Q = 1.5 CL): >= 30% of the
    cells outside, for VPC and pcVPC (measured: 60%)."""
    wrong = fit(FITTED, two_compartment_data(), **SETTINGS)
    for pc in (False, True):
        assert vpc(wrong, n=500, seed=1, pred_corr=pc).coverage <= 0.7


@pytest.mark.sampling
@pytest.mark.filterwarnings("ignore:OFV, EBEs:UserWarning")  # M3: no marginal likelihood yet (issue 16)
def test_censored_vpc_fractions(true_fit):
    """The true-model data censored at their 25th percentile (CENS = 1, DV = LLOQ, M3 fit): the
    observed BLQ fraction per bin is the count of censored records, 25% overall, and lies in the
    simulated 90% interval in most bins (>= 8 of 10)."""
    data = true_fit.data
    df = data.input_frame()
    obs = data.records["_IS_OBS"].to_numpy()
    lloq = float(np.quantile(data.obs_dv, 0.25))
    blq = obs & (df["DV"].to_numpy() < lloq)
    df["CENS"] = blq.astype(int)
    df.loc[blq, "DV"] = lloq
    cens_data = read_nonmem(df, source="vpc design, censored")
    res = fit(FITTED, cens_data, **SETTINGS)
    check = vpc(res, n=500, seed=1)
    assert check.settings["lloq"] == pytest.approx(lloq)
    cen = check.censored
    counts = check.observations.groupby("bin")["blq"].mean()
    np.testing.assert_allclose(cen.set_index("bin")["observed"], counts)
    assert check.observations["blq"].mean() == pytest.approx(blq.sum() / obs.sum())
    assert 0.2 < check.observations["blq"].mean() < 0.3
    inside = (cen["observed"] >= cen["sim_lo"]) & (cen["observed"] <= cen["sim_hi"])
    assert inside.sum() >= 8, cen
