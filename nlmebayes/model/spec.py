"""Declarative NLME model specification: what the model is, not how it is sampled.

This module never imports PyMC or PyTensor. A :class:`ModelSpec` names a structural model,
its parameters' typical values and priors, covariate relations, inter-individual variability
(IIV) and the residual error. It reads naturally in Python and round-trips through TOML::

    spec = ModelSpec(
        name="theophylline_1cpt_oral",
        structural="1cpt_oral",
        parameters={"KA": 1.5, "CL": 2.7, "V": 31.5},
        iiv=IIV(["KA", "CL", "V"], sd=[0.6, 0.3, 0.1]),
        error=ResidualError("additive", add=0.7),
    )
    spec.to_toml("theo.toml"); ModelSpec.from_toml("theo.toml") == spec

Conventions (NONMEM's and nlmixr2's):

* Typical values are on the natural scale; by default the log typical value has a
  Normal(log(initial), 2) prior (a factor of ~50 either way at 95%): weakly informative.
* IIV is log-normal (``kind="lognormal"``; NONMEM's "exponential" is accepted as an alias),
  ``P_i = TV_i * exp(eta_i)``, eta ~ N(0, Omega); ``kind="additive"`` gives
  ``P_i = TV_i + eta_i``. ``sd`` are initial values / prior scales of omega's square roots.
* Covariate relations multiply the typical value: power ``(COV/ref)^theta``, exponential
  ``exp(theta (COV - ref))``, linear ``1 + theta (COV - ref)``, indicator ``1 + theta`` where
  a condition holds (e.g. pheno's ``APGR < 5``), categorical ``exp(theta_level)``.
* Residual error sigma are standard deviations: additive ``a``, proportional ``b``; combined
  as a variance sum ``sqrt(a^2 + b^2 f^2)`` or an SD sum ``a + b f`` (NONMEM ``W = ADD + PROP*F``);
  exponential is additive on log(DV).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, cast, get_args

from nlmebayes.data.conditions import parse_condition
from nlmebayes.model.expressions import expression_names

__all__ = [
    "Prior",
    "Parameter",
    "Covariate",
    "CovariateCandidates",
    "IIV",
    "IOV",
    "Level",
    "ResidualError",
    "ODE",
    "Observations",
    "ModelSpec",
    "CovariateKind",
    "EtaKind",
    "Parameterisation",
    "ParameterScale",
    "ClosedForm",
    "Outcome",
    "HAZARDS",
    "OutcomeKind",
    "ErrorKind",
    "ResidualDistribution",
    "ODEMethod",
    "BLQMethod",
]

#: How a covariate acts on a typical value (see :class:`Covariate`).
CovariateKind = Literal["power", "exponential", "linear", "indicator", "categorical"]
#: How an eta acts on its parameter: ``TV * exp(eta)`` (log-normal; NONMEM's "exponential") or
#: ``TV + eta``.
EtaKind = Literal["lognormal", "additive"]
#: How the sampler sees an IIV block's random effects: ``"noncentered"`` samples standard-normal ``z``
#: (eta = omega z; right when the data say little about each subject), ``"centered"`` samples the
#: individual parameter itself around its typical value (right when they say much), ``"partial"``
#: weighs the two per subject (right when subjects differ: rich and sparse ones), ``"auto"``
#: chooses per parameter from a pilot (see :mod:`nlmebayes.inference.parameterisation`).
Parameterisation = Literal["auto", "centered", "noncentered", "partial"]
#: How a typical value is estimated (see :class:`Parameter`).
ParameterScale = Literal["log", "linear"]
#: Residual error models (see :class:`ResidualError`).
ErrorKind = Literal["additive", "proportional", "combined", "combined_sd", "exponential"]
ResidualDistribution = Literal["normal", "student_t"]
ODEMethod = Literal["dopri5", "rosenbrock23"]
#: Censored observations: M3 (censored likelihood), M1 (discarded, reported) or M4 (M3 for
#: measurements known positive: a normal truncated at 0).
BLQMethod = Literal["M3", "M1", "M4"]
# Accepted for EtaKind and read as "lognormal": NONMEM calls TV * EXP(ETA) exponential IIV.
_ETA_ALIASES = {"exponential": "lognormal"}

_DISTS = {
    "Normal": ("mu", "sigma"),
    "HalfNormal": ("sigma",),
    "LogNormal": ("mu", "sigma"),
    "TruncatedNormal": ("mu", "sigma", "lower", "upper"),
    "HalfCauchy": ("beta",),
    "Exponential": ("lam",),
    "Uniform": ("lower", "upper"),
    "StudentT": ("nu", "mu", "sigma"),
    "HalfStudentT": ("nu", "sigma"),
    "Gamma": ("alpha", "beta"),
}


@dataclass(frozen=True)
class Prior:
    """A prior distribution by name and keyword arguments (PyMC's names and parameters)."""

    dist: str
    args: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.dist not in _DISTS:
            raise ValueError(f"unknown prior distribution {self.dist!r}; choose from {sorted(_DISTS)}")
        unknown = set(self.args) - set(_DISTS[self.dist])
        if unknown:
            raise ValueError(f"prior {self.dist} takes {_DISTS[self.dist]}, not {sorted(unknown)}")

    def to_dict(self) -> dict:
        """Plain dict: ``{"dist": name, **args}``."""
        return {"dist": self.dist, **self.args}

    @classmethod
    def from_dict(cls, d: dict) -> Prior:
        """Read a prior from ``{"dist": name, **args}``."""
        d = dict(d)
        return cls(d.pop("dist"), d)

    def __str__(self) -> str:
        return f"{self.dist}(" + ", ".join(f"{k}={v:g}" for k, v in self.args.items()) + ")"


@dataclass(frozen=True)
class Parameter:
    """A typical value (theta) and its prior.

    ``scale="log"`` (default): a positive value, estimated on the log scale (the prior is on its
    logarithm, default Normal(log(initial), 2)). ``scale="linear"``: any sign (a logit, an
    additive shift, a baseline that may be negative), estimated as it is, default prior
    ``Normal(initial, 2 max(abs(initial), 1))``; such thetas are for individual-parameter expressions
    (``ModelSpec.individual``), e.g. ``F = expit(logit_F + eta_F)``.
    """

    name: str
    initial: float
    prior: Prior | None = None
    fixed: bool = False
    scale: ParameterScale = "log"

    def __post_init__(self):
        if self.scale not in get_args(ParameterScale):
            raise ValueError(f"parameter {self.name}: scale must be 'log' or 'linear', got {self.scale!r}")
        if self.scale == "log" and not self.initial > 0:
            raise ValueError(
                f"parameter {self.name}: the typical value must be > 0 (it is "
                f"estimated on the log scale; use scale='linear' for a value of any sign), got {self.initial}"
            )
        if not math.isfinite(self.initial):
            raise ValueError(f"parameter {self.name}: initial value {self.initial} is not finite")

    @property
    def log_prior(self) -> Prior:
        """Prior of log(typical value); default Normal(log(initial), 2) (log-scale parameters)."""
        if self.scale != "log":
            raise ValueError(f"parameter {self.name} is on the linear scale; use free_prior")
        return self.prior or Prior("Normal", {"mu": math.log(self.initial), "sigma": 2.0})

    @property
    def free_name(self) -> str:
        """The sampler's variable: ``log_<name>_pop`` (log scale) or ``<name>_pop`` (linear)."""
        return f"log_{self.name}_pop" if self.scale == "log" else f"{self.name}_pop"

    @property
    def free_prior(self) -> Prior:
        """Prior of the sampler's variable (:attr:`free_name`)."""
        if self.scale == "log":
            return self.log_prior
        return self.prior or Prior("Normal", {"mu": self.initial, "sigma": 2.0 * max(abs(self.initial), 1.0)})

    def to_free(self, value: float) -> float:
        """The sampler's value of a typical value: its log, or itself on the linear scale.

        Examples
        --------
        >>> round(Parameter("CL", 2.0).to_free(2.0), 6), Parameter("LF", 0.5, scale="linear").to_free(-1.0)
        (0.693147, -1.0)
        """
        return math.log(value) if self.scale == "log" else float(value)


@dataclass(frozen=True)
class Covariate:
    """A covariate relation on a parameter's typical value.

    Parameters
    ----------
    parameter : str
        Structural parameter it acts on (e.g. "CL").
    covariate : str
        Data column (e.g. "WT"). For ``kind="indicator"`` give ``condition`` instead or as well.
    kind : {"power", "exponential", "linear", "indicator", "categorical"}
    reference : float
        Centring value (70 kg in ``(WT/70)^theta``); unused for indicator/categorical.
    theta : float
        Initial value of the effect, or its value when ``fixed``.
    fixed : bool
        Fix theta (e.g. allometric exponent 0.75) instead of estimating it.
    condition : str
        For indicators: e.g. ``"APGR < 5"``.
    prior : Prior, optional
        Default Normal(0, 1); indicators TruncatedNormal(0, 1, lower=-1) so that 1 + theta > 0.
    """

    parameter: str
    covariate: str
    kind: CovariateKind = "power"
    reference: float = 1.0
    theta: float = 0.0
    fixed: bool = False
    condition: str | None = None
    prior: Prior | None = None

    def __post_init__(self):
        kinds = get_args(CovariateKind)
        if self.kind not in kinds:
            raise ValueError(f"covariate kind must be one of {kinds}, got {self.kind!r}")
        if self.kind == "indicator":
            try:
                col = parse_condition(self.condition)[0]
            except ValueError:
                raise ValueError(
                    f"indicator covariate on {self.parameter} needs a condition like "
                    f"'APGR < 5', got {self.condition!r}"
                ) from None
            if col != self.covariate:
                raise ValueError(f"condition {self.condition!r} must test covariate {self.covariate}")
        if self.kind == "power" and not self.reference > 0:
            raise ValueError("a power covariate needs a reference value > 0")

    @property
    def name(self) -> str:
        """Name of the effect parameter, e.g. ``theta_CL_WT``."""
        return f"theta_{self.parameter}_{self.covariate}"

    @property
    def effect_prior(self) -> Prior:
        """Prior of theta: the given one, else the default for the kind."""
        if self.prior is not None:
            return self.prior
        if self.kind == "indicator":
            return Prior("TruncatedNormal", {"mu": 0.0, "sigma": 1.0, "lower": -1.0})
        return Prior("Normal", {"mu": 0.0, "sigma": 1.0})

    def parsed_condition(self) -> tuple[str, str, float | str]:
        """The indicator condition as (column, operator, value)."""
        return parse_condition(self.condition)


@dataclass(frozen=True)
class CovariateCandidates:
    """Candidate covariate effects estimated together under a regularised horseshoe prior.

    The full covariate model of a Bayesian covariate search: every candidate (parameter, covariate)
    pair gets an effect on the log typical value, and one shrinkage prior (Piironen & Vehtari
    2017) pulls the effects the data do not support towards 0 while leaving strong ones alone.
    The form of each effect follows from the data (:mod:`nlmebayes.model.candidates`): a
    continuous positive covariate acts as a power ``(COV/median)**theta``, one with zero or
    negative values as ``exp(theta (COV - median))``, a covariate with at most ``max_levels``
    distinct values (or text) as categorical ``exp(theta_level)`` against its most common level.
    The prior acts on standardised effects (per SD of log COV, of COV, or per level), so one
    global scale fits covariates of any unit.

    Parameters
    ----------
    pairs : list of (str, str)
        (parameter, covariate) candidates, e.g. ``[("CL", "WT"), ("V", "SEX")]``. Each parameter
        needs IIV (the effects explain between-subject differences).
    expected : float
        Prior guess of the number of relevant effects (``p0``); sets the global scale
        ``tau0 = p0 / (D - p0) * omega / sqrt(N)`` with D standardised effects, N subjects and
        omega the mean initial IIV SD of the parameters involved.
    slab_scale, slab_df : float
        Scale and degrees of freedom of the slab (Student-t) that regularises large effects:
        effects beyond about ``slab_scale`` (log units per SD) are shrunk like a Normal prior.
    max_levels : int
        A numeric covariate with at most this many distinct values is categorical.

    Examples
    --------
    >>> CovariateCandidates([("CL", "WT"), ("V", "SEX")], expected=1).names
    ['theta_CL_WT', 'theta_V_SEX']
    """

    pairs: list
    expected: float = 1.0
    slab_scale: float = 1.0
    slab_df: float = 4.0
    max_levels: int = 5

    def __post_init__(self):
        pairs = [tuple(p) for p in self.pairs]
        if not pairs or any(len(p) != 2 or not all(isinstance(x, str) for x in p) for p in pairs):
            raise ValueError(f"candidates must be (parameter, covariate) pairs of names, got {self.pairs!r}")
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"duplicated candidate pairs in {pairs}")
        object.__setattr__(self, "pairs", pairs)
        if not self.expected > 0:
            raise ValueError(f"expected number of relevant effects must be > 0, got {self.expected}")
        if not (self.slab_scale > 0 and self.slab_df > 0):
            raise ValueError("slab_scale and slab_df must be > 0")

    @property
    def names(self) -> list[str]:
        """Effect names, ``theta_<parameter>_<covariate>``, in pair order."""
        return [f"theta_{p}_{c}" for p, c in self.pairs]


