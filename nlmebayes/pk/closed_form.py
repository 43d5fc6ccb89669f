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

    def cumulative_hazard(self, data: EventData, params: dict, outcome, output=None):
        """Each time-to-event row's cumulative hazard since the subject's previous such row.

        ``H(t) - H(t_prev)`` for the rows of ``output`` (all rows for a single output), ``t_prev``
        the subject's previous row of that output (or its first record's time): from
        ``outcome.cumulative`` exactly, else by Gauss-Legendre quadrature of the hazard
        expression over the interval, with the PK model's ``C`` evaluated at the nodes. Zero on
        the other rows.
        """
        rows = np.arange(data.n_obs) if output is None else np.flatnonzero(data.obs_output == output)
        expr = dict(self.outputs)[output]
        t1, subj = data.obs_time[rows].astype(float), data.obs_subject[rows]
        first = data.records.groupby("_SUBJ", sort=True)["TIME"].min().to_numpy(dtype=float)
        new_subject = np.r_[True, subj[1:] != subj[:-1]]
        t0 = np.where(new_subject, first[subj], np.r_[np.nan, t1[:-1]])
        per_subject = {n: pt.as_tensor_variable(v) * pt.ones(data.n_subjects) for n, v in params.items()}
        sym = {n: v[subj] for n, v in per_subject.items()}
        if outcome.cumulative is not None:
            if "C" in expression_names(outcome.cumulative):
                raise ValueError(
                    f"model {self.name}: a cumulative hazard given as an expression cannot use C"
                )
            _check_vanishes_at_zero(outcome.cumulative, self.name)
            dh = self._cumulative_at(outcome.cumulative, sym, t1) - self._cumulative_at(
                outcome.cumulative, sym, t0
            )
        else:
            x, w = np.polynomial.legendre.leggauss(outcome.quadrature)
            half = (t1 - t0)[:, None] / 2.0
            nodes = t0[:, None] + half * (x[None, :] + 1.0)
            node_sym = {n: v[:, None] for n, v in sym.items()}
            node_sym["t"] = pt.as_tensor_variable(nodes)
            if self.pk is not None and "C" in expression_names(expr):
                node_sym["C"] = self._concentration_at(data, per_subject, subj, nodes)
            dh = pt.sum(parse_expression(expr, node_sym) * (w[None, :] * half), axis=1)
        return pt.set_subtensor(pt.zeros(data.n_obs)[rows], dh * pt.ones(len(rows)))

    @staticmethod
    def _cumulative_at(cumulative: str, sym: dict, t: np.ndarray):
        """``H(t)`` per row, 0 where ``t`` is 0.

        ``H`` is not evaluated at 0: the gradient of a power of ``t`` there is 0 * inf = NaN
        (Weibull's ``(t / SCALE)**SHAPE`` with SHAPE < 1).
        """
        positive = t > 0
        if positive.all():
            return parse_expression(cumulative, {**sym, "t": pt.as_tensor_variable(t)})
        at = parse_expression(cumulative, {**sym, "t": pt.as_tensor_variable(np.where(positive, t, 1.0))})
        return pt.switch(positive, at, 0.0)

    def _concentration_at(self, data: EventData, params: dict, subj, nodes):
        """The PK model's prediction at ``nodes`` (row j a time-to-event row of subject ``subj[j]``).

        The nodes become the observations of a design with the data's doses; within a subject they
        follow the intervals in time order, so the predictions come back in the nodes' order.
        """
        from nlmebayes.data.observations import observations_at

        grid = observations_at(data, data.ids[subj], nodes)
        names = self.pk.parameters + tuple(p for p in self.pk.optional_parameters if p in params)
        return self.pk.concentration(grid, {n: params[n] for n in names}).reshape(nodes.shape)

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


def _check_vanishes_at_zero(cumulative: str, model: str) -> None:
    """Refuse a cumulative hazard that is not 0 at ``t = 0``.

    It is the hazard's integral from 0, and rows starting at 0 are given ``H(0) = 0`` without
    evaluating it; checked with its other names at two sets of positive values.
    """
    names = expression_names(cumulative) - {"t"}
    for value in (0.7, 1.9):
        symbols = {n: pt.constant(value) for n in names} | {"t": pt.constant(0.0)}
        h0 = float(parse_expression(cumulative, symbols).eval(mode="FAST_COMPILE"))
        if h0 != 0.0:
            raise ValueError(
                f"model {model}: the cumulative hazard {cumulative!r} is {h0:g} at t = 0 with its "
                f"parameters at {value}; it must be the hazard's integral from 0 (0 at t = 0)"
            )
