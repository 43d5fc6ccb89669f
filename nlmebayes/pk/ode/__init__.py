"""General (nonlinear) structural models as ODE systems, solved inside the compiled model.

A model is a set of named states (compartments, numbered from 1 in the data's CMT as listed)
with right-hand sides written as expressions of states and parameters, e.g. ::

    ODE(states=["depot", "central"],
        rhs={"depot": "-KA * depot", "central": "KA * depot - VMAX * central / (KM * V + central)"},
        observe="central / V")

The expressions become PyTensor graphs; their Jacobians with respect to the states and the
parameters are derived symbolically and compiled with numba, and a numba integrator solves every
subject's system with its doses. The Op :class:`ODESolve` has a numba implementation, so nutpie
runs it in its compiled model without Python callbacks; its gradient comes from forward
sensitivities ``S = dA/dp`` integrated with the states.

Several outputs: ``observe={"cp": "central / V", "pca": "effect"}`` gives each observation the
output named by its DVID. Initial amounts: ``initial={"effect": "E0"}`` (expressions of
parameters, differentiated like the right-hand sides) set the states at each subject's first
record and again after every reset.

Layout: :mod:`.expressions` (parse, names, symbolic derivatives) -> :mod:`.codegen` (numba
kernels) -> :mod:`.integrators` (Dormand-Prince, Rosenbrock) -> :mod:`.solver` (the event loop)
and :mod:`.schedule` (dosing arrays) -> :mod:`.op` (the PyTensor Op) -> :mod:`.system` (the
structural model and the ready ODE models).

Integrators, both adaptive with error control on the states and the (log-scaled) sensitivities:
Dormand-Prince 5(4) (``method="dopri5"``, default, explicit; it steps over observation times and
interpolates them with its order-4 continuous extension) and, for stiff systems, the L-stable
Rosenbrock (2,3) pair of Shampine & Reichelt (1997, MATLAB's ``ode23s``;
``method="rosenbrock23"``) using the exact Jacobian of the state + sensitivity system (second
derivatives of the right-hand side included). We chose numba over JAX/diffrax because nutpie's
default backend is numba and a JAX Op would only dispatch in JAX mode.

The right-hand side, its Jacobians and the sensitivity equations are generated as one unrolled,
allocation-free numba kernel (symbolic derivatives of the expression tree,
:func:`~.expressions.derivative`). Speed: a theophylline gradient (12 subjects, rtol 1e-6)
costs ~110 us against ~10 us for the closed form. The solver of a system is compiled once (about
25 s for a one-compartment model) behind a C signature and kept on disk, independent of the data;
a model's code calls it by a symbol, so compiling a model (for nutpie too) does not compile the
solver again (:mod:`.op`).

Dosing: bolus doses add to their state; infusions (RATE > 0) are piecewise-constant inputs; TLAG
and F (if the model has them) act on doses into ``dose_state`` (the first state by default), F
scaling the amount (and the infusion's duration, as NONMEM does). Sensitivities jump at doses
(F) and at event times that move with TLAG and F. Reset events (EVID 3, and EVID 4 with its
dose) restart the system from the initial amounts. Steady state (SS=1 replaces the state, SS=2
adds to it; boluses and infusions that end within the interval) is the periodic state reached
by iterating whole dosing cycles with their sensitivities. Right-hand sides and outputs may use
the time ``t``.

Parameters that change within a subject (IOV, time-varying covariates) switch at the records,
as in NONMEM (a record's values hold over the interval that ends at it;
:mod:`nlmebayes.data.periods`): the solver integrates the sensitivities to the parameters of
every period of a segment (``K n_p`` columns for the most periods ``K`` of any segment), so
the cost of a gradient grows with ``K``. Modelled infusion durations (RATE = -2, parameter D)
drive the sensitivities through the rate's derivatives. Not yet supported, and rejected with an
error naming the row: steady state with RATE = -2, constant-rate steady-state infusions and
steady-state infusions longer than their interval; the Rosenbrock method with parameters that
change within a subject.
"""

from nlmebayes.pk.ode.expressions import expression_names, parse_expression
from nlmebayes.pk.ode.op import ODESolve
from nlmebayes.pk.ode.system import ODE_MODELS, ODESystem

__all__ = ["ODESystem", "ODESolve", "parse_expression", "expression_names", "ODE_MODELS"]
