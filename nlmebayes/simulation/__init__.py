"""Simulation and prediction.

At known parameter values (:func:`simulate`, truth for recovery studies) and from the posterior or the
prior (:mod:`.predictive`) at the fitted design or another one (:mod:`.design`). Dosing regimens,
sampling grids and virtual populations (:mod:`.regimen`), prediction at typical, population or
individual level (:mod:`.predict`), exposure metrics and target attainment (:mod:`.exposure`), and
forecasting a new patient from a few levels with dose recommendation (:mod:`.forecast`), and
predictions averaged over models by their stacking weights (:mod:`.averaging`).
"""

from nlmebayes.simulation.averaging import model_average
from nlmebayes.simulation.design import dense_design
from nlmebayes.simulation.exposure import exposure, target_attainment
from nlmebayes.simulation.forecast import Forecast, forecast, recommend_dose
from nlmebayes.simulation.predict import predict, prediction_summary
from nlmebayes.simulation.predictive import (
    Predictor,
    population_prediction,
    posterior_predictive,
    prior_predictive,
)
from nlmebayes.simulation.regimen import Regimen, continue_design, grid, regimen_design, virtual_population
from nlmebayes.simulation.simulate import simulate

__all__ = [
    "simulate",
    "dense_design",
    "Predictor",
    "posterior_predictive",
    "prior_predictive",
    "population_prediction",
    "Regimen",
    "grid",
    "virtual_population",
    "regimen_design",
    "continue_design",
    "predict",
    "model_average",
    "prediction_summary",
    "exposure",
    "target_attainment",
    "forecast",
    "Forecast",
    "recommend_dose",
]
