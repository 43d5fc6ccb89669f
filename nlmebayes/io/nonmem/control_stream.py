"""NONMEM control streams in: a ``ModelSpec`` and the ``EventData`` from a ``.mod`` file.

Pharmpy parses the control stream (records, abbreviated code, $THETA/$OMEGA/$SIGMA, $INPUT and
$DATA with IGNORE/ACCEPT filters, DROP and renames). This module reads Pharmpy's symbolic model
into our declarative spec, and refuses, with the record, the line and the construct, anything the
spec cannot say exactly: a silently different model would be worse than none.

What converts:

- ``$SUBROUTINE ADVAN1/2 TRANS1`` (K, V) and ``TRANS2``, ``ADVAN3/4/11/12 TRANS4``, with the
  scale ``S1``/``S2`` equal to the central volume, and ``ALAG1``, ``F1``, ``D1`` as TLAG, F and D;
- ``$PK``: each structural parameter ``TV * EXP(ETA(n))`` (log-normal) or ``TV + ETA(n)``
  (additive), with ``TV`` a product of one THETA and covariate factors: ``COV`` and
  ``(COV/ref)**THETA`` (power; a number for a fixed exponent), ``EXP(THETA*(COV-ref))``
  (exponential, which also covers MU-referencing ``EXP(LOG(THETA) + THETA*LOGWT + ETA)``),
  ``1 + THETA*(COV-ref)`` (linear) and ``IF (COND) TV = TV*(1+THETA)`` (indicator);
- ``$OMEGA`` diagonal and ``BLOCK(n)``; ``$SIGMA``; ``$ERROR`` additive ``Y=F+EPS(1)``,
  proportional ``Y=F+F*EPS(1)`` (``W=F``), combined (two EPS, or one EPS with
  ``W=SQRT(THETA(a)**2+THETA(b)**2*F**2)`` and ``$SIGMA 1 FIX``; ``W=THETA(a)+THETA(b)*F``: SDs that
  add, ``combined_sd``), exponential ``Y=F*EXP(EPS(1))``;
- ``$DES`` (ADVAN6/8/9/13...): an :class:`~nlmebayes.model.spec.ODE` whose states are ``$MODEL``'s
  compartments and whose right-hand sides are the ``DADT`` expressions with intermediate
  variables expanded down to the structural parameters (the ``$PK`` variables that read as
  ``TV * EXP(ETA)`` with covariates); the output is ``Y`` at EPS = 0 (one amount over a volume).

What does not (each an error naming it): ``$DES`` right-hand sides of time ``T`` (e.g. a lag
written as ``IF (T.GE.TLAG)``) or of data columns, TRANS1 of the multi-compartment ADVANs (rate
constants K12, K21..), TRANS3/5/6, lag/bioavailability/duration of other compartments,
``$OMEGA ... FIX`` (every omega is estimated here), ``$MIX``, a scale
other than the central volume, ETAs that enter a parameter in another way, and residual models
outside the four above.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nlmebayes.data.read import build_events
from nlmebayes.model.spec import IIV, ODE, Covariate, ModelSpec, Parameter, ResidualError

__all__ = ["ControlStreamError", "ConvertedModel", "read_control_stream"]

# ADVAN/TRANS -> (our structural model, {NONMEM parameter: ours}, scale symbol)
_ADVANS = {
    (1, 1): ("1cpt_iv", {"K": "K", "V": "V"}, "S1"),
    (1, 2): ("1cpt_iv", {"CL": "CL", "V": "V"}, "S1"),
    (2, 1): ("1cpt_oral", {"K": "K", "V": "V", "KA": "KA"}, "S2"),
    (2, 2): ("1cpt_oral", {"CL": "CL", "V": "V", "KA": "KA"}, "S2"),
    (3, 4): ("2cpt_iv", {"CL": "CL", "V1": "V", "Q": "Q", "V2": "V2"}, "S1"),
    (4, 4): ("2cpt_oral", {"CL": "CL", "V2": "V", "Q": "Q", "V3": "V2", "KA": "KA"}, "S2"),
    (11, 4): ("3cpt_iv", {"CL": "CL", "V1": "V", "Q2": "Q", "V2": "V2", "Q3": "Q3", "V3": "V3"}, "S1"),
    (12, 4): (
        "3cpt_oral",
        {"CL": "CL", "V2": "V", "Q3": "Q", "V3": "V2", "Q4": "Q3", "V4": "V3", "KA": "KA"},
        "S2",
    ),
}
# ADVANs whose model is written in $DES (general linear and nonlinear ODEs).
_GENERAL_ADVANS = (6, 8, 9, 13, 14, 15, 16, 17, 18)
# sympy's names of functions -> those of our expression syntax (nlmebayes.model.expressions).
_FUNCTION_NAMES = {"Abs(": "abs(", "Min(": "min(", "Max(": "max("}
# Dosing items of compartment 1 (the depot of oral ADVANs, else central) -> the analytic models'
# optional parameters; those of other compartments are refused.
_OPTIONAL = {"ALAG1": "TLAG", "F1": "F", "D1": "D"}
_DOSING_ITEMS = re.compile(r"^(ALAG|F|D|R)\d+$")


class ControlStreamError(ValueError):
    """A control stream that cannot be converted; the message names the file, record, line, construct."""


@dataclass(frozen=True)
class ConvertedModel:
    """What :func:`read_control_stream` returns.

    Attributes
    ----------
    spec : ModelSpec
    data : EventData
        The dataset of ``$DATA`` with ``$INPUT``'s names, IGNORE/ACCEPT applied and DROP columns left out.
    nonmem_names : dict
        Our name of each estimated quantity -> NONMEM's (``{"CL": "THETA(1)", "omega2(CL)":
        "OMEGA(1,1)", "sigma2_prop": "SIGMA(1,1)", ...}``), for reading ``.ext``/``.phi`` results.
    notes : list of str
        What was read but left out (e.g. ``$PK`` variables used only in ``$TABLE``).
    table : DataFrame
        The records of ``data`` as a table (what :meth:`write` saves as CSV).
    """

    spec: ModelSpec
    data: object
    nonmem_names: dict
    notes: list = field(default_factory=list)
    table: object = None

    def write(self, folder) -> tuple[Path, Path]:
        """Write ``<name>.toml`` and the records as ``<name>.csv`` into ``folder``; return both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        toml, csv = folder / f"{self.spec.name}.toml", folder / f"{self.spec.name}.csv"
        self.spec.to_toml(toml)
        self.table.to_csv(csv, index=False, na_rep=".")
        return toml, csv


