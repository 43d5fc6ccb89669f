"""Per-subject posterior summaries: individual parameters and etas as tidy tables.

One row per subject and parameter, the subject's ID as written in the data (``12``, not ``12.0``
or ``"12"``), and the posterior mean, median, SD and a central credible interval; what NONMEM
users take from a $TABLE of EBEs and individual parameters, with uncertainty. ``to_csv`` of the
result is the table file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes.data import id_label

__all__ = ["individual_parameters", "eta_table"]


def individual_parameters(result, ci: float = 0.9) -> pd.DataFrame:
    """Posterior summaries of every subject's parameters (``CL``, ``V``, ...).

    The spec's parameters, then the entries of its ``individual`` expressions (structural and
    derived, e.g. a half-life).

    With IOV these are the subject-level values (before the occasion effects).

    Parameters
    ----------
    result : FitResult
    ci : float
        Probability of the central credible interval.

    Returns
    -------
    pandas.DataFrame
        Columns ID, parameter, mean, median, sd, lower, upper.

    Examples
    --------
    >>> result.individual_parameters().query("parameter == 'CL'").head(3)  # doctest: +SKIP
       ID parameter   mean  median     sd  lower  upper
    0   1        CL  1.716   1.712  0.142  1.490  1.954
    """
    post = result.posterior
    spec = result.spec
    names = [
        p for p in spec.parameter_names + list(spec.individual) if p in post and "subject" in post[p].dims
    ]
    return _summaries(result, {p: post[p] for p in names}, ci)


def eta_table(result, ci: float = 0.9) -> pd.DataFrame:
    """Posterior summaries of every subject's etas, one row per subject and IIV parameter.

    The posterior mean of an eta is the Bayesian counterpart of NONMEM's EBE (the conditional mode).

    Returns
    -------
    pandas.DataFrame
        Columns ID, parameter, mean, median, sd, lower, upper.
    """
    post = result.posterior
    if "eta" not in post:
        return pd.DataFrame(columns=["ID", "parameter", "mean", "median", "sd", "lower", "upper"])
    eta = post["eta"]
    dim = [d for d in eta.dims if d not in ("chain", "draw", "subject")][0]
    return _summaries(result, {str(p): eta.sel({dim: p}) for p in eta[dim].values}, ci)


def _summaries(result, arrays: dict, ci: float) -> pd.DataFrame:
    ids = [id_label(v) for v in result.data.ids]
    a = (1 - ci) / 2
    rows = []
    for name, da in arrays.items():
        x = da.transpose("chain", "draw", "subject").values.reshape(-1, da.sizes["subject"])
        lo, med, hi = np.quantile(x, [a, 0.5, 1 - a], axis=0)
        rows.append(
            pd.DataFrame(
                {
                    "ID": ids,
                    "parameter": name,
                    "mean": x.mean(axis=0),
                    "median": med,
                    "sd": x.std(axis=0, ddof=1),
                    "lower": lo,
                    "upper": hi,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)