def _sds(kind: str, parameters: list, sd) -> list[float]:
    sd = [0.3] * len(parameters) if sd is None else [float(s) for s in sd]
    if len(sd) != len(parameters):
        raise ValueError(f"{kind}: give one initial sd per parameter")
    if any(s <= 0 for s in sd):
        raise ValueError(f"{kind}: initial sd must be > 0")
    return sd


def _sd_priors(sd_prior: Prior | list | None, sd: list[float]) -> list[Prior]:
    """Priors of random-effect SDs: ``sd_prior`` (one for all, or one each), else HalfNormal(2 sd, >= 0.5)."""
    if isinstance(sd_prior, list):
        if len(sd_prior) != len(sd):
            raise ValueError(f"give one sd_prior per parameter ({len(sd)}), got {len(sd_prior)}")
        return list(sd_prior)
    if sd_prior is not None:
        return [sd_prior] * len(sd)
    return [Prior("HalfNormal", {"sigma": max(2.0 * s, 0.5)}) for s in sd]


def _prior_or_list(x):
    """A Prior, or a list of them, read from (or kept as) dicts."""
    if isinstance(x, list):
        return [_prior_or_list(p) for p in x]
    return x if x is None or isinstance(x, Prior) else Prior.from_dict(x)


def _prior_dict(x):
    if isinstance(x, list):
        return [p.to_dict() for p in x]
    return x and x.to_dict()


