"""Stepwise covariate modelling (SCM), as PsN's ``scm`` does it, with Bayesian fits on Dask.

Forward inclusion: from the base model, fit the current model plus each remaining candidate (one
:func:`~nlmebayes.search.sweep` per step, in parallel) and add the candidate with the largest drop
in OFV, if the drop exceeds its threshold; repeat until none does. Backward elimination: from the
forward model, refit without each included effect and remove the one whose removal raises the OFV
least, if the rise is below its threshold; repeat until every removal costs more.

Thresholds (``criterion="ofv"``): the likelihood-ratio chi-square quantile for the effect's
degrees of freedom (1, or the number of non-reference levels of a categorical covariate) at
``forward_p`` (default 0.05: 3.84 for 1 df) and ``backward_p`` (0.01: 6.63). ``criterion="aic"``
uses 2 per degree of freedom both ways. The OFV is our FOCE-I marginal likelihood at each fit's
posterior median (:mod:`nlmebayes.diagnostics.ofv`), where NONMEM would use the maximum likelihood
estimate: with weak priors and informative data the two are close, and the OFV differences of
nested models are what the test reads.

Candidates take the forms the full covariate model gives them (:mod:`nlmebayes.model.candidates`),
so SCM and the projection selection (:mod:`.projection`) compare like with like. Every fit is
saved in ``folder`` under a name made of its effects (in a fixed order), so a model reached twice
(forward, then backward) is fitted once, and a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from nlmebayes.model.candidates import CandidateForm, candidate_forms
from nlmebayes.model.spec import CovariateCandidates, ModelSpec

__all__ = ["SCMResult", "scm"]


@dataclass
class SCMResult:
    """The result of :func:`scm`.

    Attributes
    ----------
    steps : DataFrame
        One row per model tried: step, direction (forward/backward), effect (added or removed),
        df, OFV, d_ofv (the OFV drop when adding, its rise when removing), threshold, chosen.
    selected : list of (str, str)
        The (parameter, covariate) pairs of the final model.
    spec : ModelSpec
        The final model.
    result : FitResult
        Its fit.
    n_fits : int
        Distinct models fitted (or loaded from the folder).
    seconds : float
        Wall time.
    """

    steps: pd.DataFrame
    selected: list
    spec: ModelSpec
    result: object
    n_fits: int
    seconds: float

    def __repr__(self) -> str:
        chosen = ", ".join(f"{p}~{c}" for p, c in self.selected) or "none"
        return f"SCMResult(selected: {chosen}; {self.n_fits} fits in {self.seconds:.0f} s)"


def scm(
    base: ModelSpec,
    data,
    candidates,
    folder,
    *,
    criterion: str = "ofv",
    forward_p: float = 0.05,
    backward_p: float = 0.01,
    max_levels: int = 5,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    progress: bool = True,
    **fit_kwargs,
) -> SCMResult:
    """Forward inclusion and backward elimination of covariate effects (see the module docstring).

    Parameters
    ----------
    base : ModelSpec
        The model to start from (its own covariate relations stay).
    data : EventData
    candidates : list of (str, str)
        (parameter, covariate) pairs.
    folder : str or Path
        Where each fit is saved (a rerun loads them).
    criterion : {"ofv", "aic"}
        Likelihood-ratio thresholds at ``forward_p``/``backward_p``, or AIC (2 per df).
    forward_p, backward_p : float
        Significance levels of inclusion and elimination.
    max_levels : int
        A numeric covariate with at most this many values is categorical.
    client, scheduler, n_workers
        The Dask cluster (:func:`~nlmebayes.search.sweep`); by default one local cluster serves
        every step.
    progress : bool
        Print each step's decision.
    **fit_kwargs
        Passed to :func:`~nlmebayes.fit` (draws, tune, chains, seed, ...).

    Returns
    -------
    SCMResult

    Examples
    --------
    >>> res = scm(base, data, [("CL", "WT"), ("V", "SEX")], "scm_runs", draws=500)  # doctest: +SKIP
    >>> res.steps  # doctest: +SKIP
    """
    from nlmebayes.search.sweep import _client, _close, sweep

    if criterion not in ("ofv", "aic"):
        raise ValueError(f"criterion must be 'ofv' or 'aic', got {criterion!r}")
    t0 = time.perf_counter()
    cand = CovariateCandidates(list(candidates), max_levels=max_levels)
    forms = candidate_forms(cand, data.subject_covariates(sorted({c for _, c in cand.pairs})))
    fit_kwargs = {**fit_kwargs, "diagnostics": True}  # the OFV comes with the diagnostics
    client, own = _client(client, scheduler, n_workers, 1, len(forms))
    fitted: dict = {}

    def ofv(sets: list[tuple]) -> list[float]:
        specs = {_name(base, s, forms): _spec(base, s, forms) for s in sets}
        new = {n: sp for n, sp in specs.items() if n not in fitted}
        if new:
            fitted.update(sweep(new, data, folder, client=client, progress=False, **fit_kwargs).results)
        return [_ofv(fitted[_name(base, s, forms)]) for s in sets]

    def threshold(j: int, p: float) -> float:
        df = len(forms[j].labels)
        return 2.0 * df if criterion == "aic" else float(stats.chi2.ppf(1 - p, df))

    rows: list[dict] = []
    try:
        current: tuple = ()
        (now,) = ofv([current])
        step = 0
        while True:  # forward
            left = [j for j in range(len(forms)) if j not in current]
            if not left:
                break
            step += 1
            tried = ofv([(*current, j) for j in left])
            drops = {j: now - o for j, o in zip(left, tried, strict=True)}
            best = max(left, key=lambda j: drops[j] - threshold(j, forward_p))
            ok = drops[best] > threshold(best, forward_p)
            rows += _rows(
                step, "forward", forms, drops, tried, left, best if ok else None, threshold, forward_p
            )
            _say(progress, rows[-len(left) :], ok)
            if not ok:
                break
            current, now = (*current, best), now - drops[best]
        while current:  # backward
            step += 1
            tried = ofv([tuple(k for k in current if k != j) for j in current])
            rises = {j: o - now for j, o in zip(current, tried, strict=True)}
            worst = min(current, key=lambda j: rises[j] - threshold(j, backward_p))
            ok = rises[worst] < threshold(worst, backward_p)
            rows += _rows(step, "backward", forms, rises, tried, list(current), worst if ok else None,
                          threshold, backward_p)  # fmt: skip
            _say(progress, rows[-len(current) :], ok)
            if not ok:
                break
            current, now = tuple(k for k in current if k != worst), now + rises[worst]
    finally:
        if own:
            _close(client)
    final = fitted[_name(base, current, forms)]
    return SCMResult(
        steps=pd.DataFrame(rows),
        selected=[(forms[j].parameter, forms[j].covariate) for j in sorted(current)],
        spec=final.spec,
        result=final,
        n_fits=len(fitted),
        seconds=time.perf_counter() - t0,
    )


def _spec(base: ModelSpec, subset, forms: list[CandidateForm]) -> ModelSpec:
    covs = [forms[j].covariate_relation() for j in sorted(subset)]
    return dataclasses.replace(base, name=_name(base, subset, forms), covariates=[*base.covariates, *covs])


def _name(base: ModelSpec, subset, forms: list[CandidateForm]) -> str:
    """The same effects give the same name, in whatever order they were added."""
    return "__".join([base.name, *[f"{forms[j].parameter}-{forms[j].covariate}" for j in sorted(subset)]])


def _ofv(result) -> float:
    if "marginal" not in result.idata.children:
        raise ValueError(
            f"fit {result.spec.name} has no OFV: its model is not covered by the marginal likelihood"
        )
    return float(result.idata["marginal"].attrs["ofv"])


def _rows(step, direction, forms, delta, tried, idx, chosen, threshold, p) -> list[dict]:
    return [
        {
            "step": step,
            "direction": direction,
            "effect": f"{forms[j].parameter}~{forms[j].covariate}",
            "df": len(forms[j].labels),
            "ofv": o,
            "d_ofv": delta[j],
            "threshold": threshold(j, p),
            "chosen": j == chosen,
        }
        for j, o in zip(idx, tried, strict=True)
    ]


def _say(progress: bool, rows: list[dict], ok: bool) -> None:
    if not progress:
        return
    r = (
        max(rows, key=lambda r: r["d_ofv"] - r["threshold"])
        if rows[0]["direction"] == "forward"
        else min(rows, key=lambda r: r["d_ofv"] - r["threshold"])
    )
    if ok:
        what = f"{'adds' if r['direction'] == 'forward' else 'removes'} {r['effect']}"
    else:
        what = "stops" + (
            " (no effect passes)" if r["direction"] == "forward" else " (every removal costs more)"
        )
    print(
        f"SCM step {r['step']} ({r['direction']}): best {r['effect']} dOFV {r['d_ofv']:.2f} "
        f"vs {r['threshold']:.2f}: {what}",
        flush=True,
    )