@dataclass
class _Source:
    """The control stream's text, to name the line of a construct in an error."""

    path: Path
    lines: list[str]

    def line_of(self, record: str, pattern: str, last: bool = False) -> int | None:
        """1-based line in ``$record`` (abbreviations allowed) where ``pattern`` (regex) matches."""
        current, hits = None, []
        for i, raw in enumerate(self.lines, start=1):
            code = raw.split(";", 1)[0]
            m = re.match(r"\s*\$(\w+)", code)
            if m:
                current = m.group(1).upper()
                code = code[m.end() :]
            if current and record.startswith(current[:3]) and re.search(pattern, code, re.I):
                hits.append(i)
        return (hits[-1] if last else hits[0]) if hits else None

    def error(self, record: str, line: int | None, msg: str) -> ControlStreamError:
        where = f"{self.path.name}: ${record}" + (f" line {line}" if line else "")
        return ControlStreamError(f"{where}: {msg}")


def read_control_stream(path) -> ConvertedModel:
    """Convert a NONMEM control stream (and its ``$DATA``) into a spec and event data.

    Parameters
    ----------
    path : str or Path
        The ``.mod``/``.ctl`` file; ``$DATA`` is found relative to it.

    Returns
    -------
    ConvertedModel
        ``spec``, ``data``, ``nonmem_names`` (for :func:`nlmebayes.io.read_ext`) and ``notes``.

    Raises
    ------
    ControlStreamError
        On a construct the spec cannot express, naming the record, line and construct.
    ImportError
        Without Pharmpy (``pip install nlmebayes[nonmem]``).

    Examples
    --------
    >>> from nlmebayes.datasets import path
    >>> m = read_control_stream(path("pheno_real.mod"))  # doctest: +SKIP
    >>> m.spec.structural, [c.name for c in m.spec.covariates]  # doctest: +SKIP
    ('1cpt_iv', ['theta_CL_WGT', 'theta_V_WGT', 'theta_V_APGR'])
    """
    path = Path(path)
    src = _Source(path, path.read_text().splitlines())
    structural, names, scale = _structure(src)
    model = _pharmpy_model(path)
    conv = _Converter(src, model, names)
    if structural is None:
        structural, parameters, covariates, iiv = conv.des(path.stem)
    else:
        parameters, covariates, iiv = conv.pk(scale)
    error = conv.error(scale)
    spec = ModelSpec(
        name=path.stem,
        structural=structural,
        parameters=parameters,
        covariates=covariates,
        iiv=iiv,
        error=error,
        description=f"Converted from {path.name}: {_problem(src)}",
    )
    data, table = _data(src, model)
    return ConvertedModel(spec, data, conv.nonmem_names, conv.notes, table)


