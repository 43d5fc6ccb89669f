"""Declarative spec: validation, TOML round trip, and the spec never importing PyMC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nlmebayes import IIV, Covariate, ModelSpec, Prior, ResidualError
from nlmebayes.model.modelfile import ModelFileError

MODELS = sorted(Path(__file__).parents[1].joinpath("models").glob("*.toml"))


def _rich_spec() -> ModelSpec:
    return ModelSpec(
        name="rich",
        structural="2cpt_oral",
        parameters={"CL": 3.0, "V": 20.0, "Q": 2.0, "V2": 50.0, "KA": 1.2, "TLAG": 0.5},
        covariates=[
            Covariate("CL", "WT", "power", reference=70, theta=0.75, fixed=True),
            Covariate("V", "AGE", "exponential", reference=40, theta=0.01),
            Covariate("V", "APGR", "indicator", condition="APGR < 5", theta=0.1),
            Covariate(
                "CL", "SEX", "categorical", reference="male", prior=Prior("Normal", {"mu": 0.0, "sigma": 0.5})
            ),
        ],
        iiv=[IIV(["CL", "V"], sd=[0.3, 0.2], block=True), IIV(["KA"], sd=[0.6], kind="additive")],
        error=ResidualError(
            "combined", add=0.1, prop=0.15, priors={"add": Prior("HalfNormal", {"sigma": 1.0})}
        ),
        observations={"dvid": "cp", "ignore": ["DV == 0"]},
        description="every feature once",
    )


def test_toml_round_trip_is_exact(tmp_path):
    spec = _rich_spec()
    text = spec.to_toml(tmp_path / "rich.toml")
    assert ModelSpec.from_toml(tmp_path / "rich.toml") == spec
    assert ModelSpec.from_toml(text) == spec
    assert ModelSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_library_models_load_and_round_trip(path):
    spec = ModelSpec.from_toml(path)
    assert spec.name == path.stem
    assert ModelSpec.from_toml(spec.to_toml()) == spec


def test_spec_and_data_do_not_import_pymc():
    code = (
        "import sys, nlmebayes, nlmebayes.model, nlmebayes.model.spec, nlmebayes.data; "
        "assert 'pymc' not in sys.modules and 'pytensor' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('pymc', 'pytensor'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(parameters={"CL": -1.0}), "must be > 0"),
        (dict(iiv=IIV(["KA"])), "IIV on unknown parameter KA"),
        (dict(covariates=[Covariate("Q", "WT")]), "unknown parameter Q"),
        (dict(iiv=[IIV(["CL"]), IIV(["CL"])]), "IIV in two blocks"),
    ],
)
def test_invalid_specs_are_rejected(kwargs, match):
    base = dict(name="x", structural="1cpt_iv", parameters={"CL": 1.0, "V": 10.0})
    with pytest.raises(ValueError, match=match):
        ModelSpec(**{**base, **kwargs})


def test_component_validation():
    with pytest.raises(ValueError, match="condition like"):
        Covariate("V", "APGR", "indicator")
    with pytest.raises(ValueError, match="residual error must be one of"):
        ResidualError("poisson")
    with pytest.raises(ValueError, match="unknown prior distribution"):
        Prior("Gumbel")
    with pytest.raises(ValueError, match="at least two"):
        IIV(["CL"], block=True)
    with pytest.raises(ValueError, match="model dict: \\[top level\\] has an unknown key 'thetas'"):
        ModelSpec.from_dict({"name": "x", "structural": "1cpt_iv", "parameters": {}, "thetas": 1})


@pytest.mark.parametrize(
    "body,message",
    [
        (
            "[parameters.CL]\ninital = 1.5\n",
            "[parameters.CL] has an unknown key 'inital'; did you mean 'initial'?",
        ),
        ('[parameters.CL]\nprior = {dist = "Normal"}\n', "[parameters.CL] lacks the key 'initial'"),
        ('[observations]\nblk = "M1"\n', "[observations] has an unknown key 'blk'; did you mean 'blq'?"),
        (
            '[[iiv]]\nparameter = ["CL"]\n',
            "[[iiv]] number 1 has an unknown key 'parameter'; did you mean 'parameters'?",
        ),
        (
            '[error]\nkind = "combined"\nadd = 0.1\nprp = 0.1\n',
            "[error] has an unknown key 'prp'; did you mean 'prop'?",
        ),
        ('[[covariates]]\nparameter = "CL"\ncovarate = "WT"\n', "did you mean 'covariate'?"),
    ],
)
def test_model_file_typos_name_file_section_and_key(tmp_path, body, message):
    path = tmp_path / "typo.toml"
    path.write_text('name = "typo"\nstructural = "1cpt_iv"\n' + body)
    with pytest.raises(ModelFileError) as info:
        ModelSpec.from_toml(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_unknown_structural_model_is_an_error_when_the_file_is_read():
    with pytest.raises(
        ModelFileError, match="structural = '1cpt_orl' is not a known model; did you mean '1cpt_oral'"
    ):
        ModelSpec.from_toml('name = "x"\nstructural = "1cpt_orl"\n')
