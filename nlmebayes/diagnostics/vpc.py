"""Visual predictive checks: VPC, prediction-corrected pcVPC and censored VPC, as numbers.

Replicates are simulated from the posterior at the observed design (:mod:`nlmebayes.simulation.predictive`:
parameter uncertainty, new etas/kappas, residual error). Per bin of the independent variable the
observed 5th/50th/95th percentiles are compared with the distribution of the same percentiles over
replicates (its 90% interval). :mod:`nlmebayes.plots.vpc` draws the result.

Prediction correction (Bergstrand et al. 2011, AAPS J 13:143): each observed and simulated value is
scaled by ``PRED_bin / PRED_ij`` (lower bound 0, which is the log-scale additive correction),
``PRED_bin`` the median PRED of the bin's observations. The optional variability correction
multiplies the deviation from ``PRED_bin`` by ``median_bin(sd) / sd_ij``, ``sd_ij`` the SD over replicates
of the prediction-corrected simulations of observation ij.

Censored VPC: with an LLOQ, values below it are BLQ. Per bin the observed BLQ fraction is compared
with the simulated fractions; a percentile that lies below the LLOQ (BLQ fraction above its level) is
not defined and is left out (NaN) for observed and simulated data alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nlmebayes.diagnostics.binning import auto_bins, bin_index

__all__ = ["VPC", "vpc", "vpc_statistics", "prediction_correct", "time_after_dose"]


@dataclass
class VPC:
    """VPC numbers in tidy tables.

    Attributes
    ----------
    percentiles : DataFrame
        One row per (stratum, bin, quantile): ``x`` (bin median), ``observed``, ``sim_lo``,
        ``sim_median``, ``sim_hi`` and ``inside`` (observed within the interval; NaN if undefined).
    censored : DataFrame or None
        Per (stratum, bin): ``observed`` BLQ fraction and ``sim_lo``, ``sim_median``, ``sim_hi``.
    observations : DataFrame
        ``x``, ``dv`` (prediction-corrected for a pcVPC), ``blq``, ``stratum``, ``bin``.
    settings : dict
        What was computed: quantiles, interval, correction, LLOQ, x variable, replicates.
    """

    percentiles: pd.DataFrame
    censored: pd.DataFrame | None
    observations: pd.DataFrame
    settings: dict

    @property
    def coverage(self) -> float:
        """Share of (stratum, bin, quantile) cells whose observed percentile is inside the interval."""
        inside = self.percentiles["inside"].dropna()
        return float(inside.mean()) if len(inside) else float("nan")


def time_after_dose(data) -> np.ndarray:
    """Time since the subject's last dose at or before each observation (time itself if none).

    Examples
    --------
    >>> from nlmebayes import datasets
    >>> float(time_after_dose(datasets.theophylline())[5])
    3.82
    """
    last = np.full(data.n_obs, -np.inf)
    np.maximum.at(last, data.pair_obs, data.dose_time[data.pair_dose])
    return np.where(np.isfinite(last), data.obs_time - last, data.obs_time)


def prediction_correct(y, pred, bins, *, sims=None, variability: bool = False):
    """Prediction-corrected (and optionally variability-corrected) observations and simulations.

    Parameters
    ----------
    y : array, one value per observation
        Observations.
    pred : array, one value per observation
        PRED per observation.
    bins : int array, one per observation
        Bin of each observation (strata already folded in).
    sims : 2-D array (replicate x observation), optional
        Simulated replicates, corrected the same way.
    variability : bool
        Apply the variability correction too (needs ``sims``).

    Returns
    -------
    tuple
        Corrected ``y`` and ``sims`` (None if not given).

    Examples
    --------
    >>> import numpy as np
    >>> y, _ = prediction_correct(np.array([2.0, 6.0]), np.array([1.0, 3.0]), np.array([0, 0]))
    >>> y.tolist()  # PRED_bin = 2: 2 * 2/1, 6 * 2/3
    [4.0, 4.0]
    """
    pred = np.asarray(pred, dtype=float)
    pred_bin = pd.Series(pred).groupby(np.asarray(bins)).transform("median").to_numpy()
    # no correction where PRED is 0 (before the first dose): the ratio is undefined there
    ratio = np.where(pred > 0, pred_bin / np.where(pred > 0, pred, 1.0), 1.0)
    y_pc = np.asarray(y, dtype=float) * ratio
    s_pc = None if sims is None else np.asarray(sims, dtype=float) * ratio
    if variability:
        if s_pc is None:
            raise ValueError("the variability correction needs the simulations")
        sd = s_pc.std(axis=0)
        sd_bin = pd.Series(sd).groupby(np.asarray(bins)).transform("median").to_numpy()
        scale = np.where(sd > 0, sd_bin / np.where(sd > 0, sd, 1.0), 1.0)
        y_pc = pred_bin + (y_pc - pred_bin) * scale
        s_pc = pred_bin + (s_pc - pred_bin) * scale
    return y_pc, s_pc


def vpc_statistics(
    y, sims, bins, *, quantiles=(0.05, 0.5, 0.95), ci: float = 0.9, blq=None, sim_blq=None, lloq=None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Observed and simulated percentiles per bin (the numerical core of a VPC).

    Parameters
    ----------
    y : array, one value per observation
        Observed values (a BLQ record holds its LLOQ or any value; ``blq`` marks it).
    sims : 2-D array (replicate x observation)
        Simulated values at the same records.
    bins : int array, one per observation
        Bin of each record, 0..n_bins-1.
    quantiles : sequence of float
        Percentiles of the data to compare.
    ci : float
        Width of the interval of each simulated percentile over replicates.
    blq, sim_blq : bool arrays, optional
        Observed (per observation) and simulated (replicate x observation) BLQ flags.
    lloq : float or array, optional
        Value given to BLQ records before percentiles are taken.

    Returns
    -------
    percentiles, censored : DataFrame, DataFrame or None
    """
    y, sims, bins = np.asarray(y, float), np.asarray(sims, float), np.asarray(bins)
    censoring = blq is not None
    if censoring:
        blq, sim_blq = np.asarray(blq, bool), np.asarray(sim_blq, bool)
        floor = np.broadcast_to(np.asarray(lloq, float), y.shape)
        y = np.where(blq, floor, y)
        sims = np.where(sim_blq, floor, sims)
    qs = np.asarray(quantiles, float)
    a = (1 - ci) / 2
    rows, cens_rows = [], []
    for b in np.unique(bins):
        j = bins == b
        obs_q = np.quantile(y[j], qs)
        sim_q = np.quantile(sims[:, j], qs, axis=1)  # (n_q, n_rep)
        if censoring:
            f_obs = blq[j].mean()
            f_sim = sim_blq[:, j].mean(axis=1)
            obs_q = np.where(f_obs >= qs, np.nan, obs_q)
            sim_q = np.where(f_sim[None, :] >= qs[:, None], np.nan, sim_q)
            cens_rows.append(dict(bin=b, observed=f_obs, **_interval(f_sim, a)))
        for k, q in enumerate(qs):
            row = dict(bin=b, quantile=q, observed=obs_q[k], **_interval(sim_q[k], a))
            rows.append(row)
    pct = pd.DataFrame(rows)
    pct["inside"] = np.where(
        pct[["observed", "sim_lo", "sim_hi"]].isna().any(axis=1),
        np.nan,
        ((pct["observed"] >= pct["sim_lo"]) & (pct["observed"] <= pct["sim_hi"])).astype(float),
    )
    return pct, (pd.DataFrame(cens_rows) if censoring else None)


