"""NONMEM control streams and results in (issue 18 items 1 and 2).

The reference is NONMEM itself: pheno_real.mod converted and evaluated at its own ``.ext``
estimates must give NONMEM's OFV and EBEs; every construct the spec cannot express must be
refused with the record, the line and the construct named.
"""

from pathlib import Path

import numpy as np
import pytest

from nlmebayes import ModelSpec
from nlmebayes.datasets import path
from nlmebayes.diagnostics import marginal_likelihood

pytest.importorskip("pharmpy", reason="the nonmem extra (Pharmpy) is part of the dev set-up")
from nlmebayes.io import ControlStreamError, read_control_stream, read_ext, read_phi  # noqa: E402

MODELS = Path(__file__).parent.parent / "models"
PHENO_MOD = path("pheno_real.mod").read_text()


@pytest.fixture(scope="module")
def pheno_converted():
    return read_control_stream(path("pheno_real.mod"))


def _signature(spec: ModelSpec):
    """What makes two specs the same model (initial values apart)."""
    covs = sorted((c.parameter, c.covariate, c.kind, c.reference, c.fixed, c.fixed and c.theta, c.condition)
                  for c in spec.covariates)  # fmt: skip
    iiv = [(b.parameters, b.block, b.kind) for b in spec.iiv]
    return (spec.structural, spec.parameter_names, covs, iiv, spec.error.kind)


def test_pheno_converts_to_the_bundled_model(pheno_converted):
    m = pheno_converted
    assert _signature(m.spec) == _signature(ModelSpec.from_toml(MODELS / "pheno_1cpt_iv.toml"))
    assert (m.data.n_subjects, m.data.n_obs, m.data.n_doses) == (59, 155, 589)
    assert m.nonmem_names == {
        "CL": "THETA(1)", "V": "THETA(2)", "theta_V_APGR": "THETA(3)",
        "omega2(CL)": "OMEGA(1,1)", "omega2(V)": "OMEGA(2,2)", "sigma2_prop": "SIGMA(1,1)",
    }  # fmt: skip
    # The initial estimates come from $THETA/$OMEGA/$SIGMA (SDs are square roots of variances).
    assert m.spec.parameters[0].initial == 0.00469307
    assert m.spec.iiv[0].sd[0] == pytest.approx(np.sqrt(0.0309626))
    assert m.spec.error.prop == pytest.approx(np.sqrt(0.013241))
    # BTIME and TAD feed $TABLE only: reported, not silently dropped.
    assert "BTIME, TAD" in m.notes[0]
    # The TOML round trip keeps the model.
    assert ModelSpec.from_toml(m.spec.to_toml()) == m.spec


def test_pheno_ofv_and_ebes_at_nonmem_estimates(pheno_converted):
    m = pheno_converted
    ext = read_ext(path("pheno_real.ext"))
    pv = ext.population_values(m.spec, m.nonmem_names)
    mg = marginal_likelihood(m.spec, m.data, pv)
    # NONMEM's OFV 586.27605628 (issue: 0.001). Both compute FOCE-I at the same estimates.
    assert ext.ofv == pytest.approx(586.27605628, abs=1e-8)
    assert mg.ofv == pytest.approx(ext.ofv, abs=1e-3)
    phi = read_phi(path("pheno_real.phi"))
    assert list(phi["ID"]) == list(range(1, 60))
    # .phi prints 6 significant digits and NONMEM's EBE search stops at ~1e-6: 2e-5 covers both.
    np.testing.assert_allclose(mg.eta, phi[["ETA(1)", "ETA(2)"]].to_numpy(), atol=2e-5)
    # The standard errors come with the estimates ($COVARIANCE).
    assert ext.se["THETA(1)"] == pytest.approx(2.10036e-04)


def test_converted_model_writes_toml_and_csv(pheno_converted, tmp_path):
    from nlmebayes import read_nonmem

    toml, csv = pheno_converted.write(tmp_path)
    assert ModelSpec.from_toml(toml) == pheno_converted.spec
    data = read_nonmem(csv)
    assert (data.n_subjects, data.n_obs) == (59, 155)


