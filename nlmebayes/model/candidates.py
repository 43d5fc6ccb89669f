"""The form of each candidate covariate effect, read from the data.

A :class:`~nlmebayes.model.spec.CovariateCandidates` names (parameter, covariate) pairs only; how
each covariate enters follows from its values, the way a pharmacometrician would write it:

* a positive continuous covariate: power ``(COV/median)**theta``; design column
  ``log(COV/median)``, scaled by its SD;
* any other continuous covariate: exponential ``exp(theta (COV - median))``; column
  ``COV - median``, scaled by its SD;
* a covariate with at most ``max_levels`` values, or text: categorical ``exp(theta_level)``
  against the most common level; a 0/1 column per other level, scale 1.

All three act on the log typical value linearly (``log TV_i = log TV + sum theta_j x_ij``), so the
builder, the projection of a submodel and the refit-ready :class:`~nlmebayes.model.spec.Covariate`
of a selected effect all describe the same relation. The shrinkage prior sees the standardised
effect ``theta * scale``: per SD of the covariate, or the log fold between two levels.

This module is PyMC-free: the spec side (:mod:`nlmebayes.search`) and the builder share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nlmebayes.model.spec import Covariate, CovariateCandidates

__all__ = ["CandidateForm", "candidate_forms"]


@dataclass(frozen=True)
class CandidateForm:
    """One candidate effect as it enters the model.

    Attributes
    ----------
    parameter, covariate : str
    kind : {"power", "exponential", "categorical"}
    reference : float or str
        Median (continuous) or the most common level (categorical).
    scale : float
        SD of the design column over subjects (1 for a level's 0/1 column).
    levels : list
        Categorical: the levels other than the reference, one design column each.
    columns : ndarray (n_subjects, n_columns)
        The design on the log scale of the typical value (see the module docstring).
    """

    parameter: str
    covariate: str
    kind: str
    reference: float | str
    scale: float
    levels: list = field(default_factory=list)
    columns: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))

    @property
    def name(self) -> str:
        """Effect name, ``theta_<parameter>_<covariate>``."""
        return f"theta_{self.parameter}_{self.covariate}"

    @property
    def labels(self) -> list[str]:
        """One label per design column: the name, or ``name[level]`` for categorical ones."""
        if self.kind == "categorical":
            return [f"{self.name}[{lv}]" for lv in self.levels]
        return [self.name]

    def covariate_relation(self, theta: float = 0.0) -> Covariate:
        """The same relation as an ordinary :class:`Covariate` (for a refit without shrinkage).

        Examples
        --------
        >>> import numpy as np
        >>> form = CandidateForm("CL", "WT", "power", 70.0, 0.2, [], np.zeros((3, 1)))
        >>> rel = form.covariate_relation(0.75)
        >>> rel.kind, rel.reference, rel.theta, rel.fixed
        ('power', 70.0, 0.75, False)
        """
        return Covariate(self.parameter, self.covariate, self.kind, self.reference, float(theta))  # type: ignore[arg-type]


def candidate_forms(candidates: CovariateCandidates, covariates: pd.DataFrame) -> list[CandidateForm]:
    """The form of each candidate pair, from the subjects' covariate values.

    Parameters
    ----------
    candidates : CovariateCandidates
    covariates : DataFrame
        One row per subject (``EventData.subject_covariates``), a column per covariate named.

    Examples
    --------
    >>> import pandas as pd
    >>> cov = pd.DataFrame({"WT": [50.0, 70.0, 90.0, 60.0, 80.0, 75.0], "SEX": [0, 1, 1, 0, 1, 1]})
    >>> forms = candidate_forms(CovariateCandidates([("CL", "WT"), ("V", "SEX")]), cov)
    >>> [(f.kind, f.reference, f.levels) for f in forms]
    [('power', 72.5, []), ('categorical', 1, [0])]
    """
    forms = []
    for parameter, name in candidates.pairs:
        x = covariates[name].to_numpy()
        numeric = pd.api.types.is_numeric_dtype(x)
        if not numeric or len(np.unique(x)) <= candidates.max_levels:
            forms.append(_categorical(parameter, name, x))
            continue
        x = x.astype(float)
        ref = float(np.median(x))
        if np.all(x > 0):
            kind, col = "power", np.log(x / ref)
        else:
            kind, col = "exponential", x - ref
        scale = float(np.std(col))
        if scale == 0:
            raise ValueError(f"candidate ({parameter}, {name}): {name} takes one value in every subject")
        forms.append(CandidateForm(parameter, name, kind, ref, scale, [], col[:, None]))
    return forms


def _categorical(parameter: str, name: str, x: np.ndarray) -> CandidateForm:
    values, counts = np.unique(x, return_counts=True)
    if len(values) < 2:
        raise ValueError(f"candidate ({parameter}, {name}): {name} takes one value in every subject")
    ref = values[np.argmax(counts)]
    # the builder orders levels by their text; keep its order so that the columns match theta
    others = [v for v in sorted(values, key=str) if v != ref]
    cols = np.stack([(x == lv).astype(float) for lv in others], axis=1)
    return CandidateForm(parameter, name, "categorical", _plain(ref), 1.0, [_plain(v) for v in others], cols)


def _plain(v):
    """A numpy scalar as the Python value TOML and the builder's level lookup expect."""
    return v.item() if hasattr(v, "item") else v