def _pharmpy_model(path: Path):
    try:
        from pharmpy.modeling import read_model
    except ImportError as e:  # pragma: no cover - the extra is installed in the dev set-up
        raise ImportError("reading control streams needs Pharmpy: pip install 'nlmebayes[nonmem]'") from e
    try:
        with _quiet():
            return read_model(path)
    except Exception as e:  # Pharmpy raises many types; the user needs the file and its words
        raise ControlStreamError(f"{path.name}: Pharmpy could not parse it: {e}") from None


@contextmanager
def _quiet():
    """Pandas deprecations raised inside Pharmpy (e.g. its IGNORE filters) are not the user's to act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _problem(src: _Source) -> str:
    line = src.line_of("PROBLEM", r".")
    return src.lines[line - 1].split("$PROBLEM", 1)[-1].strip() if line else ""


def _structure(src: _Source) -> tuple[str | None, dict, str]:
    """The structural model from $SUBROUTINE: our name, the parameter map and the scale symbol.

    ``(None, {}, "")`` for a general ODE ADVAN: the $DES block then says what the model is.
    """
    line = src.line_of("SUBROUTINES", r"ADVAN")
    text = src.lines[line - 1] if line else ""
    advan = re.search(r"ADVAN(\d+)", text, re.I)
    trans = re.search(r"TRANS(\d+)", text, re.I)
    if advan is None:
        raise src.error("SUBROUTINES", line, "no ADVAN: give $SUBROUTINE ADVANn TRANSm")
    a, t = int(advan.group(1)), int(trans.group(1)) if trans else 1
    if a in _GENERAL_ADVANS:
        _des_construct(src)
        return None, {}, ""
    if (a, t) not in _ADVANS:
        known = ", ".join(f"ADVAN{x} TRANS{y}" for x, y in _ADVANS)
        raise src.error("SUBROUTINES", line, f"ADVAN{a} TRANS{t} is not supported; supported: {known}")
    return _ADVANS[(a, t)]


def _des_construct(src: _Source) -> None:
    """Name a right-hand side that depends on time (``T``), which our ODE right-hand sides cannot."""
    line = src.line_of("DES", r"(^|[^\w])T([^\w(]|$)")
    if line:
        raise src.error(
            "DES",
            line,
            f"{src.lines[line - 1].strip()!r} depends on time T: right-hand sides of T are not "
            "supported (write a lag time as ALAG1 in $PK of ADVAN2/4/12)",
        )


def _data(src: _Source, model) -> tuple:
    """The dataset as Pharmpy reads it ($INPUT names, IGNORE/ACCEPT), checked by our reader."""
    try:
        with _quiet():
            df = model.dataset
    except Exception as e:
        raise src.error("DATA", src.line_of("DATA", r"."), f"cannot read the dataset: {e}") from None
    if df is None:
        raise src.error("DATA", src.line_of("DATA", r"."), "the dataset was not found")
    info = model.datainfo
    table = df.drop(columns=[c.name for c in info if c.drop]).reset_index(drop=True)
    table = table.rename(columns=_reserved_names(info))
    name = Path(str(info.path)).name if info.path else "$DATA"
    return build_events(table, None, f"{name} (as read by {src.path.name})"), table


class _Converter:
    """Reads Pharmpy's $PK and $ERROR statements into parameters, covariates, IIV and error."""

    def __init__(self, src: _Source, model, names: dict):
        import sympy

        self.sp, self.src, self.model, self.names = sympy, src, model, dict(names)
        rv = model.random_variables
        self.thetas = [p.name for p in model.parameters if p.name not in rv.parameter_names]
        self.etas, self.eps = list(rv.etas.names), list(rv.epsilons.names)
        self.columns = {c.name for c in model.datainfo}
        self.nonmem_names: dict[str, str] = {}
        self.notes: list[str] = []
        self.eta_of: dict[str, tuple[str, str]] = {}  # parameter (ours) -> (eta, kind)
        self._params: dict = {}
        self._covs: list = []

    def _full(self, statements, name: str):
        """The sympy expression of ``name`` with every earlier assignment substituted."""
        return self.sp.sympify(statements.full_expression(self.sp.Symbol(name)))

    # -- $PK ------------------------------------------------------------------------------------
    def pk(self, scale: str):
        sb = self.model.statements.before_odes
        defined = _assigned(sb)
        for v in self._dosing_items(defined):
            self.names[v] = _OPTIONAL[v]
        parameters, covariates = {}, []
        for nm, ours in self.names.items():
            if nm not in defined:
                raise self.src.error(
                    "PK", None, f"{nm} is not defined; the ADVAN/TRANS needs {list(self.names)}"
                )
            typical, covs = self._parameter(nm, ours, self._full(sb, nm))
            parameters[ours] = typical
            covariates += covs
        self._check_scale(sb, scale)
        self._note_unused(sb, set(self.names) | {scale})
        return parameters, covariates, self._iiv()

    def _pk_error(self, var: str, msg: str) -> ControlStreamError:
        return self.src.error("PK", self.src.line_of("PK", rf"(^|[^\w]){var}\s*=", last=True), msg)

    def _theta_label(self, name: str) -> str:
        return f"THETA({self.thetas.index(name) + 1})"

    def _parameter(self, nm: str, ours: str, expr):
        """Split ``expr`` into its eta, typical-value THETA and covariate factors."""
        tv = self._remove_eta(nm, ours, expr)
        typical, covs, number = None, [], 1.0
        for f in self.sp.Mul.make_args(self._factorable(tv)):
            if f.is_Symbol and f.name in self.thetas:
                if typical is not None:
                    raise self._pk_error(
                        nm, f"two THETAs multiply {nm} ({typical} and {f.name}): give one typical value"
                    )
                typical = f.name
            elif f.is_number:
                number *= float(f)
            else:
                covs.append(self._covariate(nm, ours, f))
        if typical is None:
            raise self._pk_error(nm, f"{nm} = {expr} has no THETA for its typical value")
        covs = self._absorb_constant(nm, number, covs)
        p = self.model.parameters[typical]
        self._name(ours, typical, nm)
        return Parameter(ours, initial=float(p.init), fixed=bool(p.fix)), covs

    def _absorb_constant(self, nm: str, number: float, covs: list) -> list:
        """``c * COV**e`` is ``(COV/ref)**e`` with ``ref = c**(-1/e)`` (sympy folds ``(WT/70)**0.75``)."""
        if number == 1.0:
            return covs
        for i, c in enumerate(covs):
            if c.kind == "power" and c.fixed and c.reference == 1.0 and number > 0:
                covs[i] = replace(c, reference=float(f"{number ** (-1.0 / c.theta):.12g}"))
                return covs
        raise self._pk_error(nm, f"{nm} has a constant factor {number:g}: fold it into its THETA")

    def _name(self, ours: str, theta: str, nm: str) -> None:
        """Record NONMEM's label of ``theta``; one THETA may play one role only."""
        label = self._theta_label(theta)
        if label in self.nonmem_names.values():
            raise self._pk_error(
                nm, f"{theta} ({label}) is used in two places; give each effect its own THETA"
            )
        self.nonmem_names[ours] = label

    def _remove_eta(self, nm: str, ours: str, expr):
        sp = self.sp
        etas = [s for s in expr.free_symbols if s.name in self.etas]
        if len(etas) > 1:
            raise self._pk_error(
                nm, f"{nm} has {len(etas)} ETAs ({', '.join(sorted(map(str, etas)))}); give it one"
            )
        if not etas:
            return expr
        eta = etas[0]
        if eta.name in {e for e, _ in self.eta_of.values()}:
            raise self._pk_error(nm, f"{eta} acts on two parameters; an ETA may act on one only")
        for kind, rest in (
            ("lognormal", sp.powsimp(expr * sp.exp(-eta))),
            ("additive", sp.expand(expr - eta)),
        ):
            rest = sp.simplify(rest)
            if eta not in rest.free_symbols:
                self.eta_of[ours] = (eta.name, kind)
                return rest
        raise self._pk_error(nm, f"{eta} enters {nm} as {expr}; write TV*EXP(ETA) or TV+ETA")

    def _factorable(self, tv):
        """``tv`` as a product: IF-branches as factors, ``EXP(a+b)`` as ``EXP(a)*EXP(b)``."""
        sp = self.sp
        for pw in tv.atoms(sp.Piecewise):
            if len(pw.args) == 2 and pw.args[1].cond == sp.true:
                (a, cond), (b, _) = pw.args
                tv = tv.subs(pw, b * sp.Piecewise((sp.simplify(a / b), cond), (1, True)))
        return sp.expand(
            tv, power_exp=True, mul=False, multinomial=False, log=False, power_base=False, basic=False
        )

    def _covariate(self, nm: str, ours: str, f) -> Covariate:
        """One covariate factor of a typical value as a :class:`Covariate`."""
        sp = self.sp
        cols = [s.name for s in f.free_symbols if s.name in self.columns]
        ths = [s.name for s in f.free_symbols if s.name in self.thetas]
        other = [s.name for s in f.free_symbols if s.name not in self.columns and s.name not in self.thetas]
        if len(cols) != 1 or len(ths) > 1 or other:
            raise self._pk_error(nm, f"cannot read the factor {f} of {nm} as a covariate effect")
        cov, theta = sp.Symbol(cols[0]), (sp.Symbol(ths[0]) if ths else None)
        kind, ref, value = self._covariate_form(f, cov, theta)
        if kind is None:
            raise self._pk_error(
                nm,
                f"the factor {f} of {nm} is not a supported covariate form "
                "(COV**THETA, (COV/ref)**THETA, EXP(THETA*(COV-ref)), 1+THETA*(COV-ref), "
                "IF (COND) TV=TV*(1+THETA))",
            )
        condition = value if kind == "indicator" else None
        if theta is None:
            return Covariate(ours, cov.name, kind, reference=ref, theta=value, fixed=True)
        p = self.model.parameters[theta.name]
        c = Covariate(ours, cov.name, kind, ref, float(p.init), bool(p.fix), condition)
        self._name(c.name, theta.name, nm)
        return c

    def _covariate_form(self, f, cov, theta):
        """(kind, reference, fixed value or condition) of factor ``f``, or (None, 0, 0)."""
        sp = self.sp
        if isinstance(f, sp.Piecewise) and len(f.args) == 2 and f.args[1].expr == 1 and theta is not None:
            if sp.simplify(f.args[0].expr - 1 - theta) == 0:
                return "indicator", 1.0, _condition(f.args[0].cond)
            return None, 0, 0
        if f == cov:
            return "power", 1.0, 1.0
        if f.is_Pow and f.base.free_symbols == {cov} and (f.exp == theta or f.exp.is_number):
            scale = sp.simplify(f.base / cov)
            if scale.is_number and scale > 0:
                return "power", float(1 / scale), (None if theta is not None else float(f.exp))
        arg = f.args[0] if isinstance(f, sp.exp) else (f - 1 if f.is_Add else None)
        if arg is not None:
            kind = "exponential" if isinstance(f, sp.exp) else "linear"
            slope = sp.diff(arg, cov)
            coef = slope / theta if theta is not None else slope
            ref = sp.simplify(cov - arg / slope) if slope != 0 else None
            if coef.is_number and coef == 1 or (theta is None and slope.is_number):
                if ref is not None and ref.is_number:
                    return kind, float(ref), (None if theta is not None else float(slope))
        return None, 0, 0

    def _check_scale(self, sb, scale: str) -> None:
        central = next(nm for nm, ours in self.names.items() if ours == "V")
        if scale not in _assigned(sb):
            raise self.src.error(
                "PK", None, f"{scale} is not set; set {scale}={central} (concentration = amount / volume)"
            )
        s = self._full(sb, scale)
        v = self._full(sb, central)
        if self.sp.simplify(s - v) != 0:
            raise self._pk_error(
                scale,
                f"{scale} is not the central volume {central} (unit conversions in S are not supported yet)",
            )

    def _iiv(self) -> list[IIV]:
        """IIV blocks in $OMEGA order; consecutive diagonal etas of one kind share one IIV."""
        by_eta = {eta: (p, kind) for p, (eta, kind) in self.eta_of.items()}
        out: list[IIV] = []
        index = {}
        for dist in self.model.random_variables.etas:
            if any(
                self.model.parameters[str(s)].fix
                for s in dist.free_symbols
                if str(s) in self.model.parameters
            ):
                raise self.src.error(
                    "OMEGA", self.src.line_of("OMEGA", r"FIX"), f"{', '.join(dist.names)}: OMEGA FIX is not "
                    "supported (every omega is estimated here); remove FIX or the ETA"
                )  # fmt: skip
            unused = [e for e in dist.names if e not in by_eta]
            if unused:
                raise self.src.error(
                    "OMEGA", None, f"{', '.join(unused)} is declared but acts on no structural parameter"
                )
            params = [by_eta[e][0] for e in dist.names]
            kinds = [by_eta[e][1] for e in dist.names]
            var = np.atleast_2d(np.array(self._values(self.sp.sympify(dist.variance)), dtype=float))
            for e, p in zip(dist.names, params, strict=True):
                index[p] = self.etas.index(e) + 1
            sd = list(np.sqrt(np.diag(var)))
            # a BLOCK may mix log-normal and additive ETAs: one kind per parameter
            kind = kinds[0] if len(set(kinds)) == 1 else kinds
            if len(params) == 1 and out and not out[-1].block and out[-1].kind == kind:
                prev = out.pop()
                out.append(IIV(prev.parameters + params, sd=prev.sd + sd, kind=kind))
            else:
                out.append(IIV(params, sd=sd, block=len(params) > 1, kind=kind))
        for b in out:
            for i, a in enumerate(b.parameters):
                self.nonmem_names[f"omega2({a})"] = f"OMEGA({index[a]},{index[a]})"
                for c in b.parameters[:i] if b.block else []:
                    self.nonmem_names[f"omega({c},{a})"] = f"OMEGA({index[a]},{index[c]})"
        return out

    def _values(self, expr):
        """``expr`` (a symbol, a matrix of symbols) at the initial estimates."""
        values = {self.sp.Symbol(p.name): p.init for p in self.model.parameters}
        return expr.subs(values).tolist() if hasattr(expr, "tolist") else float(expr.subs(values))

    # -- $ERROR ---------------------------------------------------------------------------------
    def error(self, scale: str) -> ResidualError:
        """The residual model of ``Y`` in terms of F (amount / scale)."""
        sp = self.sp
        sa = self.model.statements.after_odes
        y = self._full(sa, "Y")
        line = self.src.line_of("ERROR", r"(^|[^\w])Y\s*=", last=True)
        if y.atoms(sp.Piecewise):
            raise self.src.error(
                "ERROR",
                line,
                "Y is set inside IF blocks; only one residual model for all records is supported",
            )
        eps = [sp.Symbol(e) for e in self.eps]
        zero = {e: 0 for e in eps}
        amount, coef = self._prediction(y.subs(zero), scale, line)
        fsym = sp.Symbol("F")
        y = sp.simplify(y.subs(amount, fsym / coef))
        if len(eps) == 1 and sp.simplify(y - fsym * sp.exp(eps[0])) == 0:
            self._sigma_label("exp", sp.sympify(self.model.random_variables[eps[0].name].variance))
            return ResidualError("exponential", exp=float(np.sqrt(self._sigma_value(eps[0].name))))
        grads = [sp.diff(y, e) for e in eps]
        if any(sp.simplify(sp.diff(g, e2)) != 0 for g in grads for e2 in eps):
            raise self.src.error(
                "ERROR",
                line,
                f"Y = {y} is not linear in EPS; supported: additive, proportional, combined, exponential",
            )
        var = sp.expand(
            sum(g.subs(zero) ** 2 * self._sigma_symbol(e.name) for g, e in zip(grads, eps, strict=True))
        )
        return self._error_kind(var, fsym, line, [g.subs(zero) for g in grads])

    def _prediction(self, y0, scale: str, line):
        """Y at EPS = 0 as (amount, coefficient): one compartment's amount times a parameter.

        Analytic ADVANs predict amount / central volume: the coefficient must be 1/S or 1/V.
        """
        sp = self.sp
        amounts = [a for a in y0.atoms(sp.core.function.AppliedUndef) if a.args == (sp.Symbol("t"),)]
        coef = sp.simplify(y0 / amounts[0]) if len(amounts) == 1 else None
        if coef is None or coef.free_symbols & set(amounts) or amounts[0] in coef.atoms(sp.Function):
            raise self.src.error(
                "ERROR", line, f"the prediction (Y at EPS=0) {y0} is not one amount over a volume"
            )
        if scale:
            central = self.model.statements.ode_system.central_compartment.amount
            sb = self.model.statements.before_odes
            volume = next(nm for nm, ours in self.names.items() if ours == "V")
            if amounts[0] != sp.sympify(central) or not self._same(sb, 1 / coef, self._full(sb, volume)):
                raise self.src.error(
                    "ERROR", line, f"the prediction {y0} is not the central amount over {scale}"
                )
        self.observed = (amounts[0], coef)
        return amounts[0], coef

    def _same(self, statements, expr, target) -> bool:
        """Whether ``expr`` (in $PK's variables) equals ``target`` (a full expression)."""
        names = set(_assigned(statements))
        full = expr.xreplace(
            {s: self._full(statements, s.name) for s in expr.free_symbols if s.name in names}
        )
        return self.sp.simplify(full - target) == 0

    # -- $DES -----------------------------------------------------------------------------------
    def des(self, name: str):
        """An ODE spec from $DES: states, right-hand sides, the observed amount over its volume."""
        sp = self.sp
        system = self.model.statements.ode_system
        sb = self.model.statements.before_odes
        states = {
            sp.sympify(a): sp.Symbol(n) for a, n in zip(system.amounts, system.compartment_names, strict=True)
        }
        self._des_dosing_items(sb)
        rhs = {}
        for eq in system.eqs:
            amount = sp.sympify(eq.lhs).args[0]
            rhs[states[amount].name] = self._expression(sp.sympify(eq.rhs).xreplace(states), sb, states)
        y0 = self._full(self.model.statements.after_odes, "Y").subs({sp.Symbol(e): 0 for e in self.eps})
        amount, coef = self._prediction(y0, "", self.src.line_of("ERROR", r"(^|[^\w])Y\s*=", last=True))
        observe = self._expression(coef * states[amount], sb, states)
        rhs_names = {str(x) for eq in system.eqs for x in sp.sympify(eq.rhs).free_symbols}
        self._note_unused(sb, rhs_names | {str(x) for x in coef.free_symbols})
        dose = system.dosing_compartments[0].name if system.dosing_compartments else None
        ode = ODE(f"{name}_des", [s.name for s in states.values()], rhs, observe, dose, states[amount].name)
        return ode, self._params, self._covs, self._iiv()

    def _dosing_items(self, defined: list[str]) -> list[str]:
        """The ALAG1/F1/D1 among ``defined``; a dosing item of another compartment is refused."""
        for v in defined:
            if _DOSING_ITEMS.match(v) and v not in _OPTIONAL:
                raise self._pk_error(
                    v, f"{v}: only ALAG1, F1 and D1 (the dosing compartment's lag, bioavailability, "
                    "duration) are supported"
                )  # fmt: skip
        return [v for v in defined if v in _OPTIONAL]

    def _des_dosing_items(self, sb) -> None:
        """ALAG1, F1, D1 as the ODE's TLAG, F, D (each must read as a parameter)."""
        for v in self._dosing_items(_assigned(sb)):
            if not self._try_parameter(sb, v, _OPTIONAL[v]):
                raise self._pk_error(v, f"{v} is not a THETA with covariates and an ETA")

    def _note_unused(self, sb, needed: set) -> None:
        unused = _unused(sb, needed)
        if unused:
            self.notes.append(
                f"$PK variables not used by the structural model (left out): {', '.join(unused)}"
            )

    def _try_parameter(self, sb, nm: str, ours: str) -> bool:
        """Read ``nm`` as a structural parameter if it is one (TV with covariates and an ETA)."""
        saved = dict(self.eta_of), dict(self.nonmem_names)
        try:
            p, covs = self._parameter(nm, ours, self._full(sb, nm))
        except ControlStreamError:
            self.eta_of, self.nonmem_names = saved
            return False
        self._params[ours] = p
        self._covs += covs
        return True

    def _expression(self, expr, sb, states, depth: int = 0) -> str:
        """``expr`` in states and parameters, as our expression syntax (intermediate variables expanded)."""
        sp = self.sp
        last = {str(s.symbol): sp.sympify(s.expression) for s in sb if hasattr(s, "symbol")}
        subs = {}
        for s in sorted(expr.free_symbols, key=str):
            n = s.name
            if n in self._params or s in states.values():
                continue
            if n in last and depth < 20 and not self._try_parameter(sb, n, n):
                if s in last[n].free_symbols or last[n].atoms(sp.Piecewise):
                    raise self._pk_error(
                        n, f"{n} is set inside IF blocks and is not a parameter (TV*EXP(ETA))"
                    )
                subs[s] = sp.sympify(self._expression(last[n], sb, states, depth + 1))
            elif n not in self._params:
                what = "a data column" if n in self.columns else "not a $PK variable"
                line = self.src.line_of("DES", rf"(^|[^\w]){n}([^\w]|$)")
                msg = f"{n} in $DES is {what}; only states and $PK parameters may appear"
                raise self.src.error("DES", line, msg)
        text = str(expr.xreplace(subs))
        for a, b in _FUNCTION_NAMES.items():
            text = text.replace(a, b)
        return text

    def _sigma_symbol(self, eps: str):
        dist = self.model.random_variables[eps]
        p = self.model.parameters[str(dist.variance)]
        return p.init if p.fix else self.sp.Symbol(p.name)

    def _sigma_value(self, eps: str) -> float:
        return float(self.model.parameters[str(self.model.random_variables[eps].variance)].init)

    def _error_kind(self, var, fsym, line, grads) -> ResidualError:
        sp = self.sp
        try:
            poly = sp.Poly(var, fsym)
        except sp.PolynomialError:
            poly = None
        if poly is None or poly.degree() > 2:
            raise self.src.error("ERROR", line, f"residual variance {var} is not of the form a + b*F**2")
        c0, c1, c2 = (poly.coeff_monomial(fsym**k) for k in range(3))
        if c1 != 0:
            return self._combined_sd(grads, fsym, line)
        sd = {"add": c0, "prop": c2}
        present = [k for k, v in sd.items() if v != 0]
        kind = {("add",): "additive", ("prop",): "proportional", ("add", "prop"): "combined"}[tuple(present)]
        for k in present:
            self._sigma_label(k, sd[k])
        return ResidualError(kind, **{k: float(np.sqrt(self._values(sd[k]))) for k in present})

    def _sigma_label(self, kind: str, term) -> None:
        """NONMEM's name of a residual variance (SIGMA) or of a THETA that is the SD itself."""
        syms = [s.name for s in term.free_symbols]
        if len(syms) != 1:
            raise self.src.error(
                "ERROR", None, f"the {kind} residual variance {term} has {len(syms)} parameters"
            )
        if syms[0] in self.thetas:
            self.nonmem_names[f"sigma_{kind}"] = self._theta_label(syms[0])
        else:
            i = [str(self.model.random_variables[e].variance) for e in self.eps].index(syms[0]) + 1
            self.nonmem_names[f"sigma2_{kind}"] = f"SIGMA({i},{i})"

    def _combined_sd(self, grads, fsym, line) -> ResidualError:
        """``W = THETA(a) + THETA(b)*F`` with ``$SIGMA 1 FIX``: SDs that add (combined_sd)."""
        sp = self.sp
        if len(grads) != 1:
            raise self.src.error("ERROR", line, "W = a + b*F needs one EPS with $SIGMA 1 FIX")
        w = sp.expand(grads[0])
        a, b = w.subs(fsym, 0), sp.diff(w, fsym)
        if fsym in b.free_symbols:
            raise self.src.error(
                "ERROR", line, f"residual SD {w} is not of the form a + b*F or sqrt(a**2 + b**2*F**2)"
            )
        if not all(t.is_Symbol and t.name in self.thetas for t in (a, b)):
            raise self.src.error("ERROR", line, f"W = {w}: give THETAs for the additive and proportional SDs")
        if self._sigma_value(self.eps[0]) != 1:
            raise self.src.error("ERROR", line, "W = a + b*F needs $SIGMA 1 FIX (the THETAs are the SDs)")
        self._sigma_label("add", a)
        self._sigma_label("prop", b)
        return ResidualError("combined_sd", add=float(self._values(a)), prop=float(self._values(b)))


