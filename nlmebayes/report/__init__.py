"""Reporting from a fit's stored results (never rebuilds the sampler graph).

The parameter table and variability decomposition (:mod:`.tables`), per-subject parameters and etas
(:mod:`.individual`), the text report (:mod:`.text`) and
the self-contained HTML run report (:mod:`.html`, loaded on first use: it draws with matplotlib).
"""

from nlmebayes.report.individual import eta_table, individual_parameters
from nlmebayes.report.tables import parameter_table, variance_decomposition
from nlmebayes.report.text import report

__all__ = [
    "report",
    "parameter_table",
    "variance_decomposition",
    "individual_parameters",
    "eta_table",
    "html_report",
]


def __getattr__(name):
    if name == "html_report":
        from nlmebayes.report.html import html_report

        return html_report
    raise AttributeError(f"module 'nlmebayes.report' has no attribute {name!r}")
