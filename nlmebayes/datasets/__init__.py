"""Real pharmacokinetic datasets bundled with nlmebayes (sources and licences in README.md)."""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

from nlmebayes.data import EventData, read_nonmem

__all__ = ["path", "theophylline", "theophylline_nlme", "theophylline_nlme_events", "pheno", "warfarin"]


def path(filename: str):
    """Path of a bundled data file (a :class:`importlib.resources.abc.Traversable`)."""
    return files(__name__).joinpath(filename)


def theophylline() -> EventData:
    """Theophylline, single oral dose: 12 subjects, 132 observations (dose in mg).

    Doses go into CMT 1 (depot) and observations come from CMT 2 (central). Covariate: WT (kg).
    """
    df = pd.read_csv(path("theo_sd.csv"))
    # rxode2 EVID 101 = bolus into compartment 1; NONMEM writes that as EVID 1, CMT 1.
    df.loc[df["EVID"] == 101, "EVID"] = 1
    return read_nonmem(df, source="theo_sd.csv")


def theophylline_nlme() -> pd.DataFrame:
    """``datasets::Theoph`` as a DataFrame (Subject, Wt, Dose in mg/kg, Time, conc).

    This is the layout Pinheiro & Bates (2000) fit with nlme; every row is an observation.
    """
    return pd.read_csv(path("Theoph.csv"))


def theophylline_nlme_events() -> EventData:
    """``datasets::Theoph`` as event records.

    Dose (mg/kg) into the depot at time 0, then the observations (CMT 2), so that nlme's ``SSfol`` fits
    (Pinheiro & Bates 2000, 8.2) can be reproduced. The time-0 samples (measured, non-zero) stay observations
    predicted as 0.
    """
    th = theophylline_nlme()
    first = th.groupby("Subject", sort=False).head(1)
    doses = pd.DataFrame(
        {
            "ID": first["Subject"],
            "TIME": 0.0,
            "AMT": first["Dose"],
            "DV": float("nan"),
            "EVID": 1,
            "CMT": 1,
            "WT": first["Wt"],
            "_order": 0,
        }
    )
    obs = pd.DataFrame(
        {
            "ID": th["Subject"],
            "TIME": th["Time"],
            "AMT": 0.0,
            "DV": th["conc"],
            "EVID": 0,
            "CMT": 2,
            "WT": th["Wt"],
            "_order": 1,
        }
    )
    # Subjects keep the file's order; within a subject the dose comes first.
    order = {s: i for i, s in enumerate(th["Subject"].unique())}
    df = pd.concat([doses, obs])
    df = df.assign(_s=df["ID"].map(order)).sort_values(["_s", "_order", "TIME"], kind="stable")
    return read_nonmem(df.drop(columns=["_s", "_order"]).reset_index(drop=True), source="Theoph.csv")


def pheno() -> EventData:
    """Phenobarbital in neonates: 59 subjects, 744 records, 155 observations, IV bolus doses.

    Covariates: WGT (kg) and APGR (5-minute Apgar score), as in NONMEM's ``pheno_real``.
    """
    return read_nonmem(str(path("pheno.dta")), drop=["FA1", "FA2"])


def warfarin() -> EventData:
    """Warfarin PK/PD: 32 subjects, single oral dose; DVID "cp" (mg/L) and "pca" (PCA %).

    Covariates: WT (kg), AGE (years), SEX ("male"/"female").
    """
    return read_nonmem(str(path("warfarin.csv")))
