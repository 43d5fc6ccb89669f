"""Structural pharmacokinetic models.

The interface and registry (:mod:`.base`), closed-form compartment models (:mod:`.analytic`) and ODE systems
(:mod:`.ode`, loaded on first use).
"""

from nlmebayes.pk.analytic import MODELS, Compartmental, disposition
from nlmebayes.pk.base import StructuralModel, get_model, model_names, register_model

__all__ = [
    "MODELS",
    "Compartmental",
    "disposition",
    "StructuralModel",
    "get_model",
    "model_names",
    "register_model",
]