def _interval(v, a: float) -> dict:
    """Lower, median and upper quantile of replicate values; NaN when most are undefined."""
    v = np.asarray(v, float)
    ok = v[~np.isnan(v)]
    if len(ok) < 0.5 * len(v):
        return dict(sim_lo=np.nan, sim_median=np.nan, sim_hi=np.nan)
    lo, med, hi = np.quantile(ok, [a, 0.5, 1 - a])
    return dict(sim_lo=lo, sim_median=med, sim_hi=hi)


def vpc(
    result,
    *,
    n: int = 500,
    seed: int | None = 0,
    x: str = "time",
    bins="jenks",
    max_bins: int = 10,
    stratify: str | None = None,
    pred_corr: bool = False,
    var_corr: bool = False,
    lloq: float | None = None,
    quantiles=(0.05, 0.5, 0.95),
    ci: float = 0.9,
    sims=None,
) -> VPC:
    """Visual predictive check of a fit, as numbers (draw it with :func:`nlmebayes.plots.vpc`).

    Parameters
    ----------
    result : FitResult
    n : int
        Replicated data sets (each from its own posterior draw).
    seed : int, optional
        Seeds the replicates.
    x : {"time", "tad"}
        Independent variable: time, or time after the last dose.
    bins : {"jenks", "ntile"} or array
        Binning rule (natural breaks or equal counts, at most ``max_bins`` bins) or upper bin edges.
    max_bins : int
        Most bins for the automatic rules.
    stratify : str, optional
        Column of the data to stratify by (e.g. "DVID" or a categorical covariate).
    pred_corr, var_corr : bool
        Prediction correction (pcVPC) and, with it, variability correction.
    lloq : float, optional
        Lower limit of quantification for a censored VPC. Default: the DV of censored records
        (CENS = 1, M3) if the data have any; without censoring no BLQ panel is made.
    quantiles : sequence of float
        Percentiles compared.
    ci : float
        Width of the simulated percentiles' intervals.
    sims : xarray.Dataset, optional
        Replicates from :func:`~nlmebayes.simulation.posterior_predictive` to reuse.

    Returns
    -------
    VPC

    Examples
    --------
    >>> check = vpc(result, n=500, pred_corr=True)  # doctest: +SKIP
    >>> check.coverage  # doctest: +SKIP
    0.93
    """
    from nlmebayes.simulation.predictive import Predictor, population_prediction, posterior_predictive

    categorical = [o.kind for o in result.spec.outcomes.values() if o.kind in ("binary", "ordinal", "tte")]
    if categorical:
        raise NotImplementedError(
            f"model {result.spec.name}: a VPC of percentiles does not fit a {categorical[0]} outcome "
            f"(proportions per category are not implemented; for time to event: diagnostics.km_vpc)"
        )
    data = result.data
    # compiled only when needed: given replicates and no prediction correction need no graph
    predictor = Predictor(result.spec, data) if sims is None or pred_corr else None
    if sims is None:
        sims = posterior_predictive(result, n=n, seed=seed, predictor=predictor)
    y_sim = sims["dv"].values
    y = data.obs_dv.astype(float)
    xv = time_after_dose(data) if x == "tad" else data.obs_time
    strata = _strata(data, stratify)
    bin_of = np.empty(data.n_obs, dtype=int)
    for s in pd.unique(strata):
        j = strata == s
        edges = np.asarray(bins, float) if not isinstance(bins, str) else auto_bins(xv[j], max_bins, bins)
        bin_of[j] = bin_index(xv[j], edges)
    blq, sim_blq, lloq_v = _censoring(data, y_sim, lloq)
    key = pd.Series(list(zip(strata, bin_of, strict=True))).factorize()[0]
    if pred_corr:
        pred = population_prediction(result, predictor=predictor)
        y, y_sim = prediction_correct(y, pred, key, sims=y_sim, variability=var_corr)
    tables, cens = [], []
    for s in pd.unique(strata):
        j = strata == s
        pct, cen = vpc_statistics(
            y[j],
            y_sim[:, j],
            bin_of[j],
            quantiles=quantiles,
            ci=ci,
            blq=None if blq is None else blq[j],
            sim_blq=None if blq is None else sim_blq[:, j],
            lloq=lloq_v,
        )
        x_mid = pd.Series(xv[j]).groupby(bin_of[j]).median()
        tables.append(pct.assign(stratum=s, x=pct["bin"].map(x_mid)))
        if cen is not None:
            cens.append(cen.assign(stratum=s, x=cen["bin"].map(x_mid)))
    obs = pd.DataFrame(
        {"x": xv, "dv": y, "blq": False if blq is None else blq, "stratum": strata, "bin": bin_of}
    )
    settings = dict(
        n=int(y_sim.shape[0]),
        x=x,
        pred_corr=pred_corr,
        var_corr=var_corr,
        lloq=lloq_v,
        ci=ci,
        quantiles=tuple(quantiles),
        stratify=stratify,
    )
    return VPC(
        pd.concat(tables, ignore_index=True),
        pd.concat(cens, ignore_index=True) if cens else None,
        obs,
        settings,
    )


def _strata(data, stratify: str | None) -> np.ndarray:
    if stratify is None:
        return np.full(data.n_obs, "all", dtype=object)
    rec = data.records.set_index("_ROW")
    if stratify not in rec.columns:
        raise ValueError(f"cannot stratify by {stratify!r}: no such column in {data.source}")
    return rec.loc[data.obs_row, stratify].astype(str).to_numpy(dtype=object)


def _censoring(data, y_sim, lloq):
    """Observed and simulated BLQ flags and the LLOQ, or (None, None, None) without censoring."""
    cens = data.obs_cens
    has_cens = cens is not None and np.any(cens == 1)
    if lloq is None and not has_cens:
        return None, None, None
    if lloq is None:
        lloq = float(np.median(data.obs_dv[cens == 1]))
    blq = (data.obs_dv < lloq) | (cens == 1 if cens is not None else False)
    return np.asarray(blq, bool), y_sim < lloq, float(lloq)
