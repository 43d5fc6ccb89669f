"""Designs to predict at: the fitted data's doses with observation records where curves are wanted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes.data import EventData, read_nonmem
from nlmebayes.data.observations import merge_observations

__all__ = ["dense_design", "replicate_subjects", "sampling_design"]


def dense_design(data: EventData, n_points: int = 120, times=None) -> EventData:
    """The same subjects and doses, observed on a time grid instead of at the sampling times.

    Every record of ``data`` is kept (doses, resets, covariates); its observation records become
    MDV=1, and each subject gets observation records on a grid from its first record to its last
    (or at ``times``), one set per output (DVID) it was observed in. Covariates on the new records
    are the subject's values at that time (last record at or before it; the first record before
    that). DV on the new records is a placeholder (1.0).

    Parameters
    ----------
    data : EventData
        The fitted data (``FitResult.data``).
    n_points : int
        Grid points per subject and output (ignored when ``times`` is given).
    times : array, optional
        The same grid for every subject.

    Returns
    -------
    EventData
        Observation records in subject order, then by time; ``records["_IS_OBS"]`` marks them.

    Examples
    --------
    >>> from nlmebayes import datasets
    >>> grid = dense_design(datasets.theophylline(), n_points=50)
    >>> grid.n_obs, grid.n_subjects
    (600, 12)
    """
    df = data.input_frame().reset_index(drop=True)
    is_obs = data.records["_IS_OBS"].to_numpy()
    df.loc[is_obs, "MDV"] = 1.0
    if "EVID" not in df.columns:
        df["EVID"] = np.where(df["AMT"].fillna(0) > 0, 1.0, 0.0)
    rows = []
    obs = data.records.loc[is_obs]
    out_col = "DVID" if "DVID" in df.columns else None
    for sid, sub in data.records.groupby("ID", sort=False):
        grid = (
            np.asarray(times, dtype=float)
            if times is not None
            else np.linspace(sub["TIME"].min(), sub["TIME"].max(), n_points)
        )
        sub_obs = obs[obs["ID"] == sid]
        kinds = sub_obs.drop_duplicates(["CMT"] + ([out_col] if out_col else []))
        for _, k in kinds.iterrows():
            add = {"ID": sid, "TIME": grid, "DV": 1.0, "AMT": 0.0, "EVID": 0.0, "MDV": 0.0, "CMT": k["CMT"]}
            if out_col:
                add[out_col] = k[out_col]
            rows.append(pd.DataFrame(add))
    new = pd.concat(rows, ignore_index=True)
    return read_nonmem(merge_observations(df, new), source=f"{data.source} (dense grid)")


def replicate_subjects(data: EventData, copies: int) -> EventData:
    """``copies`` copies of every subject, with new IDs: a larger design of the same shape.

    Copy ``c`` of subject ``i`` gets ID ``c * (max ID) + i`` (numeric IDs) or ``"i_c"``.

    Examples
    --------
    >>> from nlmebayes import datasets
    >>> big = replicate_subjects(datasets.theophylline(), 10)
    >>> big.n_subjects, big.n_obs
    (120, 1320)
    """
    df = data.input_frame().reset_index(drop=True)
    numeric = pd.api.types.is_numeric_dtype(df["ID"])
    top = df["ID"].max() if numeric else None
    parts = []
    for c in range(copies):
        part = df.copy()
        part["ID"] = part["ID"] + c * top if numeric else part["ID"].astype(str) + f"_{c}"
        parts.append(part)
    return read_nonmem(pd.concat(parts, ignore_index=True), source=f"{data.source} x {copies}")


def sampling_design(
    n_subjects: int,
    times,
    *,
    amt: float,
    cmt: int = 1,
    rate: float = 0.0,
    obs_cmt: int | None = None,
    covariates: dict | None = None,
    per_subject: int | None = None,
    seed: int = 0,
) -> EventData:
    """A single-dose design: one dose at time 0, then observations at ``times``.

    Parameters
    ----------
    n_subjects : int
    times : array
        Nominal sampling times.
    amt, cmt, rate : float, int, float
        The dose (RATE 0: bolus into ``cmt``).
    obs_cmt : int, optional
        Compartment of the observations (default ``cmt``; 2 for the central compartment of an
        oral model dosed into its depot, 1).
    covariates : dict, optional
        Column -> array (n_subjects,) of subject covariates.
    per_subject : int, optional
        Sample this many of ``times`` per subject at random (sparse designs); default all.
    seed : int
        Seeds the choice of times.

    Returns
    -------
    EventData
        DV are placeholders (1.0), to be replaced by :func:`~nlmebayes.simulation.simulate`.

    Examples
    --------
    >>> d = sampling_design(100, [0.5, 1, 2, 4, 8, 12], amt=100, per_subject=4, seed=1)
    >>> d.n_subjects, d.n_obs
    (100, 400)
    """
    rng = np.random.default_rng(seed)
    times = np.asarray(times, dtype=float)
    k = len(times) if per_subject is None else per_subject
    t = np.sort(np.stack([rng.choice(times, size=k, replace=False) for _ in range(n_subjects)]), axis=1)
    ids = np.arange(1, n_subjects + 1)
    dose = pd.DataFrame(
        {"ID": ids, "TIME": 0.0, "DV": 0.0, "AMT": amt, "EVID": 1, "MDV": 1, "CMT": cmt, "RATE": rate}
    )
    obs = pd.DataFrame(
        {
            "ID": np.repeat(ids, k),
            "TIME": t.ravel(),
            "DV": 1.0,
            "AMT": 0.0,
            "EVID": 0,
            "MDV": 0,
            "CMT": obs_cmt or cmt,
            "RATE": 0.0,
        }
    )
    df = pd.concat([dose, obs], ignore_index=True).sort_values(
        ["ID", "TIME", "EVID"], ascending=[True, True, False]
    )
    for col, values in (covariates or {}).items():
        df[col] = np.asarray(values)[df["ID"].to_numpy() - 1]
    return read_nonmem(df.reset_index(drop=True), source=f"design {n_subjects} subjects x {k}")
