"""Priors of the spec as PyMC random variables."""

from __future__ import annotations

import pymc as pm

from nlmebayes.model.spec import Prior

__all__ = ["random_variable"]


def random_variable(name: str, prior: Prior, **kwargs):
    """A PyMC random variable ``name`` with the distribution ``prior`` names, in the model in context.

    Examples
    --------
    >>> import pymc as pm
    >>> with pm.Model():
    ...     x = random_variable("sigma_add", Prior("HalfNormal", {"sigma": 1.0}))
    >>> x.name
    'sigma_add'
    """
    return getattr(pm, prior.dist)(name, **prior.args, **kwargs)
