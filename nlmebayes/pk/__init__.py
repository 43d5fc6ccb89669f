"""Structural pharmacokinetic models."""

from nlmebayes.pk.analytic import MODELS, Compartmental, disposition, get_model

__all__ = ["MODELS", "Compartmental", "disposition", "get_model"]
