"""NONMEM-style output tables of a fit, for xpose, Pirana, PsN and anyone used to them.

``sdtab`` (ID TIME DV PRED IPRED RES IRES CWRES IWRES NPDE MDV), ``patab`` (individual parameters and
ETA1..n), ``cotab``/``catab`` (continuous and categorical covariates), one row per observation so
the tables align row by row as NONMEM writes them without FIRSTONLY; and an ``.ext``-like file of
the population estimates. The Bayesian reading of each column:

- IPRED, the individual parameters and the ETAs are posterior medians (NONMEM: at the EBEs);
- PRED, CWRES, IWRES and NPDE are NONMEM's definitions at the posterior median of the population
  parameters (the result's ``marginal`` group; NaN, written 0, where it was not computed);
- the ``.ext`` row ``ITERATION = -1000000000`` holds posterior medians, ``-1000000001`` posterior
  SDs (NONMEM: final estimates and standard errors); OMEGA(i,j) off the diagonal is the median of
  the covariance draw by draw; OBJ is the OFV at the posterior median.

Only observation records are written (MDV = 0): dose rows carry no DV and xpose drops them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from nlmebayes.io.nonmem.results import EXT_ESTIMATES, EXT_SE
from nlmebayes.plots.gof import gof_data

__all__ = ["sdtab", "patab", "cotab", "catab", "ext_table", "write_tables"]


def sdtab(result) -> pd.DataFrame:
    """ID, TIME, DV, PRED, IPRED, RES (DV - PRED), IRES (DV - IPRED), CWRES, IWRES, NPDE, MDV.

    One row per observation; NONMEM's definitions of each column.

    Examples
    --------
    >>> sdtab(result).columns.tolist()  # doctest: +SKIP
    ['ID', 'TIME', 'DV', 'PRED', 'IPRED', 'RES', 'IRES', 'CWRES', 'IWRES', 'NPDE', 'MDV']
    """
    g = gof_data(result)
    out = g[["ID", "TIME", "DV", "PRED", "IPRED"]].copy()
    out["RES"] = g["DV"] - g["PRED"]  # NONMEM's RES: the population residual
    out["IRES"] = g["DV"] - g["IPRED"]
    for c in ("CWRES", "IWRES", "NPDE"):
        out[c] = g[c]
    out["MDV"] = 0
    return out


def patab(result) -> pd.DataFrame:
    """ID, TIME, the individual parameters (posterior medians) and ETA1..n, per observation.

    ETA numbering follows the spec's IIV parameters, as the report's OMEGA(i,i) numbering.
    """
    data, post = result.data, result.posterior
    subj = data.obs_subject
    out = pd.DataFrame({"ID": data.ids[subj], "TIME": data.obs_time})
    for p in result.spec.parameter_names:
        if p in post and "subject" in post[p].dims:
            out[p] = post[p].median(("chain", "draw")).transpose("subject").values[subj]
    if "eta" in post:
        eta = post["eta"].median(("chain", "draw"))
        dim = [d for d in eta.dims if d != "subject"][0]
        for k, p in enumerate(eta[dim].values, start=1):
            out[f"ETA{k}"] = eta.sel({dim: p}).transpose("subject").values[subj]
    return out


def _covariates(result, categorical: bool) -> pd.DataFrame:
    data = result.data
    covs = data.record_covariates()
    keep = [c for c in covs.columns if (covs[c].dtype.kind not in "fiub") == categorical]
    out = pd.DataFrame({"ID": data.ids[data.obs_subject], "TIME": data.obs_time})
    return pd.concat([out, covs[keep].reset_index(drop=True)], axis=1)


def cotab(result) -> pd.DataFrame:
    """ID, TIME and the numeric covariates per observation."""
    return _covariates(result, categorical=False)


def catab(result) -> pd.DataFrame:
    """ID, TIME and the non-numeric (categorical) covariates per observation."""
    return _covariates(result, categorical=True)


def _covariance_draws(post, spec, a: str, b: str) -> np.ndarray:
    """Draws of the eta covariance corr(a, b) * omega(a) * omega(b) within a block."""
    block, k = next((blk, k) for k, blk in enumerate(spec.iiv) if {a, b} <= set(blk.parameters))
    corr = post[f"omega_corr_{k}"]
    i, j = block.parameters.index(b), block.parameters.index(a)
    c = corr.isel({corr.dims[-2]: i, corr.dims[-1]: j}, drop=True)
    sd = post["omega_sd"]
    return (c * sd.sel(iiv=a, drop=True) * sd.sel(iiv=b, drop=True)).values.ravel()


def ext_table(result) -> pd.DataFrame:
    """An ``.ext``-like table: THETA1.., OMEGA(i,j).., SIGMA(n,n).., OBJ.

    Two rows: ITERATION -1000000000 (posterior medians; OBJ the OFV at them) and -1000000001
    (posterior SDs; OBJ 0). Columns and numbering are the parameter table's ``nonmem`` labels:
    THETAs are the typical values on the natural scale and the covariate effects, OMEGA(i,i) the
    IIV and IOV variances, OMEGA(i,j) the covariances within a block (draw by draw, where the
    table reports the correlation), SIGMAs the residual variances.
    """
    tab = result.parameter_table().set_index("parameter")
    est: dict[str, float] = {}
    se: dict[str, float] = {}
    for name, label in tab["nonmem"].items():
        if not label:
            continue
        key = label.replace("(", "").replace(")", "") if label.startswith("THETA") else label
        if name.startswith("corr("):
            draws = _covariance_draws(result.posterior, result.spec, *name[5:-1].split(","))
            est[key], se[key] = float(np.median(draws)), float(np.std(draws, ddof=1))
        else:
            est[key], se[key] = float(tab.loc[name, "median"]), float(tab.loc[name, "sd"])
    ofv = np.nan
    if "marginal" in result.idata.children:
        ofv = float(result.idata["marginal"].attrs.get("ofv", np.nan))
    est["OBJ"], se["OBJ"] = ofv, 0.0
    kinds = ("THETA", "OMEGA", "SIGMA", "OBJ")
    cols = sorted(est, key=lambda k: (kinds.index(k[:5] if k != "OBJ" else "OBJ"), _ext_order(k)))
    rows = [{"ITERATION": EXT_ESTIMATES, **est}, {"ITERATION": EXT_SE, **se}]
    return pd.DataFrame(rows)[["ITERATION", *cols]]


def _ext_order(key: str) -> tuple[int, ...]:
    """THETA12 -> (12,), OMEGA(2,1) -> (2, 1): NONMEM's column order within a kind."""
    return tuple(int(d) for d in re.findall(r"\d+", key))


