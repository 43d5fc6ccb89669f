"""Dosing regimens, sampling grids and virtual populations, turned into event data.

A :class:`Regimen` describes dosing the way a protocol does (amount, interval, number of doses,
route, infusion rate or duration, steady state); ``+`` combines regimens (a loading dose and a
maintenance regimen). :func:`regimen_design` writes the NONMEM-style records for a population of
subjects and a sampling grid, and reads them with :func:`~nlmebayes.data.read_nonmem`, so a design
is the same :class:`~nlmebayes.data.EventData` the rest of the package uses and goes through the
same checks.

Observation records at a dose time come after the dose: the sample sees the dose (a trough is the
sample just before the next dose time, or the end of a steady-state interval).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nlmebayes.data import EventData, read_nonmem
from nlmebayes.model.spec import ModelSpec

__all__ = ["Regimen", "grid", "virtual_population", "regimen_design", "continue_design"]


@dataclass(frozen=True)
class _Dosing:
    amount: float
    start: float
    every: float
    doses: int
    route: str | int
    rate: float
    steady_state: bool
    per: str | None = None


@dataclass(frozen=True, init=False)
class Regimen:
    """A dosing regimen: ``doses`` doses of ``amount`` every ``every`` time units from ``start``.

    Parameters
    ----------
    amount : float
        Dose amount (the data's AMT units).
    every : float, optional
        Dosing interval (NONMEM's II); required for more than one dose or steady state.
    doses : int
        Number of doses (the first, then ``doses - 1`` additional ones: ADDL).
    route : {"oral", "iv"} or int
        ``"oral"``: the depot (compartment 1); ``"iv"``: the central compartment of the model;
        an int: that compartment number.
    start : float
        Time of the first dose.
    rate, duration : float, optional
        Zero-order infusion, by rate (amount per time) or by duration; bolus when neither.
    steady_state : bool
        The first dose is given at steady state of this regimen (SS=1 with II=``every``).
    per : str, optional
        Dose by a subject covariate: ``amount`` (and ``rate``) per unit of it, e.g.
        ``Regimen(20, per="WGT")`` gives 20 mg/kg.
    label : str, optional
        Name in tables and plots; default a description such as ``"100 q24h x7 oral"``.

    Examples
    --------
    >>> load = Regimen(200, route="iv", duration=1)
    >>> maint = Regimen(100, every=24, doses=6, start=24, route="iv", duration=1)
    >>> (load + maint).label
    '200 iv 1h + 100 q24h x6 iv 1h from 24'
    """

    parts: tuple[_Dosing, ...]
    label: str = field(default="", compare=False)

    def __init__(
        self,
        amount: float,
        every: float | None = None,
        doses: int = 1,
        route: str | int = "oral",
        start: float = 0.0,
        rate: float | None = None,
        duration: float | None = None,
        steady_state: bool = False,
        per: str | None = None,
        label: str | None = None,
    ):
        if amount < 0 or not np.isfinite(amount):
            raise ValueError(f"Regimen amount must be a non-negative number, got {amount}")
        if doses < 1 or int(doses) != doses:
            raise ValueError(f"Regimen doses must be a positive integer, got {doses}")
        if (doses > 1 or steady_state) and not (every and every > 0):
            raise ValueError("Regimen: give a positive interval `every` for repeated or steady-state dosing")
        if rate is not None and duration is not None:
            raise ValueError("Regimen: give an infusion rate or a duration, not both")
        if duration is not None:
            if duration <= 0:
                raise ValueError(f"Regimen infusion duration must be positive, got {duration}")
            rate = amount / duration
        if isinstance(route, str) and route not in ("oral", "iv"):
            raise ValueError(f"Regimen route must be 'oral', 'iv' or a compartment number, got {route!r}")
        part = _Dosing(
            float(amount),
            float(start),
            float(every or 0.0),
            int(doses),
            route,
            float(rate or 0.0),
            steady_state,
            per,
        )
        object.__setattr__(self, "parts", (part,))
        object.__setattr__(self, "label", label or _describe(part, duration))

    @classmethod
    def _combined(cls, parts, label) -> Regimen:
        out = object.__new__(cls)
        object.__setattr__(out, "parts", tuple(parts))
        object.__setattr__(out, "label", label)
        return out

    def __add__(self, other: Regimen) -> Regimen:
        if not isinstance(other, Regimen):
            return NotImplemented
        return Regimen._combined(self.parts + other.parts, f"{self.label} + {other.label}")

    def records(self, cmt_of: Callable[[str | int], int]) -> pd.DataFrame:
        """Dose records (TIME, AMT, CMT, RATE, II, ADDL, SS), compartments by ``cmt_of(route)``."""
        rows = [
            {
                "TIME": p.start,
                "AMT": p.amount,
                "CMT": cmt_of(p.route),
                "RATE": p.rate,
                "II": p.every if (p.doses > 1 or p.steady_state) else 0.0,
                "ADDL": p.doses - 1,
                "SS": int(p.steady_state),
                "_PER": p.per,
            }
            for p in self.parts
        ]
        return pd.DataFrame(rows).sort_values("TIME", kind="stable")


def _describe(p: _Dosing, duration) -> str:
    route = p.route if isinstance(p.route, str) else f"cmt {p.route}"
    text = f"{p.amount:g}" + (f"/{p.per}" if p.per else "")
    if p.doses > 1 or p.steady_state:
        text += f" q{p.every:g}h"
    if p.doses > 1:
        text += f" x{p.doses}"
    text += f" {route}"
    if duration is not None:
        text += f" {duration:g}h"
    elif p.rate:
        text += f" rate {p.rate:g}"
    if p.steady_state:
        text += " SS"
    if p.start:
        text += f" from {p.start:g}"
    return text


def grid(start: float, stop: float, step: float) -> np.ndarray:
    """Sampling times from ``start`` to ``stop`` inclusive, ``step`` apart.

    Examples
    --------
    >>> grid(0, 2, 0.5).tolist()
    [0.0, 0.5, 1.0, 1.5, 2.0]
    """
    n = int(np.floor((stop - start) / step + 1e-9)) + 1
    return start + step * np.arange(n)


def virtual_population(
    n: int,
    *,
    data: EventData | None = None,
    covariates: Mapping | pd.DataFrame | None = None,
    draw: Mapping[str, Callable] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Covariates of ``n`` virtual subjects, one row each, with IDs 1..n.

    Parameters
    ----------
    n : int
    data : EventData, optional
        Resample whole subjects' (time-constant) covariate rows from these data, with
        replacement: the correlation between covariates is kept.
    covariates : mapping or DataFrame, optional
        Given per subject (arrays of length ``n``), or one value for all.
    draw : mapping, optional
        Column -> ``f(rng, n)`` returning ``n`` values (a user distribution).
    seed : int
        Seeds resampling and ``draw``.

    Examples
    --------
    >>> from nlmebayes import datasets
    >>> pop = virtual_population(500, data=datasets.pheno(), seed=1)
    >>> list(pop.columns), len(pop)
    (['ID', 'WGT', 'APGR'], 500)
    """
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({"ID": np.arange(1, n + 1)})
    if data is not None:
        cov = data.subject_covariates(data.constant_covariates()).reset_index(drop=True)
        rows = rng.integers(0, len(cov), size=n)
        out = pd.concat([out, cov.iloc[rows].reset_index(drop=True)], axis=1)
    for col, values in dict(covariates or {}).items():
        out[col] = np.broadcast_to(np.asarray(values), (n,)).copy()
    for col, f in (draw or {}).items():
        out[col] = np.asarray(f(rng, n))
        if out[col].shape != (n,):
            raise ValueError(f"draw[{col!r}] returned shape {out[col].shape}, expected ({n},)")
    return out


def _route_compartment(spec: ModelSpec) -> Callable[[str | int], int]:
    """Maps a route to the structural model's compartment number."""
    from nlmebayes.pk.base import get_model

    model = get_model(spec.structural)
    if hasattr(model, "dose_compartments"):
        by_name = {v: k for k, v in model.dose_compartments.items()}
    else:  # an ODE system: states numbered from 1, the dosing state first by default
        states = list(model.states)
        by_name = {s: i + 1 for i, s in enumerate(states)}
        by_name.setdefault("depot", 1)
        by_name.setdefault("central", by_name.get("central", 1))

    def cmt_of(route):
        if not isinstance(route, str):
            return int(route)
        key = "depot" if route == "oral" else "central"
        if key not in by_name:
            raise ValueError(f"{spec.structural!r} has no {key} compartment for route {route!r}")
        return by_name[key]

    return cmt_of


def _observation_kinds(spec: ModelSpec) -> list[tuple[int, object]]:
    """(CMT, DVID) of one observation record per model output."""
    from nlmebayes.pk.base import get_model

    model = get_model(spec.structural)
    if hasattr(model, "obs_compartments"):
        return [(next(iter(model.obs_compartments)), None)]
    outputs = [name for name, _ in model.outputs]
    state = getattr(model, "observe_state", None)
    cmt = model.states.index(state) + 1 if state else 1
    return [(cmt, name) for name in outputs]


def regimen_design(
    spec: ModelSpec,
    regimen: Regimen,
    times,
    population: pd.DataFrame | int = 1,
) -> EventData:
    """Event data for ``population`` on ``regimen``, observed at ``times`` in every model output.

    Parameters
    ----------
    spec : ModelSpec
        The model (for the compartment of each route and the outputs).
    regimen : Regimen
    times : array
        Observation times, the same for every subject (e.g. :func:`grid`).
    population : DataFrame or int
        Subjects with an ID column and covariate columns (:func:`virtual_population`), or a
        number of subjects without covariates.

    Returns
    -------
    EventData
        DV of the observation records is a placeholder (1.0).

    Examples
    --------
    >>> from nlmebayes import ModelSpec
    >>> spec = ModelSpec("pk", "1cpt_oral", {"KA": 1.0, "CL": 2.0, "V": 20.0})
    >>> d = regimen_design(spec, Regimen(100, every=12, doses=4), grid(0, 48, 1), 10)
    >>> d.n_subjects, d.n_obs, d.n_doses  # 4 doses each, after ADDL expansion
    (10, 490, 40)
    """
    pop = pd.DataFrame({"ID": np.arange(1, population + 1)}) if isinstance(population, int) else population
    if "ID" not in pop.columns:
        raise ValueError("population needs an ID column (see virtual_population)")
    doses = regimen.records(_route_compartment(spec)).assign(DV=0.0, EVID=1, MDV=1)
    times = np.sort(np.asarray(times, dtype=float))
    kinds = _observation_kinds(spec)
    obs = pd.concat(
        [
            pd.DataFrame(
                {"TIME": times, "AMT": 0.0, "CMT": cmt, "DVID": dvid, "DV": 1.0, "EVID": 0, "MDV": 0}
            )
            for cmt, dvid in kinds
        ],
        ignore_index=True,
    )
    one = pd.concat([doses, obs], ignore_index=True).fillna({"RATE": 0.0, "II": 0.0, "ADDL": 0, "SS": 0})
    # a sample at a dose time comes after the dose (it sees it)
    one = one.sort_values(["TIME", "EVID"], ascending=[True, False], kind="stable").reset_index(drop=True)
    if kinds[0][1] is None:
        one = one.drop(columns="DVID")
    df = pop.merge(one, how="cross")
    for col in df["_PER"].dropna().unique():
        if col not in df.columns:
            raise ValueError(f"regimen {regimen.label!r} doses per {col!r}, a column the population lacks")
        per = (df["_PER"] == col).to_numpy()
        df.loc[per, ["AMT", "RATE"]] = df.loc[per, ["AMT", "RATE"]].mul(df.loc[per, col], axis=0)
    df = df.drop(columns="_PER")
    cols = ["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS"]
    cols += [c for c in df.columns if c not in cols]
    return read_nonmem(df[cols], source=f"design: {regimen.label}")


def continue_design(history: EventData, regimen: Regimen | None, times, spec: ModelSpec) -> EventData:
    """A patient's dosing history, then ``regimen``, observed at ``times`` (absolute times).

    The history's dose records and covariates are kept, its observations are not predicted; each
    subject's covariates on the new records are its last record's. With IOV the new records are a
    new occasion (the subject's last one + 1). Used to forecast (MIPD).

    Parameters
    ----------
    history : EventData
        Past doses and measured concentrations of one or more subjects.
    regimen : Regimen or None
        Future doses (absolute start time); None to predict the history's doses only.
    times : array
        Observation times to predict at, the same for every subject.
    spec : ModelSpec

    Returns
    -------
    EventData
    """
    df = history.input_frame().reset_index(drop=True)
    past = df[history.records["_IS_DOSE"].to_numpy() | (df.get("EVID", 0) >= 3)]
    last = df.groupby("ID", sort=False).last().reset_index()
    covs = last[["ID", *[c for c in history.covariate_names if c in last.columns]]]
    new_obs = regimen_design(spec, regimen or Regimen(0.0), times, covs).input_frame()
    if regimen is None:  # observation records only
        new_obs = new_obs[new_obs["EVID"] == 0]
    for col in {b.occasion for b in spec.iov} & set(df.columns):
        # future doses and samples are a new occasion: a fresh kappa, not the last one's
        new_obs[col] = new_obs["ID"].map(df.groupby("ID")[col].max() + 1)
    both = pd.concat([past.assign(_NEW=0), new_obs.assign(_NEW=1)], ignore_index=True)
    order = {sid: i for i, sid in enumerate(pd.unique(df["ID"]))}
    both = both.assign(_S=both["ID"].map(order), _D=-both["EVID"].fillna(0))
    both = both.sort_values(["_S", "TIME", "_D", "_NEW"], kind="stable").drop(columns=["_S", "_D", "_NEW"])
    for c in ("RATE", "II", "ADDL", "SS"):
        if c in both.columns:
            both[c] = both[c].fillna(0.0)
    return read_nonmem(both.reset_index(drop=True), source=f"{history.source} (forecast)")
