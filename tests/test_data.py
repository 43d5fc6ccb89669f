"""Event data: reading, NONMEM rules, the bundled datasets, and errors that name row and column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nlmebayes import DataError, datasets, read_nonmem


def _write(tmp_path, text: str, name: str = "bad.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """ID,TIME,AMT,DV,WT
1,0,100,.,70
1,1,.,5.2,70
1,4,.,3.1,70
2,0,100,.,80
2,2,.,4.0,80
"""


# ------------------------------------------------------------------ bundled datasets
def test_pheno_counts():
    d = datasets.pheno()
    assert (d.n_records, d.n_obs, d.n_subjects) == (744, 155, 59)
    assert d.n_doses == 589
    s = d.summary()
    assert "subjects:       59" in s and "observations:   155" in s and "589  dose record" in s
    # NONMEM infers EVID from AMT > 0 when the column is absent.
    assert set(d.records["EVID"]) == {0.0, 1.0}
    cov = d.subject_covariates(["WGT", "APGR"])
    assert cov.shape == (59, 2) and cov.loc[1.0, "WGT"] == 1.4 and cov.loc[1.0, "APGR"] == 7


def test_theophylline_counts():
    d = datasets.theophylline()
    assert (d.n_subjects, d.n_obs, d.n_doses) == (12, 132, 12)
    assert "observations:   132" in d.summary()
    np.testing.assert_array_equal(np.unique(d.dose_cmt), [1])
    np.testing.assert_array_equal(np.unique(d.obs_cmt), [2])
    # the 132 DV values are R's datasets::Theoph$conc
    np.testing.assert_array_equal(d.obs_dv, datasets.theophylline_nlme()["conc"].to_numpy())


def test_warfarin_counts():
    d = datasets.warfarin()
    assert (d.n_subjects, d.n_doses, d.n_obs) == (32, 32, 483)
    counts = pd.Series(d.obs_dvid).value_counts()
    assert counts["cp"] == 251 and counts["pca"] == 232
    assert set(d.subject_covariates(["SEX"])["SEX"]) == {"male", "female"}


# ------------------------------------------------------------------ NONMEM semantics
def test_case_insensitive_dot_missing_and_whitespace(tmp_path):
    p = _write(tmp_path, "id time amt dv wt\n@ a comment line\n1 0 100 . 70\n1 1 . 5.2 70\n", "x.dta")
    d = read_nonmem(p)
    assert d.n_obs == 1 and d.n_doses == 1 and d.covariate_names == ("WT",)
    assert d.obs_row.tolist() == [2]


def test_addl_expansion_and_pairs():
    df = pd.DataFrame(dict(ID=1, TIME=[0, 30], AMT=[100, 0], II=[12, 0], ADDL=[2, 0], DV=[0, 1.0]))
    d = read_nonmem(df)
    np.testing.assert_array_equal(d.dose_time, [0, 12, 24])
    # the three doses form one train: one pair from the first to the latest dose
    assert (d.pair_obs.tolist(), d.pair_first.tolist(), d.pair_dose.tolist()) == ([0], [0], [2])
    assert d.pair_count.tolist() == [3]
    assert "1 dose-observation pairs for 3" in d.summary()


def test_reset_cuts_pairs_and_implied_doses():
    df = pd.DataFrame(
        dict(
            ID=1,
            TIME=[0, 5, 0, 20],
            AMT=[100, 0, 0, 0],
            II=[12, 0, 0, 0],
            ADDL=[3, 0, 0, 0],
            EVID=[1, 0, 3, 0],
            DV=[0, 1, 0, 1],
        )
    )
    d = read_nonmem(df)
    # the reset at row 3 ends the segment: the observation at row 4 sees no dose, and the
    # ADDL doses declared before the reset (which would fall at or after it in time) ...
    assert d.pair_obs.tolist() == [0]
    # time restarts at the reset, so implied doses at 12, 24, 36 are >= the reset time 0: cut
    assert d.n_doses == 1
    assert any("cancelled by a later reset" in r for r in d.excluded["reason"])


def test_mdv_rows_are_reported_not_dropped():
    df = pd.DataFrame(dict(ID=1, TIME=[0, 1, 2, 3], AMT=[100, 0, 0, 0], DV=[0, 5, 4, 3], MDV=[1, 0, 1, 0]))
    d = read_nonmem(df)
    assert d.n_obs == 2
    # NONMEM reads a non-dose MDV=1 record without EVID as EVID 2
    assert d.excluded["reason"].tolist() == ["dose record", "other event (EVID 2)"]
    assert "1  other event (EVID 2)" in d.summary()


def test_time_varying_covariate_carried_and_checked():
    df = pd.DataFrame(dict(ID=1, TIME=[0, 1, 2], AMT=[100, 0, 0], DV=[0, 5, 4], CRCL=[60, 60, 80]))
    d = read_nonmem(df)
    assert d.time_varying_covariates() == ("CRCL",)
    assert d.record_covariates(["CRCL"])["CRCL"].tolist() == [60, 80]
    with pytest.raises(DataError, match=r"row 3, column CRCL: covariate CRCL .* changes within"):
        d.subject_covariates(["CRCL"])


# ------------------------------------------------------------------ malformed datasets
# Each case: (file text, expected row, expected column, a fragment of the message).
# Rows are 1-based data records; the file line is row + 1 (the header).
BAD = [
    ("unsorted time", GOOD.replace("1,4,.,3.1,70", "1,0.5,.,3.1,70"), 3, "TIME", "expected TIME >= 1"),
    ("dose with DV", GOOD.replace("2,0,100,.,80", "2,0,100,7.5,80"), 4, "DV", "dose record carries DV = 7.5"),
    ("missing ID", GOOD.replace("1,1,.,5.2,70", ".,1,.,5.2,70"), 2, "ID", "ID is missing"),
    ("missing TIME", GOOD.replace("2,2,.,4.0,80", "2,.,.,4.0,80"), 5, "TIME", "TIME is missing"),
    ("negative AMT", GOOD.replace("2,0,100,.,80", "2,0,-100,.,80"), 4, "AMT", "expected AMT >= 0"),
    ("NaN covariate", GOOD.replace("1,4,.,3.1,70", "1,4,.,3.1,."), 3, "WT", "covariate WT is missing"),
    ("non-numeric DV", GOOD.replace("5.2", "5.2mg"), 2, "DV", "expected a number, got '5.2mg'"),
    ("missing DV on observation", GOOD.replace("3.1", "."), 3, "DV", "DV is missing"),
    ("duplicated subject block", GOOD + "1,6,.,2.0,70\n", 6, "ID", "subject 1 appears again"),
    ("unknown EVID", "ID,TIME,AMT,DV,EVID\n1,0,100,.,1\n1,1,.,3,7\n", 2, "EVID", "expected EVID 0"),
    ("negative RATE", "ID,TIME,AMT,DV,RATE\n1,0,100,.,-5\n1,1,.,3,.\n", 1, "RATE", "expected RATE >= 0"),
    ("SS without II", "ID,TIME,AMT,DV,SS,II\n1,0,100,.,1,0\n1,1,.,3,0,0\n", 1, "II", "needs II > 0"),
    ("MDV=0 on a dose", "ID,TIME,AMT,DV,EVID,MDV\n1,0,100,.,1,0\n1,1,.,3,0,0\n", 1, "MDV", "MDV must be 1"),
    ("bad CENS", "ID,TIME,AMT,DV,CENS\n1,0,100,.,0\n1,1,.,3,2\n", 2, "CENS", "expected CENS 0, 1"),
    ("CENS on a dose", "ID,TIME,AMT,DV,CENS\n1,0,100,.,1\n1,1,.,3,0\n", 1, "CENS", "only observations"),
    (
        "LIMIT on the wrong side",
        "ID,TIME,AMT,DV,CENS,LIMIT\n1,0,100,.,0,.\n1,1,.,0.5,1,0.8\n",
        2,
        "LIMIT",
        "must lie below DV",
    ),
    ("bad CMT", "ID,TIME,AMT,DV,CMT\n1,0,100,.,1.5\n1,1,.,3,1\n", 1, "CMT", "positive integer"),
    ("dose without amount", "ID,TIME,AMT,DV,EVID\n1,0,0,.,1\n1,1,.,3,0\n", 1, "AMT", "needs AMT > 0"),
]


@pytest.mark.parametrize("label,text,row,column,fragment", BAD, ids=[b[0] for b in BAD])
def test_malformed_file_names_row_and_column(tmp_path, label, text, row, column, fragment):
    p = _write(tmp_path, text)
    with pytest.raises(DataError) as exc:
        read_nonmem(p)
    e = exc.value
    assert (e.source, e.row, e.line, e.column) == ("bad.csv", row, row + 1, column)
    assert f"bad.csv, row {row} (line {row + 1}), column {column}: " in str(e)
    assert fragment in str(e)


def test_malformed_dataframe_row_numbers():
    df = pd.DataFrame(dict(ID=[1, 1, 1], TIME=[0, 2, 1], AMT=[10, 0, 0], DV=[0, 1, 1]))
    with pytest.raises(DataError, match=r"<DataFrame>, row 3, column TIME"):
        read_nonmem(df)


def test_missing_required_column():
    with pytest.raises(DataError, match="required data item TIME is missing"):
        read_nonmem(pd.DataFrame(dict(ID=[1], DV=[1.0])))


def test_comment_lines_keep_file_line_numbers(tmp_path):
    p = _write(tmp_path, "ID,TIME,AMT,DV\n# note\n1,0,100,.\n1,2,.,3\n1,1,.,3\n")
    with pytest.raises(DataError) as exc:
        read_nonmem(p)
    assert (exc.value.row, exc.value.line) == (3, 5)


def test_dose_observation_pairs_match_their_definition_on_random_designs():
    """The vectorised pairing against the definition, pair by pair: a dose event pairs with an
    observation when it is in the same reset segment and comes first (earlier time, or the same
    time and an earlier record); ADDL doses at or after their subject's next reset are cancelled.
    300 random designs with ties, resets, ADDL and several subjects."""
    from nlmebayes.data.dosing import (
        dose_observation_pairs,
        dose_trains,
        expand_doses,
        train_observation_pairs,
    )

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        subject = np.sort(rng.integers(0, 4, n))
        time = np.concatenate(
            [
                np.sort(rng.choice([0.0, 1, 2, 3, 5, 8, 12, 24], (subject == s).sum()))
                for s in np.unique(subject)
            ]
        )
        is_dose = rng.random(n) < 0.4
        segment = np.cumsum(np.r_[1, (np.diff(subject) != 0) | (rng.random(n - 1) < 0.1)])
        ii = np.where(is_dose, rng.choice([0.0, 4.0, 12.0], n), 0.0)
        addl = np.where(is_dose & (ii > 0), rng.integers(0, 4, n), 0).astype(float)
        ev = expand_doses(time, ii, addl, np.zeros(n), is_dose, subject, segment)
        # cancellation by definition
        for j in range(len(ev.record)):
            later = np.flatnonzero((subject == subject[ev.record[j]]) & (segment > ev.segment[j]))
            assert not later.size or ev.time[j] < time[later[0]] or ev.k[j] == 0
        obs = np.flatnonzero(~is_dose)
        po, pd_ = dose_observation_pairs(ev, obs, time, segment)
        expected = [
            (i, j)
            for i, r in enumerate(obs)
            for j in range(len(ev.record))
            if ev.segment[j] == segment[r]
            and (ev.time[j] < time[r] or (ev.time[j] == time[r] and ev.record[j] < r))
        ]
        assert list(zip(po.tolist(), pd_.tolist(), strict=True)) == expected
        # The same pairs with equally spaced doses of one key summed as trains: each train pair
        # stands for its first `count` events, which are the train's doses that come first.
        key = rng.integers(-1, 2, len(ev.record))
        run = dose_trains(ev, key)
        to, td, tf, tc = train_observation_pairs(ev, run, obs, time, segment)
        expanded = []
        for i, d, f, c in zip(to, td, tf, tc, strict=True):
            members = np.flatnonzero((run == run[d]) & (ev.time <= ev.time[d]))
            assert len(members) == c and ev.time[members].min() == ev.time[f]
            expanded += [(i, j) for j in members]
        assert sorted(expanded) == expected
        for r in np.unique(run):  # a train: one key, one segment, equal spacing
            members = np.flatnonzero(run == r)
            assert len({*key[members]}) == 1 and len({*ev.segment[members]}) == 1
            assert len(members) == 1 or (key[members[0]] >= 0 and np.ptp(np.diff(ev.time[members])) < 1e-9)


def test_exactly_duplicated_records_are_warned_about_and_kept():
    df = pd.DataFrame(
        {"ID": [1, 1, 1, 1], "TIME": [0.0, 1.0, 1.0, 2.0], "AMT": [100, 0, 0, 0], "DV": [0, 5, 5, 4]}
    )
    with pytest.warns(
        UserWarning,
        match=r"<DataFrame>: record\(s\) 3 repeat an earlier record in every column \(first copy at "
        r"record 2\)",
    ):
        data = read_nonmem(df)
    assert data.n_obs == 3  # kept: a warning, not a silent drop
