"""Designs to predict at: the fitted data's doses with observation records where curves are wanted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes.data import EventData, read_nonmem

__all__ = ["dense_design"]


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
    return read_nonmem(_merge_records(df, new), source=f"{data.source} (dense grid)")


def _merge_records(df: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``new`` observation rows among ``df``'s, with the other columns carried from the subject's records."""
    order = {sid: i for i, sid in enumerate(pd.unique(df["ID"]))}
    carried = [c for c in df.columns if c not in new.columns]
    key = df.assign(_ORD=np.arange(len(df))).sort_values("TIME", kind="stable")
    filled = pd.merge_asof(
        new.assign(_ORD=np.arange(len(new))).sort_values("TIME", kind="stable"),
        key[["ID", "TIME", *carried]],
        on="TIME",
        by="ID",
        direction="backward",
    )
    # before a subject's first record: that record's values
    first = df.groupby("ID", sort=False)[carried].first()
    for c in carried:
        filled[c] = filled[c].fillna(filled["ID"].map(first[c]))
    for c in ("RATE", "II", "ADDL", "SS", "CENS"):
        if c in filled.columns:
            filled[c] = 0.0
    both = pd.concat([df.assign(_NEW=0), filled.drop(columns="_ORD").assign(_NEW=1)], ignore_index=True)
    both["_SUBJ"] = both["ID"].map(order)
    # doses at a grid time come first, as a sample taken at the dose time sees the dose
    both = both.sort_values(["_SUBJ", "TIME", "_NEW"], kind="stable")
    return both.drop(columns=["_SUBJ", "_NEW"]).reset_index(drop=True)[df.columns]
