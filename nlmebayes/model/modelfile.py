"""Checks of a model file (TOML) before it becomes a :class:`~nlmebayes.model.spec.ModelSpec`.

Every section and key is checked against what the spec's classes take, so a typo is reported with
the file, the section, the key and the closest known key, instead of a bare ``KeyError`` or a
``TypeError`` from a constructor.
"""

from __future__ import annotations

import dataclasses
import difflib

__all__ = ["ModelFileError", "validate_model_dict"]


class ModelFileError(ValueError):
    """A section or key of a model file that is not understood (names file, section and key)."""


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def check_keys(given: dict, allowed, section: str, source: str, required=()) -> None:
    """Raise :class:`ModelFileError` for the first unknown or missing key of ``section``.

    Examples
    --------
    >>> try:
    ...     check_keys({"inital": 1.5}, {"initial", "prior", "fixed"}, "parameters.CL", "m.toml")
    ... except ModelFileError as e:
    ...     print(e)
    m.toml: [parameters.CL] has an unknown key 'inital'; did you mean 'initial'? Known: fixed, initial, prior
    """
    allowed = set(allowed)
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            known = ", ".join(sorted(allowed))
            raise ModelFileError(
                f"{source}: {_label(section)} has an unknown key {key!r}{hint} Known: {known}"
            )
    for key in required:
        if key not in given:
            raise ModelFileError(f"{source}: {_label(section)} lacks the key {key!r}")


def _label(section: str) -> str:
    return section if section.startswith("[") else f"[{section}]"


def validate_model_dict(d: dict, source: str = "model") -> None:
    """Check every section and key of a model dict (TOML's structure); raise ModelFileError.

    Also checks that a structural model given by name is a registered one.
    """
    from nlmebayes.model import spec as S

    top = {
        "name", "structural", "description", "parameters", "covariates", "iiv", "error",
        "observations", "iov", "levels", "flip_flop_guard", "candidates", "individual",
    }  # fmt: skip
    check_keys(d, top, "top level", source, required=("name", "structural"))
    for name, p in d.get("parameters", {}).items():
        if isinstance(p, dict):
            check_keys(
                p, {"initial", "prior", "fixed", "scale"}, f"parameters.{name}", source, required=("initial",)
            )
    for key, cls in (("covariates", S.Covariate), ("iiv", S.IIV), ("iov", S.IOV), ("levels", S.Level)):
        for i, block in enumerate(d.get(key, [])):
            check_keys(block, _fields(cls), f"[[{key}]] number {i + 1}", source)
    check_keys(d.get("candidates", {}), _fields(S.CovariateCandidates), "candidates", source)
    _check_error(d.get("error", {}), source, S)
    check_keys(d.get("observations", {}), _fields(S.Observations), "observations", source)
    structural = d["structural"]
    if isinstance(structural, dict) and "states" not in structural:
        check_keys(structural, _fields(S.ClosedForm), "structural", source, required=("name", "observe"))
    elif isinstance(structural, dict):
        check_keys(
            structural, _fields(S.ODE), "structural", source, required=("name", "states", "rhs", "observe")
        )
    else:
        _check_structural_name(structural, source)


def _check_error(err: dict, source: str, S) -> None:
    from typing import get_args

    def allowed_for(e):
        return _fields(S.Outcome) if e.get("kind") in get_args(S.OutcomeKind) else _fields(S.ResidualError)

    if "kind" in err or not err:
        check_keys(err, allowed_for(err), "error", source)
        return
    for output, e in err.items():
        if not isinstance(e, dict):
            raise ModelFileError(
                f"{source}: [error] has {output!r} = {e!r}; give kind and sigmas here, or one "
                f"[error.<output>] table per output"
            )
        check_keys(e, allowed_for(e), f"error.{output}", source, required=("kind",))


def _check_structural_name(name: str, source: str) -> None:
    from nlmebayes.pk.base import get_model, model_names

    try:
        get_model(name)  # the analytic models first: the ODE library loads only if needed
    except ValueError:
        names = model_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise ModelFileError(
            f"{source}: structural = {name!r} is not a known model{hint} Known: {', '.join(names)}, "
            "or an ODE table"
        ) from None
