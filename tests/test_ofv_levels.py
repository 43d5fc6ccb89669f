"""The marginal likelihood of models with a level above the subject (study): the group effects
integrated per group by adaptive Gauss-Hermite quadrature around each group's mode, the subjects'
etas inside by FOCE-I, Laplace or importance sampling.

No sampling: every number is at given population values (the simulation truth).
"""

import dataclasses

import numpy as np
import pytest

from nlmebayes import IIV, Level, ModelSpec, ResidualError, read_nonmem
from nlmebayes.diagnostics import ConditionalModel, PopulationValues, marginal_likelihood, n_parameters
from nlmebayes.simulation import simulate
from tests.test_variability import _design

TRUTH = dict(typical={"CL": 2.0, "V": 20.0}, omega=np.diag([0.04, 0.04]), sigma={"add": 0.05, "prop": 0.1})


def _study_case(n_studies, per_study, times, parameters=("CL", "V"), sds=(0.4, 0.2), seed=5):
    design = _design(n_studies * per_study, times, STUDY=lambda i: (i - 1) // per_study + 1)
    spec = ModelSpec(
        name="study",
        structural="1cpt_iv",
        parameters={"CL": 2.0, "V": 20.0},
        iiv=IIV(["CL", "V"], sd=[0.2, 0.2]),
        levels=Level("STUDY", list(parameters), sd=[0.3] * len(parameters)),
        error=ResidualError("combined", add=0.05, prop=0.1),
    )
    level_sd = {"STUDY": dict(zip(parameters, sds, strict=True))}
    sim = simulate(spec, design, **TRUTH, level_sd=level_sd, seed=seed)
    return spec, sim, PopulationValues(**TRUTH, level_sd=level_sd)


RICH = (0.5, 1, 2, 4, 6, 8, 12, 16, 24, 36)


@pytest.mark.slow
def test_level_ofv_laplace_and_importance_sampling_agree_on_10_studies():
    """10 studies x 4 subjects x 10 samples, study effects on CL (SD 0.4) and V (0.2): Laplace
    and importance sampling (8000 points per subject) agree to 0.5 (measured 0.36; IS seeds 0.02
    apart, 0.3 allowed). On sparser designs (5 samples per subject) they differ by ~1.8, as much as
    the same model without the level does: that is Laplace's error on each subject's etas, not the
    study integral's."""
    spec, sim, pop = _study_case(10, 4, RICH)
    cm = ConditionalModel(spec, sim)
    laplace = marginal_likelihood(spec, sim, pop, method="laplace", conditional=cm).ofv
    imp = [
        marginal_likelihood(spec, sim, pop, method="importance", conditional=cm, seed=s, n_is=8000).ofv
        for s in (0, 1)
    ]
    assert abs(imp[0] - imp[1]) < 0.3
    assert abs(laplace - np.mean(imp)) < 0.5
    assert n_parameters(spec, sim)["omega"] == 2 + 2  # each level SD counts


def test_level_ofv_tends_to_the_model_without_it():
    """At study SD 1e-4 the level changes nothing: the OFV is the one-level model's (measured
    0.0005 apart on 3 x 4 subjects; 0.01 allowed)."""
    spec, sim, pop = _study_case(3, 4, (1, 4, 8, 12, 24), parameters=("CL",), sds=(0.4,))
    tiny = dataclasses.replace(pop, level_sd={"STUDY": {"CL": 1e-4}})
    without = marginal_likelihood(dataclasses.replace(spec, levels=None), sim, pop).ofv
    assert abs(marginal_likelihood(spec, sim, tiny).ofv - without) < 0.01


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:EBEs not converged")  # far grid points, negligible weight
def test_level_quadrature_equals_a_dense_grid_over_each_study():
    """Independent check of the study integral: for each of 2 studies, ``-2 log int p(y_s | g)
    N(g; 0, 0.4^2) dg`` by Simpson's rule on 201 points over +-1 around the study's mode (about
    +-8 posterior SDs), each ``p(y_s | g)`` the FOCE-I marginal likelihood of the model *without*
    a level on that study's subjects with CL multiplied by exp(g). Our 7-node adaptive quadrature
    equals it to 1e-4 (measured 1.3e-7)."""
    from scipy.integrate import simpson

    spec, sim, pop = _study_case(2, 4, (1, 4, 8, 12, 24), parameters=("CL",), sds=(0.4,))
    ours = marginal_likelihood(spec, sim, pop)
    modes = ours.population.level_effects["STUDY"][:, 0]
    plain = dataclasses.replace(spec, levels=None)
    frame = sim.input_frame()
    total = 0.0
    for study, mode in zip((1, 2), modes, strict=True):
        sub = read_nonmem(frame[frame["STUDY"] == study].reset_index(drop=True))
        cm = ConditionalModel(plain, sub)
        grid = np.linspace(mode - 1.0, mode + 1.0, 201)
        m2ll = np.array(
            [
                marginal_likelihood(
                    plain,
                    sub,
                    dataclasses.replace(pop, typical={"CL": 2.0 * np.exp(g), "V": 20.0}),
                    conditional=cm,
                ).m2ll
                for g in grid
            ]
        )
        log_f = -0.5 * m2ll - 0.5 * (grid / 0.4) ** 2 - np.log(0.4 * np.sqrt(2 * np.pi))
        peak = log_f.max()
        total += -2.0 * (peak + np.log(simpson(np.exp(log_f - peak), x=grid)))
    assert abs(ours.m2ll - total) < 1e-4
