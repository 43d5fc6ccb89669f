"""The structural-model interface and the registry of models by name.

A structural model turns individual parameters into predictions at the observations. Anything
that has the methods of :class:`StructuralModel` can be registered under a name with
:func:`register_model` and then used as ``ModelSpec(structural="name", ...)``. The analytic
compartment models (:mod:`.analytic`) and the ODE systems (:mod:`.ode`) both implement it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from nlmebayes.data import EventData

__all__ = ["DOSING_PARAMETERS", "StructuralModel", "register_model", "get_model", "model_names"]

#: Parameters that act through the dose records, which every built-in model takes when the spec
#: has them: lag time, bioavailability and modelled infusion duration (RATE = -2).
DOSING_PARAMETERS = ("TLAG", "F", "D")


@runtime_checkable
class StructuralModel(Protocol):
    """What the graph builder needs from a structural model.

    Its name, required and optional parameters (CL, V, KA, ...; TLAG, F, ...), two checks and
    the prediction at every observation.
    """

    @property
    def name(self) -> str:
        """The model's name."""
        ...

    @property
    def parameters(self) -> tuple[str, ...]:
        """Required structural parameters."""
        ...

    @property
    def optional_parameters(self) -> tuple[str, ...]:
        """Parameters the model uses when the spec has them."""
        ...

    def check(self, data: EventData) -> None:
        """Raise a DataError naming the row if ``data`` do not suit the model.

        For example a compartment the model does not have, or dosing it does not support.
        """
        ...

    def check_parameters(self, names) -> None:
        """Raise ValueError if ``names`` are not a valid parameter set of the model."""
        ...

    def concentration(self, data: EventData, params: dict, index=None) -> Any:
        """Prediction at every observation of ``data`` (a tensor of shape ``(n_obs,)``).

        ``params`` maps parameter names to tensors with one row per subject (or per
        occasion, with ``index`` giving each dose's row). A model with the optional attribute
        ``piecewise_parameters = True`` also takes ``index`` as a
        :class:`~nlmebayes.data.periods.ParameterRows`: one row of ``params`` per period, the
        parameters changing between records (IOV, time-varying covariates).
        """
        ...


_REGISTRY: dict[str, StructuralModel] = {}


def register_model(model: StructuralModel, name: str | None = None, *, replace: bool = False) -> None:
    """Make ``model`` available as ``ModelSpec(structural=name)``.

    Parameters
    ----------
    model : StructuralModel
        An object with the interface's methods.
    name : str, optional
        Registry name; defaults to ``model.name``.
    replace : bool
        Allow replacing a registered model of that name.

    Examples
    --------
    >>> from nlmebayes.pk.analytic import Compartmental
    >>> register_model(Compartmental("my_1cpt_iv", 1, False))
    >>> get_model("my_1cpt_iv").parameters
    ('CL', 'V')
    """
    if not isinstance(model, StructuralModel):
        raise TypeError(
            f"{model!r} does not implement StructuralModel (name, parameters, "
            f"optional_parameters, check, check_parameters, concentration)"
        )
    name = name or model.name
    if name in _REGISTRY and not replace:
        raise ValueError(f"a structural model named {name!r} is registered already; pass replace=True")
    _REGISTRY[name] = model


def _load_builtin() -> None:
    # The analytic models register on import; the ODE library (numba) only when asked for.
    import nlmebayes.pk.analytic  # noqa: F401


def model_names() -> list[str]:
    """Names of the registered structural models (the ODE library included).

    Examples
    --------
    >>> "1cpt_oral" in model_names() and "1cpt_oral_ode" in model_names()
    True
    """
    _load_builtin()
    import nlmebayes.pk.ode  # noqa: F401

    return list(_REGISTRY)


def get_model(structural) -> StructuralModel:
    """The structural model of a spec.

    Parameters
    ----------
    structural : str, ODE or ClosedForm
        A registered name (analytic models such as ``"1cpt_oral"``, the ODE library's ``*_ode``
        models, or your own), an :class:`nlmebayes.model.spec.ODE` or a
        :class:`~nlmebayes.model.spec.ClosedForm`.

    Returns
    -------
    StructuralModel

    Examples
    --------
    >>> get_model("2cpt_iv").parameters
    ('CL', 'V', 'Q', 'V2')
    """
    _load_builtin()
    if isinstance(structural, str):
        if structural not in _REGISTRY:
            import nlmebayes.pk.ode  # noqa: F401  (registers the ODE library)
        if structural in _REGISTRY:
            return _REGISTRY[structural]
        raise ValueError(
            f"unknown structural model {structural!r}; choose one of {list(_REGISTRY)} or give an ODE"
        )
    from nlmebayes.model.spec import ClosedForm

    if isinstance(structural, ClosedForm):
        from nlmebayes.pk.closed_form import ClosedFormModel

        return ClosedFormModel(structural)
    from nlmebayes.pk.ode import ODESystem

    return ODESystem.from_spec(structural)
