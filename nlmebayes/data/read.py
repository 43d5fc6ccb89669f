"""Reading and checking NONMEM-style datasets.

A dataset is a table of records (rows), one subject after another, with the NONMEM data items
ID, TIME, DV, AMT, EVID, MDV, CMT, RATE, II, ADDL, SS, OCC (any may be absent except ID and
TIME) plus covariate columns. :func:`read_nonmem` reads CSV or whitespace ``.dta`` files and
DataFrames, checks every record and returns :class:`~nlmebayes.data.events.EventData`.

Rules follow NONMEM: a row with AMT > 0 is a dose when EVID is absent; EVID 2 rows are other
events, EVID 3 resets the system, EVID 4 resets and doses; SS=1 resets and starts a steady
state, SS=2 adds a steady state to what is there. Each check raises a
:class:`~nlmebayes.data.errors.DataError` naming the file, row, line and column.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from nlmebayes.data.conditions import format_id
from nlmebayes.data.dosing import dose_trains, expand_doses, train_observation_pairs
from nlmebayes.data.errors import DataError
from nlmebayes.data.events import EventData, record_line

__all__ = ["RESERVED_COLUMNS", "read_nonmem", "build_events", "check_compartments"]

#: Data items with a NONMEM meaning. Every other column is a covariate.
RESERVED_COLUMNS = tuple("ID TIME DV AMT EVID MDV CMT RATE DUR II ADDL SS OCC DVID CENS LIMIT".split())
# Every data item but DVID must read as a number (DVID may name an output, e.g. "cp").
_NUMERIC = tuple(c for c in RESERVED_COLUMNS if c != "DVID")
# Defaults NONMEM applies when an item is absent.
_DEFAULTS = (
    ("AMT", 0.0),
    ("RATE", 0.0),
    ("II", 0.0),
    ("ADDL", 0.0),
    ("SS", 0.0),
    ("CMT", 0.0),
    ("OCC", 1.0),
    ("CENS", 0.0),
)


def read_nonmem(
    data: str | os.PathLike | pd.DataFrame,
    *,
    rename: dict[str, str] | None = None,
    drop: list[str] | tuple[str, ...] = (),
    source: str | None = None,
) -> EventData:
    """Read and check a NONMEM-style dataset.

    Parameters
    ----------
    data : path or DataFrame
        A CSV file (comma-separated, with header), a whitespace-separated ``.dta``/``.txt``
        table whose first line is the header, or a DataFrame. Column names are
        case-insensitive; ``.`` and empty cells are missing values.
    rename : dict, optional
        Map of source column name to data item, e.g. ``{"WGT": "WT"}`` (like ``$INPUT WT=WGT``).
    drop : sequence of str
        Columns to ignore (like ``$INPUT ... =DROP``).
    source : str, optional
        Name used in error messages; defaults to the file name.

    Returns
    -------
    EventData

    Raises
    ------
    DataError
        On any record that breaks the conventions; the message names the file, row (1-based
        data record, and file line), the column and what was expected.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"ID": [1, 1, 1], "TIME": [0, 1, 2], "AMT": [100, 0, 0],
    ...                    "DV": [None, 5.2, 3.9]})
    >>> data = read_nonmem(df)
    >>> data.n_subjects, data.n_obs, data.n_doses
    (1, 2, 1)
    """
    if isinstance(data, pd.DataFrame):
        df = data.copy()
        src = source or "<DataFrame>"
        lines = None
        df.columns = [str(c) for c in df.columns]
        df = df.replace(".", np.nan)
    else:
        path = Path(data)
        src = source or path.name
        df, lines = _read_table(path)
    return build_events(df, lines, src, rename=rename or {}, drop=tuple(drop))


def _read_table(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a CSV or whitespace table, keeping the file line of each record.

    Lines that NONMEM's ``IGNORE=@``/``IGNORE=#`` would skip (first non-blank character a letter,
    ``@`` or ``#``) after the header, and blank lines, are skipped; the header is the first line.
    """
    text = path.read_text()
    lines = text.splitlines()
    if not lines:
        raise DataError("the file is empty", source=path.name)
    header = lines[0]
    kept, line_no = [header], []
    for i, raw in enumerate(lines[1:], start=2):
        s = raw.strip()
        if not s or s[0] in "@#" or s[0].isalpha():
            continue
        kept.append(raw)
        line_no.append(i)
    sep = "," if "," in header else r"\s+"
    df = pd.read_csv(
        io.StringIO("\n".join(kept)), sep=sep, na_values=["."], keep_default_na=True, skipinitialspace=True
    )
    df.columns = [str(c).strip().strip('"') for c in df.columns]
    return df, np.asarray(line_no, dtype=int)


