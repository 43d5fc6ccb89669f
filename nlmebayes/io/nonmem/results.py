"""NONMEM results in: final estimates from ``.ext`` and EBEs from ``.phi``.

With them our objective function can be evaluated at NONMEM's estimates
(:func:`nlmebayes.diagnostics.marginal_likelihood`), so the two programs' OFVs and EBEs can be
compared side by side on the same model and data.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nlmebayes.diagnostics.population import PopulationValues

__all__ = ["NonmemEstimates", "read_ext", "read_phi"]

#: NONMEM's ``.ext`` codes of the final estimates and their standard errors.
EXT_ESTIMATES, EXT_SE = -1000000000, -1000000001


@dataclass(frozen=True)
class NonmemEstimates:
    """Final estimates of one ``.ext`` table.

    Attributes
    ----------
    estimates : dict
        ``{"THETA(1)": ..., "OMEGA(2,1)": ..., "SIGMA(1,1)": ...}`` (OMEGA and SIGMA are variances).
    se : dict
        Standard errors by the same labels (empty without ``$COVARIANCE``; 1e10 where NONMEM has none).
    ofv : float
        NONMEM's OFV (without the N log(2 pi) constant).
    """

    estimates: dict
    se: dict
    ofv: float

    def population_values(self, spec, nonmem_names: dict) -> PopulationValues:
        """Our population values from NONMEM's, by the map a conversion gives.

        Parameters
        ----------
        spec : ModelSpec
        nonmem_names : dict
            Our name -> NONMEM label, as :class:`ConvertedModel.nonmem_names` gives it.

        Returns
        -------
        PopulationValues
        """
        est = self.estimates
        typical = {p.name: est[nonmem_names[p.name]] for p in spec.parameters if not p.fixed}
        thetas = {c.name: est[nonmem_names[c.name]] for c in spec.covariates if not c.fixed}
        q = spec.iiv_parameters
        omega = np.zeros((len(q), len(q)))
        for i, a in enumerate(q):
            omega[i, i] = est[nonmem_names[f"omega2({a})"]]
            for j, b in enumerate(q[:i]):
                label = nonmem_names.get(f"omega({b},{a})")
                omega[i, j] = omega[j, i] = est[label] if label else 0.0
        sigma = {}
        for k in spec.sigma_names:
            if f"sigma2_{k}" in nonmem_names:
                sigma[k] = float(np.sqrt(est[nonmem_names[f"sigma2_{k}"]]))
            else:
                sigma[k] = abs(float(est[nonmem_names[f"sigma_{k}"]]))
        return PopulationValues(typical=typical, omega=omega, thetas=thetas, sigma=sigma)


def read_ext(path, table: int = -1) -> NonmemEstimates:
    """Read the final estimates (and standard errors) of a NONMEM ``.ext`` file.

    Parameters
    ----------
    path : str or Path
    table : int
        Which ``TABLE NO.`` block when there are several estimation steps (default the last).

    Returns
    -------
    NonmemEstimates

    Examples
    --------
    >>> from nlmebayes.datasets import path
    >>> ext = read_ext(path("pheno_real.ext"))
    >>> round(ext.ofv, 3), ext.estimates["THETA(1)"]
    (586.276, 0.00469555)
    """
    df = _ext_tables(Path(path))[table]
    if EXT_ESTIMATES not in df.index:
        raise ValueError(f"{Path(path).name}: no final estimates (ITERATION {EXT_ESTIMATES}) in the table")
    cols = [c for c in df.columns if c != "OBJ"]
    est = {_label(c): float(df.loc[EXT_ESTIMATES, c]) for c in cols}
    se = {_label(c): float(df.loc[EXT_SE, c]) for c in cols} if EXT_SE in df.index else {}
    return NonmemEstimates(est, se, float(df.loc[EXT_ESTIMATES, "OBJ"]))


def _ext_tables(path: Path) -> list[pd.DataFrame]:
    """Each ``TABLE NO.`` block of an ``.ext``/``.phi`` file as a DataFrame."""
    blocks = re.split(r"^TABLE NO\..*$", path.read_text(), flags=re.M)
    tables = [pd.read_csv(io.StringIO(b.strip()), sep=r"\s+") for b in blocks if b.strip()]
    if not tables:
        raise ValueError(f"{path.name}: no TABLE NO. block")
    return [t.set_index(t.columns[0]) if t.columns[0] == "ITERATION" else t for t in tables]


def _label(col: str) -> str:
    """``THETA1`` -> ``THETA(1)``; ``OMEGA(2,1)`` and ``SIGMA(1,1)`` stay."""
    m = re.fullmatch(r"THETA(\d+)", col)
    return f"THETA({m.group(1)})" if m else col


def read_phi(path, table: int = -1) -> pd.DataFrame:
    """Read NONMEM's EBEs (``.phi``): ID, ETA1..n, their conditional covariance ETC and OBJ.

    Parameters
    ----------
    path : str or Path
    table : int
        Which ``TABLE NO.`` block (default the last).

    Returns
    -------
    DataFrame
        One row per subject; columns ``ID``, ``ETA(1)``.. and ``ETC(i,j)``.., ``OBJ`` as written.

    Examples
    --------
    >>> from nlmebayes.datasets import path
    >>> phi = read_phi(path("pheno_real.phi"))
    >>> phi.shape[0], list(phi.columns[:3])
    (59, ['ID', 'ETA(1)', 'ETA(2)'])
    """
    df = _ext_tables(Path(path))[table]
    return df.drop(columns=["SUBJECT_NO"], errors="ignore").reset_index(drop=True)