@dataclass(frozen=True)
class IIV:
    """Inter-individual variability on a set of parameters.

    Parameters
    ----------
    parameters : list of str
    sd : list of float
        Initial omega SDs (square roots of the diagonal of Omega); also the scale of the default
        HalfNormal prior on each SD, which is ``HalfNormal(max(2 * sd, 0.5))``.
    block : bool
        Full (block) Omega with an LKJ(eta=2) prior on the correlations, else diagonal.
    kind : {"lognormal", "additive"} or list of them
        ``TV * exp(eta)`` (log-normal, default; ``"exponential"``, NONMEM's word, is read as
        ``"lognormal"``) or ``TV + eta``; a list gives each parameter its own kind, so one
        correlated block may mix them. A name that is not a parameter of the spec is an eta of
        its own (``eta_CL``, for ``ModelSpec.individual`` expressions): its kind is ignored.
    sd_prior : Prior or list of Prior, optional
        Overrides the default prior of every SD in the block (one Prior), or of each (a list in
        parameter order; a block Omega needs one distribution family for all).
    lkj_eta : float
        Shape of the LKJ prior on the correlations of a block Omega.
    omega_prior : {"lkj", "inverse_wishart"}
        Prior of a block Omega: LKJ on the correlations with the SD priors (default), or
        inverse-Wishart ``IW(iw_scale, iw_df)`` on the whole matrix (NONMEM's $PRIOR NWPRI). The
        inverse-Wishart maps onto itself under a linear map of the etas
        (``M Omega M' ~ IW(M S M', df)``), so reparameterising a model (e.g. (KA, V, K) to
        (KA, CL, K)) with the mapped scale leaves the posterior as it is; the LKJ prior does not.
    iw_df : float, optional
        Degrees of freedom (> q - 1), default q + 2 (weakly informative; finite mean).
    iw_scale : list of lists, optional
        Scale matrix, default ``diag(sd^2) (df - q - 1)`` (prior mean ``diag(sd^2)``).
    parameterisation : {"auto", "centered", "noncentered", "partial"}
        How the sampler sees these etas; the model and the results are the same either way (the
        posterior always holds the standard-normal ``z``). ``"auto"`` (default) centres a
        parameter when a pilot finds the data inform it more than Omega does, and centres it
        partially, with a weight per subject, when subjects differ in how much their data say
        (``"partial"`` forces that; not for a block Omega); a block Omega is centred or not as a
        whole.
    """

    parameters: list[str]
    sd: list[float] | None = None
    block: bool = False
    kind: EtaKind | list = "lognormal"
    sd_prior: Prior | list | None = None
    lkj_eta: float = 2.0
    parameterisation: Parameterisation = "auto"
    omega_prior: Literal["lkj", "inverse_wishart"] = "lkj"
    iw_df: float | None = None
    iw_scale: list | None = None

    def __post_init__(self):
        object.__setattr__(self, "parameters", list(self.parameters))
        object.__setattr__(self, "sd", _sds("IIV", self.parameters, self.sd))
        self._check_inverse_wishart()
        object.__setattr__(self, "sd_prior", _prior_or_list(self.sd_prior))
        _sd_priors(self.sd_prior, self.sd or [])
        kinds = self.kind if isinstance(self.kind, list | tuple) else [self.kind]
        kinds = [_ETA_ALIASES.get(k, k) for k in kinds]
        for k in kinds:
            if k not in get_args(EtaKind):
                raise ValueError(
                    f"IIV kind must be 'lognormal' (alias 'exponential') or 'additive', got {k!r}"
                )
        if len(kinds) > 1 and len(kinds) != len(self.parameters):
            raise ValueError(
                f"IIV on {self.parameters}: give one kind, or one per parameter (got {len(kinds)})"
            )
        object.__setattr__(self, "kind", kinds if len(kinds) > 1 else kinds[0])
        if self.block and len(self.parameters) < 2:
            raise ValueError("a block Omega needs at least two parameters")
        if self.parameterisation not in get_args(Parameterisation):
            raise ValueError(
                f"IIV parameterisation must be one of {get_args(Parameterisation)}, "
                f"got {self.parameterisation!r}"
            )
        if self.block and self.parameterisation == "partial":
            raise ValueError(
                f"IIV on {self.parameters}: a block Omega is centred or non-centred as a whole; "
                "parameterisation='partial' needs a diagonal block"
            )

    def priors(self) -> list[Prior]:
        """Prior of each SD, in parameter order."""
        return _sd_priors(self.sd_prior, self.sd or [])

    def _check_inverse_wishart(self) -> None:
        if self.omega_prior not in ("lkj", "inverse_wishart"):
            raise ValueError(f"omega_prior must be 'lkj' or 'inverse_wishart', got {self.omega_prior!r}")
        if self.omega_prior == "lkj":
            if self.iw_df is not None or self.iw_scale is not None:
                raise ValueError("iw_df and iw_scale are for omega_prior='inverse_wishart'")
            return
        q = len(self.parameters)
        if not self.block:
            raise ValueError("an inverse-Wishart prior is for a block Omega (block=True)")
        df = float(q + 2 if self.iw_df is None else self.iw_df)
        if not df > q - 1:
            raise ValueError(f"inverse-Wishart degrees of freedom must exceed q - 1 = {q - 1}, got {df}")
        object.__setattr__(self, "iw_df", df)
        if self.iw_scale is not None:
            scale = [[float(x) for x in row] for row in self.iw_scale]
            if len(scale) != q or any(len(r) != q for r in scale):
                raise ValueError(f"iw_scale must be {q}x{q}")
            object.__setattr__(self, "iw_scale", scale)

    def inverse_wishart_scale(self) -> list[list[float]]:
        """The inverse-Wishart scale: given, or ``diag(sd^2) max(df - q - 1, 1)``."""
        if self.iw_scale is not None:
            return self.iw_scale
        q, df = len(self.parameters), float(self.iw_df or 0.0)
        factor = max(df - q - 1.0, 1.0)
        return [[(s * s * factor if i == j else 0.0) for j in range(q)] for i, s in enumerate(self.sd or [])]

    @property
    def kinds(self) -> list[str]:
        """The kind of each parameter's eta, in parameter order."""
        return list(self.kind) if isinstance(self.kind, list) else [self.kind] * len(self.parameters)