class _Records:
    """The table being checked, with what every check needs to name a record in an error."""

    def __init__(self, df: pd.DataFrame, lines, src: str):
        self.df, self.lines, self.src = df, lines, src

    def error(self, i: int, column: str | None, msg: str) -> DataError:
        """A DataError at 0-based record ``i``."""
        line = None if self.lines is None else int(self.lines[i])
        return DataError(msg, source=self.src, row=i + 1, line=line, column=column)

    def fail_first(self, mask, column: str, msg) -> None:
        """Raise at the first record where ``mask`` holds; ``msg(i)`` or a string."""
        if np.any(mask):
            i = int(np.flatnonzero(mask)[0])
            raise self.error(i, column, msg(i) if callable(msg) else msg)

    def col(self, name: str) -> np.ndarray:
        return self.df[name].to_numpy()


def build_events(df: pd.DataFrame, lines, src: str, *, rename=None, drop=()) -> EventData:
    """Check the records of ``df`` and build their :class:`EventData`.

    Parameters
    ----------
    df : DataFrame
        Raw records as read (any column case).
    lines : int array or None
        File line of each record, or None for a DataFrame.
    src : str
        Source name for messages.
    rename, drop : optional
        As in :func:`read_nonmem`.

    Returns
    -------
    EventData
    """
    if lines is not None and np.isnan(np.asarray(lines, dtype=float)).all():
        lines = None
    df = _normalise_columns(df, lines, src, rename or {}, tuple(drop))
    _warn_duplicated_rows(df, src)
    rec = _Records(df, lines, src)
    _parse_numeric(rec)
    _apply_defaults(rec)
    _check_amounts_and_rates(rec)
    evid = _infer_evid_mdv(rec)
    is_dose = np.isin(evid, (1, 4))
    is_obs = (evid == 0) & (rec.col("MDV") == 0)
    _check_dose_and_observation_rows(rec, evid, is_dose, is_obs)
    _check_censoring(rec, evid, is_obs)
    _check_steady_state_and_addl(rec, is_dose)
    new_block = _check_subject_order(rec, evid)
    covariates = _check_covariates(rec)
    return _events(rec, evid, is_dose, is_obs, new_block, covariates)


def _warn_duplicated_rows(df: pd.DataFrame, src: str) -> None:
    """Warn about records that repeat an earlier record in every column (kept, but rarely meant)."""
    data_cols = [c for c in df.columns if not c.startswith("_")]
    dup = df.duplicated(subset=data_cols).to_numpy()
    if dup.any():
        rows = df.loc[dup, "_ROW"].astype(int).tolist()
        first = df.loc[df.duplicated(subset=data_cols, keep=False).to_numpy() & ~dup, "_ROW"].astype(int)
        shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
        warnings.warn(
            f"{src}: record(s) {shown} repeat an earlier record in every column (first copy at "
            f"record {int(first.iloc[0])}); they are kept: remove them if they are a copy error",
            stacklevel=4,
        )


def _normalise_columns(df: pd.DataFrame, lines, src: str, rename: dict, drop: tuple) -> pd.DataFrame:
    """Upper-case, rename and drop columns; add the record number ``_ROW`` and ``_LINE``."""
    upper = {c: c.upper() for c in df.columns}
    for old, new in rename.items():
        hit = [c for c in df.columns if c.upper() == old.upper()]
        if not hit:
            raise DataError(f"cannot rename {old!r}: no such column", source=src, column=old)
        upper[hit[0]] = new.upper()
    dropped = {d.upper() for d in drop}
    df = df[[c for c in df.columns if c.upper() not in dropped]].rename(columns=upper)
    dup = df.columns[df.columns.duplicated()].tolist()
    if dup:
        raise DataError(f"duplicated column names (case-insensitive) {dup}", source=src, column=dup[0])
    df = df.reset_index(drop=True)
    n = len(df)
    if n == 0:
        raise DataError("the dataset has no records", source=src)
    df["_ROW"] = np.arange(1, n + 1)
    df["_LINE"] = lines if lines is not None else np.nan
    for req in ("ID", "TIME"):
        if req not in df.columns:
            raise DataError(
                f"required data item {req} is missing; columns are "
                f"{[c for c in df.columns if not c.startswith('_')]}",
                source=src,
                column=req,
            )
    return df


