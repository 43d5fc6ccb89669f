"""Structural models written as a closed-form expression of time (:class:`~nlmebayes.model.spec.ClosedForm`).

A biexponential ``A1 * exp(-K1 * t) + A2 * exp(-K2 * t)`` needs no ODE; a direct-response PD model
(``E0 + EMAX * C / (EC50 + C)``) evaluates an expression of a PK model's prediction ``C``. The
expression is a PyTensor graph, so gradients are exact and the sampler pays nothing for a solver.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from nlmebayes.data import DataError, EventData
from nlmebayes.model.expressions import expression_names
from nlmebayes.pk.ode.expressions import parse_expression

__all__ = ["ClosedFormModel"]

#: Names an observe expression may use that are not parameters.
_DATA_NAMES = ("t", "C")


class ClosedFormModel:
    """The structural model of a :class:`~nlmebayes.model.spec.ClosedForm` spec.

    Examples
    --------
    >>> from nlmebayes.model.spec import ClosedForm
    >>> ClosedFormModel(ClosedForm("biexp", "A1 * exp(-K1 * t) + A2 * exp(-K2 * t)")).parameters
    ('A1', 'A2', 'K1', 'K2')
    """

    def __init__(self, spec):
        from nlmebayes.pk.base import get_model

        self.spec = spec
        self.outputs = tuple(spec.outputs.items())
        self.pk = get_model(spec.pk) if spec.pk is not None else None

    @property
    def name(self) -> str:
        """The spec's name."""
        return self.spec.name

    @property
    def parameters(self) -> tuple[str, ...]:
        """The PK model's parameters, then the other names the expressions use (sorted)."""
        base = self.pk.parameters if self.pk is not None else ()
        used = set().union(*(expression_names(e) for _, e in self.outputs)) - set(_DATA_NAMES) - set(base)
        return tuple(base) + tuple(sorted(used))

    @property
    def optional_parameters(self) -> tuple[str, ...]:
        """The PK model's optional parameters (F, TLAG, ...)."""
        return self.pk.optional_parameters if self.pk is not None else ()

    def check_parameters(self, names) -> None:
        """Raise ValueError unless ``names`` are the parameters the expressions (and PK model) use."""
        names = list(names)
        missing = [p for p in self.parameters if p not in names]
        extra = [p for p in names if p not in self.parameters + self.optional_parameters]
        if missing or extra:
            raise ValueError(
                f"closed-form model {self.name} uses parameters {list(self.parameters)} "
                f"(optional {list(self.optional_parameters)}); missing {missing}, unknown {extra}"
            )

    def check(self, data: EventData) -> None:
        """Raise a DataError naming the row for doses without a PK model, or an unknown DVID."""
        if self.pk is not None:
            self.pk.check(data)
        elif data.n_doses:
            raise DataError(
                f"closed-form model {self.name} has no pk model, so it cannot take doses; "
                f"give ClosedForm(pk=...) or drop the dose records",
                source=data.source,
                row=int(data.dose_row[0]),
                column="AMT",
            )
        names = [o for o, _ in self.outputs]
        if names != [None]:
            bad = ~np.isin(data.obs_output, names)
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"observation of DVID {data.obs_output[j]!r}, but model {self.name} has outputs {names}",
                    source=data.source,
                    row=int(data.obs_row[j]),
                    column="DVID",
                )

    def cumulative_hazard(self, data: EventData, params: dict, outcome):
        """Each observation's cumulative hazard since the subject's previous observation.

        ``H(t) - H(t_prev)``, ``t_prev`` the previous observation's (or the first record's) time:
        from ``outcome.cumulative`` exactly, else by Gauss-Legendre quadrature of the
        (single-output) hazard over the interval.
        """
        if self.pk is not None or len(self.outputs) != 1:
            raise NotImplementedError(
                f"closed-form model {self.name}: time to event needs one hazard expression without a pk model"
            )
        t1 = data.obs_time.astype(float)
        first = data.records.groupby("_SUBJ", sort=True)["TIME"].min().to_numpy(dtype=float)
        prev = np.r_[np.nan, t1[:-1]]
        new_subject = np.r_[True, data.obs_subject[1:] != data.obs_subject[:-1]]
        t0 = np.where(new_subject, first[data.obs_subject], prev)
        sym = {
            n: (pt.as_tensor_variable(v) * pt.ones(data.n_subjects))[data.obs_subject]
            for n, v in params.items()
        }
        if outcome.cumulative is not None:
            return parse_expression(
                outcome.cumulative, {**sym, "t": pt.as_tensor_variable(t1)}
            ) - parse_expression(outcome.cumulative, {**sym, "t": pt.as_tensor_variable(t0)})
        x, w = np.polynomial.legendre.leggauss(outcome.quadrature)
        half = (t1 - t0)[:, None] / 2.0
        nodes = t0[:, None] + half * (x[None, :] + 1.0)
        h = parse_expression(
            self.outputs[0][1], {**{n: v[:, None] for n, v in sym.items()}, "t": pt.as_tensor_variable(nodes)}
        )
        return pt.sum(h * (w[None, :] * half), axis=1)

    def concentration(self, data: EventData, params: dict, index=None):
        """Each observation's output expression, with ``t`` its TIME and ``C`` the PK prediction."""
        if index is not None and not np.array_equal(np.asarray(index), data.dose_subject):
            raise NotImplementedError(f"closed-form model {self.name}: IOV is not supported yet")
        self.check_parameters(params)
        conc = None
        if self.pk is not None:
            names = self.pk.parameters + tuple(p for p in self.pk.optional_parameters if p in params)
            conc = self.pk.concentration(data, {n: params[n] for n in names}, index=index)

        def output(expr, rows):
            sym = {n: (pt.as_tensor_variable(v) * pt.ones(data.n_subjects))[data.obs_subject[rows]]
                   for n, v in params.items()}  # fmt: skip
            sym["t"] = pt.as_tensor_variable(data.obs_time[rows])
            if conc is not None:
                sym["C"] = conc[rows]
            return parse_expression(expr, sym) * pt.ones(len(rows))

        if len(self.outputs) == 1:
            return output(self.outputs[0][1], np.arange(data.n_obs))
        out = pt.zeros(data.n_obs)
        for name, expr in self.outputs:
            rows = np.flatnonzero(data.obs_output == name)
            if len(rows):
                out = pt.set_subtensor(out[rows], output(expr, rows))
        return out
