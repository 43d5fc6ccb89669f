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
    for command in ("fit", "report", "check"):
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
