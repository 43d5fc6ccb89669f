"""The ``nlmebayes`` command, as installed by pip (the console script next to this Python)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nlmebayes import datasets
from tests.test_spec import MODELS

MODEL = MODELS[0].parent / "theophylline_1cpt_oral.toml"
EXE = Path(sys.executable).parent / "nlmebayes"


def _run(*args, cwd=None):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_help_lists_the_commands_and_bad_input_exits_2(tmp_path):
    out = _run("--help")
    assert out.returncode == 0
    for command in ("fit", "report", "check", "vpc", "simulate", "convert"):
        assert command in out.stdout
    assert "examples:" in out.stdout
    missing = _run("check", tmp_path / "nope.toml")
    assert missing.returncode == 2 and f"{tmp_path / 'nope.toml'}: no such file" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(MODEL.read_text().replace("initial", "inital", 1))
    typo = _run("check", bad)
    assert typo.returncode == 2 and "unknown key 'inital'; did you mean 'initial'?" in typo.stderr
    assert "Traceback" not in typo.stderr
    no_run = _run("report", tmp_path)
    assert no_run.returncode == 2 and "no saved result" in no_run.stderr


@pytest.mark.sampling
def test_fit_writes_result_report_and_nonmem_tables(tmp_path):
    """``nlmebayes fit MODEL DATA --out RUN`` on the theophylline data written as a user's CSV:
    result, report and tables exist, the tables load with pandas under NONMEM's column names, and
    ``nlmebayes report RUN`` reprints the same report from the saved result without refitting."""
    data = tmp_path / "theo.csv"
    datasets.theophylline().input_frame().to_csv(data, index=False)
    checked = _run("check", MODEL, data)
    assert checked.returncode == 0 and "subjects:       12" in checked.stdout
    run = tmp_path / "run1"
    out = _run("fit", MODEL, data, "--out", run, "--draws", 200, "--tune", 200, "--chains", 2, "--seed", 3)
    assert out.returncode == 0, out.stderr
    for name in ("result.nc", "report.txt", "sdtab1", "patab1", "cotab1", "catab1", "run1.ext"):
        assert (run / name).exists(), name
    sd = pd.read_csv(run / "sdtab1", sep=r"\s+", skiprows=1)
    assert sd.columns.tolist() == "ID TIME DV PRED IPRED RES IRES CWRES IWRES NPDE MDV".split()
    assert len(sd) == 132 and np.isfinite(sd.to_numpy()).all()
    assert {"CL", "ETA1"} <= set(pd.read_csv(run / "patab1", sep=r"\s+", skiprows=1).columns)
    assert "THETA(1)" in (run / "report.txt").read_text()
    again = _run("report", run)
    assert again.returncode == 0
    assert again.stdout.startswith((run / "report.txt").read_text().rstrip("\n"))
    vpc = _run("vpc", run, "--n", 50)
    assert vpc.returncode == 0, vpc.stderr
    assert (run / "vpc.png").stat().st_size > 10_000
    pct = pd.read_csv(run / "vpc_percentiles.csv")
    assert len(pct) > 0 and pct.notna().any().all()
    sim = _run("simulate", run, "--dose", 320, "--every", 12, "--doses", 3, "--times", "0:48:4",
               "--subjects", 20, "--draws", 50)  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    table = pd.read_csv(run / "simulation.csv")
    assert len(table) == 13 and (table["q05"] <= table["q50"]).all() and (table["q50"] <= table["q95"]).all()
    # Three doses 12 h apart accumulate: the median at 26 h (2 h after the third dose) is above
    # that at 2 h after the first (theophylline's half-life ~8 h).
    q50 = table.set_index("time")["q50"]
    assert q50[28.0] > q50[4.0] > 0


def test_convert_writes_model_and_data_and_compares_the_ofv(tmp_path):
    pytest.importorskip("pharmpy", reason="the nonmem extra (Pharmpy) is part of the dev set-up")
    for name in ("pheno_real.mod", "pheno_real.ext", "pheno.dta"):
        (tmp_path / name).write_text(datasets.path(name).read_text())
    out = _run(
        "convert",
        tmp_path / "pheno_real.mod",
        "--ext",
        tmp_path / "pheno_real.ext",
        "--out",
        tmp_path / "conv",
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "conv" / "pheno_real.toml").exists() and (
        tmp_path / "conv" / "pheno_real.csv"
    ).exists()
    # Our FOCE-I OFV at NONMEM's .ext estimates (test_nonmem_import holds it to 1e-3).
    assert "OFV at NONMEM's estimates: nlmebayes 586.276, NONMEM 586.276" in out.stdout
    assert "note: $PK variables not used by the structural model (left out): BTIME, TAD" in out.stdout
    bad = tmp_path / "bad.mod"
    bad.write_text(datasets.path("pheno_real.mod").read_text().replace("ADVAN1 TRANS2", "ADVAN5"))
    refused = _run("convert", bad)
    assert (
        refused.returncode == 2
        and "bad.mod: $SUBROUTINES line 4: ADVAN5 TRANS1 is not supported" in refused.stderr
    )
