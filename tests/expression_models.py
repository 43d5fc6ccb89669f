"""Models written with individual-parameter expressions (issue 15), shared by the tests and
``benchmarks/expression_models.py``.

The biexponential of the issue: ``A1 exp(-K1 t) + A2 exp(-K2 t)`` with additive etas on the
amplitudes and a log-normal one on K1, ``{eta_A1, eta_K1}`` correlated in one block and ``eta_A2`` on
its own; 6 subjects x 11 samples from time 0, no doses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nlmebayes import IIV, ODE, ClosedForm, ModelSpec, ResidualError, read_nonmem
from nlmebayes.simulation import simulate

#: The simulation's truth (typical values, Omega in the order eta_A1, eta_K1, eta_A2, additive SD).
BIEXP_TRUTH = {"TVA1": 10.0, "TVK1": 1.0, "TVA2": 3.0, "TVK2": 0.1}
BIEXP_OMEGA = np.array([[4.0, 0.3, 0.0], [0.3, 0.09, 0.0], [0.0, 0.0, 0.25]])  # corr(A1, K1) 0.5
BIEXP_SIGMA = 0.2
TIMES = [0, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24]


def biexponential(form: str = "closed") -> ModelSpec:
    """The biexponential as a closed form (``"closed"``) or as an ODE with initial amounts (``"ode"``)."""
    if form == "closed":
        structural = ClosedForm("biexp", "A1 * exp(-K1 * t) + A2 * exp(-K2 * t)")
    else:
        structural = ODE(
            "biexp_ode",
            ["x1", "x2"],
            {"x1": "-K1 * x1", "x2": "-K2 * x2"},
            "x1 + x2",
            initial={"x1": "A1", "x2": "A2"},
            observe_state="x1",
            rtol=1e-10,
            atol=1e-12,
        )
    return ModelSpec(
        f"biexp_{form}",
        structural,
        dict(BIEXP_TRUTH),
        iiv=[IIV(["eta_A1", "eta_K1"], sd=[2.0, 0.3], block=True), IIV(["eta_A2"], sd=[0.5])],
        individual={"A1": "TVA1 + eta_A1", "K1": "TVK1 * exp(eta_K1)", "A2": "TVA2 + eta_A2", "K2": "TVK2"},
        error=ResidualError("additive", add=BIEXP_SIGMA),
    )


def biexponential_data(seed: int):
    """6 subjects x 11 samples simulated from the truth."""
    design = read_nonmem(pd.DataFrame([{"ID": i, "TIME": t, "DV": 0.0} for i in range(1, 7) for t in TIMES]))
    return simulate(
        biexponential(), design, typical=BIEXP_TRUTH, omega=BIEXP_OMEGA, sigma={"add": BIEXP_SIGMA}, seed=seed
    )


def biexponential_coverage(result, ci: float = 0.9) -> dict[str, tuple[float, float, float]]:
    """Truth and central interval of each population parameter: name -> (truth, lower, upper)."""
    post = result.posterior
    lo, hi = (1 - ci) / 2, (1 + ci) / 2

    def interval(x):
        return tuple(np.quantile(np.asarray(x).ravel(), [lo, hi]))

    out = {f"{k}_pop": (v, *interval(post[f"{k}_pop"])) for k, v in BIEXP_TRUTH.items()}
    sd = np.sqrt(np.diag(BIEXP_OMEGA))
    for j, e in enumerate(["eta_A1", "eta_K1", "eta_A2"]):
        out[f"omega({e})"] = (sd[j], *interval(post["omega_sd"].sel(iiv=e)))
    corr = BIEXP_OMEGA[0, 1] / (sd[0] * sd[1])
    out["corr(eta_A1,eta_K1)"] = (corr, *interval(post["omega_corr_0"].isel(iiv_0=0, iiv_0_=1)))
    out["sigma_add"] = (BIEXP_SIGMA, *interval(post["sigma_add"]))
    return out


def log_scale_summary(post, form: str) -> dict:
    """Posterior draws of the typical KA, CL, V, K and the SDs of their etas, whichever the form.

    eta_CL = eta_V + eta_K (form "kvk": Omega over KA, V, K) or eta_V = eta_CL - eta_K ("kck")."""
    sd = post["omega_sd"].values.reshape(-1, 3)
    corr = post["omega_corr_0"].values.reshape(-1, 3, 3)
    om = corr * sd[:, :, None] * sd[:, None, :]
    var_third = om[:, 1, 1] + om[:, 2, 2] + (2 if form == "kvk" else -2) * om[:, 1, 2]
    tv = {p: post[f"{p}_pop"].values.ravel() for p in ("KA", "K", "V" if form == "kvk" else "CL")}
    if form == "kvk":
        tv["CL"] = tv["K"] * tv["V"]
        omega = {"KA": sd[:, 0], "V": sd[:, 1], "K": sd[:, 2], "CL": np.sqrt(var_third)}
    else:
        tv["V"] = tv["CL"] / tv["K"]
        omega = {"KA": sd[:, 0], "CL": sd[:, 1], "K": sd[:, 2], "V": np.sqrt(var_third)}
    return {**{f"{p}_pop": v for p, v in tv.items()}, **{f"omega({p})": v for p, v in omega.items()}}
