"""A posterior concentrated at known values: prediction tests whose truth is analytic.

``fixed_result`` gives a :class:`~nlmebayes.results.FitResult` whose every draw holds the same
population values, so :func:`~nlmebayes.simulation.predict` and the forecasting functions can be
checked against closed forms and against simulation with known truth, without sampling.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from nlmebayes.results import FitResult


def fixed_result(spec, data, *, draws: int = 50, **values) -> FitResult:
    """A FitResult whose ``draws`` posterior draws all equal ``values``.

    ``values`` by the builder's names: typical values ``CL=2.0`` (stored as ``log_CL_pop``),
    ``omega_sd_0_CL``, ``pi_sd_CL``, ``sigma_prop``, ``theta_CL_WT``, ...
    """
    post = {}
    for name, v in values.items():
        key = f"log_{name}_pop" if name in spec.parameter_names else name
        post[key] = (("chain", "draw"), np.full((1, draws), np.log(v) if key.startswith("log_") else v))
    return FitResult(xr.DataTree.from_dict({"posterior": xr.Dataset(post)}), spec, data)
