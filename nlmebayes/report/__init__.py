"""Reporting from a fit's stored results (never rebuilds the sampler graph).

The parameter table and variability decomposition (:mod:`.tables`) and the text report (:mod:`.text`).
"""

from nlmebayes.report.tables import parameter_table, variance_decomposition
from nlmebayes.report.text import report

__all__ = ["report", "parameter_table", "variance_decomposition"]