@dataclass(frozen=True)
class IOV:
    """Inter-occasion variability.

    ``P_ij = TV_i * exp(eta_i + kappa_ij)`` for occasion j of subject i, kappa ~ N(0, Pi) with one
    covariance shared by all occasions (NONMEM's ``$OMEGA BLOCK(n) SAME``): ``diag(pi^2)``, or a full
    matrix with ``block=True``.

    Parameters
    ----------
    parameters : list of str
    sd : list of float
        Initial pi SDs, also the scale of their default HalfNormal(max(2 sd, 0.5)) priors.
    occasion : str
        The data column numbering occasions (NONMEM's OCC).
    sd_prior : Prior, optional
    block : bool
        Correlated kappas (an LKJ prior of shape ``lkj_eta`` on their correlations), else
        independent.
    lkj_eta : float
    """

    parameters: list[str]
    sd: list[float] | None = None
    occasion: str = "OCC"
    sd_prior: Prior | None = None
    block: bool = False
    lkj_eta: float = 2.0

    def __post_init__(self):
        object.__setattr__(self, "parameters", list(self.parameters))
        object.__setattr__(self, "sd", _sds("IOV", self.parameters, self.sd))
        if self.block and len(self.parameters) < 2:
            raise ValueError("a block IOV needs at least two parameters")

    def priors(self) -> list[Prior]:
        """Prior of each SD, in parameter order."""
        return _sd_priors(self.sd_prior, self.sd or [])


@dataclass(frozen=True)
class Level:
    """A random effect for a grouping above the subject (study, centre) on typical values.

    ``TV_i = TV * exp(gamma_g(i))``, gamma ~ N(0, sd^2) per group g, for the chosen parameters. Every subject
    must belong to one group (the column is constant within a subject).

    Parameters
    ----------
    column : str
        Data column naming the group (e.g. "STUDY").
    parameters : list of str
    sd : list of float
        Initial SDs between groups; prior scales as for IIV.
    sd_prior : Prior, optional
    """

    column: str
    parameters: list[str]
    sd: list[float] | None = None
    sd_prior: Prior | None = None

    def __post_init__(self):
        object.__setattr__(self, "parameters", list(self.parameters))
        object.__setattr__(self, "sd", _sds(f"level {self.column}", self.parameters, self.sd))

    def priors(self) -> list[Prior]:
        """Prior of each SD, in parameter order."""
        return _sd_priors(self.sd_prior, self.sd or [])


@dataclass(frozen=True)
class ODE:
    """A structural model given as an ODE system (solved by :mod:`nlmebayes.pk.ode`).

    Steady-state boluses (SS=1) are solved by iterating dosing cycles to the periodic state;
    SS=2, steady-state infusions, modelled durations (RATE=-2) and IOV are not supported yet.

    Parameters
    ----------
    name : str
    states : list of str
        Compartments in CMT order (the data's CMT 1 is the first state).
    rhs : dict state -> str
        ``d state / dt`` as an expression of states and parameters (``+ - * / **``; exp, log,
        sqrt, abs, pow, min, max, expit or logistic, logit), e.g.
        ``"KA * depot - CL / V * central"``. Doses are added by the solver; ``t`` is the time
        (e.g. a waning clearance ``"-K0 * exp(-ALPHA * t) * central"``; also in ``observe``); any
        other name is a structural parameter.
    observe : str or dict
        The observed quantity, e.g. ``"central / V"``; or several outputs by observation type,
        ``{"cp": "central / V", "pca": "effect"}``, each observation taking the output named
        by its DVID (give each output its residual error: ``ModelSpec.error`` as a dict).
    initial : dict state -> str, optional
        Amounts at the start of each subject's records (and after a reset, EVID 3/4) as
        expressions of parameters, e.g. ``{"effect": "E0"}`` for a turnover response at its
        baseline; states not named start at 0 (NONMEM's ``A_0``).
    dose_state : str, optional
        Where TLAG and F act (default: the first state).
    observe_state : str, optional
        The compartment observations come from (default: the state ``observe`` uses; with
        several outputs observations may carry any state's CMT).
    rtol, atol : float
        Integrator tolerances; ``atol`` is relative to the subject's largest dose.
    method : {"dopri5", "rosenbrock23"}
        Dormand-Prince 5(4) (explicit, for non-stiff systems) or the L-stable Rosenbrock (2,3)
        pair for stiff ones (fast and slow rates together, e.g. TMDD or a fast binding step).
    max_steps : int
        Steps allowed per subject and solve; beyond it the solve returns NaN, which the sampler
        rejects (this bounds the cost of extreme parameter values met during warm-up).
    """

    name: str
    states: list[str]
    rhs: dict
    observe: str | dict
    dose_state: str | None = None
    observe_state: str | None = None
    initial: dict = field(default_factory=dict)
    rtol: float = 1e-6
    atol: float = 1e-8
    method: ODEMethod = "dopri5"
    max_steps: int = 100_000

    def __post_init__(self):
        if self.method not in get_args(ODEMethod):
            raise ValueError(f"ODE method must be 'dopri5' or 'rosenbrock23', got {self.method!r}")
        object.__setattr__(self, "states", list(self.states))
        object.__setattr__(self, "rhs", dict(self.rhs))
        object.__setattr__(self, "initial", dict(self.initial))
        if isinstance(self.observe, dict):
            if not self.observe:
                raise ValueError(f"ODE {self.name}: observe needs at least one output")
            object.__setattr__(self, "observe", {str(k): v for k, v in self.observe.items()})
        unknown = set(self.initial) - set(self.states)
        if unknown:
            raise ValueError(f"ODE {self.name}: initial amounts for unknown states {sorted(unknown)}")
        if set(self.rhs) != set(self.states):
            raise ValueError(
                f"ODE {self.name}: give one right-hand side per state; states "
                f"{self.states}, right-hand sides for {sorted(self.rhs)}"
            )
        for s in (self.dose_state, self.observe_state):
            if s is not None and s not in self.states:
                raise ValueError(f"ODE {self.name}: unknown state {s!r}")
        places = [(f"rhs of {s}", e) for s, e in self.rhs.items()]
        places += [(f"output {k}" if k else "observe", e) for k, e in self.outputs.items()]
        places += [(f"initial amount of {s}", e) for s, e in self.initial.items()]
        for where, e in places:
            try:
                expression_names(e)
            except ValueError as err:
                raise ValueError(f"ODE {self.name}, {where}: {err}") from None

    @property
    def outputs(self) -> dict[str | None, str]:
        """Output name (DVID) -> expression; ``{None: observe}`` for a single output."""
        return dict(self.observe) if isinstance(self.observe, dict) else {None: self.observe}


