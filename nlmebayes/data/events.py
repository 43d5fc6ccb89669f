"""The checked event records and their flat, vectorisable representation (:class:`EventData`).

* observations (``obs_*`` arrays): the records that enter the likelihood (EVID 0, MDV 0);
* dose events (``dose_*`` arrays): every dose after ADDL/II expansion (:mod:`.dosing`);
* dose-observation pairs (``pair_obs``, ``pair_dose``): each dose that can contribute to an
  observation by superposition (same subject, same reset segment, given before it). Equally
  spaced identical boluses form a *train* (:func:`~nlmebayes.data.dosing.dose_trains`) that one
  pair stands for: ``pair_dose`` is its latest dose before the observation, ``pair_first`` its
  first and ``pair_count`` how many doses it has up to the latest. So the pairs, and the memory
  of the analytic models' graphs, grow with the number of regimen changes, not of doses.

Every row that does not enter the likelihood is counted in :meth:`EventData.summary`; nothing is
dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from nlmebayes.data.conditions import OPS, format_id, id_label, parse_condition
from nlmebayes.data.errors import DataError

__all__ = ["EventData", "record_line"]


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
    pair_first: np.ndarray | None = None
    pair_count: np.ndarray | None = None

    # ------------------------------------------------------------------ sizes
    @property
    def n_subjects(self) -> int:
        """Number of subjects."""
        return len(self.ids)

    @property
    def n_obs(self) -> int:
        """Number of observations in the likelihood."""
        return len(self.obs_time)

    @property
    def n_doses(self) -> int:
        """Number of dose events after ADDL expansion."""
        return len(self.dose_time)

    @property
    def n_records(self) -> int:
        """Number of data records."""
        return len(self.records)

    @property
    def obs_output(self) -> np.ndarray:
        """Each observation's DVID as text ("1" for 1.0): the model output it belongs to."""
        return np.array([str(id_label(v)) for v in self.obs_dvid], dtype=object)

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
                raise DataError(
                    f"no covariate named {name!r}; covariates are {list(self.covariate_names)}",
                    source=self.source,
                    column=name,
                )
            col = self.records[name]
            changed = col.ne(col.groupby(self.records["ID"]).transform("first"))
            if changed.any():
                i = int(np.flatnonzero(changed.to_numpy())[0])
                r = self.records.iloc[i]
                raise DataError(
                    f"covariate {name} is used as time-constant but changes within subject "
                    f"{format_id(r['ID'])} (first value {col[self.records['ID'] == r['ID']].iloc[0]!r}, "
                    f"here {col.iloc[i]!r})",
                    source=self.source,
                    row=int(r["_ROW"]),
                    line=record_line(r),
                    column=name,
                )
        return self.records.groupby("ID", sort=False)[names].first().loc[self.ids]

    def time_varying_covariates(self) -> tuple[str, ...]:
        """Covariates whose value changes within at least one subject."""
        g = self.records.groupby("ID", sort=False)
        return tuple(c for c in self.covariate_names if (g[c].nunique() > 1).any())

    def sum_by_subject(self, x: np.ndarray) -> np.ndarray:
        """Sum the last axis of ``x`` (a value per observation) by subject: (..., n_obs) -> (..., n_subjects).

        A sparse indicator product, several times faster than ``np.add.at`` on batches.

        Examples
        --------
        >>> from nlmebayes import datasets
        >>> d = datasets.theophylline()
        >>> d.sum_by_subject(np.ones((2, d.n_obs))).shape
        (2, 12)
        """
        from scipy import sparse

        n = self.n_obs
        ind = sparse.csr_matrix((np.ones(n), (self.obs_subject, np.arange(n))), shape=(self.n_subjects, n))
        return np.asarray(ind @ x.reshape(-1, n).T).T.reshape(*x.shape[:-1], self.n_subjects)

    def record_positions(self, rows: np.ndarray) -> np.ndarray:
        """Positions in :attr:`records` of the records numbered ``rows`` (``_ROW``, e.g. ``obs_row``)."""
        return np.searchsorted(self.records["_ROW"].to_numpy(), rows)

    def constant_covariates(self) -> tuple[str, ...]:
        """Covariates that keep one value within every subject."""
        varying = set(self.time_varying_covariates())
        return tuple(c for c in self.covariate_names if c not in varying)

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
            raise DataError(
                "the data have no DVID column to select observations by", source=self.source, column="DVID"
            )
        known = set(pd.unique(self.obs_dvid))
        if dvid not in known:
            raise DataError(
                f"no observations with DVID {dvid!r}; DVID values are {sorted(known, key=str)}",
                source=self.source,
                column="DVID",
            )
        other = self.records["_IS_OBS"].to_numpy() & (self.records["DVID"].to_numpy() != dvid)
        return self._without(other, f"observation of another DVID (not {dvid})")

    def ignore(self, condition: str) -> EventData:
        """Take observations matching ``condition`` (e.g.

        ``"DV == 0"``) out of the likelihood, like NONMEM's ``IGNORE=(DV.EQ.0)``; they are reported as
        excluded with the condition.
        """
        col, op, val = parse_condition(condition)
        col = col.upper()
        if col not in self.records.columns:
            raise DataError(f"IGNORE condition {condition!r} names no column", source=self.source, column=col)
        hit = OPS[op](self.records[col].to_numpy(), val) & self.records["_IS_OBS"].to_numpy()
        return self._without(hit, f"IGNORE ({condition})")

    def drop_censored(self) -> EventData:
        """Take censored observations (CENS != 0) out of the likelihood (Beal's M1), reported."""
        hit = self.records["_IS_OBS"].to_numpy() & (self.records["CENS"].to_numpy() != 0)
        return self._without(hit, "censored (CENS != 0), discarded: M1")

    def without_trains(self) -> EventData:
        """The same data with one dose-observation pair per dose (no trains).

        Superposition gives the same predictions either way (to rounding); this form is slower and
        larger, and serves to check the trains and to measure what they save.

        Examples
        --------
        >>> import pandas as pd
        >>> from nlmebayes import read_nonmem
        >>> d = read_nonmem(pd.DataFrame(dict(ID=1, TIME=[0, 30], AMT=[100, 0], II=[12, 0],
        ...                                   ADDL=[2, 0], DV=[0, 1.0])))
        >>> len(d.pair_obs), len(d.without_trains().pair_obs)
        (1, 3)
        """
        from nlmebayes.data.dosing import dose_observation_pairs, expand_doses

        r = self.records
        doses = expand_doses(
            *(r[c].to_numpy() for c in ("TIME", "II", "ADDL", "SS", "_IS_DOSE", "_SUBJ", "_SEG"))
        )
        pair_obs, pair_dose = dose_observation_pairs(
            doses, np.flatnonzero(r["_IS_OBS"]), r["TIME"].to_numpy(), r["_SEG"].to_numpy()
        )
        return replace(self, pair_obs=pair_obs, pair_dose=pair_dose, pair_first=None, pair_count=None)

    def _without(self, rows: np.ndarray, reason: str) -> EventData:
        """The same data with the observation records ``rows`` (mask) set to MDV=1, reported."""
        df = self.input_frame()
        df.loc[rows, "MDV"] = 1.0
        from nlmebayes.data.read import build_events

        new = build_events(df, self.records["_LINE"].to_numpy(), self.source)
        gone = set(self.records["_ROW"].to_numpy()[rows])
        old = self.excluded.set_index("row")["reason"]
        new_reason = [
            reason if r in gone else old.get(r, why)
            for r, why in zip(new.excluded["row"], new.excluded["reason"], strict=True)
        ]
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
        summed = int(self.pair_count.sum()) if self.pair_count is not None else len(self.pair_obs)
        if summed > len(self.pair_obs):
            lines.append(
                f"  superposition:  {len(self.pair_obs)} dose-observation pairs for {summed} "
                "(equally spaced doses summed as trains)"
            )
        if "DVID" in self.records.columns:
            kinds = pd.Series(self.obs_dvid).value_counts(sort=False)
            lines.append("  by DVID:        " + ", ".join(f"{k}: {v}" for k, v in kinds.items()))
        if len(self.excluded):
            counts = self.excluded["reason"].value_counts()
            lines.append(f"  not in likelihood: {len(self.excluded)} records")
            lines += [f"    {n:5d}  {reason}" for reason, n in counts.items()]
        if self.covariate_names:
            tv = set(self.time_varying_covariates())
            lines.append(
                "  covariates:     "
                + ", ".join(c + (" (time-varying)" if c in tv else "") for c in self.covariate_names)
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def record_line(r) -> int | None:
    """The file line of a record (a row of ``EventData.records``), or None for a DataFrame."""
    v = r.get("_LINE", np.nan)
    return None if pd.isna(v) else int(v)
