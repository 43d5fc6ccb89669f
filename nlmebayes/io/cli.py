"""The ``nlmebayes`` command: fit, report, check, VPC, simulate and convert from a shell.

``nlmebayes fit MODEL.toml DATA.csv --out RUN/`` fits and writes ``RUN/result.nc``, ``RUN/report.txt``,
the NONMEM-style tables (``sdtab1``, ``patab1``, ``cotab1``, ``catab1``, ``run1.ext``) and, with
``--html``, ``RUN/report.html``; ``nlmebayes report RUN/`` prints (and rewrites) them from the saved
result without refitting; ``nlmebayes check MODEL.toml [DATA.csv]`` reads both and says what it found;
``nlmebayes vpc RUN/`` draws the VPC of a saved fit; ``nlmebayes simulate RUN/ --dose ...`` predicts a
regimen for a virtual population; ``nlmebayes convert run1.mod`` turns a NONMEM control stream into a
model file and data (and, with ``--ext``, compares the OFV at NONMEM's estimates).

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
  nlmebayes vpc run1 --pred-corr
  nlmebayes simulate run1 --dose 320 --every 12 --doses 5 --times 0:72:1 --subjects 200
  nlmebayes convert run1.mod --ext run1.ext --out converted
"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="nlmebayes",
        description="Bayesian NLME models: fit a model file to NONMEM-style data and report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"nlmebayes {_version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{fit,report,check,vpc,simulate,convert}")
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
    f.add_argument("--no-progress", action="store_true", help="no progress bar while sampling")
    r = _command(sub, "report", "print the report of a saved run and rewrite its tables",
                 "nlmebayes report run1 --html")  # fmt: skip
    r.add_argument("run", type=Path, help="folder written by 'nlmebayes fit'")
    r.add_argument("--html", action="store_true", help="also write report.html")
    c = _command(sub, "check", "read a model file (and data) and say what was found, without fitting",
                 "nlmebayes check models/theophylline_1cpt_oral.toml theo.csv")  # fmt: skip
    c.add_argument("model", type=Path, help="model file (TOML)")
    c.add_argument("data", type=Path, nargs="?", help="NONMEM-style data (optional)")
    _vpc_parser(sub)
    _simulate_parser(sub)
    _convert_parser(sub)
    return ap


def _vpc_parser(sub) -> None:
    v = _command(sub, "vpc", "visual predictive check of a saved fit: RUN/vpc.png and its percentile table",
                 "nlmebayes vpc run1 --pred-corr --n 500")  # fmt: skip
    v.add_argument("run", type=Path, help="folder written by 'nlmebayes fit'")
    v.add_argument("--n", type=int, default=200, help="simulated replicates of the data (200)")
    v.add_argument("--seed", type=int, default=1, help="random seed (1)")
    v.add_argument("--pred-corr", action="store_true", help="prediction-corrected VPC")
    v.add_argument("--log", action="store_true", help="log y axis")


def _simulate_parser(sub) -> None:
    s = _command(sub, "simulate", "predict a dosing regimen for a virtual population from a saved fit",
                 "nlmebayes simulate run1 --dose 320 --every 12 --doses 5 --times 0:72:1")  # fmt: skip
    s.add_argument("run", type=Path, help="folder written by 'nlmebayes fit'")
    s.add_argument("--dose", type=float, required=True, help="amount per dose")
    s.add_argument("--every", type=float, help="dosing interval (for --doses > 1)")
    s.add_argument("--doses", type=int, default=1, help="number of doses (1)")
    s.add_argument("--route", default="oral", help="oral (depot) or iv (central) (oral)")
    s.add_argument("--duration", type=float, help="infusion duration (iv)")
    s.add_argument("--times", default="0:24:1", help="observation grid start:stop:step (0:24:1)")
    s.add_argument(
        "--subjects", type=int, default=100, help="virtual subjects, covariates resampled from the data (100)"
    )
    s.add_argument("--level", default="population", choices=["typical", "population", "individual"],
                   help="typical (etas 0), population (new etas) or individual (population)")  # fmt: skip
    s.add_argument("--draws", type=int, default=200, help="posterior draws (200)")
    s.add_argument("--seed", type=int, default=1, help="random seed (1)")
    s.add_argument("--out", type=Path, help="CSV of the 5/50/95%% quantiles (default RUN/simulation.csv)")


def _convert_parser(sub) -> None:
    c = _command(sub, "convert", "convert a NONMEM control stream (and its $DATA) to a model file and CSV",
                 "nlmebayes convert run1.mod --ext run1.ext --out converted")  # fmt: skip
    c.add_argument("control_stream", type=Path, help="NONMEM control stream (.mod/.ctl)")
    c.add_argument("--out", type=Path, default=Path("."), help="folder for NAME.toml and NAME.csv (.)")
    c.add_argument("--ext", type=Path, help="NONMEM .ext: print our OFV at its estimates beside NONMEM's")


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
    from nlmebayes.io.nonmem.tables import write_tables

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
    result = fit(spec, data, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed,
                 progressbar=not args.no_progress)  # fmt: skip
    result.save(args.out / "result.nc")
    _write_outputs(result, args.out, args.html)


def _report(args) -> None:
    _write_outputs(_saved(args.run), args.run, args.html)


def _check(args) -> None:
    spec, data = _read(args.model, args.data)
    print(f"model {args.model}: {spec.name}, {len(spec.parameters)} typical values, IIV on "
          f"{', '.join(spec.iiv_parameters) or 'none'}")  # fmt: skip
    if data is not None:
        print(data.summary())


def _saved(run: Path):
    from nlmebayes import FitResult

    path = run / "result.nc"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no saved result (write one with 'nlmebayes fit ... --out {run}')")
    return FitResult.load(path)


def _vpc(args) -> None:
    from nlmebayes.plots import vpc_plot

    fig = vpc_plot(_saved(args.run), n=args.n, seed=args.seed, pred_corr=args.pred_corr, log=args.log)
    fig.savefig(args.run / "vpc.png", dpi=120)
    fig.nlme_data["percentiles"].to_csv(args.run / "vpc_percentiles.csv", index=False)
    print(f"written to {args.run}/: vpc.png, vpc_percentiles.csv")


def _grid(text: str):
    from nlmebayes.simulation import grid

    try:
        start, stop, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"--times {text!r}: write start:stop:step, e.g. 0:72:1") from None
    return grid(start, stop, step)


def _simulate(args) -> None:
    from nlmebayes.simulation import Regimen, predict, prediction_summary, regimen_design, virtual_population

    result = _saved(args.run)
    route = int(args.route) if args.route.isdigit() else args.route
    plan = Regimen(args.dose, every=args.every, doses=args.doses, route=route, duration=args.duration)
    population = virtual_population(args.subjects, data=result.data, seed=args.seed)
    design = regimen_design(result.spec, plan, _grid(args.times), population)
    pred = predict(result, design, level=args.level, draws=args.draws, seed=args.seed)
    q = prediction_summary(pred, quantiles=(0.05, 0.5, 0.95)).to_dataframe(name="ipred")["ipred"]
    table = q.unstack("quantile").rename(columns=lambda v: f"q{round(100 * v):02d}").reset_index()
    out = args.out or args.run / "simulation.csv"
    table.to_csv(out, index=False)
    print(f"{plan.label}, {args.subjects} subjects, {args.level} level, {args.draws} draws")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nwritten to {out}")


def _convert(args) -> None:
    from nlmebayes.io.nonmem.control_stream import read_control_stream

    if not args.control_stream.exists():
        raise FileNotFoundError(f"{args.control_stream}: no such file")
    m = read_control_stream(args.control_stream)
    toml, csv = m.write(args.out)
    print(f"{args.control_stream} -> {toml}, {csv}")
    print(f"model: {m.spec.structural}, typical values {', '.join(m.spec.parameter_names)}; IIV on "
          f"{', '.join(m.spec.iiv_parameters) or 'none'}; error {m.spec.error.kind}")  # fmt: skip
    print(m.data.summary())
    for note in m.notes:
        print(f"note: {note}")
    if args.ext:
        _compare_ofv(m, args.ext)
    print(f"next: nlmebayes fit {toml} {csv} --out run1")


def _compare_ofv(m, ext_path: Path) -> None:
    from nlmebayes.diagnostics import marginal_likelihood
    from nlmebayes.io.nonmem.results import read_ext

    ext = read_ext(ext_path)
    ofv = marginal_likelihood(m.spec, m.data, ext.population_values(m.spec, m.nonmem_names)).ofv
    print(
        f"OFV at NONMEM's estimates: nlmebayes {ofv:.3f}, NONMEM {ext.ofv:.3f} "
        f"(difference {ofv - ext.ofv:+.4f})"
    )


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

    commands = {"fit": _fit, "report": _report, "check": _check, "vpc": _vpc, "simulate": _simulate,
                "convert": _convert}  # fmt: skip

    args = _parser().parse_args(argv)
    try:
        commands[args.command](args)
    except (FileNotFoundError, ModelFileError, DataError, ValueError, ImportError) as e:
        print(f"nlmebayes {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
