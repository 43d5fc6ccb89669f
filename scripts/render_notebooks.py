"""Execute every notebook in notebooks/ and write rendered copies for the docs site.

Executed notebooks (outputs included) go to ``docs/_build/notebooks/``, HTML pages to
``docs/_build/html/notebooks/`` beside the Sphinx site. The stored notebooks stay without
outputs (small diffs); the tests execute them too (tests/test_notebooks.py).

Run: ``make notebooks`` (installs the ``notebooks`` extra: Jupyter, nbclient, nbconvert).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    executed_dir = ROOT / "docs" / "_build" / "notebooks"
    html_dir = ROOT / "docs" / "_build" / "html" / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    html_dir.mkdir(parents=True, exist_ok=True)
    names = sys.argv[1:]
    paths = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if not names or p.stem in names]
    for path in paths:
        t0 = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        ).execute()
        nbformat.write(nb, executed_dir / path.name)
        body, _ = HTMLExporter().from_notebook_node(nb)
        (html_dir / f"{path.stem}.html").write_text(body)
        print(f"{path.name}: executed in {time.perf_counter() - t0:.0f} s -> {html_dir / path.stem}.html")


if __name__ == "__main__":
    main()
