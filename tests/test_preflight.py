"""The pre-flight check: a density NUTS cannot start on fails at once, naming the cause.

The case from the issue: a turnover model with a Hill term ``C**GAM`` where ``C = 0`` at the
start. The derivative of ``0**GAM`` in ``GAM`` is ``0 * log(0)`` = NaN, the ODE sensitivities
turn NaN and so does the solution; NUTS would retry in silence for all of warm-up.
"""

from __future__ import annotations

import re
import time

import pytest

from nlmebayes import IIV, ODE, ModelSpec, ResidualError, datasets, fit
from nlmebayes.inference.preflight import PreflightError, SamplingStalled, check_start
from nlmebayes.model.builder import build_model

HILL = ODE(
    "hill_turnover",
    states=["depot", "central", "resp"],
    rhs={
        "depot": "-KA * depot",
        "central": "KA * depot - CL / V * central",
        "resp": "KOUT * E0 * (1 - (central / V)**GAM / (IC50**GAM + (central / V)**GAM)) - KOUT * resp",
    },
    observe={"cp": "central / V", "pca": "resp"},
    initial={"resp": "E0"},
)


def test_hill_term_at_zero_fails_before_sampling_and_names_the_power():
    spec = ModelSpec(
        "hill",
        HILL,
        {"KA": 1.0, "CL": 0.13, "V": 8.0, "E0": 95.0, "KOUT": 0.05, "IC50": 1.0, "GAM": 2.0},
        iiv=IIV(["CL", "V"], sd=[0.2, 0.2]),
        error={
            "cp": ResidualError("combined_sd", add=0.1, prop=0.1),
            "pca": ResidualError("additive", add=5.0),
        },
    )
    t0 = time.perf_counter()
    with pytest.raises(PreflightError) as info:
        fit(spec, datasets.warfarin(), draws=20, tune=20, chains=1, progressbar=False)
    seconds = time.perf_counter() - t0
    print(f"pre-flight failure after {seconds:.1f} s (first use includes the ODE compile)")
    text = str(info.value)
    assert "the log-density at the starting point is" in text
    assert "gradient not finite with respect to: " in text and "log_GAM_pop" in text
    assert "log-likelihood not finite at" in text and "row 2 (subject 1, TIME 0.5)" in text
    assert "likely cause: a power of a quantity that is 0 at the start ((central / V)**GAM" in text
    assert seconds < 300  # a hang guard only: without the check this ran for > 600 s


def test_a_healthy_model_passes_the_check():
    spec = ModelSpec.from_toml("models/theophylline_1cpt_oral.toml")
    built = build_model(spec, datasets.theophylline(), deterministics=False)
    check_start(built, spec, None)  # raises if not finite


def test_a_stalled_sampler_is_stopped_with_a_reason():
    """The guard's mechanism: with a stall time shorter than nutpie's first progress report, the
    run counts as stalled at once, is aborted, and the error says what was done and why it may be."""
    spec = ModelSpec.from_toml("models/theophylline_1cpt_oral.toml")
    with pytest.raises(SamplingStalled) as info:
        fit(
            spec,
            datasets.theophylline(),
            draws=2000,
            tune=2000,
            chains=2,
            stall_seconds=1e-9,
            progressbar=False,
        )
    text = str(info.value)
    # The guard looks every 0.05 s: Theophylline's 2 x 400 iterations took about that long
    # (766 of 800 done at the first look), so the run is long enough to be stopped well before
    # its end, in warm-up or later.
    done = re.match(
        r"no chain finished a draw in 1e-09 s \((\d+) of 8000 draws done, in (warm-up|sampling)\)", text
    )
    assert done and int(done[1]) < 8000, text
    assert "rosenbrock23" in text
    # and a normal run goes through the same guarded path
    res = fit(spec, datasets.theophylline(), draws=100, tune=100, chains=2, seed=1, progressbar=False)
    assert res.posterior.sizes["draw"] == 100
