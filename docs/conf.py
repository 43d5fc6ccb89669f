"""Sphinx configuration: API pages from the docstrings (autodoc + autosummary, numpy style via
napoleon), prose pages in Markdown (MyST), and one page per ready model in ``models/``,
generated from its TOML at build time so that it cannot drift from the file."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

project = "nlmebayes"
author = "nlmebayes developers"
release = metadata.version("nlmebayes")
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
autosummary_generate = True
# Each object is documented once, in the module that defines it (packages re-export names in
# their __all__; documenting those again would duplicate every object).
autodoc_default_options = {"members": True, "ignore-module-all": True}
autodoc_typehints = "description"
# Type hints name third-party types (pandas, xarray, PyMC) that the docs do not link to.
autodoc_typehints_format = "short"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
myst_heading_anchors = 3
html_theme = "alabaster"
html_title = f"nlmebayes {release}"
suppress_warnings = ["myst.xref_missing"]


def _model_page(path: Path) -> str:
    spec = tomllib.loads(path.read_text())
    structural = spec["structural"]
    structural = structural if isinstance(structural, str) else f"ODE `{structural.get('name', '')}`"
    # descriptions are plain text: escape what Markdown would read as emphasis or code
    description = re.sub(r"([*_`])", r"\\\1", spec.get("description", "").strip())
    lines = [
        f"# {path.stem}",
        "",
        description,
        "",
        f"- structural model: {structural}",
        "- parameters (initial typical values): "
        + ", ".join(
            f"{k} = {v['initial'] if isinstance(v, dict) else v}"
            for k, v in spec.get("parameters", {}).items()
        ),
        f"- IIV on: {', '.join(p for b in spec.get('iiv', []) for p in b['parameters']) or 'none'}",
        "",
        "Fit it with:",
        "",
        "```python",
        "from nlmebayes import ModelSpec, fit",
        f'spec = ModelSpec.from_toml("models/{path.name}")',
        "```",
        "",
        "The model file:",
        "",
        "```toml",
        path.read_text().rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _write_model_pages(app) -> None:
    out = Path(app.srcdir) / "models"
    out.mkdir(exist_ok=True)  # generated, not tracked: absent in a fresh clone
    names = []
    for path in sorted((ROOT / "models").glob("*.toml")):
        target = out / f"{path.stem}.md"
        text = _model_page(path)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        names.append(path.stem)
    index = [
        "# Ready models",
        "",
        "Each model in the repository's `models/` folder is fitted in the tests. Pages are "
        "generated from the TOML files.",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
        *names,
        "```",
        "",
    ]
    (out / "index.md").write_text("\n".join(index))


def setup(app):
    app.connect("builder-inited", _write_model_pages)
