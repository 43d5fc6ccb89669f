"""Simulation and prediction.

At known parameter values (:func:`simulate`, truth for recovery studies) and from the posterior or the
prior (:mod:`.predictive`) at the fitted design or another one (:mod:`.design`).
"""

from nlmebayes.simulation.design import dense_design
from nlmebayes.simulation.predictive import (
    Predictor,
    population_prediction,
    posterior_predictive,
    prior_predictive,
)
from nlmebayes.simulation.simulate import simulate

__all__ = [
    "simulate",
    "dense_design",
    "Predictor",
    "posterior_predictive",
    "prior_predictive",
    "population_prediction",
]
