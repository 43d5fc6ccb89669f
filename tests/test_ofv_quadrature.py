"""Laplace, FOCE-I and importance-sampling OFVs against an independent reference: the exact
marginal likelihood by adaptive Gauss-Hermite quadrature (numpy/scipy), with the model written
out in numpy (1-cpt IV bolus, additive error), not taken from the package's graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from nlmebayes import IIV, ModelSpec, ResidualError, read_nonmem
from nlmebayes.diagnostics import PopulationValues, marginal_likelihood

DOSE, TIMES = 100.0, np.array([0.5, 2.0, 6.0, 12.0])
TRUE = {"CL": 1.0, "V": 10.0}
OMEGA_SD = {"CL": 0.4, "V": 0.3}
SIGMA = 0.4


def _data(n_sub: int, seed: int, etas=("CL", "V")) -> pd.DataFrame:
    """1-cpt IV bolus, four samples per subject, simulated with log-normal ``etas``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n_sub + 1):
        e = {p: OMEGA_SD[p] * rng.standard_normal() if p in etas else 0.0 for p in ("CL", "V")}
        cl, v = TRUE["CL"] * np.exp(e["CL"]), TRUE["V"] * np.exp(e["V"])
        rows.append(dict(ID=i, TIME=0.0, AMT=DOSE, DV=np.nan))
        conc = DOSE / v * np.exp(-cl / v * TIMES) + SIGMA * rng.standard_normal(len(TIMES))
        rows += [dict(ID=i, TIME=t, AMT=0.0, DV=c) for t, c in zip(TIMES, conc, strict=True)]
    return pd.DataFrame(rows)


def _log_joint(eta, y, omega):
    """log p(y_i | eta) + log N(eta; 0, Omega) for one subject; eta = (eta_CL[, eta_V])."""
    cl = TRUE["CL"] * np.exp(eta[0])
    v = TRUE["V"] * np.exp(eta[1]) if len(eta) > 1 else TRUE["V"]
    f = DOSE / v * np.exp(-cl / v * TIMES)
    ll = -0.5 * np.sum(np.log(2 * np.pi * SIGMA**2) + (y - f) ** 2 / SIGMA**2)
    q = len(eta)
    prior = -0.5 * (eta @ np.linalg.solve(omega, eta) + np.linalg.slogdet(omega)[1] + q * np.log(2 * np.pi))
    return ll + prior


def _quadrature_m2ll(df: pd.DataFrame, omega: np.ndarray, n_nodes: int) -> float:
    """-2 log marginal likelihood by adaptive Gauss-Hermite quadrature: for each subject the
    tensor-product rule is centred at the joint mode and scaled by the Cholesky factor of the
    inverse Hessian there (Pinheiro & Bates 1995); with 40 nodes per axis the integrand (smooth,
    near-Gaussian) is integrated to ~1e-10."""
    q = omega.shape[0]
    z, w = np.polynomial.hermite.hermgauss(n_nodes)
    grids = np.meshgrid(*[z] * q, indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=1)
    weights = np.prod(np.meshgrid(*[w] * q, indexing="ij"), axis=0).ravel()
    total = 0.0
    for _, sub in df[df["AMT"] == 0].groupby("ID"):
        y = sub["DV"].to_numpy()

        def neg(e, y=y):
            return -_log_joint(e, y, omega)

        mode = minimize(neg, np.zeros(q), method="BFGS", options={"gtol": 1e-10}).x
        h = 1e-4
        H = np.empty((q, q))
        for a in range(q):
            for b in range(q):
                ea, eb = np.eye(q)[a] * h, np.eye(q)[b] * h
                H[a, b] = (
                    neg(mode + ea + eb) - neg(mode + ea - eb) - neg(mode - ea + eb) + neg(mode - ea - eb)
                ) / (4 * h * h)
        L = np.linalg.cholesky(np.linalg.inv(H))
        pts = mode + np.sqrt(2.0) * nodes @ L.T
        logs = np.array([_log_joint(p, y, omega) for p in pts]) + np.sum(nodes**2, axis=1)
        m = logs.max()
        log_int = (
            m + np.log(np.sum(weights * np.exp(logs - m))) + 0.5 * q * np.log(2.0) + np.log(np.linalg.det(L))
        )
        total += -2.0 * log_int
    return total


def _ours(df, params, method, **kw):
    spec = ModelSpec(
        "quad", "1cpt_iv", {"CL": 1.0, "V": 10.0}, iiv=IIV(params, sd=[0.3] * len(params)),
        error=ResidualError("additive", add=0.5),
    )  # fmt: skip
    omega = np.diag([OMEGA_SD[p] ** 2 for p in params])
    pv = PopulationValues(typical=dict(TRUE), omega=omega, sigma={"add": SIGMA})
    return marginal_likelihood(spec, read_nonmem(df), pv, method=method, **kw).m2ll, omega


def test_one_eta_laplace_and_importance_sampling_match_quadrature():
    """One eta (CL), 12 subjects simulated from the model: Laplace within 0.05 and importance
    sampling within 0.1 of the quadrature (OFV units, the tolerances issue 20 sets).

    Measured, data seeds 11/12/13 (-2LL minus quadrature): Laplace +0.045/+0.044/+0.041 (about
    +0.004 per subject: the Laplace error of a 4-sample subject; deterministic given the data),
    FOCE-I -0.047/+0.189/+0.071, IS (2000 points, two IS seeds) -0.019..-0.025. The quadrature
    agrees with scipy.integrate.quad to 1e-13. IS with 50,000 points sits 0.010 below the exact
    value, a small bias not yet explained (an unbiased likelihood estimate would err upwards).
    """
    df = _data(12, seed=11, etas=("CL",))
    laplace, omega = _ours(df, ["CL"], "laplace")
    ref = _quadrature_m2ll(df, omega, n_nodes=40)
    is_, _ = _ours(df, ["CL"], "importance", n_is=2000, seed=3)
    assert abs(laplace - ref) < 0.05, (laplace, ref)
    assert abs(is_ - ref) < 0.1, (is_, ref)


def test_two_eta_table_against_quadrature():
    """Two etas (CL, V), 12 subjects: FOCE-I, Laplace and IS against 2-D quadrature (40 x 40
    nodes, converged to 1e-8 between 20 and 60 nodes).

    Measured (-2LL minus quadrature 123.3064): FOCE-I +0.125, Laplace +0.167, IS (2000 points)
    +0.036. With two etas on four samples the Laplace error per subject is ~0.014; the
    assertions are IS within 0.1 and the two approximations within 0.5 of the exact value.
    """
    df = _data(12, seed=11)
    ref = None
    rows = {}
    for method in ("focei", "laplace", "importance"):
        kw = {"n_is": 2000, "seed": 3} if method == "importance" else {}
        rows[method], omega = _ours(df, ["CL", "V"], method, **kw)
        if ref is None:
            ref = _quadrature_m2ll(df, omega, n_nodes=40)
    print(
        f"\n-2LL two etas: quadrature {ref:.4f} | "
        + " | ".join(f"{k} {v:.4f} ({v - ref:+.4f})" for k, v in rows.items())
    )
    assert abs(rows["importance"] - ref) < 0.1
    assert abs(rows["laplace"] - ref) < 0.5
    assert abs(rows["focei"] - ref) < 0.5
