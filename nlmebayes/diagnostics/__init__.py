"""Diagnostics of a fit.

The marginal likelihood and OFV (:mod:`.ofv`, with :mod:`.conditional`, :mod:`.ebe`, :mod:`.importance`,
:mod:`.population`), residuals (:mod:`.residuals`), shrinkage (:mod:`.shrinkage`), LOO/WAIC/DIC (:mod:`.loo`),
model comparison (:mod:`.comparison`), identifiability (:mod:`.identifiability`), sampler convergence
(:mod:`.convergence`) and prior-data conflict (:mod:`.prior_conflict`).

Names are loaded on first use, so that e.g. the shrinkage functions do not import PyMC.
"""

import importlib

_WHERE = {
    "PopulationValues": "population",
    "n_parameters": "population",
    "omega_draws": "population",
    "Marginal": "ofv",
    "marginal_likelihood": "ofv",
    "ConditionalModel": "conditional",
    "marginal_loglik_draws": "importance",
    "add_marginal": "marginal_group",
    "residuals": "residuals",
    "eta_shrinkage": "shrinkage",
    "epsilon_shrinkage": "shrinkage",
    "pooling_factor": "shrinkage",
    "subject_shrinkage": "shrinkage",
    "shrinkage_table": "shrinkage",
    "log_likelihood": "loo",
    "loo": "loo",
    "waic": "loo",
    "dic": "loo",
    "compare": "comparison",
    "stacking_weights": "comparison",
    "design_warnings": "identifiability",
    "flip_flop_warning": "identifiability",
    "subject_flip_flop_warning": "identifiability",
    "sampler_diagnostics": "convergence",
    "prior_data_conflict": "prior_conflict",
}
__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'nlmebayes.diagnostics' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nlmebayes.diagnostics.{_WHERE[name]}"), name)