def _parse_numeric(rec: _Records) -> None:
    """Numeric data items: the value must parse; '.' and empty are missing."""
    df = rec.df
    for c in _NUMERIC:
        if c not in df.columns:
            continue
        raw = df[c]
        if pd.api.types.is_numeric_dtype(raw):
            df[c] = raw.astype(float)
            continue
        num = pd.to_numeric(raw, errors="coerce")
        bad = np.array(num.isna() & raw.notna(), dtype=bool)
        if bad.any():  # text only where parsing failed: converting whole columns costs seconds at 10^6 rows
            bad[bad] = raw[bad].astype(str).str.strip().to_numpy() != ""
        rec.fail_first(bad, c, lambda i, raw=raw: f"expected a number, got {raw.iloc[i]!r}")
        df[c] = num.astype(float)
    for c in ("ID", "TIME"):
        rec.fail_first(df[c].isna().to_numpy(), c, f"{c} is missing; every record needs one")


def _apply_defaults(rec: _Records) -> None:
    df = rec.df
    has = set(df.columns)
    for c, default in _DEFAULTS:
        if c not in has:
            df[c] = default
        df[c] = df[c].fillna(default)
    if "DV" not in has:
        df["DV"] = np.nan
    if "DUR" in has:
        df["DUR"] = df["DUR"].fillna(0.0)


def _check_amounts_and_rates(rec: _Records) -> None:
    """AMT, II, ADDL >= 0; RATE >= 0 or -2; DUR turned into RATE; SS in 0/1/2; CMT an integer."""
    df = rec.df
    for c in ("AMT", "II", "ADDL"):
        v = rec.col(c)
        rec.fail_first(v < 0, c, lambda i, c=c, v=v: f"expected {c} >= 0, got {v[i]:g}")
    rate = rec.col("RATE")
    rec.fail_first(
        (rate < 0) & (rate != -2),
        "RATE",
        lambda i: f"expected RATE >= 0 (or -2 for a modelled duration), got {rate[i]:g}",
    )
    if "DUR" in df.columns:
        dur = rec.col("DUR")
        rec.fail_first(dur < 0, "DUR", lambda i: f"expected DUR >= 0, got {dur[i]:g}")
        rec.fail_first((dur > 0) & (rate != 0), "DUR", "give either RATE or DUR for an infusion, not both")
        # A duration is a rate in disguise: RATE = AMT / DUR.
        with np.errstate(divide="ignore", invalid="ignore"):
            df["RATE"] = np.where(dur > 0, rec.col("AMT") / np.where(dur > 0, dur, 1.0), rate)
    ss = rec.col("SS")
    allowed = (0, 1, 2)
    rec.fail_first(~np.isin(ss, allowed), "SS", lambda i: f"expected one of {allowed}, got {ss[i]:g}")
    cmt = rec.col("CMT")
    rec.fail_first(
        (cmt < 0) | (cmt != np.round(cmt)),
        "CMT",
        lambda i: f"expected a positive integer compartment number, got {cmt[i]:g}",
    )


