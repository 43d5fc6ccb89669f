"""Binning of the independent variable (time, time after dose) for VPCs.

Natural breaks by default, as in the R ``vpc`` package (Fisher-Jenks: the ``k`` classes of least
within-class sum of squares, found exactly by dynamic programming over the sorted distinct values;
on Theoph's actual times they recover the nominal times), or bins of equal counts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["natural_breaks", "quantile_bins", "auto_bins", "bin_index"]


def natural_breaks(x, k: int) -> np.ndarray:
    """Upper edges of the ``k`` Fisher-Jenks classes of ``x`` (least within-class sum of squares).

    Exact dynamic programming over the distinct values weighted by their counts, O(k u^2) for
    u distinct values, vectorised over the split point.

    Examples
    --------
    >>> natural_breaks([1, 2, 3, 10, 11, 12, 30, 31], 3).tolist()
    [3.0, 12.0, 31.0]
    """
    u, w = np.unique(np.asarray(x, dtype=float), return_counts=True)
    k = min(k, len(u))
    cw = np.r_[0.0, np.cumsum(w)]
    cs = np.r_[0.0, np.cumsum(w * u)]
    css = np.r_[0.0, np.cumsum(w * u * u)]

    def sse(i, j):  # classes u[i..j-1], vectorised over i
        n = cw[j] - cw[i]
        s = cs[j] - cs[i]
        return css[j] - css[i] - np.where(n > 0, s * s / np.maximum(n, 1), 0.0)

    m = len(u)
    cost = sse(np.zeros(m + 1, dtype=int), np.arange(m + 1))  # one class over u[:j]
    back = np.zeros((k, m + 1), dtype=int)
    for c in range(1, k):
        new = np.full(m + 1, np.inf)
        for j in range(c + 1, m + 1):
            i = np.arange(c, j)
            tot = cost[i] + sse(i, j)
            b = int(np.argmin(tot))
            new[j], back[c, j] = tot[b], i[b]
        cost = new
    edges, j = [], m
    for c in range(k - 1, 0, -1):
        edges.append(u[j - 1])
        j = back[c, j]
    edges.append(u[j - 1])
    return np.array(sorted(edges))


def quantile_bins(x, k: int) -> np.ndarray:
    """Upper edges of ``k`` bins of about equal counts (quantiles of ``x``; ties stay together).

    Examples
    --------
    >>> quantile_bins([1, 2, 3, 4, 5, 6], 3).tolist()
    [2.0, 4.0, 6.0]
    """
    x = np.asarray(x, dtype=float)
    q = np.quantile(x, np.arange(1, k + 1) / k, method="inverted_cdf")
    return np.unique(q)


def auto_bins(x, max_bins: int = 10, method: str = "jenks") -> np.ndarray:
    """Bin edges: one bin per distinct value if there are at most ``max_bins``, else ``method``.

    ``method`` is "jenks" (natural breaks) or "ntile" (equal counts).
    """
    u = np.unique(np.asarray(x, dtype=float))
    if len(u) <= max_bins:
        return u
    if method == "jenks":
        return natural_breaks(x, max_bins)
    if method == "ntile":
        return quantile_bins(x, max_bins)
    raise ValueError(f"binning method must be 'jenks' or 'ntile', got {method!r}")


def bin_index(x, edges) -> np.ndarray:
    """Bin of each value given upper edges (a value above the last edge goes to the last bin)."""
    i = np.searchsorted(np.asarray(edges), np.asarray(x, dtype=float), side="left")
    return np.minimum(i, len(edges) - 1)
