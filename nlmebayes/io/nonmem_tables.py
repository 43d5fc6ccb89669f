"""NONMEM-style output tables of a fit, for xpose, Pirana, PsN and anyone used to them.

``sdtab`` (ID TIME DV PRED IPRED RES CWRES IWRES NPDE MDV), ``patab`` (individual parameters and
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

from pathlib import Path

import numpy as np
import pandas as pd

from nlmebayes.plots.gof import gof_data

__all__ = ["sdtab", "patab", "cotab", "catab", "ext_table", "write_tables"]

#: NONMEM's ``.ext`` codes of the final estimates and their standard errors.
EXT_ESTIMATES, EXT_SE = -1000000000, -1000000001


def sdtab(result) -> pd.DataFrame:
    """ID, TIME, DV, PRED, IPRED, RES, CWRES, IWRES, NPDE, MDV per observation.

    Examples
    --------
    >>> sdtab(result).columns.tolist()  # doctest: +SKIP
    ['ID', 'TIME', 'DV', 'PRED', 'IPRED', 'RES', 'CWRES', 'IWRES', 'NPDE', 'MDV']
    """
    g = gof_data(result)
    out = g[["ID", "TIME", "DV", "PRED", "IPRED"]].copy()
    out.insert(5, "RES", g["DV"] - g["IPRED"])
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


def _omega_draws(result) -> dict[str, np.ndarray]:
    """OMEGA(i,j) -> its draws (variances and, within blocks, covariances), NONMEM numbering."""
    post, spec = result.posterior, result.spec
    order = {p: i for i, p in enumerate(spec.iiv_parameters)}
    sd = post["omega_sd"].transpose("chain", "draw", ...).values.reshape(-1, len(order))
    out: dict[str, np.ndarray] = {}
    for k, block in enumerate(spec.iiv):
        corr = post.get(f"omega_corr_{k}")
        n = len(block.parameters)
        c = corr.transpose("chain", "draw", ...).values.reshape(-1, n, n) if corr is not None else None
        for a, pa in enumerate(block.parameters):
            for b, pb in enumerate(block.parameters[: a + 1]):
                if a != b and c is None:
                    continue
                i, j = order[pa], order[pb]
                cov = sd[:, i] * sd[:, j] * (1.0 if a == b else c[:, a, b])
                out[f"OMEGA({i + 1},{j + 1})"] = cov
    return out


def ext_table(result) -> pd.DataFrame:
    """An ``.ext``-like table: THETA1.., OMEGA(i,j).., SIGMA(n,n).., OBJ.

    Two rows: ITERATION -1000000000 (posterior medians; OBJ the OFV at them) and -1000000001
    (posterior SDs; OBJ 0). THETAs are the typical values on the natural scale and the covariate
    effects, in the parameter table's order; SIGMAs are residual variances.
    """
    tab = result.parameter_table().set_index("parameter")
    est: dict[str, float] = {}
    se: dict[str, float] = {}
    for name, label in tab["nonmem"].items():
        if label.startswith(("THETA", "SIGMA")):
            key = label.replace("(", "").replace(")", "") if label.startswith("THETA") else label
            est[key], se[key] = float(tab.loc[name, "median"]), float(tab.loc[name, "sd"])
    for key, draws in _omega_draws(result).items():
        est[key], se[key] = float(np.median(draws)), float(np.std(draws, ddof=1))
    ofv = np.nan
    if "marginal" in result.idata.children:
        ofv = float(result.idata["marginal"].attrs.get("ofv", np.nan))
    est["OBJ"], se["OBJ"] = ofv, 0.0
    cols = sorted((k for k in est if k.startswith("THETA")), key=lambda k: int(k[5:]))
    cols += [k for k in est if k.startswith("OMEGA")] + [k for k in est if k.startswith("SIGMA")] + ["OBJ"]
    rows = [{"ITERATION": EXT_ESTIMATES, **est}, {"ITERATION": EXT_SE, **se}]
    return pd.DataFrame(rows)[["ITERATION", *cols]]


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