def test_warfarin_ddmore_control_stream_is_refused_naming_the_construct():
    # ADVAN13 with $DES whose absorption switches on at T >= TLAG: an ODE right-hand side of time,
    # which the spec's ODE cannot state yet (issue 15 item 5).
    with pytest.raises(ControlStreamError) as e:
        read_control_stream(path("warfarin_ddmore.mod"))
    assert str(e.value) == (
        "warfarin_ddmore.mod: $DES line 38: 'IF (T.GE.TLAG) THEN' depends on time T: right-hand "
        "sides of T are not supported (write a lag time as ALAG1 in $PK of ADVAN2/4/12)"
    )


def _variant(tmp_path: Path, name: str, old: str, new: str, extra: tuple = ()) -> Path:
    """pheno_real.mod with ``old`` replaced by ``new`` (and further pairs), next to its data."""
    text = PHENO_MOD
    for a, b in ((old, new), *extra):
        assert a in text, a
        text = text.replace(a, b, 1)
    (tmp_path / "pheno.dta").write_text(path("pheno.dta").read_text())
    p = tmp_path / f"{name}.mod"
    p.write_text(text)
    return p


SUPPORTED = (
    "ADVAN1 TRANS1, ADVAN1 TRANS2, ADVAN2 TRANS1, ADVAN2 TRANS2, ADVAN3 TRANS4, ADVAN4 TRANS4, "
    "ADVAN11 TRANS4, ADVAN12 TRANS4"
)
COVARIATE_FORMS = (
    "(COV**THETA, (COV/ref)**THETA, EXP(THETA*(COV-ref)), 1+THETA*(COV-ref), IF (COND) TV=TV*(1+THETA))"
)
# case: (text in pheno_real.mod, its replacement, the exact message after "<case>.mod: ")
REFUSED = {
    "advan5": (
        "ADVAN1 TRANS2",
        "ADVAN5 TRANS1",
        f"$SUBROUTINES line 4: ADVAN5 TRANS1 is not supported; supported: {SUPPORTED}",
    ),
    "trans3": (
        "ADVAN1 TRANS2",
        "ADVAN1 TRANS3",
        f"$SUBROUTINES line 4: ADVAN1 TRANS3 is not supported; supported: {SUPPORTED}",
    ),
    "two_etas": (
        "CL=TVCL*EXP(ETA(1))",
        "CL=TVCL*EXP(ETA(1)+ETA(2))",
        "$PK line 12: CL has 2 ETAs (ETA_1, ETA_2); give it one",
    ),
    "eta_nonlinear": (
        "CL=TVCL*EXP(ETA(1))",
        "CL=TVCL*EXP(ETA(1))**2+ETA(1)",
        "$PK line 12: ETA_1 enters CL as ETA_1 + PTVCL*WGT*exp(2*ETA_1); write TV*EXP(ETA) or TV+ETA",
    ),
    "eta_two_params": (
        "V=TVV*EXP(ETA(2))",
        "V=TVV*EXP(ETA(1))",
        "$PK line 13: ETA_1 acts on two parameters; an ETA may act on one only",
    ),
    "log_covariate": (
        "TVCL=THETA(1)*WGT",
        "TVCL=THETA(1)*LOG(WGT)",
        f"$PK line 12: the factor log(WGT) of CL is not a supported covariate form {COVARIATE_FORMS}",
    ),
    "no_theta": (
        "TVCL=THETA(1)*WGT",
        "TVCL=0.005*WGT",
        "$PK line 12: CL = 0.005*WGT*exp(ETA_1) has no THETA for its typical value",
    ),
    "theta_twice": (
        "TVCL=THETA(1)*WGT",
        "TVCL=THETA(1)*(WGT/1.3)**THETA(3)",
        "$PK line 13: THETA_3 (THETA(3)) is used in two places; give each effect its own THETA",
    ),
    "omega_fix": (
        " 0.0309626  ;       IVCL",
        " 0.0309626 FIX ;       IVCL",
        "$OMEGA line 27: ETA_1: OMEGA FIX is not supported (every omega is estimated here); "
        "remove FIX or the ETA",
    ),
    "unused_eta": (
        "V=TVV*EXP(ETA(2))",
        "V=TVV",
        "$OMEGA: ETA_2 is declared but acts on no structural parameter",
    ),
    "scale": (
        "S1=V",
        "S1=V/1000",
        "$PK line 14: S1 is not the central volume V (unit conversions in S are not supported yet)",
    ),
    "no_scale": ("S1=V\n", "\n", "$PK: S1 is not set; set S1=V (concentration = amount / volume)"),
    "alag2": (
        "S1=V",
        "S1=V\nALAG2=THETA(3)",
        "$PK line 15: ALAG2: only ALAG1, F1 and D1 (the dosing compartment's lag, bioavailability, "
        "duration) are supported",
    ),
    "power_error": (
        "W=F\n",
        "W=SQRT(F)\n",
        "$ERROR line 18: residual SD sqrt(F) is not of the form a + b*F or sqrt(a**2 + b**2*F**2)",
    ),
    "error_in_if": (
        "Y=F+W*EPS(1)",
        "IF (DV.GT.50) THEN\n Y=F+W*EPS(1)\nELSE\n Y=F+EPS(1)\nENDIF",
        "$ERROR line 21: Y is set inside IF blocks; only one residual model for all records is supported",
    ),
    "missing_data": ("'pheno.dta'", "'missing.dta'", "$DATA line 2: the dataset was not found"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsupported_constructs_are_refused_with_record_line_and_construct(tmp_path, case):
    old, new, msg = REFUSED[case]
    p = _variant(tmp_path, case, old, new)
    with pytest.raises(ControlStreamError) as e:
        read_control_stream(p)
    assert str(e.value) == f"{case}.mod: {msg}"


def test_syntax_error_names_the_file_and_pharmpys_position(tmp_path):
    p = _variant(tmp_path, "syntax", "CL=TVCL*EXP(ETA(1))", "CL=TVCL*EXP(ETA(1)")
    with pytest.raises(
        ControlStreamError, match=r"^syntax.mod: Pharmpy could not parse it: .*line 7, column 19"
    ):
        read_control_stream(p)


NEW_THETA = ("$OMEGA", "$THETA 0.2\n$OMEGA")  # THETA(4) = 0.2
# case: (replacements in pheno_real.mod, the covariate on CL as (kind, reference, theta, fixed))
CONVERTED = {
    "power_estimated": (
        [("TVCL=THETA(1)*WGT", "TVCL=THETA(1)*(WGT/1.3)**THETA(4)"), NEW_THETA],
        ("power", 1.3, 0.2, False),
    ),
    "power_fixed_mu": (
        [("CL=TVCL*EXP(ETA(1))", "MU_1=LOG(THETA(1))+0.75*LOG(WGT/70)\nCL=EXP(MU_1+ETA(1))")],
        ("power", 70.0, 0.75, True),
    ),
    "linear": (
        [("TVCL=THETA(1)*WGT", "TVCL=THETA(1)*(1+THETA(4)*(WGT-1.3))"), NEW_THETA],
        ("linear", 1.3, 0.2, False),
    ),
    "exponential": (
        [("TVCL=THETA(1)*WGT", "TVCL=THETA(1)*EXP(THETA(4)*(WGT-1.3))"), NEW_THETA],
        ("exponential", 1.3, 0.2, False),
    ),
}


@pytest.mark.parametrize("case", sorted(CONVERTED))
def test_covariate_forms_convert(tmp_path, case):
    pairs, expected = CONVERTED[case]
    m = read_control_stream(_variant(tmp_path, case, *pairs[0], extra=pairs[1:]))
    (cov,) = [c for c in m.spec.covariates if c.parameter == "CL"]
    assert (cov.kind, cov.reference, cov.theta, cov.fixed) == pytest.approx(expected)
    if not cov.fixed:
        assert m.nonmem_names[cov.name] == "THETA(4)"


def test_combined_error_with_thetas_as_sds(tmp_path):
    pairs = (("W=F\n", "W=SQRT(THETA(4)**2+THETA(5)**2*F**2)\n"),
             ("$SIGMA 0.013241", "$THETA 0.5\n$THETA 0.1\n$SIGMA 1 FIX"))  # fmt: skip
    m = read_control_stream(_variant(tmp_path, "combined", *pairs[0], extra=pairs[1:]))
    assert (m.spec.error.kind, m.spec.error.add, m.spec.error.prop) == ("combined", 0.5, 0.1)
    assert (m.nonmem_names["sigma_add"], m.nonmem_names["sigma_prop"]) == ("THETA(4)", "THETA(5)")


def test_oral_two_compartment_maps_nonmem_names(tmp_path):
    # ADVAN4 TRANS4: V2 is central and V3 peripheral in NONMEM; V and V2 here. IGNORE=(...), DROP
    # and synonyms come through Pharmpy.
    pk = ("$PK\nCL=THETA(1)*EXP(ETA(1))\nV2=THETA(2)*EXP(ETA(2))\nQ=THETA(3)\nV3=THETA(4)\n"
          "KA=THETA(5)*EXP(ETA(3))\nALAG1=THETA(6)\nS2=V2\n")  # fmt: skip
    text = (
        "$PROBLEM oral 2cpt\n$INPUT ID TIME AMT CONC=DV WT=DROP\n$DATA data.csv IGNORE=@ IGNORE=(ID.EQ.2)\n"
        f"$SUBROUTINE ADVAN4 TRANS4\n{pk}$ERROR\nY=F*EXP(EPS(1))\n"
        "$THETA (0,3) (0,30) (0,2) (0,50) (0,1.5) (0,0.5)\n"
        "$OMEGA BLOCK(2) 0.1 0.01 0.1\n$OMEGA 0.2\n$SIGMA 0.04\n"
    )
    rows = ["ID,TIME,AMT,DV,WT"] + [f"{i},0,100,.,70" for i in (1, 2)]
    rows += [f"{i},{t},0,{5 - t / 10},70" for i in (1, 2) for t in (1, 2, 4)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "oral.mod").write_text(text)
    m = read_control_stream(tmp_path / "oral.mod")
    assert m.spec.structural == "2cpt_oral"
    assert {p.name: p.initial for p in m.spec.parameters} == {
        "CL": 3, "V": 30, "Q": 2, "V2": 50, "KA": 1.5, "TLAG": 0.5}  # fmt: skip
    assert [(b.parameters, b.block) for b in m.spec.iiv] == [(["CL", "V"], True), (["KA"], False)]
    assert m.nonmem_names["omega(CL,V)"] == "OMEGA(2,1)" and m.nonmem_names["omega2(KA)"] == "OMEGA(3,3)"
    assert (m.spec.error.kind, m.spec.error.exp) == ("exponential", pytest.approx(0.2))
    # CONC=DV: the column keeps its name in Pharmpy and is DV here.
    assert (
        m.data.n_subjects == 1
        and m.data.n_obs == 3
        and m.table.columns.tolist() == ["ID", "TIME", "AMT", "DV"]
    )


DES_PHENO = (
    ("$SUBROUTINE ADVAN1 TRANS2", "$SUBROUTINE ADVAN13 TOL=9\n$MODEL COMP=(CENT DEFDOSE DEFOBS)"),
    ("S1=V\n", "S1=V\n\n$DES\nKE=CL/V\nDADT(1)=-KE*A(1)\n"),
)


@pytest.mark.slow
def test_des_model_converts_to_an_ode_with_nonmems_ofv(tmp_path):
    """pheno_real written with ADVAN13 and $DES converts to an ODE spec that gives NONMEM's OFV at
    the .ext estimates: the same model as ADVAN1, solved numerically."""
    m = read_control_stream(_variant(tmp_path, "des", *DES_PHENO[0], extra=DES_PHENO[1:]))
    ode = m.spec.structural
    assert (ode.states, ode.rhs, ode.observe) == (["CENT"], {"CENT": "-CENT*CL/V"}, "CENT/V")
    assert (ode.dose_state, ode.observe_state) == ("CENT", "CENT")
    assert _signature(m.spec)[1:] == _signature(read_control_stream(path("pheno_real.mod")).spec)[1:]
    ext = read_ext(path("pheno_real.ext"))
    mg = marginal_likelihood(m.spec, m.data, ext.population_values(m.spec, m.nonmem_names))
    # The ODE solver's rtol 1e-6 moves predictions by ~1e-6 relative; the OFV by far less than 1e-3.
    assert mg.ofv == pytest.approx(586.27605628, abs=1e-3)


def test_des_constructs_the_ode_spec_cannot_hold_are_refused(tmp_path):
    covariate_in_des = (*DES_PHENO[:1], ("S1=V\n", "S1=V\n\n$DES\nDADT(1)=-CL/V*A(1)*WGT\n"))
    with pytest.raises(ControlStreamError) as e:
        read_control_stream(_variant(tmp_path, "des_cov", *covariate_in_des[0], extra=covariate_in_des[1:]))
    assert str(e.value) == (
        "des_cov.mod: $DES line 18: WGT in $DES is a data column; only states and $PK parameters may appear"
    )


def _pheno_like(tmp_path: Path, name: str, subroutine: str, pk: str) -> Path:
    """A one-eta proportional-error model of the pheno data with the given $SUBROUTINE and $PK."""
    (tmp_path / "pheno.dta").write_text(path("pheno.dta").read_text())
    text = (
        f"$PROBLEM {name}\n$INPUT ID TIME AMT WGT APGR DV FA1=DROP FA2=DROP\n$DATA pheno.dta IGNORE=@\n"
        f"$SUBROUTINE {subroutine}\n$PK\n{pk}S1=V\n$ERROR\nY=F+F*EPS(1)\n"
        "$THETA (0,0.005) (0,1)\n$OMEGA 0.03\n$SIGMA 0.013\n"
    )
    (tmp_path / f"{name}.mod").write_text(text)
    return tmp_path / f"{name}.mod"


def test_trans1_k_and_v_is_the_trans2_model_with_cl_equal_k_times_v(tmp_path):
    """ADVAN1 TRANS1 (K, V): with IIV on K only, K = t1 e^eta and V = t2 WGT is TRANS2's
    CL = (t1 t2) WGT e^eta, V = t2 WGT: the OFVs at matching values are equal."""
    k = read_control_stream(
        _pheno_like(tmp_path, "k", "ADVAN1 TRANS1", "K=THETA(1)*EXP(ETA(1))\nV=THETA(2)*WGT\n")
    )
    cl = read_control_stream(
        _pheno_like(tmp_path, "cl", "ADVAN1 TRANS2", "CL=THETA(1)*WGT*EXP(ETA(1))\nV=THETA(2)*WGT\n")
    )
    assert (k.spec.structural, list(k.spec.parameter_names), list(k.spec.iiv_parameters)) == (
        "1cpt_iv",
        ["K", "V"],
        ["K"],
    )
    from nlmebayes.diagnostics import PopulationValues

    common = dict(omega=np.array([[0.03]]), sigma={"prop": 0.11})
    ofv_k = marginal_likelihood(k.spec, k.data, PopulationValues({"K": 0.0048, "V": 0.98}, **common)).ofv
    ofv_cl = marginal_likelihood(
        cl.spec, cl.data, PopulationValues({"CL": 0.0048 * 0.98, "V": 0.98}, **common)
    ).ofv
    # The same likelihood by two routes (K*V vs CL/V inside the model): rounding only.
    assert ofv_k == pytest.approx(ofv_cl, abs=1e-6)


def test_block_mixing_log_normal_and_additive_etas_converts(tmp_path):
    """$OMEGA BLOCK(2) over CL = TVCL*EXP(ETA(1)) and V = TVV+ETA(2): one correlated block whose
    kinds differ per parameter (IIV.kind as a list), the covariance carried as the block's SDs."""
    pairs = (
        ("V=TVV*EXP(ETA(2))", "V=TVV+ETA(2)"),
        (
            "$OMEGA DIAGONAL(2)\n 0.0309626  ;       IVCL\n 0.031128  ;        IVV",
            "$OMEGA BLOCK(2) 0.03 0.005 0.04",
        ),
    )
    m = read_control_stream(_variant(tmp_path, "mixed_block", *pairs[0], extra=pairs[1:]))
    (block,) = m.spec.iiv
    assert block.block and block.parameters == ["CL", "V"] and block.kind == ["lognormal", "additive"]
    assert block.sd == pytest.approx([0.03**0.5, 0.04**0.5])
    assert m.nonmem_names["omega(CL,V)"] == "OMEGA(2,1)"