def _write(table: pd.DataFrame, path: Path, number: int) -> Path:
    """NONMEM's layout: ``TABLE NO.  n``, a header, values in ``%13.5E``.

    Tables are numbers only, as NONMEM writes them: text categories become 1-based codes of their
    sorted levels (``catab`` returns the text), missing values 0.
    """
    frame = table.copy()
    for c in frame.columns:
        if frame[c].dtype.kind not in "fiub":
            codes = pd.to_numeric(frame[c], errors="coerce")
            if codes.isna().any():  # text categories: 1-based codes of the sorted levels
                frame[c] = pd.Categorical(frame[c]).codes + 1
            else:
                frame[c] = codes
    frame = frame.astype(float).fillna(0.0)
    lines = [f"TABLE NO.  {number}", " " + " ".join(f"{c:>12}" for c in frame.columns)]
    lines += [" " + " ".join(f"{v:13.5E}" for v in row) for row in frame.to_numpy()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tables(result, directory: str | Path, run: int = 1) -> dict[str, Path]:
    r"""Write sdtab, patab, cotab, catab (``<name><run>``) and ``run<run>.ext`` into ``directory``.

    Parameters
    ----------
    result : FitResult
    directory : str or Path
        Created if missing.
    run : int
        The run number NONMEM and xpose put in the file names.

    Returns
    -------
    dict
        Table name -> path written.

    Examples
    --------
    >>> paths = write_tables(result, "run1")  # doctest: +SKIP
    >>> pd.read_csv(paths["sdtab"], sep=r"\s+", skiprows=1).columns[:3].tolist()  # doctest: +SKIP
    ['ID', 'TIME', 'DV']
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"sdtab": sdtab(result), "patab": patab(result), "cotab": cotab(result), "catab": catab(result)}
    paths = {name: _write(t, out / f"{name}{run}", run) for name, t in tables.items()}
    ext = ext_table(result)
    lines = [f"TABLE NO.     {run}: nlmebayes posterior (medians; SDs at {EXT_SE})"]
    lines.append(" " + " ".join(f"{c:>13}" for c in ext.columns))
    for row in ext.to_numpy():
        lines.append(f" {int(row[0]):>13d} " + " ".join(f"{v:13.5E}" for v in row[1:]))
    paths["ext"] = out / f"run{run}.ext"
    paths["ext"].write_text("\n".join(lines) + "\n")
    return paths
