"""Simulation from a model at known parameter values (truth for recovery studies)."""

from nlmebayes.simulation.simulate import simulate

__all__ = ["simulate"]
