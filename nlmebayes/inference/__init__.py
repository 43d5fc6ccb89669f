"""Inference.

NUTS sampling (:func:`fit`), the derived-quantities pass after it, and a quick posterior mode
(:func:`map_estimate`). Imports PyMC.
"""

from nlmebayes.inference.fit import Sampler, fit
from nlmebayes.inference.map_estimate import map_estimate

__all__ = ["fit", "map_estimate", "Sampler"]