def _infer_evid_mdv(rec: _Records) -> np.ndarray:
    """EVID and MDV as NONMEM infers them (written back into the table); returns EVID."""
    df = rec.df
    has = set(df.columns)
    amt = rec.col("AMT")
    if "EVID" in has:
        evid = rec.col("EVID")
        rec.fail_first(np.isnan(evid), "EVID", "EVID is missing")
        rec.fail_first(
            ~np.isin(evid, (0, 1, 2, 3, 4)),
            "EVID",
            lambda i: (
                f"expected EVID 0 (observation), 1 (dose), 2 (other), 3 (reset) "
                f"or 4 (reset and dose), got {evid[i]:g}"
            ),
        )
    else:
        mdv0 = df["MDV"].fillna(0).to_numpy() if "MDV" in has else np.zeros(len(df))
        evid = np.where(amt > 0, 1.0, np.where(mdv0 == 1, 2.0, 0.0))
        df["EVID"] = evid
    if "MDV" in has:
        mdv = rec.col("MDV")
        if np.isnan(mdv).any():
            # An empty MDV cell means the NONMEM default for that record.
            mdv = np.where(np.isnan(mdv), (evid != 0).astype(float), mdv)
        rec.fail_first(~np.isin(mdv, (0, 1)), "MDV", lambda i: f"expected MDV 0 or 1, got {mdv[i]:g}")
        rec.fail_first(
            (evid != 0) & (mdv == 0),
            "MDV",
            lambda i: f"MDV must be 1 on an EVID {evid[i]:g} record (only EVID 0 records are observations)",
        )
    else:
        mdv = (evid != 0).astype(float)
    df["MDV"] = mdv
    return evid


def _check_dose_and_observation_rows(rec: _Records, evid, is_dose, is_obs) -> None:
    """Check dose and observation records.

    Doses: positive amount (or an SS=1 infusion with AMT 0), nothing observed on the row;
    observations: a DV.
    """
    amt, dv = rec.col("AMT"), rec.col("DV")
    no_amt = is_dose & (amt <= 0) & ~_constant_infusion(rec)
    rec.fail_first(no_amt, "AMT", lambda i: f"a dose record (EVID {evid[i]:g}) needs AMT > 0")
    rec.fail_first(
        ~is_dose & (amt > 0),
        "AMT",
        lambda i: f"AMT > 0 on an EVID {evid[i]:g} record; a dose needs EVID 1 or 4",
    )
    # NONMEM ignores DV on dose rows, and exports often put 0 there, so only a real value is an error.
    rec.fail_first(
        is_dose & ~np.isnan(dv) & (dv != 0),
        "DV",
        lambda i: (
            f"a dose record carries DV = {dv[i]:g}; put the observation on its own "
            f"record (EVID 0) or leave DV empty/0 on the dose"
        ),
    )
    rec.fail_first(
        is_obs & np.isnan(dv),
        "DV",
        "DV is missing on an observation record; set MDV=1 to keep the record out of the likelihood",
    )


def _check_censoring(rec: _Records, evid, is_obs) -> None:
    """Censoring (Monolix/nlmixr2 convention).

    CENS 1 = below the limit in DV (left, BLQ), -1 = above it (right); LIMIT, if given, is the other end of
    the interval.
    """
    cens, dv = rec.col("CENS"), rec.col("DV")
    rec.fail_first(
        ~np.isin(cens, (-1.0, 0.0, 1.0)),
        "CENS",
        lambda i: f"expected CENS 0, 1 (below DV: BLQ) or -1 (above DV), got {cens[i]:g}",
    )
    # an MDV=1 observation record may keep its flag
    rec.fail_first(
        (cens != 0) & (evid != 0),
        "CENS",
        lambda i: f"CENS is set on an EVID {evid[i]:g} record; only observations (EVID 0) can be censored",
    )
    if "LIMIT" in rec.df.columns:
        lim = rec.col("LIMIT")
        wrong = is_obs & ~np.isnan(lim) & (((cens == 1) & (lim >= dv)) | ((cens == -1) & (lim <= dv)))

        def msg(i):
            side = "below" if cens[i] == 1 else "above"
            return (
                f"LIMIT {lim[i]:g} must lie {side} DV {dv[i]:g} (the interval of a CENS "
                f"{cens[i]:g} observation)"
            )

        rec.fail_first(wrong, "LIMIT", msg)


def _constant_infusion(rec: _Records) -> np.ndarray:
    """Records of a constant-rate infusion at steady state: SS=1, AMT=0, RATE>0.

    NONMEM's form: no amount, no dosing interval; the infusion has run forever and keeps running.
    """
    return (rec.col("SS") == 1) & (rec.col("AMT") == 0) & (rec.col("RATE") > 0)


