"""Every notebook in notebooks/ runs top to bottom (code cells executed in order, in one namespace,
with a non-interactive matplotlib backend). No Jupyter kernel is needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.sampling
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    import matplotlib

    matplotlib.use("Agg")
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {"__name__": "__notebook__"}
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        exec(compile(source, f"{path.name} [code cell {i}]", "exec"), namespace)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ should hold at least one notebook"


@pytest.mark.sampling
def test_demo_prints_a_report_and_no_warnings(capfd, monkeypatch):
    """``make demo``'s fit and report, shortened: nothing on stderr, no Python warnings."""
    import warnings

    from nlmebayes import demo

    real_fit = demo.fit
    monkeypatch.setattr(
        demo,
        "fit",
        lambda spec, data, **kw: real_fit(spec, data, **{**kw, "draws": 300, "tune": 300, "chains": 2}),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        demo.main()
    out, err = capfd.readouterr()
    assert "Fixed effects" in out and "THETA(1)" in out
    assert err == "" and [str(w.message) for w in caught] == []
