"""Observation records added to a data set: a grid for predictions, quadrature nodes for hazards.

:func:`merge_observations` places new observation rows among a data set's records (carrying
covariates forward); :func:`observations_at` builds the design the structural model then predicts at.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes.data.events import EventData

__all__ = ["merge_observations", "observations_at"]


def merge_observations(df: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``new`` observation rows among ``df``'s, with the other columns carried from the subject's records.

    Covariates on a new row are the subject's values at its time (last record at or before it; the
    first record before that); dosing items are 0. At a time shared with a dose the dose comes
    first.
    """
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


def observations_at(data: EventData, ids, times) -> EventData:
    """``data``'s records, observed at ``times[j]`` of subject ``ids[j]`` instead of its own samples.

    Every dose, reset and covariate record is kept; the original observation records become MDV=1.
    The new observations come out in subject order, then by time (so rows of ``times`` that are
    increasing within a subject keep their order).

    Parameters
    ----------
    data : EventData
    ids : array (n,)
        Subject ID of each row of ``times``.
    times : array (n, m)
        Observation times.
    """
    from nlmebayes.data.read import read_nonmem

    times = np.asarray(times, dtype=float)
    df = data.input_frame().reset_index(drop=True)
    df.loc[data.records["_IS_OBS"].to_numpy(), "MDV"] = 1.0
    if "EVID" not in df.columns:
        df["EVID"] = np.where(df["AMT"].fillna(0) > 0, 1.0, 0.0)
    new = pd.DataFrame(
        {
            "ID": np.repeat(np.asarray(ids), times.shape[1]),
            "TIME": times.ravel(),
            "DV": 1.0,
            "AMT": 0.0,
            "EVID": 0.0,
            "MDV": 0.0,
        }
    )
    if "CMT" in df.columns:
        obs_cmt = (
            data.records.loc[data.records["_IS_OBS"], ["ID", "CMT"]]
            .drop_duplicates("ID")
            .set_index("ID")["CMT"]
        )
        new["CMT"] = new["ID"].map(obs_cmt).fillna(df["CMT"].max())
    return read_nonmem(merge_observations(df, new), source=f"{data.source} (observations at given times)")