@dataclass(frozen=True)
class ClosedForm:
    """A structural model written as a closed-form expression of time, without an ODE.

    Parameters
    ----------
    name : str
    observe : str or dict
        The prediction at each observation as an expression of the parameters, the observation
        time ``t`` (the data's TIME) and, with ``pk``, that model's prediction ``C``; e.g. a
        biexponential ``"A1 * exp(-K1 * t) + A2 * exp(-K2 * t)"`` or a direct Emax response on a
        PK model, ``"E0 + EMAX * C / (EC50 + C)"``. Several outputs by DVID as a dict, as for
        :class:`ODE` (e.g. ``{"cp": "C", "effect": "E0 + EMAX * C / (EC50 + C)"}``).
    pk : str, optional
        A registered structural model (``"1cpt_oral"``, ...) that gives ``C`` from the doses; its
        parameters are structural parameters of this model too. Without it the model takes no
        doses (a dose record is an error): ``t`` is the time of the record.
    """

    name: str
    observe: str | dict
    pk: str | None = None

    def __post_init__(self):
        if isinstance(self.observe, dict):
            if not self.observe:
                raise ValueError(f"closed-form model {self.name}: observe needs at least one output")
            object.__setattr__(self, "observe", {str(k): v for k, v in self.observe.items()})
        for out, e in self.outputs.items():
            try:
                used = expression_names(e)
            except ValueError as err:
                raise ValueError(
                    f"closed-form model {self.name}, {f'output {out}' if out else 'observe'}: {err}"
                ) from None
            if "C" in used and self.pk is None:
                raise ValueError(f"closed-form model {self.name}: observe uses C but names no pk model")

    @property
    def outputs(self) -> dict[str | None, str]:
        """Output name (DVID) -> expression; ``{None: observe}`` for a single output."""
        return dict(self.observe) if isinstance(self.observe, dict) else {None: self.observe}


@dataclass(frozen=True)
class Observations:
    """Which observations a model describes (TOML section ``[observations]``).

    Parameters
    ----------
    dvid : str or float, optional
        Keep only observations of this DVID; the others are reported as excluded.
    ignore : list of str
        Conditions such as ``"DV == 0"`` (NONMEM's ``IGNORE=(DV.EQ.0)``); matching observations
        leave the likelihood and are reported as excluded.
    blq : {"M3", "M1", "M4"}
        Censored observations (CENS column): censored likelihood (M3, default), discarded (M1),
        or Beal's M4 for measurements known to be positive: a BLQ sample's likelihood is
        ``P(0 < y < LLOQ) / P(y > 0)`` and each measured sample's density is divided by
        ``P(y > 0)`` (a normal truncated at 0). M4 needs normal errors that are not exponential
        (log-scale data are positive already: M3 is M4 there).

    Examples
    --------
    >>> Observations(ignore=["DV == 0"]).to_dict()
    {'ignore': ['DV == 0']}
    """

    dvid: str | float | None = None
    ignore: tuple[str, ...] = ()
    blq: BLQMethod = "M3"

    def __post_init__(self):
        object.__setattr__(self, "ignore", tuple(self.ignore))
        for cond in self.ignore:
            parse_condition(cond)  # raises with an example of the expected form
        if self.blq not in get_args(BLQMethod):
            raise ValueError(
                f"observations.blq must be 'M3' (censored likelihood), 'M1' (discard) or 'M4' "
                f"(censored likelihood of a positive measurement), got {self.blq!r}"
            )

    def to_dict(self) -> dict:
        """The non-default entries (what the TOML section holds)."""
        out: dict = {}
        if self.dvid is not None:
            out["dvid"] = self.dvid
        if self.ignore:
            out["ignore"] = list(self.ignore)
        if self.blq != "M3":
            out["blq"] = self.blq
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Observations:
        """From the TOML section; unknown keys are an error naming the known ones."""
        unknown = set(d) - {"dvid", "ignore", "blq"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} in [observations]; expected dvid, ignore, blq")
        return cls(**d)


_ERRORS = {
    "additive": ("add",),
    "proportional": ("prop",),
    "combined": ("add", "prop"),
    "combined_sd": ("add", "prop"),
    "exponential": ("exp",),
}


@dataclass(frozen=True)
class ResidualError:
    """Residual error model.

    Sigma are SDs: ``add`` (DV units), ``prop`` (fraction), ``exp`` (log scale). Priors default to HalfNormal
    with twice the initial value as scale.

    ``distribution="student_t"`` gives heavier-tailed residuals (robust to outliers) with
    ``nu`` degrees of freedom, fixed when given, else estimated with a Gamma(2, 0.1) prior.
    """

    kind: ErrorKind = "additive"
    add: float | None = None
    prop: float | None = None
    exp: float | None = None
    priors: dict = field(default_factory=dict)
    distribution: ResidualDistribution = "normal"
    nu: float | None = None

    def __post_init__(self):
        if self.kind not in _ERRORS:
            raise ValueError(f"residual error must be one of {sorted(_ERRORS)}, got {self.kind!r}")
        if self.distribution not in get_args(ResidualDistribution):
            raise ValueError(
                f"residual distribution must be 'normal' or 'student_t', got {self.distribution!r}"
            )
        if self.nu is not None and not self.nu > 0:
            raise ValueError("Student-t degrees of freedom nu must be > 0")
        defaults = {"add": 1.0, "prop": 0.2, "exp": 0.2}
        for k in _ERRORS[self.kind]:
            if getattr(self, k) is None:
                object.__setattr__(self, k, defaults[k])
        object.__setattr__(
            self,
            "priors",
            {k: (v if isinstance(v, Prior) else Prior.from_dict(v)) for k, v in self.priors.items()},
        )

    @property
    def sigma_names(self) -> tuple[str, ...]:
        """Residual SDs of this error kind: ``add``, ``prop`` or ``exp``."""
        return _ERRORS[self.kind]

    def prior(self, which: str) -> Prior:
        """Prior of sigma ``which`` (``add``, ``prop``, ``exp``) or of ``nu``."""
        if which == "nu":
            # Juarez & Steel (2010): Gamma(2, 0.1) keeps nu away from 0 yet allows ~normal tails.
            return self.priors.get("nu") or Prior("Gamma", {"alpha": 2.0, "beta": 0.1})
        return self.priors.get(which) or Prior("HalfNormal", {"sigma": 2.0 * getattr(self, which)})


#: Non-continuous outcomes (see :class:`Outcome`).
OutcomeKind = Literal["binary", "ordinal", "poisson", "negbin", "tte"]
#: Link of a binary or ordinal outcome.
OutcomeLink = Literal["logit", "probit"]


