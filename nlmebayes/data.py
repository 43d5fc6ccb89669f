"""NONMEM-style event data: reading, validation and the flat arrays the graph builder uses.

A dataset is a table of records (rows), one subject after another, with the NONMEM data items
ID, TIME, DV, AMT, EVID, MDV, CMT, RATE, II, ADDL, SS, OCC (any may be absent except ID and
TIME) plus covariate columns. :func:`read_nonmem` reads CSV or whitespace ``.dta`` files and
DataFrames; :class:`EventData` holds the checked records and the vectorisable representation:

* observations (``obs_*`` arrays): the records that enter the likelihood (EVID 0, MDV 0);
* dose events (``dose_*`` arrays): every dose after ADDL/II expansion;
* dose-observation pairs (``pair_obs``, ``pair_dose``): each dose that can contribute to an
  observation by superposition (same subject, same reset segment, given before it).

Rules follow NONMEM: a row with AMT > 0 is a dose when EVID is absent; EVID 2 rows are other
events, EVID 3 resets the system, EVID 4 resets and doses; SS=1 resets and starts a steady
state, SS=2 adds a steady state to what is there. Every row that does not enter the likelihood
is counted in :meth:`EventData.summary`; nothing is dropped silently.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DataError", "EventData", "read_nonmem", "check_compartments", "RESERVED_COLUMNS"]

#: Data items with a NONMEM meaning. Every other column is a covariate.
RESERVED_COLUMNS = (
    "ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "DUR", "II", "ADDL", "SS", "OCC",
    "DVID", "CENS", "LIMIT",
)
_NUMERIC = ("ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "DUR", "II", "ADDL", "SS",
            "OCC", "CENS", "LIMIT")


_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
        "==": np.equal, "!=": np.not_equal}


def parse_condition(text: str) -> tuple[str, str, float | str]:
    """Split a condition such as ``"APGR < 5"`` or ``"SEX == 'male'"`` into (column, operator,
    value); the value is a number when it reads as one. Raises ValueError otherwise."""
    m = _CONDITION.match(text or "")
    if not m:
        raise ValueError(f"cannot read condition {text!r}; write e.g. 'APGR < 5' or 'DV == 0'")
    col, op, val = m.groups()
    try:
        return col, op, float(val)
    except ValueError:
        return col, op, val.strip("'\"")


class DataError(ValueError):
    """A dataset record that breaks the NONMEM conventions.

    Attributes
    ----------
    source : str
        File name (or ``"<DataFrame>"``).
    row : int or None
        1-based data record number (the header is not counted).
    line : int or None
        1-based line in the file, where the data came from a file.
    column : str or None
        The offending data item.
    """

    def __init__(self, message: str, *, source: str, row: int | None = None,
                 line: int | None = None, column: str | None = None):
        self.source, self.row, self.line, self.column = source, row, line, column
        where = [source]
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        if column is not None:
            where.append(f"column {column}")
        super().__init__(", ".join(where) + ": " + message)


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
    df = pd.read_csv(io.StringIO("\n".join(kept)), sep=sep, na_values=["."], keep_default_na=True,
                     skipinitialspace=True)
    df.columns = [str(c).strip().strip('"') for c in df.columns]
    return df, np.asarray(line_no, dtype=int)


@dataclass(frozen=True)
class EventData:
    """Checked NONMEM-style records and their flat, vectorisable representation.

    Build it with :func:`read_nonmem`. All ``obs_*`` arrays have one entry per observation that
    enters the likelihood, ``dose_*`` one per dose event after ADDL expansion; ``*_subject`` are
    0-based subject indices into :attr:`ids`; ``*_row`` are 1-based source record numbers.
    CMT 0 means "the model's default compartment" (the column was absent or empty).
    """

    source: str
    records: pd.DataFrame
    ids: np.ndarray
    covariate_names: tuple[str, ...]
    obs_subject: np.ndarray
    obs_time: np.ndarray
    obs_dv: np.ndarray
    obs_cmt: np.ndarray
    obs_dvid: np.ndarray
    obs_occ: np.ndarray
    obs_row: np.ndarray
    dose_subject: np.ndarray
    dose_time: np.ndarray
    dose_amt: np.ndarray
    dose_cmt: np.ndarray
    dose_rate: np.ndarray
    dose_ss: np.ndarray
    dose_ii: np.ndarray
    dose_occ: np.ndarray
    dose_row: np.ndarray
    pair_obs: np.ndarray
    pair_dose: np.ndarray
    excluded: pd.DataFrame = field(repr=False)
    obs_cens: np.ndarray | None = None
    obs_limit: np.ndarray | None = None

    # ------------------------------------------------------------------ sizes
    @property
    def n_subjects(self) -> int:
        return len(self.ids)

    @property
    def n_obs(self) -> int:
        return len(self.obs_time)

    @property
    def n_doses(self) -> int:
        return len(self.dose_time)

    @property
    def n_records(self) -> int:
        return len(self.records)

    @property
    def obs_output(self) -> np.ndarray:
        """Each observation's DVID as text ("1" for 1.0), the name of the model output it
        belongs to."""
        return np.array([str(_id_label(v)) for v in self.obs_dvid], dtype=object)

    # -------------------------------------------------------------- covariates
    def subject_covariates(self, names: list[str] | tuple[str, ...] | None = None) -> pd.DataFrame:
        """Time-constant covariates, one row per subject (index: ID, in data order).

        Raises
        ------
        DataError
            If a requested covariate changes within a subject; the error names the first row
            where it changes. Use :meth:`record_covariates` for time-varying covariates.
        """
        names = list(self.covariate_names if names is None else names)
        for name in names:
            if name not in self.covariate_names:
                raise DataError(f"no covariate named {name!r}; covariates are "
                                f"{list(self.covariate_names)}", source=self.source, column=name)
            col = self.records[name]
            changed = col.ne(col.groupby(self.records["ID"]).transform("first"))
            if changed.any():
                i = int(np.flatnonzero(changed.to_numpy())[0])
                r = self.records.iloc[i]
                raise DataError(
                    f"covariate {name} is used as time-constant but changes within subject "
                    f"{_fmt_id(r['ID'])} (first value {col[self.records['ID'] == r['ID']].iloc[0]!r}, "
                    f"here {col.iloc[i]!r})",
                    source=self.source, row=int(r["_ROW"]), line=_line(r), column=name)
        return self.records.groupby("ID", sort=False)[names].first().loc[self.ids]

    def time_varying_covariates(self) -> tuple[str, ...]:
        """Covariates whose value changes within at least one subject."""
        g = self.records.groupby("ID", sort=False)
        return tuple(c for c in self.covariate_names if (g[c].nunique() > 1).any())

    def record_covariates(self, names: list[str] | None = None, at: str = "obs") -> pd.DataFrame:
        """Covariate values carried to each observation (``at="obs"``) or dose (``at="dose"``).

        A covariate's value on a record holds from that record on (last observation carried
        forward), so an observation sees the value on its own row and an ADDL-implied dose the
        value on the row that declared it.
        """
        names = list(self.covariate_names if names is None else names)
        rows = self.obs_row if at == "obs" else self.dose_row
        rec = self.records.set_index("_ROW")
        return rec.loc[rows, names].reset_index(drop=True)

    def input_frame(self) -> pd.DataFrame:
        """The records as a data table that :func:`read_nonmem` reads back to the same data."""
        cols = [c for c in self.records.columns if not c.startswith("_") and c != "DUR"]
        return self.records[cols].copy()

    def select_dvid(self, dvid) -> EventData:
        """Keep only observations of type ``dvid``; the others are reported as excluded."""
        if "DVID" not in self.records.columns:
            raise DataError("the data have no DVID column to select observations by",
                            source=self.source, column="DVID")
        known = set(pd.unique(self.obs_dvid))
        if dvid not in known:
            raise DataError(f"no observations with DVID {dvid!r}; DVID values are {sorted(known, key=str)}",
                            source=self.source, column="DVID")
        other = self.records["_IS_OBS"].to_numpy() & (self.records["DVID"].to_numpy() != dvid)
        return self._without(other, f"observation of another DVID (not {dvid})")

    def ignore(self, condition: str) -> EventData:
        """Take observations matching ``condition`` (e.g. ``"DV == 0"``) out of the likelihood,
        like NONMEM's ``IGNORE=(DV.EQ.0)``; they are reported as excluded with the condition."""
        col, op, val = parse_condition(condition)
        col = col.upper()
        if col not in self.records.columns:
            raise DataError(f"IGNORE condition {condition!r} names no column", source=self.source,
                            column=col)
        hit = _OPS[op](self.records[col].to_numpy(), val) & self.records["_IS_OBS"].to_numpy()
        return self._without(hit, f"IGNORE ({condition})")

    def drop_censored(self) -> EventData:
        """Take censored observations (CENS != 0) out of the likelihood (Beal's M1), reported."""
        hit = self.records["_IS_OBS"].to_numpy() & (self.records["CENS"].to_numpy() != 0)
        return self._without(hit, "censored (CENS != 0), discarded: M1")

    def _without(self, rows: np.ndarray, reason: str) -> EventData:
        """The same data with the observation records ``rows`` (mask) set to MDV=1, reported."""
        df = self.input_frame()
        df.loc[rows, "MDV"] = 1.0
        new = _build(df, self.records["_LINE"].to_numpy(), self.source, {}, ())
        gone = set(self.records["_ROW"].to_numpy()[rows])
        old = self.excluded.set_index("row")["reason"]
        new_reason = [reason if r in gone else old.get(r, why)
                      for r, why in zip(new.excluded["row"], new.excluded["reason"], strict=True)]
        object.__setattr__(new, "excluded", new.excluded.assign(reason=new_reason))
        return new

    # ----------------------------------------------------------------- summary
    def summary(self) -> str:
        """A short text summary: subjects, records, observations, doses and what was excluded."""
        per_subj = np.bincount(self.obs_subject, minlength=self.n_subjects)
        lines = [
            f"Dataset {self.source}",
            f"  subjects:       {self.n_subjects}",
            f"  records:        {self.n_records}",
            f"  observations:   {self.n_obs} (per subject: min {per_subj.min()}, "
            f"median {np.median(per_subj):g}, max {per_subj.max()})",
            f"  dose records:   {int(self.records['_IS_DOSE'].sum())} "
            f"({self.n_doses} dose events after ADDL expansion)",
            f"  time range:     {self.records['TIME'].min():g} to {self.records['TIME'].max():g}",
        ]
        if "DVID" in self.records.columns:
            kinds = pd.Series(self.obs_dvid).value_counts(sort=False)
            lines.append("  by DVID:        " + ", ".join(f"{k}: {v}" for k, v in kinds.items()))
        if len(self.excluded):
            counts = self.excluded["reason"].value_counts()
            lines.append(f"  not in likelihood: {len(self.excluded)} records")
            lines += [f"    {n:5d}  {reason}" for reason, n in counts.items()]
        if self.covariate_names:
            tv = set(self.time_varying_covariates())
            lines.append("  covariates:     " + ", ".join(
                c + (" (time-varying)" if c in tv else "") for c in self.covariate_names))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _fmt_id(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _line(r) -> int | None:
    v = r.get("_LINE", np.nan)
    return None if pd.isna(v) else int(v)


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
    return _build(df, lines, src, rename or {}, tuple(drop))


def _build(df: pd.DataFrame, lines, src: str, rename: dict, drop: tuple) -> EventData:
    if lines is not None and np.isnan(np.asarray(lines, dtype=float)).all():
        lines = None
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

    def err(i: int, column: str | None, msg: str) -> DataError:
        return DataError(msg, source=src, row=i + 1,
                         line=None if lines is None else int(lines[i]), column=column)

    for req in ("ID", "TIME"):
        if req not in df.columns:
            raise DataError(f"required data item {req} is missing; columns are "
                            f"{[c for c in df.columns if not c.startswith('_')]}",
                            source=src, column=req)

    # Numeric data items: the value must parse; '.' and empty are missing.
    for c in _NUMERIC:
        if c not in df.columns:
            continue
        raw = df[c]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise err(i, c, f"expected a number, got {raw.iloc[i]!r}")
        df[c] = num.astype(float)

    for c in ("ID", "TIME"):
        miss = df[c].isna().to_numpy()
        if miss.any():
            raise err(int(np.flatnonzero(miss)[0]), c, f"{c} is missing; every record needs one")

    # Defaults NONMEM applies when an item is absent.
    has = set(df.columns)
    for c, default in (("AMT", 0.0), ("RATE", 0.0), ("II", 0.0), ("ADDL", 0.0), ("SS", 0.0),
                       ("CMT", 0.0), ("OCC", 1.0), ("CENS", 0.0)):
        if c not in has:
            df[c] = default
        df[c] = df[c].fillna(default)
    if "DV" not in has:
        df["DV"] = np.nan
    if "DUR" in has:
        df["DUR"] = df["DUR"].fillna(0.0)

    amt = df["AMT"].to_numpy()
    for c in ("AMT", "II", "ADDL"):
        neg = df[c].to_numpy() < 0
        if neg.any():
            i = int(np.flatnonzero(neg)[0])
            raise err(i, c, f"expected {c} >= 0, got {df[c].iloc[i]:g}")
    rate = df["RATE"].to_numpy()
    badrate = (rate < 0) & (rate != -2)
    if badrate.any():
        i = int(np.flatnonzero(badrate)[0])
        raise err(i, "RATE", f"expected RATE >= 0 (or -2 for a modelled duration), got {rate[i]:g}")
    if "DUR" in has:
        dur = df["DUR"].to_numpy()
        if (dur < 0).any():
            i = int(np.flatnonzero(dur < 0)[0])
            raise err(i, "DUR", f"expected DUR >= 0, got {dur[i]:g}")
        both = (dur > 0) & (rate != 0)
        if both.any():
            i = int(np.flatnonzero(both)[0])
            raise err(i, "DUR", "give either RATE or DUR for an infusion, not both")
        # A duration is a rate in disguise: RATE = AMT / DUR.
        with np.errstate(divide="ignore", invalid="ignore"):
            df["RATE"] = np.where(dur > 0, amt / np.where(dur > 0, dur, 1.0), rate)
        rate = df["RATE"].to_numpy()
    for c, allowed in (("SS", (0, 1, 2)),):
        v = df[c].to_numpy()
        bad = ~np.isin(v, allowed)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise err(i, c, f"expected one of {allowed}, got {v[i]:g}")
    cmt = df["CMT"].to_numpy()
    badc = (cmt < 0) | (cmt != np.round(cmt))
    if badc.any():
        i = int(np.flatnonzero(badc)[0])
        raise err(i, "CMT", f"expected a positive integer compartment number, got {cmt[i]:g}")

    # EVID and MDV as NONMEM infers them.
    if "EVID" in has:
        evid = df["EVID"].to_numpy()
        miss = np.isnan(evid)
        if miss.any():
            raise err(int(np.flatnonzero(miss)[0]), "EVID", "EVID is missing")
        bad = ~np.isin(evid, (0, 1, 2, 3, 4))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise err(i, "EVID", f"expected EVID 0 (observation), 1 (dose), 2 (other), 3 (reset) "
                                 f"or 4 (reset and dose), got {evid[i]:g}")
    else:
        if "MDV" in has:
            mdv0 = df["MDV"].fillna(0).to_numpy()
        else:
            mdv0 = np.zeros(n)
        evid = np.where(amt > 0, 1.0, np.where(mdv0 == 1, 2.0, 0.0))
        df["EVID"] = evid
    is_dose = np.isin(evid, (1, 4))
    if "MDV" in has:
        mdv = df["MDV"].to_numpy()
        if np.isnan(mdv).any():
            # An empty MDV cell means the NONMEM default for that record.
            mdv = np.where(np.isnan(mdv), (evid != 0).astype(float), mdv)
        bad = ~np.isin(mdv, (0, 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise err(i, "MDV", f"expected MDV 0 or 1, got {mdv[i]:g}")
        bad = (evid != 0) & (mdv == 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise err(i, "MDV", f"MDV must be 1 on an EVID {evid[i]:g} record (only EVID 0 "
                                f"records are observations)")
    else:
        mdv = (evid != 0).astype(float)
    df["MDV"] = mdv

    # Doses: positive amount (or an SS=1 infusion with AMT 0), nothing observed on the row.
    dv = df["DV"].to_numpy()
    ss = df["SS"].to_numpy()
    no_amt = is_dose & (amt <= 0) & ~((ss == 1) & (rate > 0))
    if no_amt.any():
        i = int(np.flatnonzero(no_amt)[0])
        raise err(i, "AMT", f"a dose record (EVID {evid[i]:g}) needs AMT > 0")
    amt_nondose = ~is_dose & (amt > 0)
    if amt_nondose.any():
        i = int(np.flatnonzero(amt_nondose)[0])
        raise err(i, "AMT", f"AMT > 0 on an EVID {evid[i]:g} record; a dose needs EVID 1 or 4")
    # NONMEM ignores DV on dose rows, and exports often put 0 there, so only a real value is an error.
    dv_on_dose = is_dose & ~np.isnan(dv) & (dv != 0)
    if dv_on_dose.any():
        i = int(np.flatnonzero(dv_on_dose)[0])
        raise err(i, "DV", f"a dose record carries DV = {dv[i]:g}; put the observation on its own "
                           f"record (EVID 0) or leave DV empty/0 on the dose")
    is_obs = (evid == 0) & (mdv == 0)
    miss_dv = is_obs & np.isnan(dv)
    if miss_dv.any():
        i = int(np.flatnonzero(miss_dv)[0])
        raise err(i, "DV", "DV is missing on an observation record; set MDV=1 to keep the "
                           "record out of the likelihood")
    # Censoring (Monolix/nlmixr2 convention): CENS 1 = below the limit in DV (left, BLQ),
    # -1 = above it (right); LIMIT, if given, is the other end of the interval.
    cens = df["CENS"].to_numpy()
    bad = ~np.isin(cens, (-1.0, 0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise err(i, "CENS", f"expected CENS 0, 1 (below DV: BLQ) or -1 (above DV), got {cens[i]:g}")
    bad = (cens != 0) & (evid != 0)  # an MDV=1 observation record may keep its flag
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise err(i, "CENS", f"CENS is set on an EVID {evid[i]:g} record; only observations "
                             f"(EVID 0) can be censored")
    if "LIMIT" in df.columns:
        lim = df["LIMIT"].to_numpy()
        wrong = is_obs & ~np.isnan(lim) & (((cens == 1) & (lim >= dv)) | ((cens == -1) & (lim <= dv)))
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            side = "below" if cens[i] == 1 else "above"
            raise err(i, "LIMIT", f"LIMIT {lim[i]:g} must lie {side} DV {dv[i]:g} (the interval "
                                  f"of a CENS {cens[i]:g} observation)")
    ss_noii = is_dose & (ss > 0) & (df["II"].to_numpy() <= 0)
    if ss_noii.any():
        i = int(np.flatnonzero(ss_noii)[0])
        raise err(i, "II", "a steady-state dose (SS 1 or 2) needs II > 0")
    addl_noii = is_dose & (df["ADDL"].to_numpy() > 0) & (df["II"].to_numpy() <= 0)
    if addl_noii.any():
        i = int(np.flatnonzero(addl_noii)[0])
        raise err(i, "II", "ADDL > 0 needs II > 0")
    if is_dose.any() and (~is_dose & ((ss > 0) | (df["ADDL"].to_numpy() > 0))).any():
        i = int(np.flatnonzero(~is_dose & ((ss > 0) | (df["ADDL"].to_numpy() > 0)))[0])
        raise err(i, "SS" if ss[i] > 0 else "ADDL", "SS/ADDL given on a record that is not a dose")

    # Subjects: contiguous blocks, times non-decreasing within a block except at resets.
    ids = df["ID"].to_numpy()
    new_block = np.r_[True, ids[1:] != ids[:-1]]
    block_ids = ids[new_block]
    seen: dict = {}
    for i in np.flatnonzero(new_block):
        if ids[i] in seen:
            raise err(int(i), "ID", f"subject {_fmt_id(ids[i])} appears again after other subjects "
                                    f"(its records start at row {seen[ids[i]] + 1}); keep each "
                                    f"subject's records together")
        seen[ids[i]] = int(i)
    time = df["TIME"].to_numpy()
    reset = np.isin(evid, (3, 4)) | (is_dose & (ss == 1))
    back = ~new_block & (time < np.r_[np.inf, time[:-1]]) & ~np.isin(evid, (3, 4))
    if back.any():
        i = int(np.flatnonzero(back)[0])
        raise err(i, "TIME", f"expected TIME >= {time[i - 1]:g} (the previous record of subject "
                             f"{_fmt_id(ids[i])}), got {time[i]:g}; times must not decrease "
                             f"within a subject except at a reset (EVID 3 or 4)")

    covariates = tuple(c for c in df.columns if c not in RESERVED_COLUMNS and not c.startswith("_"))
    for c in covariates:
        col = df[c]
        miss = col.isna().to_numpy()
        if miss.any():
            i = int(np.flatnonzero(miss)[0])
            raise err(i, c, f"covariate {c} is missing (NaN); give a value on every record "
                            f"(or drop the column)")
        num = pd.to_numeric(col, errors="coerce")
        if not num.isna().any():
            df[c] = num.astype(float)

    subj_index = np.cumsum(new_block) - 1
    segment = np.cumsum(new_block | reset)  # reset segments never span subjects
    df["_SUBJ"] = subj_index
    df["_SEG"] = segment
    df["_IS_DOSE"] = is_dose
    df["_IS_OBS"] = is_obs

    # Why each record is out of the likelihood (nothing silently dropped).
    reason = np.full(n, "", dtype=object)
    reason[is_dose] = "dose record"
    reason[(evid == 0) & (mdv == 1)] = "observation with MDV=1"
    reason[evid == 2] = "other event (EVID 2)"
    reason[evid == 3] = "reset (EVID 3)"
    excluded = pd.DataFrame({"row": df["_ROW"], "ID": df["ID"], "TIME": df["TIME"],
                             "reason": reason})[reason != ""].reset_index(drop=True)

    # Dose events: expand ADDL (implied doses at t + k*II, not steady state themselves).
    dr = np.flatnonzero(is_dose)
    addl = df["ADDL"].to_numpy()[dr].astype(int)
    rep = np.repeat(dr, addl + 1)
    k = np.concatenate([np.arange(a + 1) for a in addl]) if len(dr) else np.zeros(0, int)
    ii = df["II"].to_numpy()
    dose_time = time[rep] + k * ii[rep]
    dose_ss = np.where(k == 0, ss[rep], 0).astype(int)
    # record order breaks time ties: an implied dose sorts after the record that declared it
    dose_order = np.lexsort((k, rep, dose_time, subj_index[rep]))
    rep, k, dose_time, dose_ss = rep[dose_order], k[dose_order], dose_time[dose_order], dose_ss[dose_order]

    obs_idx = np.flatnonzero(is_obs)

    # Pairs: dose d can contribute to observation o if same subject and reset segment, and
    # the dose comes first (earlier time, or same time and earlier record). Implied ADDL doses
    # stay in the segment of the record that declared them, unless a later reset ends it: an
    # implied dose at or after a reset in that subject is cut (NONMEM cancels them too).
    seg_start_time = {}
    for s_id in np.unique(segment):
        first = np.flatnonzero(segment == s_id)[0]
        seg_start_time[s_id] = (time[first], first)
    dose_seg = segment[rep]
    keep = np.ones(len(rep), bool)
    for j in np.flatnonzero(k > 0):
        nxt = dose_seg[j] + 1
        if nxt in seg_start_time and subj_index[seg_start_time[nxt][1]] == subj_index[rep[j]]:
            if dose_time[j] >= seg_start_time[nxt][0]:
                keep[j] = False
    n_cut = int((~keep).sum())
    rep, k, dose_time, dose_ss, dose_seg = rep[keep], k[keep], dose_time[keep], dose_ss[keep], dose_seg[keep]
    if n_cut:
        excluded = pd.concat([excluded, pd.DataFrame(
            {"row": [0], "ID": [np.nan], "TIME": [np.nan],
             "reason": [f"ADDL-implied doses cancelled by a later reset ({n_cut})"]})],
            ignore_index=True)

    pair_obs, pair_dose = [], []
    by_seg: dict[int, np.ndarray] = {}
    for j, sgm in enumerate(dose_seg):
        by_seg.setdefault(int(sgm), []).append(j)
    for oi, r in enumerate(obs_idx):
        cand = by_seg.get(int(segment[r]))
        if not cand:
            continue
        cand = np.asarray(cand)
        t_d = dose_time[cand]
        before = (t_d < time[r]) | ((t_d == time[r]) & (rep[cand] < r))
        sel = cand[before]
        pair_obs.append(np.full(len(sel), oi))
        pair_dose.append(sel)
    pair_obs = np.concatenate(pair_obs) if pair_obs else np.zeros(0, int)
    pair_dose = np.concatenate(pair_dose) if pair_dose else np.zeros(0, int)

    if "DVID" in df.columns:
        dvid = df["DVID"].to_numpy()[obs_idx]
    else:
        dvid = np.zeros(len(obs_idx), dtype=int)
    rec_rate = df["RATE"].to_numpy()

    return EventData(
        source=src,
        records=df,
        ids=block_ids,
        covariate_names=covariates,
        obs_subject=subj_index[obs_idx].astype(int),
        obs_time=time[obs_idx].astype(float),
        obs_dv=dv[obs_idx].astype(float),
        obs_cmt=cmt[obs_idx].astype(int),
        obs_dvid=dvid,
        obs_occ=df["OCC"].to_numpy()[obs_idx],
        obs_cens=df["CENS"].to_numpy()[obs_idx].astype(int),
        obs_limit=(df["LIMIT"].to_numpy()[obs_idx].astype(float) if "LIMIT" in df.columns
                   else np.full(len(obs_idx), np.nan)),
        obs_row=df["_ROW"].to_numpy()[obs_idx].astype(int),
        dose_subject=subj_index[rep].astype(int),
        dose_time=dose_time.astype(float),
        dose_amt=amt[rep].astype(float),
        dose_cmt=cmt[rep].astype(int),
        dose_rate=rec_rate[rep].astype(float),
        dose_ss=dose_ss,
        dose_ii=ii[rep].astype(float),
        dose_occ=df["OCC"].to_numpy()[rep],
        dose_row=df["_ROW"].to_numpy()[rep].astype(int),
        pair_obs=pair_obs.astype(int),
        pair_dose=pair_dose.astype(int),
        excluded=excluded,
    )


def check_compartments(data: EventData, dose_cmts: dict[int, str], obs_cmts: dict[int, str],
                       model: str) -> None:
    """Check that every CMT in the data names a compartment the model has.

    Parameters
    ----------
    data : EventData
    dose_cmts, obs_cmts : dict
        Compartment number -> name for the compartments that may receive doses / be observed.
    model : str
        Model name, for the error message.
    """
    rec = data.records
    for kind, allowed, mask in (("dose", dose_cmts, rec["_IS_DOSE"]),
                                ("observation", obs_cmts, rec["_IS_OBS"])):
        cm = rec["CMT"].to_numpy()
        bad = mask.to_numpy() & (cm != 0) & ~np.isin(cm, list(allowed))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            r = rec.iloc[i]
            raise DataError(
                f"unknown {kind} compartment CMT={cm[i]:g} for model {model}; expected one of "
                + ", ".join(f"{k} ({v})" for k, v in allowed.items()),
                source=data.source, row=int(r["_ROW"]), line=_line(r), column="CMT")


def _id_label(x):
    """An ID, occasion or DVID read as float (1.0) back as the integer it was written as."""
    return int(x) if isinstance(x, float) and float(x).is_integer() else x
