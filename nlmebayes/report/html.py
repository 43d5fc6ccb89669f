"""One self-contained HTML file per run: what a pharmacometrician attaches to an email.

Model and data summary, sampler run, parameter table, OFV/AIC/BIC, shrinkage, diagnostics warnings and
the standard figures (GOF, individual fits, etas, VPC and pcVPC, traces) embedded as inline PNG. No
external stylesheet, script, font or image: the file opens offline and survives being forwarded.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import numpy as np

from nlmebayes.diagnostics.convergence import sampler_diagnostics
from nlmebayes.diagnostics.shrinkage import shrinkage_table
from nlmebayes.report.tables import parameter_table
from nlmebayes.report.text import report

__all__ = ["html_report", "figure_html"]

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4}
h1{font-size:1.5em;border-bottom:2px solid #1f77b4}h2{font-size:1.2em;margin-top:1.6em;color:#1f4e79}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eef3f8}pre{background:#f6f6f6;padding:.6em;font-size:.8em;overflow-x:auto}
.warn{color:#a50026}.fig{margin:1em 0}.fig img{max-width:100%}.cap{font-size:.85em;color:#555}
"""


def figure_html(fig, caption: str = "", dpi: int = 90) -> str:
    """A figure as an inline PNG ``<img>`` (base64), with a caption."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<div class="fig"><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f'<div class="cap">{html.escape(caption)}</div></div>'
    )


def _close(fig) -> None:
    """Release a figure ArviZ made through pyplot (a no-op for ours, which pyplot never held)."""
    import matplotlib.pyplot as plt

    plt.close(fig)


def _table(df, floatfmt="{:.4g}") -> str:
    return df.to_html(float_format=lambda v: floatfmt.format(v), border=0, na_rep="")


def _figures(result, n_vpc: int, seed: int) -> list[tuple[str, object]]:
    """(caption, figure-making callable) for the standard figures that apply to this fit."""
    from nlmebayes import plots
    from nlmebayes.diagnostics.vpc import vpc
    from nlmebayes.simulation import posterior_predictive

    stratify = "DVID" if "DVID" in result.data.records.columns else None
    out = [
        ("Goodness of fit", lambda: plots.gof(result)),
        (
            "Individual fits (first page): observations, posterior-median IPRED with 90% band, PRED dashed",
            lambda: plots.individual_fits(result, per_page=12),
        ),
    ]
    if result.spec.iiv:
        out.append(("Eta distributions against N(0, omega^2)", lambda: plots.eta_distributions(result)))
        if result.data.constant_covariates():
            out.append(("Etas against covariates", lambda: plots.eta_covariates(result)))
    sims = []  # one set of replicates serves the VPC and the pcVPC, simulated when first drawn

    def check(pc: bool):
        if not sims:
            sims.append(posterior_predictive(result, n=n_vpc, seed=seed))
        return vpc(result, sims=sims[0], pred_corr=pc, stratify=stratify)

    for pc, name in ((False, "VPC"), (True, "Prediction-corrected VPC")):
        out.append(
            (
                f"{name}: observed 5/50/95th percentiles (lines) over the 90% intervals "
                f"of the {n_vpc} replicates' percentiles",
                lambda pc=pc: plots.vpc_plot(check=check(pc)),
            )
        )
    out.append(
        ("Traces and marginal posteriors of the population parameters", lambda: plots.trace_plot(result))
    )
    return out


def html_report(result, path: str | Path, *, figures: bool = True, n_vpc: int = 200, seed: int = 0) -> Path:
    """Write the run report of ``result`` to one self-contained HTML file.

    Parameters
    ----------
    result : FitResult
    path : str or Path
        Where to write (``.html``).
    figures : bool
        Embed the figures (GOF, individual fits, etas, VPC, pcVPC, traces).
    n_vpc : int
        Replicates for the VPCs.
    seed : int
        Seeds the simulations behind the figures.

    Returns
    -------
    Path
        The file written.

    Examples
    --------
    >>> html_report(result, "run1.html")  # doctest: +SKIP
    """
    from nlmebayes import __version__

    spec, data = result.spec, result.data
    d = sampler_diagnostics(result)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>nlmebayes run: {html.escape(spec.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Run report: {html.escape(spec.name)}</h1>",
        f"<p>nlmebayes {__version__}, written {time.strftime('%Y-%m-%d %H:%M')}. "
        f"Data {html.escape(data.source)}: {data.n_subjects} subjects, {data.n_obs} observations.</p>",
        "<h2>Summary</h2><pre>" + html.escape(report(result)) + "</pre>",
        "<h2>Parameters</h2>" + _table(parameter_table(result)),
    ]
    parts += _ofv_section(result)
    if d["warnings"]:
        parts.append(
            "<h2>Diagnostics warnings</h2><ul>"
            + "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in d["warnings"])
            + "</ul>"
        )
    parts += [
        "<h2>Model</h2><pre>" + html.escape(spec.to_toml()) + "</pre>",
        "<h2>Data</h2><pre>" + html.escape(data.summary()) + "</pre>",
    ]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [figure_html(make(), caption) for caption, make in _figures(result, n_vpc, seed)]
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _ofv_section(result) -> list[str]:
    if "marginal" not in result.idata.children:
        why = result.idata.attrs.get("nlmebayes_marginal_skipped", "diagnostics=False")
        return [f"<h2>Marginal likelihood</h2><p>Not computed: {html.escape(str(why))}.</p>"]
    at = result.idata["marginal"].attrs
    rows = "".join(
        f"<tr><th>{k}</th><td>{at[v]:.3f}</td></tr>"
        for k, v in (("OFV", "ofv"), ("-2LL", "m2ll"), ("AIC", "aic"), ("BIC", "bic"))
    )
    out = [
        "<h2>Marginal likelihood</h2>",
        f"<p>{html.escape(str(at['method']).upper())} at the {html.escape(str(at['evaluated_at']))}; "
        f"k = {at['k']}, N = {at['n_obs']}.</p><table>{rows}</table>",
    ]
    if result.spec.iiv:
        out.append(
            "<h2>Shrinkage (%)</h2>"
            + _table(shrinkage_table(result).replace([np.inf, -np.inf], np.nan), "{:.1f}")
        )
    return out