@dataclass(frozen=True)
class Outcome:
    """A non-continuous observation model, given in place of a :class:`ResidualError`.

    The structural model's prediction ``f`` at each observation (e.g. a :class:`ClosedForm`
    expression of ``C``) enters as follows:

    * ``"binary"``: DV 0/1, ``P(DV = 1) = expit(f)`` (``link="logit"``) or ``Phi(f)`` (probit);
    * ``"ordinal"``: DV 0..K-1 (``categories=K``), proportional odds,
      ``P(DV <= k) = expit(c_k - f)`` with ordered cut points ``c_0 < ... < c_{K-2}`` estimated
      (``cutpoints`` are their initial values, Normal(initial, 2) priors), or probit;
    * ``"poisson"``: DV counts with mean ``f``;
    * ``"negbin"``: counts with mean ``f`` and variance ``f + f^2 / alpha`` (``dispersion`` is the
      initial alpha, HalfNormal(2 alpha) prior; large alpha is Poisson);
    * ``"tte"``: time to event. ``f`` is the hazard ``h(t)``; each observation row closes an
      interval that starts at the subject's previous observation (or first record): DV = 1, an
      event (``log h(t) - (H(t) - H(t_prev))``), DV = 0, censored (``-(H(t) - H(t_prev))``).
      ``cumulative`` is the cumulative hazard ``H(t)`` as an expression of ``t`` and parameters
      (exact; see :data:`HAZARDS`); without it ``H`` is integrated numerically (Gauss-Legendre,
      :attr:`quadrature` nodes per interval). Needs a :class:`ClosedForm` hazard without ``pk``.
    """

    kind: OutcomeKind
    link: OutcomeLink = "logit"
    categories: int | None = None
    cutpoints: list | None = None
    dispersion: float | None = None
    cumulative: str | None = None
    quadrature: int = 32

    def __post_init__(self):
        if self.kind not in get_args(OutcomeKind):
            raise ValueError(f"outcome kind must be one of {get_args(OutcomeKind)}, got {self.kind!r}")
        if self.link not in get_args(OutcomeLink):
            raise ValueError(f"outcome link must be 'logit' or 'probit', got {self.link!r}")
        if self.kind == "ordinal":
            if self.categories is None or self.categories < 3:
                raise ValueError("an ordinal outcome needs categories >= 3 (binary is kind='binary')")
            cuts = self.cutpoints or [
                float(k) - (self.categories - 2) / 2 for k in range(self.categories - 1)
            ]
            if len(cuts) != self.categories - 1 or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
                raise ValueError(
                    f"ordinal outcome: give {self.categories - 1} increasing cutpoints, got {cuts}"
                )
            object.__setattr__(self, "cutpoints", [float(c) for c in cuts])
        if self.kind == "negbin":
            alpha = 5.0 if self.dispersion is None else float(self.dispersion)
            if not alpha > 0:
                raise ValueError(f"negbin dispersion must be > 0, got {alpha}")
            object.__setattr__(self, "dispersion", alpha)
        if self.cumulative is not None:
            if self.kind != "tte":
                raise ValueError("cumulative (the cumulative hazard) is for kind='tte'")
            expression_names(self.cumulative)

    @property
    def sigma_names(self) -> tuple:
        """An outcome has no residual SDs."""
        return ()

    @property
    def distribution(self) -> str:
        """``"outcome"``, for code that asks a residual model its distribution."""
        return "outcome"


#: Parametric hazards as (hazard, cumulative hazard) expressions, for :class:`ClosedForm` and
#: ``Outcome("tte", cumulative=...)``: ``h, H = HAZARDS["weibull"]``.
HAZARDS = {
    "constant": ("LAMBDA", "LAMBDA * t"),
    "weibull": ("SHAPE / SCALE * (t / SCALE)**(SHAPE - 1)", "(t / SCALE)**SHAPE"),
    "gompertz": ("LAMBDA * exp(GAMMA * t)", "LAMBDA / GAMMA * (exp(GAMMA * t) - 1)"),
}


