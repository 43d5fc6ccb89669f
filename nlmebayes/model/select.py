"""The observations a spec describes: its ``[observations]`` section applied to the data."""

from __future__ import annotations

import numpy as np

from nlmebayes.data import EventData
from nlmebayes.model.spec import ModelSpec

__all__ = ["select_observations"]


def select_observations(spec: ModelSpec, data: EventData) -> EventData:
    """Apply ``spec.observations`` to ``data``.

    DVID selection keeps one observation type; ``ignore`` conditions (NONMEM's IGNORE) take
    observations out of the likelihood; ``blq="M1"`` discards censored observations. Every
    observation taken out is reported as excluded in ``data.summary()``.

    Parameters
    ----------
    spec : ModelSpec
        The model whose observations section applies.
    data : EventData
        The data as read.

    Returns
    -------
    EventData
        The data the model's likelihood sees.

    Examples
    --------
    >>> from nlmebayes import ModelSpec, datasets
    >>> spec = ModelSpec("m", "1cpt_oral", {"KA": 1.5, "CL": 2.7, "V": 31.5},
    ...                  observations={"ignore": ["TIME > 12"]})
    >>> select_observations(spec, datasets.theophylline()).n_obs
    112
    """
    obs = spec.observations
    if obs.dvid is not None:
        data = data.select_dvid(obs.dvid)
    for cond in obs.ignore:
        data = data.ignore(cond)
    if obs.blq == "M1" and data.obs_cens is not None and np.any(data.obs_cens != 0):
        data = data.drop_censored()
    return data