def _check_steady_state_and_addl(rec: _Records, is_dose) -> None:
    ss, ii, addl = rec.col("SS"), rec.col("II"), rec.col("ADDL")
    # a constant-rate infusion at steady state has no dosing interval
    rec.fail_first(
        is_dose & (ss > 0) & (ii <= 0) & ~_constant_infusion(rec),
        "II",
        "a steady-state dose (SS 1 or 2) needs II > 0",
    )
    rec.fail_first(is_dose & (addl > 0) & (ii <= 0), "II", "ADDL > 0 needs II > 0")
    if is_dose.any():
        off = ~is_dose & ((ss > 0) | (addl > 0))
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise rec.error(i, "SS" if ss[i] > 0 else "ADDL", "SS/ADDL given on a record that is not a dose")


def _check_subject_order(rec: _Records, evid) -> np.ndarray:
    """Subjects are contiguous blocks and times do not decrease within a block except at resets.

    Returns the mask of each subject's first record.
    """
    ids, time = rec.col("ID"), rec.col("TIME")
    new_block = np.r_[True, ids[1:] != ids[:-1]]
    seen: dict = {}
    for i in np.flatnonzero(new_block):
        if ids[i] in seen:
            raise rec.error(
                int(i),
                "ID",
                f"subject {format_id(ids[i])} appears again after other "
                f"subjects (its records start at row {seen[ids[i]] + 1}); "
                f"keep each subject's records together",
            )
        seen[ids[i]] = int(i)
    back = ~new_block & (time < np.r_[np.inf, time[:-1]]) & ~np.isin(evid, (3, 4))
    rec.fail_first(
        back,
        "TIME",
        lambda i: (
            f"expected TIME >= {time[i - 1]:g} (the previous record of subject "
            f"{format_id(ids[i])}), got {time[i]:g}; times must not decrease "
            f"within a subject except at a reset (EVID 3 or 4)"
        ),
    )
    return new_block


def _check_covariates(rec: _Records) -> tuple[str, ...]:
    """Every other column is a covariate: no missing values; numeric where it reads as numbers."""
    df = rec.df
    covariates = tuple(c for c in df.columns if c not in RESERVED_COLUMNS and not c.startswith("_"))
    for c in covariates:
        col = df[c]
        rec.fail_first(
            col.isna().to_numpy(),
            c,
            f"covariate {c} is missing (NaN); give a value on every record (or drop the column)",
        )
        num = pd.to_numeric(col, errors="coerce")
        if not num.isna().any():
            df[c] = num.astype(float)
    return covariates


def _exclusions(df: pd.DataFrame, evid, is_dose) -> pd.DataFrame:
    """Why each record is out of the likelihood (nothing silently dropped)."""
    reason = np.full(len(df), "", dtype=object)
    mdv = df["MDV"].to_numpy()
    reason[is_dose] = "dose record"
    reason[(evid == 0) & (mdv == 1)] = "observation with MDV=1"
    reason[evid == 2] = "other event (EVID 2)"
    reason[evid == 3] = "reset (EVID 3)"
    excluded = pd.DataFrame({"row": df["_ROW"], "ID": df["ID"], "TIME": df["TIME"], "reason": reason})
    return excluded[reason != ""].reset_index(drop=True)