@dataclass(frozen=True)
class ModelSpec:
    """A complete NLME model: structural model, parameters, covariates, IIV, residual error.

    Parameters
    ----------
    name : str
    structural : str, ODE or ClosedForm
        Analytic model name, e.g. ``"1cpt_oral"`` (see :data:`nlmebayes.pk.MODELS`), a ready ODE
        model name (``"1cpt_oral_ode"``, ... :data:`nlmebayes.pk.ode.ODE_MODELS`), an
        :class:`ODE` or a :class:`ClosedForm` expression.
    parameters : dict or list
        ``{"CL": 2.7, ...}`` (initial typical values) or a list of :class:`Parameter`.
    covariates : list of Covariate
    iiv : IIV or list of IIV
    error : ResidualError, Outcome or dict
        The residual error, or an :class:`Outcome` (binary, ordinal, count, time to event); for a
        model with several outputs, one per output:
        ``{"cp": ResidualError("proportional"), "pca": ResidualError("additive")}`` (a joint PK
        and outcome model: ``{"cp": ResidualError("proportional"), "resp": Outcome("binary")}``).
    observations : Observations or dict
        Which observations the model describes, e.g. ``Observations(dvid="cp")`` or
        ``{"dvid": "cp"}``; ``blq="M1"`` discards censored observations (CENS column) instead of
        the default M3 likelihood, ``blq="M4"`` takes the measurements as positive.
    description : str
    iov : IOV or list of IOV
        Inter-occasion variability.
    levels : Level or list of Level
        Random effects of groupings above the subject (study, centre).
    flip_flop_guard : bool
        First-order absorption with ``KA_i = CL_i / V_i + KA'_i``: the spec's KA (typical value,
        IIV, covariates) describes the excess over the elimination rate, so absorption is always
        faster than elimination and the flip-flop mode is excluded.
    candidates : CovariateCandidates or list of (str, str)
        Candidate covariate effects under a shrinkage prior (the full model of a covariate
        search, :mod:`nlmebayes.search.projection`); a list of pairs takes the defaults.
    individual : dict name -> str
        Individual parameters as expressions (NONMEM's $PK, nlmixr2's model block), evaluated in
        order per subject, e.g. ``{"CL": "TVCL * (WT / 70)**0.75 * exp(eta_CL)", "V": "CL / K"}``.
        An expression may use the parameters (each with the covariate relations, IIV, IOV and
        levels declared for it), the etas of IIV blocks that name no parameter (``eta_CL``
        above), subject covariates (data columns), earlier entries and the functions of
        :mod:`nlmebayes.model.expressions`. Entries the structural model does not take are
        derived parameters (``"THALF": "log(2) * V / CL"``), stored and reported per subject.
    """

    name: str
    structural: str | ODE
    parameters: dict | list
    covariates: list = field(default_factory=list)
    iiv: IIV | list | None = None
    error: ResidualError | Outcome | dict = field(default_factory=ResidualError)
    observations: Observations = field(default_factory=Observations)
    description: str = ""
    iov: IOV | list | None = None
    levels: Level | list | None = None
    flip_flop_guard: bool = False
    candidates: CovariateCandidates | list | None = None
    individual: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.observations, dict):
            object.__setattr__(self, "observations", Observations.from_dict(self.observations))
        params = self.parameters
        if isinstance(params, dict):
            params = [v if isinstance(v, Parameter) else Parameter(k, float(v)) for k, v in params.items()]
        object.__setattr__(self, "parameters", list(params))
        iiv = [] if self.iiv is None else ([self.iiv] if isinstance(self.iiv, IIV) else list(self.iiv))
        object.__setattr__(self, "iiv", iiv)
        iov = [] if self.iov is None else ([self.iov] if isinstance(self.iov, IOV) else list(self.iov))
        object.__setattr__(self, "iov", iov)
        levels = (
            []
            if self.levels is None
            else [self.levels]
            if isinstance(self.levels, Level)
            else list(self.levels)
        )
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "covariates", list(self.covariates))
        self._check_errors()
        names = self.parameter_names
        if len(set(names)) != len(names):
            raise ValueError(f"duplicated parameter names in {names}")
        for c in self.covariates:
            if c.parameter not in names:
                raise ValueError(f"covariate {c.covariate} acts on unknown parameter {c.parameter}")
        object.__setattr__(self, "individual", {str(k): str(v) for k, v in dict(self.individual).items()})
        seen = []
        for block in iiv:
            for p, kind in zip(block.parameters, block.kinds, strict=True):
                if p not in names and not self.individual:
                    raise ValueError(f"IIV on unknown parameter {p}; parameters are {names}")
                if p in seen:
                    raise ValueError(f"parameter {p} has IIV in two blocks")
                if p in names and kind == "lognormal" and self.parameter(p).scale == "linear":
                    raise ValueError(
                        f"IIV on {p}: a linear-scale parameter takes additive etas (or write its "
                        f"expression in individual)"
                    )
                seen.append(p)
        self._check_individual()
        for what, blocks in (("IOV", iov), ("level", levels)):
            seen = []
            for b in blocks:
                for p in b.parameters:
                    if p not in names:
                        raise ValueError(f"{what} on unknown parameter {p}; parameters are {names}")
                    if p in seen:
                        raise ValueError(f"parameter {p} has {what} twice")
                    seen.append(p)
        if self.flip_flop_guard and "KA" not in names + list(self.individual):
            raise ValueError("flip_flop_guard needs a first-order absorption model (parameter KA)")
        self._check_candidates()

    def _check_individual(self):
        """Expressions parse, assign new names, and every eta that names no parameter is used."""
        taken = set(self.parameter_names) | set(self.eta_names)
        used: set = set()
        for name, text in self.individual.items():
            if not name.isidentifier():
                raise ValueError(f"model {self.name}: individual entry {name!r} is not a name")
            if name in taken:
                raise ValueError(
                    f"model {self.name}: individual entry {name} is already a parameter or an eta; "
                    f"give the expression a new name"
                )
            try:
                used |= expression_names(text)
            except ValueError as err:
                raise ValueError(f"model {self.name}, individual {name}: {err}") from None
            if name in expression_names(text):
                raise ValueError(f"model {self.name}: individual {name} = {text!r} uses itself")
        unused = [e for e in self.eta_names if e not in used]
        if unused:
            raise ValueError(
                f"model {self.name}: IIV names {unused}, which are neither parameters "
                f"({self.parameter_names}) nor used in an individual expression"
            )

    def _check_candidates(self):
        cand = self.candidates
        if cand is None:
            return
        if not isinstance(cand, CovariateCandidates):
            cand = CovariateCandidates(list(cand))
            object.__setattr__(self, "candidates", cand)
        given = {(c.parameter, c.covariate) for c in self.covariates}
        for p, c in cand.pairs:
            if p not in self.iiv_parameters or p not in self.parameter_names:
                raise ValueError(
                    f"candidate ({p}, {c}): {p} has no IIV; candidate effects explain between-subject "
                    f"differences, so the parameter needs IIV"
                )
            if (p, c) in given:
                raise ValueError(f"candidate ({p}, {c}) is already a covariate relation of the model")

    def _check_errors(self):
        err = self.error
        # several outputs are normal on the data scale already (checked below)
        if self.observations.blq == "M4" and not isinstance(err, dict) and not _normal_on_data_scale(err):
            raise ValueError(
                f"model {self.name}: observations.blq = 'M4' needs normal, not exponential, "
                f"errors (log-scale data are positive already: M3 is M4 there)"
            )
        outputs = list(self.structural.outputs) if isinstance(self.structural, ODE | ClosedForm) else [None]
        if isinstance(err, dict):
            err = {
                str(k): v if isinstance(v, ResidualError | Outcome) else _error_from_dict(v)
                for k, v in err.items()
            }
            object.__setattr__(self, "error", err)
            if sorted(err) != sorted(o for o in outputs if o is not None):
                raise ValueError(
                    f"model {self.name}: one residual error per output; outputs "
                    f"{[o for o in outputs if o is not None] or 'one (observe is a string)'}, "
                    f"errors for {sorted(err)}"
                )
            for k, e in err.items():
                # One Gaussian likelihood over all outputs keeps the marginal likelihood,
                # residuals and simulation as they are for one output.
                if not _normal_on_data_scale(e):
                    raise ValueError(
                        f"model {self.name}: output {k}: several outputs support "
                        f"normal additive/proportional/combined errors only"
                    )
        elif outputs != [None]:
            raise ValueError(
                f"model {self.name}: the model has outputs {outputs}; give error as a "
                f"dict with one ResidualError per output"
            )

    # ---------------------------------------------------------------- queries
    @property
    def errors(self) -> dict:
        """Output name (DVID) -> :class:`ResidualError`; ``{None: error}`` for one output."""
        return dict(self.error) if isinstance(self.error, dict) else {None: self.error}

    @property
    def outcomes(self) -> dict:
        """Output name (DVID; None for one output) -> :class:`Outcome`, for the non-continuous outputs."""
        return {k: e for k, e in self.errors.items() if isinstance(e, Outcome)}

    @property
    def sigma_terms(self) -> list[tuple[str, str | None, str, ResidualError]]:
        """``(name, output, kind, error)`` per residual SD.

        The variable is ``sigma_<name>``, ``name`` being the kind (``add``, ``prop``, ``exp``) or
        ``<output>_<kind>``.
        """
        return [
            (k if out is None else f"{out}_{k}", out, k, e)
            for out, e in self.errors.items()
            for k in e.sigma_names
        ]

    @property
    def sigma_names(self) -> tuple[str, ...]:
        """Names of all residual SDs (``sigma_<name>`` in the graph)."""
        return tuple(t[0] for t in self.sigma_terms)

    @property
    def log_scale_error(self) -> bool:
        """Exponential (log-DV) residual error: residuals live on the log scale."""
        return isinstance(self.error, ResidualError) and self.error.kind == "exponential"

    @property
    def residual_distribution(self) -> str:
        """``normal`` or ``student_t``."""
        return self.error.distribution if isinstance(self.error, ResidualError) else "normal"

    @property
    def parameter_names(self) -> list[str]:
        """Structural parameter names, in spec order."""
        return [p.name for p in self.parameters]

    @property
    def iiv_parameters(self) -> list[str]:
        """Parameters with IIV, in eta order."""
        return [p for b in cast(list[IIV], self.iiv) for p in b.parameters]

    @property
    def eta_names(self) -> list[str]:
        """IIV names that are not parameters: etas used as themselves in ``individual``."""
        names = set(self.parameter_names)
        return [p for p in self.iiv_parameters if p not in names]

    def eta_kind(self, name: str) -> str:
        """How the eta of IIV parameter ``name`` acts: "lognormal" or "additive" (an eta of its own)."""
        if name not in self.parameter_names:
            return "additive"
        block = next(b for b in cast(list[IIV], self.iiv) if name in b.parameters)
        return block.kinds[block.parameters.index(name)]

    @property
    def iov_parameters(self) -> list[str]:
        """Parameters with IOV, in kappa order."""
        return [p for b in cast(list[IOV], self.iov) for p in b.parameters]

    def parameter(self, name: str) -> Parameter:
        """The :class:`Parameter` called ``name`` (KeyError if none)."""
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        """Plain dict (TOML-ready: no None values)."""
        out: dict = {
            "name": self.name,
            "structural": (
                _drop_none(asdict(self.structural))
                if isinstance(self.structural, ODE | ClosedForm)
                else self.structural
            ),
        }
        if self.description:
            out["description"] = self.description
        out["parameters"] = {}
        for p in self.parameters:
            d = {"initial": p.initial}
            if p.prior is not None:
                d["prior"] = p.prior.to_dict()
            if p.fixed:
                d["fixed"] = True
            if p.scale != "log":
                d["scale"] = p.scale
            out["parameters"][p.name] = d
        if self.individual:
            out["individual"] = dict(self.individual)
        if self.covariates:
            out["covariates"] = [
                _drop_none({**asdict(c), "prior": c.prior and c.prior.to_dict()}) for c in self.covariates
            ]
        # after __post_init__ each is a list of blocks
        for key, blocks in (("iiv", self.iiv), ("iov", self.iov), ("levels", self.levels)):
            blocks = cast(list, blocks)
            if blocks:
                out[key] = [_drop_none({**asdict(b), "sd_prior": _prior_dict(b.sd_prior)}) for b in blocks]
        if self.flip_flop_guard:
            out["flip_flop_guard"] = True
        if self.candidates is not None:
            cand = cast(CovariateCandidates, self.candidates)
            out["candidates"] = {**asdict(cand), "pairs": [list(p) for p in cand.pairs]}
        out["error"] = (
            {k: _error_dict(e) for k, e in self.error.items()}
            if isinstance(self.error, dict)
            else _error_dict(self.error)
        )
        if self.observations.to_dict():
            out["observations"] = self.observations.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "model dict") -> ModelSpec:
        """Read a spec from the plain dict of :meth:`to_dict` (TOML's structure).

        Every section and key is checked first (:mod:`nlmebayes.model.modelfile`): an unknown or
        missing key raises :class:`~nlmebayes.model.modelfile.ModelFileError` naming ``source``,
        the section, the key and the closest known key.
        """
        from nlmebayes.model.modelfile import validate_model_dict

        d = dict(d)
        validate_model_dict(d, source)
        params = []
        for name, p in d.get("parameters", {}).items():
            if not isinstance(p, dict):
                p = {"initial": p}
            prior = Prior.from_dict(p["prior"]) if "prior" in p else None
            params.append(
                Parameter(
                    name, float(p["initial"]), prior, bool(p.get("fixed", False)), p.get("scale", "log")
                )
            )
        covs = []
        for c in d.get("covariates", []):
            c = dict(c)
            if "prior" in c:
                c["prior"] = Prior.from_dict(c["prior"])
            covs.append(Covariate(**c))
        blocks: dict[str, list] = {}
        for key, cls_ in (("iiv", IIV), ("iov", IOV), ("levels", Level)):
            blocks[key] = []
            for b in d.get(key, []):
                b = dict(b)
                if "sd_prior" in b:
                    b["sd_prior"] = _prior_or_list(b["sd_prior"])
                blocks[key].append(cls_(**b))
        raw = dict(d.get("error", {"kind": "additive"}))
        # one error ({"kind": ...}) or one per output ({"cp": {"kind": ...}, ...})
        err = _error_from_dict(raw) if "kind" in raw else {k: _error_from_dict(v) for k, v in raw.items()}
        structural = d["structural"]
        if isinstance(structural, dict):
            structural = ODE(**structural) if "states" in structural else ClosedForm(**structural)
        return cls(
            name=d["name"],
            structural=structural,
            parameters=params,
            covariates=covs,
            error=err,
            observations=d.get("observations", {}),
            description=d.get("description", ""),
            **blocks,
            flip_flop_guard=bool(d.get("flip_flop_guard", False)),
            candidates=CovariateCandidates(**d["candidates"]) if "candidates" in d else None,
            individual=d.get("individual", {}),
        )

    def to_toml(self, path: str | Path | None = None) -> str:
        """TOML text of the spec; also written to ``path`` if given."""
        import tomli_w

        text = tomli_w.dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_toml(cls, source: str | Path) -> ModelSpec:
        """Read a spec from a TOML file path or TOML text."""
        if isinstance(source, Path) or (
            isinstance(source, str) and "\n" not in source and source.endswith(".toml")
        ):
            text, name = Path(source).read_text(), str(source)
        else:
            text, name = source, "TOML text"
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            from nlmebayes.model.modelfile import ModelFileError

            raise ModelFileError(f"{name}: not valid TOML: {e}") from None
        return cls.from_dict(d, source=name)


def _normal_on_data_scale(e) -> bool:
    """An outcome, or a residual error that is normal on the DV scale (not Student-t, not log)."""
    return not isinstance(e, ResidualError) or (e.distribution == "normal" and e.kind != "exponential")


def _error_from_dict(d: dict):
    """A ResidualError or, for an outcome kind, an Outcome."""
    return Outcome(**d) if d.get("kind") in get_args(OutcomeKind) else ResidualError(**d)


def _error_dict(e) -> dict:
    if isinstance(e, Outcome):
        return _drop_none(asdict(e))
    err = _drop_none({"kind": e.kind, **{k: getattr(e, k) for k in e.sigma_names}})
    if e.distribution != "normal":
        err["distribution"] = e.distribution
        if e.nu is not None:
            err["nu"] = e.nu
    if e.priors:
        err["priors"] = {k: v.to_dict() for k, v in e.priors.items()}
    return err


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None and v != {}}
