"""The ``nlmebayes`` command: fit, report and check from a shell, without writing Python.

``nlmebayes fit MODEL.toml DATA.csv --out RUN/`` fits and writes ``RUN/result.nc``, ``RUN/report.txt``,
the NONMEM-style tables (``sdtab1``, ``patab1``, ``cotab1``, ``catab1``, ``run1.ext``) and, with
``--html``, ``RUN/report.html``; ``nlmebayes report RUN/`` prints (and rewrites) them from the saved
result without refitting; ``nlmebayes check MODEL.toml [DATA.csv]`` reads both and says what it found.

Exit codes: 0 done; 2 a problem with the input (the message names the file and, for data, the row
and column); 1 anything else (with the Python traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]

EPILOG = """examples:
  nlmebayes check models/theophylline_1cpt_oral.toml theo.csv
  nlmebayes fit models/theophylline_1cpt_oral.toml theo.csv --out run1 --chains 4 --seed 1
  nlmebayes report run1 --html
"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="nlmebayes",
        description="Bayesian NLME models: fit a model file to NONMEM-style data and report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"nlmebayes {_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{fit,report,check}")
    f = _command(sub, "fit", "fit a model file to a data file; write the result, report and tables",
                 "nlmebayes fit models/pheno_1cpt_iv.toml pheno.csv --out run1 --seed 1")  # fmt: skip
    f.add_argument("model", type=Path, help="model file (TOML)")
    f.add_argument("data", type=Path, help="NONMEM-style data (CSV or whitespace table)")
    f.add_argument("--out", type=Path, default=Path("run1"), help="output folder (default run1)")
    f.add_argument("--draws", type=int, default=1000, help="draws per chain after warm-up (1000)")
    f.add_argument("--tune", type=int, default=1000, help="warm-up iterations per chain (1000)")
    f.add_argument("--chains", type=int, default=4, help="chains (4)")
    f.add_argument("--seed", type=int, default=1, help="random seed (1): same seed, same draws")
    f.add_argument("--html", action="store_true", help="also write report.html (plots, VPC)")
    r = _command(sub, "report", "print the report of a saved run and rewrite its tables",
                 "nlmebayes report run1 --html")  # fmt: skip
    r.add_argument("run", type=Path, help="folder written by 'nlmebayes fit'")
    r.add_argument("--html", action="store_true", help="also write report.html")
    c = _command(sub, "check", "read a model file (and data) and say what was found, without fitting",
                 "nlmebayes check models/theophylline_1cpt_oral.toml theo.csv")  # fmt: skip
    c.add_argument("model", type=Path, help="model file (TOML)")
    c.add_argument("data", type=Path, nargs="?", help="NONMEM-style data (optional)")
    return ap


def _command(sub, name: str, what: str, example: str) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with an example."""
    return sub.add_parser(name, help=what, description=what, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nlmebayes")
    except PackageNotFoundError:
        return "unknown"


def _read(model: Path, data: Path | None):
    from nlmebayes import ModelSpec, read_nonmem

    for p in (model, data):
        if p is not None and not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
    spec = ModelSpec.from_toml(model)
    return spec, (read_nonmem(data) if data is not None else None)


def _write_outputs(result, out: Path, html: bool) -> None:
    from nlmebayes.io.nonmem_tables import write_tables

    text = result.report()
    (out / "report.txt").write_text(text + "\n")
    paths = write_tables(result, out)
    if html:
        result.to_html(out / "report.html")
    print(text)
    written = ["report.txt", *(p.name for p in paths.values())] + (["report.html"] if html else [])
    print(f"\nwritten to {out}/: {', '.join(written)}")


def _fit(args) -> None:
    from nlmebayes import fit

    spec, data = _read(args.model, args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    result = fit(spec, data, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed)
    result.save(args.out / "result.nc")
    _write_outputs(result, args.out, args.html)


def _report(args) -> None:
    from nlmebayes import FitResult

    path = args.run / "result.nc"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no saved result (write one with 'nlmebayes fit ... --out {args.run}')"
        )
    _write_outputs(FitResult.load(path), args.run, args.html)


def _check(args) -> None:
    spec, data = _read(args.model, args.data)
    print(f"model {args.model}: {spec.name}, {len(spec.parameters)} typical values, IIV on "
          f"{', '.join(spec.iiv_parameters) or 'none'}")  # fmt: skip
    if data is not None:
        print(data.summary())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Examples
    --------
    >>> main(["check", "models/theophylline_1cpt_oral.toml"])  # doctest: +SKIP
    model models/theophylline_1cpt_oral.toml: theophylline_1cpt_oral, 3 typical values, IIV on KA, CL, V
    0
    """
    from nlmebayes.data import DataError
    from nlmebayes.model.modelfile import ModelFileError

    args = _parser().parse_args(argv)
    try:
        {"fit": _fit, "report": _report, "check": _check}[args.command](args)
    except (FileNotFoundError, ModelFileError, DataError, ValueError) as e:
        print(f"nlmebayes {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