def _events(rec: _Records, evid, is_dose, is_obs, new_block, covariates) -> EventData:
    """The flat arrays of :class:`EventData` from the checked records."""
    df = rec.df
    time, ss = rec.col("TIME"), rec.col("SS")
    reset = np.isin(evid, (3, 4)) | (is_dose & (ss == 1))
    subj_index = np.cumsum(new_block) - 1
    segment = np.cumsum(new_block | reset)  # reset segments never span subjects
    df["_SUBJ"] = subj_index
    df["_SEG"] = segment
    df["_IS_DOSE"] = is_dose
    df["_IS_OBS"] = is_obs
    excluded = _exclusions(df, evid, is_dose)

    doses = expand_doses(time, rec.col("II"), rec.col("ADDL"), ss, is_dose, subj_index, segment)
    if doses.n_cancelled:
        excluded = pd.concat(
            [
                excluded,
                pd.DataFrame(
                    {
                        "row": [0],
                        "ID": [np.nan],
                        "TIME": [np.nan],
                        "reason": [f"ADDL-implied doses cancelled by a later reset ({doses.n_cancelled})"],
                    }
                ),
            ],
            ignore_index=True,
        )
    obs_idx = np.flatnonzero(is_obs)
    rep = doses.record
    run = dose_trains(doses, _train_key(rec, rep, doses.ss, covariates))
    pair_obs, pair_dose, pair_first, pair_count = train_observation_pairs(doses, run, obs_idx, time, segment)
    dvid = rec.col("DVID")[obs_idx] if "DVID" in df.columns else np.zeros(len(obs_idx), dtype=int)
    limit = (
        rec.col("LIMIT")[obs_idx].astype(float) if "LIMIT" in df.columns else np.full(len(obs_idx), np.nan)
    )
    return EventData(
        source=rec.src,
        records=df,
        ids=rec.col("ID")[new_block],
        covariate_names=covariates,
        obs_subject=subj_index[obs_idx].astype(int),
        obs_time=time[obs_idx].astype(float),
        obs_dv=rec.col("DV")[obs_idx].astype(float),
        obs_cmt=rec.col("CMT")[obs_idx].astype(int),
        obs_dvid=dvid,
        obs_occ=rec.col("OCC")[obs_idx],
        obs_cens=rec.col("CENS")[obs_idx].astype(int),
        obs_limit=limit,
        obs_row=rec.col("_ROW")[obs_idx].astype(int),
        dose_subject=subj_index[rep].astype(int),
        dose_time=doses.time.astype(float),
        dose_amt=rec.col("AMT")[rep].astype(float),
        dose_cmt=rec.col("CMT")[rep].astype(int),
        dose_rate=rec.col("RATE")[rep].astype(float),
        dose_ss=doses.ss,
        dose_ii=rec.col("II")[rep].astype(float),
        dose_occ=rec.col("OCC")[rep],
        dose_row=rec.col("_ROW")[rep].astype(int),
        pair_obs=pair_obs,
        pair_dose=pair_dose,
        pair_first=pair_first,
        pair_count=pair_count,
        excluded=excluded,
    )


def _train_key(rec: _Records, rep: np.ndarray, event_ss: np.ndarray, covariates) -> np.ndarray:
    """Which dose events may form a train (:func:`~nlmebayes.data.dosing.dose_trains`).

    Boluses that are not steady-state doses, keyed by everything on their record that a model can
    read: AMT, CMT, OCC and the covariates (so an occasion or a covariate that changes breaks the
    train, and each train has one set of individual parameters). Infusions stay single doses.
    """
    cols = ["AMT", "CMT", "RATE", "OCC", *covariates]
    key = rec.df[cols].iloc[rep].groupby(cols, sort=False, dropna=False).ngroup().to_numpy()
    bolus = (rec.col("RATE")[rep] == 0) & (event_ss == 0)
    return np.where(bolus, key, -1)


def check_compartments(
    data: EventData, dose_cmts: dict[int, str], obs_cmts: dict[int, str], model: str
) -> None:
    """Check that every CMT in the data names a compartment the model has.

    Parameters
    ----------
    data : EventData
        The checked records.
    dose_cmts, obs_cmts : dict
        Compartment number -> name for the compartments that may receive doses / be observed.
    model : str
        Model name, for the error message.

    Raises
    ------
    DataError
        At the first dose or observation into a compartment the model does not have.
    """
    rec = data.records
    for kind, allowed, mask in (
        ("dose", dose_cmts, rec["_IS_DOSE"]),
        ("observation", obs_cmts, rec["_IS_OBS"]),
    ):
        cm = rec["CMT"].to_numpy()
        bad = mask.to_numpy() & (cm != 0) & ~np.isin(cm, list(allowed))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            r = rec.iloc[i]
            raise DataError(
                f"unknown {kind} compartment CMT={cm[i]:g} for model {model}; expected one of "
                + ", ".join(f"{k} ({v})" for k, v in allowed.items()),
                source=data.source,
                row=int(r["_ROW"]),
                line=record_line(r),
                column="CMT",
            )
