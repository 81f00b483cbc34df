"""The pretraining-length benchmark's criterion ("keeps the world") on hand-built rows."""

import pandas as pd
from conftest import load_script


def _bench():
    return load_script("benchmarks/bench_pretrain_length.py")


def rows(**shorter) -> pd.DataFrame:
    default = {
        "passes": 14.0,
        "probe test %": 40.0,
        "|D|": 176,
        "min |D|": 100,
        "failing": "-",
    }
    return pd.DataFrame([{**default, "passes": 7.0, **shorter}, default])


def test_a_shorter_pretraining_that_keeps_everything_keeps_the_world():
    assert _bench().keeps_world(rows(**{"probe test %": 36.5}), 14.0) == [True, True]


def test_a_shorter_pretraining_fails_on_any_of_the_three_conditions():
    keeps = _bench().keeps_world
    assert keeps(rows(**{"probe test %": 35.0}), 14.0)[0] is False  # below 90% of the default's 40
    assert keeps(rows(**{"|D|": 90}), 14.0)[0] is False  # fewer examples than the study accepts
    assert keeps(rows(failing="knowledge.prior"), 14.0)[0] is False  # a check that held at the default fails


def test_a_check_failing_at_the_default_does_not_count_against_a_shorter_length():
    df = rows(failing="knowledge.prior")
    df.loc[1, "failing"] = "knowledge.prior"
    assert _bench().keeps_world(df, 14.0) == [True, True]
