"""Render an HTML run report in headless Chromium and check the screenshot is not blank.

Usage: python scripts/render_html.py REPORT.html SCREENSHOT.png

Needs Debian's chromium (``apt-get install chromium``). Exits 0 when the page rendered with content:
at least 2% non-white pixels and at least one embedded figure's colours; 1 otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from matplotlib.image import imread

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str | None:
    """The Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def render(html: Path, png: Path, size=(1200, 10000)) -> Path:
    """Screenshot ``html`` (a local file; the browser may reach nothing else) into ``png``."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                exe,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                f"--screenshot={png.resolve()}",
                html.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return png


def content_stats(png: Path) -> dict:
    """Share of non-white pixels, and of saturated (figure) colours."""
    img = imread(png)[..., :3]
    nonwhite = (img < 0.95).any(axis=-1)
    saturated = (img.max(axis=-1) - img.min(axis=-1)) > 0.25
    return {"nonwhite": float(nonwhite.mean()), "coloured": float(saturated.mean())}


def main(argv: list[str]) -> int:
    html, png = Path(argv[1]), Path(argv[2])
    stats = content_stats(render(html, png))
    ok = stats["nonwhite"] > 0.02 and stats["coloured"] > 0.001
    print(
        f"{png}: {100 * stats['nonwhite']:.1f}% non-white, {100 * stats['coloured']:.2f}% coloured -> "
        f"{'rendered' if ok else 'BLANK'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
