"""ODE systems as structural models.

:class:`ODESystem` implements :class:`~nlmebayes.pk.base.StructuralModel` for an
:class:`~nlmebayes.model.spec.ODE`, and :data:`ODE_MODELS` holds ready ODE twins of the 1- and 2-compartment
models.

Several outputs: ``observe={"cp": "central / V", "pca": "effect"}`` gives each observation the
output named by its DVID. Initial amounts: ``initial={"effect": "E0"}`` (expressions of
parameters) set the states at each subject's first record and again after every reset.
Not yet supported, and rejected with an error naming the row: steady state with modelled
durations (RATE = -2) and steady-state infusions longer than their interval (see
:mod:`nlmebayes.pk.ode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytensor
import pytensor.tensor as pt

from nlmebayes.data import DataError, EventData, check_compartments
from nlmebayes.data.periods import ParameterRows
from nlmebayes.pk.base import DOSING_PARAMETERS, register_model
from nlmebayes.pk.ode.expressions import CLOCK, expression_names, parse_expression
from nlmebayes.pk.ode.op import ODESolve

__all__ = ["ODESystem", "ODE_MODELS"]


@dataclass(frozen=True)
class ODESystem:
    """An ODE system given as expressions, as a structural model.

    It implements :class:`~nlmebayes.pk.base.StructuralModel` like
    :class:`~nlmebayes.pk.analytic.Compartmental`; see :class:`nlmebayes.model.spec.ODE` for
    the fields.
    """

    name: str
    states: tuple
    rhs: tuple  # ((state, expression), ...) in state order
    outputs: tuple  # ((output name or None, expression), ...)
    dose_state: str
    observe_state: str | None
    initial: tuple = ()  # ((state, expression of parameters), ...)
    rtol: float = 1e-6
    atol: float = 1e-8
    method: str = "dopri5"
    max_steps: int = 100_000
    clock: bool = False  # the last state is the time t (right-hand sides or outputs use t)
    optional_parameters: tuple = DOSING_PARAMETERS
    alternatives = {}
    #: Parameters may change between records (periods, :mod:`nlmebayes.data.periods`).
    piecewise_parameters = True

    @classmethod
    def from_spec(cls, ode) -> ODESystem:
        """The system of an :class:`~nlmebayes.model.spec.ODE` spec."""
        outputs = tuple(ode.outputs.items())
        observe_state = ode.observe_state or (_observed_state(ode) if len(outputs) == 1 else None)
        if CLOCK in ode.states:
            raise ValueError(f"ODE {ode.name}: {CLOCK!r} is the time; give the state another name")
        used = set().union(*(expression_names(e) for e in [*ode.rhs.values(), *ode.outputs.values()]))
        if any(CLOCK in expression_names(e) for e in ode.initial.values()):
            raise ValueError(f"ODE {ode.name}: initial amounts cannot use the time {CLOCK!r}")
        clock = CLOCK in used
        # t as one more state, dt/dt = 1, set to each segment's start: no solver needs to know
        states = tuple(ode.states) + ((CLOCK,) if clock else ())
        rhs = tuple((s, ode.rhs[s]) for s in ode.states) + (((CLOCK, "1.0"),) if clock else ())
        system = cls(
            name=ode.name,
            states=states,
            rhs=rhs,
            clock=clock,
            outputs=outputs,
            dose_state=ode.dose_state or ode.states[0],
            observe_state=observe_state,
            initial=tuple((s, ode.initial[s]) for s in ode.states if s in ode.initial),
            rtol=ode.rtol,
            atol=ode.atol,
            method=ode.method,
            max_steps=ode.max_steps,
        )
        for s, e in system.initial:
            used = expression_names(e) & set(system.states)
            if used:
                raise ValueError(
                    f"ODE {ode.name}: the initial amount of {s} may use parameters "
                    f"only, not states {sorted(used)}"
                )
        return system

    @property
    def parameters(self) -> tuple[str, ...]:
        """Parameters the expressions use (every name that is not a state)."""
        exprs = [e for _, e in self.rhs] + [e for _, e in self.outputs] + [e for _, e in self.initial]
        names = set().union(*(expression_names(e) for e in exprs))
        return tuple(sorted(names - set(self.states)))

    def check_parameters(self, names) -> None:
        """Raise ValueError unless ``names`` are the parameters the system uses (plus optional ones)."""
        names = list(names)
        missing = [p for p in self.parameters if p not in names]
        extra = [p for p in names if p not in self.parameters + self.optional_parameters]
        if missing or extra:
            raise ValueError(
                f"ODE model {self.name} uses parameters {list(self.parameters)} "
                f"(optional {list(self.optional_parameters)}); missing {missing}, "
                f"unknown {extra}"
            )

    def check(self, data: EventData) -> None:
        """Raise a DataError naming the row for compartments, DVIDs or dosing the path cannot take."""
        dose = {i + 1: s for i, s in enumerate(self.states) if not (self.clock and s == CLOCK)}
        obs = (
            {self.states.index(self.observe_state) + 1: self.observe_state}
            if self.observe_state is not None
            else dose
        )
        check_compartments(data, dose, obs, self.name)
        rec = data.records
        ss = rec["_IS_DOSE"] & (rec["SS"] > 0)
        ss_inf = ss & (rec["RATE"] > 0)
        unsupported = "the ODE path does not support {} yet ({})"
        for bad, column, message in (
            (
                ss & (rec["RATE"] == -2),
                "RATE",
                unsupported.format("steady state with a modelled duration (RATE=-2)", self.name),
            ),
            (
                ss_inf & (rec["AMT"] == 0),
                "SS",
                unsupported.format("constant-rate steady-state infusions (SS=1, AMT=0, RATE>0)", self.name),
            ),
            (
                ss_inf & (rec["AMT"] >= rec["RATE"] * rec["II"]),
                "RATE",
                "a steady-state infusion must end within its dosing interval (AMT / RATE < II): "
                f"overlapping infusions at steady state are not supported ({self.name})",
            ),
        ):
            if bad.any():
                raise DataError(
                    message, source=data.source, row=int(rec.loc[bad, "_ROW"].iloc[0]), column=column
                )
        names = [o for o, _ in self.outputs]
        if names != [None]:
            labels = data.obs_output
            bad = ~np.isin(labels, names)
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"observation of DVID {labels[j]!r}, but model {self.name} has outputs {names}",
                    source=data.source,
                    row=int(data.obs_row[j]),
                    column="DVID",
                )

    def rhs_function(self, param_names):
        """Compile the right-hand side and its Jacobians from the expressions.

        Returns numba functions ``(y, p) -> (f, df/dy, df/dp)`` and, for the Rosenbrock method,
        the Jacobian of the state + sensitivity system ``(y, S, p) -> J`` (else None).
        """
        y = pt.dvector("y")
        p = pt.dvector("p")
        sym = {s: y[i] for i, s in enumerate(self.states)}
        sym.update({n: p[i] for i, n in enumerate(param_names)})
        f = pt.stack([pt.as_tensor_variable(parse_expression(e, sym)) * 1.0 for _, e in self.rhs])
        Jy = pytensor.gradient.jacobian(f, y, vectorize=True)
        Jp = pytensor.gradient.jacobian(f, p, vectorize=True, disconnected_inputs="ignore")
        fn = pytensor.function([y, p], [f, Jy, Jp], mode="NUMBA", on_unused_input="ignore")
        if self.method != "rosenbrock23":
            return fn.vm.jit_fn, None
        # Jacobian of (f, Jy S + Jp) w.r.t. (y, S): Rosenbrock needs it exactly for stability.
        S = pt.dmatrix("S")
        g = pt.concatenate([f, (pt.dot(Jy, S) + Jp).ravel()])
        Jg = pt.concatenate(
            [
                pytensor.gradient.jacobian(g, y, vectorize=True, disconnected_inputs="ignore"),
                pytensor.gradient.jacobian(g, S, vectorize=True, disconnected_inputs="ignore").reshape(
                    (g.shape[0], -1)
                ),
            ],
            axis=1,
        )
        jfn = pytensor.function([y, S, p], Jg, mode="NUMBA", on_unused_input="ignore")
        return fn.vm.jit_fn, jfn.vm.jit_fn

    def concentration(self, data: EventData, params: dict, index=None):
        """The ``observe`` expression at every observation (see the analytic models).

        ``index`` may be a :class:`~nlmebayes.data.periods.ParameterRows`: ``params`` then have
        one row per period and change at the periods' boundaries (IOV, time-varying covariates);
        each observation's output uses its own record's row.
        """
        rows = None
        if isinstance(index, ParameterRows):
            rows = index
        elif index is not None and not np.array_equal(np.asarray(index), data.dose_subject):
            raise NotImplementedError(
                "the ODE path takes parameters that change within a subject as ParameterRows "
                "(periods), not one row per dose"
            )
        self.check_parameters(params)
        self.check(data)
        names = self.parameters + tuple(
            p for p in self.optional_parameters if p in params and p not in self.parameters
        )
        if np.any(data.dose_rate == -2) and "D" not in names:
            raise ValueError("the data have RATE = -2 (modelled duration): the model needs D")
        n_rows = rows.n_rows if rows is not None else data.n_subjects
        obs_row = rows.obs_rows(data) if rows is not None else data.obs_subject
        cols = [pt.as_tensor_variable(params[n]) for n in names]
        P = pt.stack([c if c.ndim == 1 else c * pt.ones(n_rows) for c in cols], axis=1)
        op = ODESolve(self, data, names, self.rtol, self.atol, rows)
        A, _ = op(P)

        def output(expr, rows):
            sym = {s: A[rows, i] for i, s in enumerate(self.states)}
            sym.update({n: P[:, i][obs_row[rows]] for i, n in enumerate(names)})
            return parse_expression(expr, sym) * pt.ones(len(rows))

        if len(self.outputs) == 1:
            return output(self.outputs[0][1], np.arange(data.n_obs))
        labels = data.obs_output
        out = pt.zeros(data.n_obs)
        for name, expr in self.outputs:
            rows = np.flatnonzero(labels == name)
            if len(rows):
                out = pt.set_subtensor(out[rows], output(expr, rows))
        return out


def _observed_state(ode) -> str:
    used = [s for s in ode.states if s in expression_names(ode.outputs[None])]
    if len(used) != 1:
        raise ValueError(f"ODE {ode.name}: give observe_state (observe uses states {used})")
    return used[0]


_LIBRARY = {
    "1cpt_iv_ode": (["central"], {"central": "-CL / V * central"}),
    "1cpt_oral_ode": (
        ["depot", "central"],
        {"depot": "-KA * depot", "central": "KA * depot - CL / V * central"},
    ),
    "2cpt_iv_ode": (
        ["central", "periph"],
        {
            "central": "-(CL + Q) / V * central + Q / V2 * periph",
            "periph": "Q / V * central - Q / V2 * periph",
        },
    ),
    "2cpt_oral_ode": (
        ["depot", "central", "periph"],
        {
            "depot": "-KA * depot",
            "central": "KA * depot - (CL + Q) / V * central + Q / V2 * periph",
            "periph": "Q / V * central - Q / V2 * periph",
        },
    ),
    "1cpt_oral_mm_ode": (
        ["depot", "central"],
        {"depot": "-KA * depot", "central": "KA * depot - VMAX * central / (KM * V + central)"},
    ),
}


def _library():
    from nlmebayes.model.spec import ODE

    return {
        name: ODE(name=name, states=states, rhs=rhs, observe="central / V")
        for name, (states, rhs) in _LIBRARY.items()
    }


#: Ready ODE models by name; the ``*_ode`` versions of the analytic models use the same
#: parameters and compartment numbers, so switching is one word in the spec.
ODE_MODELS = _library()

for _name in ODE_MODELS:
    register_model(ODESystem.from_spec(ODE_MODELS[_name]))
