"""Every plot headless: it returns a Figure, draws without warnings, and the drawn data equal the
numbers they stand for. The HTML run report is one self-contained file that a browser renders."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from nlmebayes import ModelSpec, datasets, fit, plots
from nlmebayes.diagnostics.vpc import vpc
from tests.test_spec import MODELS

matplotlib.use("Agg")
MODEL_DIR = MODELS[0].parent
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def theo():
    spec = ModelSpec.from_toml(MODEL_DIR / "theophylline_1cpt_oral.toml")
    return fit(spec, datasets.theophylline(), draws=300, tune=400, chains=2, seed=5)


pytestmark = [pytest.mark.sampling, pytest.mark.filterwarnings("error")]


def test_gof_panels_plot_the_data(theo):
    fig = plots.gof(theo)
    assert isinstance(fig, Figure) and len(fig.axes) == 9
    df = fig.nlme_data["gof"]
    ipred = theo.posterior["ipred"].median(("chain", "draw")).values
    mg = theo.idata["marginal"]
    np.testing.assert_allclose(df["IPRED"], ipred)
    np.testing.assert_allclose(df["PRED"], mg["pred"].values)
    # DV vs PRED (panel 0) and DV vs IPRED (panel 1): the scatter offsets are (prediction, DV)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), np.c_[mg["pred"], theo.data.obs_dv])
    np.testing.assert_allclose(fig.axes[1].collections[0].get_offsets(), np.c_[ipred, theo.data.obs_dv])
    np.testing.assert_allclose(fig.axes[2].collections[0].get_offsets()[:, 1], mg["cwres"].values)
    # NPDE QQ: sorted NPDE against normal quantiles
    np.testing.assert_allclose(fig.axes[7].collections[0].get_offsets()[:, 1], np.sort(mg["npde"].values))
    assert plots.gof(theo, log=True).axes[0].get_xscale() == "log"


def test_individual_fits_draw_the_posterior_band_on_a_dense_grid(theo):
    fig = plots.individual_fits(theo, ids=[1, 2, 3], n_points=50, n=100)
    curves = fig.nlme_data["curves"]
    assert len(curves) == 3 * 50 and curves["ID"].nunique() == 3
    ax = fig.axes[0]
    ipred_line, pred_line = ax.lines[0], ax.lines[1]
    c1 = curves[curves["ID"] == 1]
    np.testing.assert_allclose(ipred_line.get_ydata(), c1["IPRED"])
    np.testing.assert_allclose(pred_line.get_ydata(), c1["PRED"])
    assert (c1["IPRED_lo"] <= c1["IPRED"]).all() and (c1["IPRED"] <= c1["IPRED_hi"]).all()
    # on the dense grid, the band's median agrees with the posterior IPRED at the sampling times
    obs_t = theo.data.obs_time[theo.data.obs_subject == 0]
    post = theo.posterior["ipred"].median(("chain", "draw")).values[theo.data.obs_subject == 0]
    interp = np.interp(obs_t, c1["TIME"], c1["IPRED"])
    # after the absorption phase (t >= 1 h) linear interpolation on the 0.5 h grid is good to ~1%;
    # 100 draws' median against all draws' adds ~1%
    late = obs_t >= 1
    assert np.max(np.abs(interp - post)[late]) < 0.03 * post.max()
    np.testing.assert_allclose(ax.collections[1].get_offsets(), np.c_[obs_t, theo.data.obs_dv[:11]])
    pages = plots.individual_fit_pages(theo, per_page=5, n_points=20, n=50)
    assert len(pages) == 3 and pages[0].nlme_pages == 3


def test_conditional_replicates_reuse_each_draw_exactly(theo):
    """At the fitted design, the fitted subjects' replicates are the posterior's own IPRED draws."""
    from nlmebayes.simulation import posterior_predictive

    sims = posterior_predictive(theo, n=50, seed=3, new_subjects=False)
    ipred = theo.posterior["ipred"].stack(s=("chain", "draw")).transpose("s", "obs").values
    np.testing.assert_allclose(sims["ipred"].values, ipred[sims["draw_index"].values], rtol=1e-10)


def test_eta_plots(theo):
    fig = plots.eta_distributions(theo)
    sh = fig.nlme_data["shrinkage"].set_index(["parameter", "estimate"])["shrinkage_sd_percent"]
    from nlmebayes.diagnostics.shrinkage import eta_shrinkage

    mg = theo.idata["marginal"]
    nonmem = 100 * eta_shrinkage(mg["eta_ebe"].values, mg["omega"].values, "sd")
    np.testing.assert_allclose([sh[p, "EBE"] for p in ("KA", "CL", "V")], nonmem)
    for ax, p in zip(fig.axes, ("KA", "CL", "V"), strict=True):
        assert f"EBE {sh[p, 'EBE']:.0f}%" in ax.get_title()
    fig = plots.eta_covariates(theo, ["WT"])
    etas = fig.nlme_data["etas"]
    cl = etas[etas["parameter"] == "CL"]
    np.testing.assert_allclose(fig.axes[1].collections[0].get_offsets(), cl[["WT", "eta_mean"]].to_numpy())
    fig = plots.eta_pairs(theo)
    assert len([a for a in fig.axes if a.get_visible()]) == 3


def test_vpc_plot_draws_the_computed_percentiles(theo):
    check = vpc(theo, n=200, seed=2)
    fig = plots.vpc_plot(check=check)
    median = check.percentiles[check.percentiles["quantile"] == 0.5].sort_values("x")
    drawn = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "-"][0]
    np.testing.assert_allclose(drawn.get_ydata(), median["observed"])
    fig = plots.vpc_plot(theo, n=100, pred_corr=True, x="tad", lloq=1.0, log=True)
    assert len(fig.axes) == 2 and "censored" in fig.nlme_data


def test_shrinkage_plot_teaches_pooling(theo):
    fig = plots.shrinkage_plot(theo, "CL")
    df = fig.nlme_data["pooling"]
    assert len(df) == 12
    # Where a subject's own estimate is clearly away from the population (> omega / 2 on the log
    # scale; closer, the share "pulled" is a ratio of noise), the posterior lies between the two,
    # and with Theoph's 11 samples per subject it stays nearer the subject's own estimate. The
    # rich-versus-sparse contrast is in notebooks/shrinkage_rich_vs_sparse.ipynb.
    omega = float(np.sqrt((theo.posterior["omega_sd"].sel(iiv="CL") ** 2).mean()))
    away = np.abs(np.log(df["no_pooling"] / df["population"])) > omega / 2
    assert away.sum() >= 3
    # (-0.05: the no-pooling estimate is taken at the median population values, the posterior
    # integrates over them, which moves a nearly unpooled subject by a few percent either way)
    assert ((df["pulled"][away] > -0.05) & (df["pulled"][away] < 0.5)).all(), df


def test_prior_plots(theo):
    fig = plots.prior_predictive_plot(theo.spec, theo.data, n=200)
    bands = fig.nlme_data["bands"]
    assert (bands["q05"] <= bands["q50"]).all() and (bands["q50"] <= bands["q95"]).all()
    fig = plots.prior_posterior(theo, n=500)
    s = fig.nlme_data["summary"].set_index("parameter")
    # Theoph's 132 samples narrow the typical values' prior 90% width to < 20% of it
    assert (s.loc[["KA_pop", "CL_pop", "V_pop"], "width_ratio"] < 0.2).all(), s


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside arviz-plots
def test_mcmc_plots_through_arviz(theo):
    for f in (plots.trace_plot, plots.rank_plot, plots.pair_plot):
        assert isinstance(f(theo), Figure)


def assert_self_contained(path: Path) -> str:
    text = path.read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:|#)", text), "external resource"
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert text.count("data:image/png;base64,") >= 6
    return text


def render_check(path: Path, tmp_path: Path) -> None:
    """Screenshot in headless Chromium when the machine has it (Debian's chromium package)."""
    if shutil.which("chromium") is None:
        return
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_html.py"), str(path), str(tmp_path / "shot.png")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_html_report_theophylline(theo, tmp_path):
    path = theo.to_html(tmp_path / "theo.html", n_vpc=100)
    text = assert_self_contained(path)
    for fragment in ("OFV", "AIC", "BIC", "Shrinkage", "CL", "theo_sd.csv", "Prediction-corrected VPC"):
        assert fragment in text
    render_check(path, tmp_path)
