"""How firm a verdict is: margins in standard errors, the fragile rule, and which checks decide a row;
and two chapter tables in the paper's units (percent, one decimal).

Every check here is built by hand, with numbers whose margin can be computed in one's head.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from records import lower, ones, records, run

from newknowledge.evaluation import checks
from newknowledge.evaluation.checks import Check
from newknowledge.evaluation.significance import Mean
from newknowledge.evaluation.stats import LinearModelResult


def check(holds=True, key="k", paper="p", **nums) -> Check:
    return Check(key, 1, "finding", f"claim {key}", "s", "t", paper, f"ours {key}", holds, **nums)


def test_a_check_far_from_its_threshold_is_firm():
    c = check(**checks.numbers(-0.05, 0.0, "below", se=0.01, interval=(-0.07, -0.03)))
    assert checks.margin(c) == pytest.approx(5.0)  # 5 points below 0, 1 point per SE
    assert checks.crosses(c) is False and checks.fragile(c) is False
    assert checks.margin_text(c) == "+5.0 SE"


def test_a_check_within_one_se_is_fragile_whichever_way_it_came_out():
    holds = check(True, **checks.numbers(0.012, 0.0, "above", se=0.02))
    fails = check(False, **checks.numbers(-0.004, 0.0, "above", se=0.02))
    assert checks.margin(holds) == pytest.approx(0.6) and checks.fragile(holds) is True
    assert checks.margin(fails) == pytest.approx(-0.2) and checks.fragile(fails) is True
    assert checks.margin_text(fails) == "-0.2 SE, fragile"


def test_an_interval_across_the_threshold_is_fragile_even_beyond_one_se():
    c = check(**checks.numbers(0.03, 0.0, "above", se=0.02, interval=(-0.01, 0.07)))  # 1.5 SE, but crosses 0
    assert checks.margin(c) == pytest.approx(1.5) and checks.crosses(c) and checks.fragile(c)
    only_interval = check(**checks.numbers(0.03, 0.0, "above", interval=(0.01, 0.05)))
    assert checks.margin(only_interval) is None and checks.fragile(only_interval) is False
    assert checks.margin_text(only_interval) == "interval clear"


def test_within_a_band_the_margin_is_to_the_nearer_edge():
    # TOST within +-2 points: a difference of +0.5 with SE 0.5 is 3 SE from the +2 edge
    c = check(**checks.numbers(0.005, 0.02, "within", se=0.005, interval=(-0.003, 0.013)))
    assert checks.margin(c) == pytest.approx(3.0) and not checks.fragile(c)
    out = check(False, **checks.numbers(-0.019, 0.02, "within", se=0.005, interval=(-0.027, -0.011)))
    assert checks.margin(out) == pytest.approx(0.2) and checks.crosses(out) and checks.fragile(out)


def test_a_check_without_numbers_shows_na_and_is_never_guessed():
    c = check()
    assert checks.margin(c) is None and checks.crosses(c) is None and checks.fragile(c) is None
    assert checks.margin_text(c) == "n/a"
    one_seed = check(**checks.numbers(2.5, 2.0, "above"))  # a value without spread: still n/a
    assert checks.margin_text(one_seed) == "n/a"
    # NaN or a zero standard error is dropped, not shown as a margin
    assert checks.numbers(np.nan, 0.0, "above", se=0.0, interval=(np.nan, 1.0)) == {
        "value": None,
        "bar": 0.0,
        "direction": "above",
        "se": None,
        "interval": None,
    }


def test_the_numbers_are_those_of_the_seed_nearest_to_failing():
    means = [Mean(-0.05, 0.01, 99, 400), Mean(-0.02, 0.01, 99, 400)]  # 5 SE and 2 SE below 0
    nums = checks.from_means(means, 0.0, "below")
    assert nums["value"] == -0.02 and nums["se"] == 0.01
    lo, hi = nums["interval"]
    assert lo < -0.02 < hi and hi < 0  # the 95% t interval of the weaker seed, clear of 0
    assert checks.weakest([]) == {}


def test_an_every_seed_check_is_as_far_from_its_bar_as_its_worst_seed():
    per = {0: (2.4, True), 1: (2.8, True), 2: (3.2, True)}
    nums = checks.across_numbers(per, 2.0, "above")
    assert nums["value"] == pytest.approx(2.4) and nums["se"] == pytest.approx(0.4)  # the seeds' sd
    assert checks.margin(check(**nums)) == pytest.approx(1.0) and nums["interval"] is None
    # One seed failing beside two that pass easily: the margin is the failing seed's, negative.
    failing = checks.across_numbers({0: (1.9, False), 1: (10.0, True), 2: (10.0, True)}, 2.0, "above")
    assert checks.margin(check(**failing)) < 0
    assert checks.across_numbers({0: (0.3, True), 1: (0.1, True)}, 0.5, "below")["value"] == pytest.approx(0.3)
    assert checks.across_numbers({0: (2.4, True)}, 2.0, "above")["se"] is None


def test_numbers_do_not_change_a_verdict():
    firm, shaky = check(True), check(True, **checks.numbers(0.001, 0.0, "above", se=0.01))
    assert checks.verdict([firm]) == checks.verdict([shaky]) == "holds"
    assert checks.verdict_fragile([shaky]) and not checks.verdict_fragile([firm])
    assert not checks.verdict_fragile([check(None, **checks.numbers(0.0, 0.0, "above", se=1.0))])  # undecided


def test_the_deciding_checks_put_a_failing_one_first():
    a = check(True, "a", **checks.numbers(0.1, 0.0, "above", se=0.01))  # firm
    b = check(True, "b", **checks.numbers(0.01, 0.0, "above", se=0.02))  # fragile
    c = check(False, "c")
    d = check(None, "d")
    assert [x.key for x in checks.deciding([a, b, c, d])] == ["c", "d", "b"]
    # "partly" with more failing checks than places still shows one that holds
    fails = [check(False, f"f{i}") for i in range(4)]
    assert [x.key for x in checks.deciding([a, *fails], n=3)] == ["f0", "f1", "a"]
    # "holds": the one nearest to failing first
    assert [x.key for x in checks.deciding([a, b])] == ["b", "a"]


def test_a_direction_must_be_known():
    with pytest.raises(ValueError, match="direction"):
        check(**checks.numbers(0.1, 0.0, "sideways"))


def test_the_display_table_carries_the_margin():
    df = checks.table([check(**checks.numbers(-0.05, 0.0, "below", se=0.01)), check()])
    assert df["margin"].tolist() == ["+5.0 SE", "n/a"]


def test_linear_signs_margin_is_the_coefficient_nearer_to_zero():
    from newknowledge.book.chapters import linear

    res = LinearModelResult(
        0.35,
        0.10,
        -0.02,
        {"b0": (0.3, 0.4), "b_kn": (0.08, 0.12), "b_unk": (-0.035, -0.005)},
        0.9,
        100,
        8,
        "",
        se={"b0": 0.02, "b_kn": 0.01, "b_unk": 0.0075},
    )
    c = linear.signs(res, "in-distribution")
    assert c.holds and c.value == -0.02 and checks.margin(c) == pytest.approx(0.02 / 0.0075)
    assert linear.signs(None, "OOD").value is None  # no fit: no numbers


def test_the_duration_table_reads_as_the_paper_prints():
    from newknowledge.book.chapters import knowledge_types

    rows = pd.DataFrame(
        {
            "variant": ["D_Natural", "D_Unknown"],
            "acc_es": [0.43512, 0.37519],
            "acc_conv": [0.41804, 0.25788],
            "diff": [-0.01708, -0.11731],
            "p_value": [0.0123, 2.4e-9],
            "n_chunks": [100, 100],
        }
    )
    t = knowledge_types.duration_table(rows)
    assert t.loc["D_Natural"].tolist() == [43.5, 41.8, -1.7, "0.012", 100]
    assert t.loc["D_Unknown", "p (two-sided)"] == "2.4e-09"
    assert list(t.columns)[:3] == ["EARLY_STOP (%)", "CONVERGENCE (%)", "CONVERGENCE - EARLY_STOP (points)"]


def test_a_chapter_check_carries_the_numbers_of_its_test():
    from newknowledge.book.chapters import harm

    base = ones(0.5)

    def grid(drop):  # D at 0% and 100% Unknown on the same 400 test questions; 100% loses `drop` of them
        return records(
            run("unknown_0", test_es=base, test_conv=base),
            run("unknown_100", test_es=base, test_conv=lower(base, drop)),
        )

    firm, shaky = (
        harm.lower_with_more_unknown(grid(80), "CONVERGENCE"),
        harm.lower_with_more_unknown(grid(3), "CONVERGENCE"),
    )
    assert firm.holds and firm.value == pytest.approx(-0.2) and firm.direction == "below" and firm.bar == 0.0
    assert checks.margin(firm) > 1 and not checks.fragile(firm)
    assert checks.margin(shaky) > 0 and checks.fragile(shaky)  # 3 of 400 questions: within reach of chance


def test_slicks_line_reads_in_percent():
    from newknowledge.book.chapters import slick_analysis

    sweep = pd.DataFrame(
        {
            "method": ["P(True) < threshold", "SliCK Unknown, N_ex = 1..10", "SliCK Unknown, N_ex = 1..10"],
            "threshold": [0.2, 1, 2],
            "share": [0.1, 0.31234, 0.25],
            "n": [10, 31, 25],
            "accuracy": [0.2, 0.0667, 0.04],
        }
    )
    t = slick_analysis.slick_line_table(sweep)
    assert t.index.tolist() == [1, 2] and t.index.name == "N_ex"
    assert t.loc[1].tolist() == [31.2, 31, 6.7]


def test_the_weakest_is_a_fragile_one_even_without_a_standard_error():
    firm = checks.numbers(0.1, 0.0, "above", se=0.01)  # 10 SE
    crossing = checks.numbers(0.1, 0.0, "above", interval=(-0.01, 0.2))  # no SE, but its interval crosses 0
    assert checks.weakest([firm, crossing]) is crossing
    assert checks.weakest([firm, checks.numbers(0.1, 0.0, "above")]) is firm  # no numbers to compare: far