def _reserved_names(info) -> dict:
    """``$INPUT CONC=DV`` keeps the name CONC: give ID, TIME and DV their reserved names back."""
    out = {}
    for attr, reserved in (("id_column", "ID"), ("idv_column", "TIME"), ("dv_column", "DV")):
        try:
            name = getattr(info, attr).name
        except (IndexError, KeyError, AttributeError):  # Pharmpy found no column of that type
            continue
        if name != reserved:
            out[name] = reserved
    return out


def _assigned(statements) -> list[str]:
    """Names assigned in ``statements``, in order, each once."""
    return list(dict.fromkeys(str(st.symbol) for st in statements if hasattr(st, "symbol")))


def _unused(statements, needed: set) -> list[str]:
    """Variables assigned in ``statements`` that none of ``needed`` depends on."""
    needed = set(needed)
    for st in reversed(list(statements)):
        name = str(getattr(st, "symbol", ""))
        if name in needed:
            needed |= {str(s) for s in st.expression.free_symbols}
    return [n for n in _assigned(statements) if n not in needed]


def _condition(rel) -> str:
    """A sympy relation as our condition text, e.g. ``APGR < 5``."""
    ops = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}
    op = ops.get(getattr(rel, "rel_op", ""), None)
    if op is None or not rel.rhs.is_number:
        raise ValueError(f"cannot read the condition {rel}")
    return f"{rel.lhs} {op} {float(rel.rhs):g}"
