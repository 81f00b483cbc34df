"""Chapter 2's checks (findings 1 and 2) on hand-built records: each holds on one and fails on another."""

from __future__ import annotations

import numpy as np
import pytest
from records import lower, ones, records, run

from newknowledge.book.chapters import harm

BASE = ones(0.5)


def _grid(d100_es, d100_conv, dk50_es=None, dk50_conv=None, d50_es=None, d50_conv=None, seed=0, ood=None):
    """D at 0/50/100% Unknown and D_Known at 50%, on the same 400 test questions."""
    d50_es = BASE if d50_es is None else d50_es
    d50_conv = lower(BASE, 20) if d50_conv is None else d50_conv
    runs = [
        run("unknown_0", seed, test_es=BASE, test_conv=BASE, ood_es=ood, ood_conv=ood),
        run("unknown_50", seed, test_es=d50_es, test_conv=d50_conv, ood_es=ood, ood_conv=ood),
        run(
            "unknown_100",
            seed,
            test_es=d100_es,
            test_conv=d100_conv,
            ood_es=ood,
            ood_conv=None if ood is None else lower(ood, 60),
        ),
        run(
            "known_50",
            seed,
            test_es=BASE if dk50_es is None else dk50_es,
            test_conv=BASE if dk50_conv is None else dk50_conv,
            ood_es=ood,
            ood_conv=ood,
        ),
    ]
    return records(*runs)


def test_lower_with_more_unknown_holds_and_fails():
    good = _grid(lower(BASE, 30), lower(BASE, 80))
    assert harm.lower_with_more_unknown(good, "EARLY_STOP").holds
    assert harm.lower_with_more_unknown(good, "CONVERGENCE").holds
    flat = _grid(BASE, BASE)
    assert harm.lower_with_more_unknown(flat, "EARLY_STOP").holds is False
    assert harm.lower_with_more_unknown(flat, "CONVERGENCE").holds is False
    # Higher accuracy with more Unknown fails too (one-sided).
    assert harm.lower_with_more_unknown(_grid(BASE, 1 - lower(1 - BASE, 60)), "CONVERGENCE").holds is False


def test_lower_with_more_unknown_ood():
    ood = ones(0.4, seed=5)
    c = harm.lower_with_more_unknown(_grid(BASE, BASE, ood=ood), "CONVERGENCE", "ood_test")
    assert c.holds and "OOD" in c.claim
    assert harm.lower_with_more_unknown(_grid(BASE, BASE, ood=ood), "EARLY_STOP", "ood_test").holds is False


def test_lower_with_more_unknown_without_ood_questions_is_not_decidable():
    c = harm.lower_with_more_unknown(_grid(BASE, BASE), "CONVERGENCE", "ood_test")  # no ood_test rows
    assert c.holds is None and c.ours == "not decidable: 0 OOD test questions in the data (the test needs 4)"


def test_every_seed_must_hold():
    good = _grid(lower(BASE, 30), lower(BASE, 80), seed=0)
    bad = _grid(BASE, BASE, seed=1)
    c = harm.lower_with_more_unknown(records(good, bad), "CONVERGENCE")
    assert c.holds is False and "holds in 1/2" in c.ours


def test_gap_grows_holds_and_fails():
    assert harm.gap_grows(_grid(BASE, lower(BASE, 80))).holds  # 0%: no gap, 100%: 20 points
    assert harm.gap_grows(_grid(lower(BASE, 80), lower(BASE, 80))).holds is False  # the same gap at 100% as at 0%


def test_neutral_at_early_stop_holds_only_with_evidence():
    # D and D_Known identical at EARLY_STOP: equivalent.
    assert harm.neutral_at_early_stop(_grid(BASE, BASE)).holds
    # A 1-point difference on 400 paired questions (4 discordant): inside the 2-point margin.
    assert harm.neutral_at_early_stop(_grid(BASE, BASE, d50_es=lower(BASE, 4))).holds
    # D 6 points below D_Known at EARLY_STOP: not neutral.
    assert harm.neutral_at_early_stop(_grid(BASE, BASE, d50_es=lower(BASE, 24))).holds is False
    # No mean difference but many discordant questions: too noisy to show equivalence.
    rng = np.random.default_rng(3)
    noisy = BASE.copy()
    flip = rng.choice(len(BASE), 160, replace=False)
    noisy[flip] = 1 - noisy[flip]
    assert abs(noisy.mean() - BASE.mean()) <= 0.02
    assert harm.neutral_at_early_stop(_grid(BASE, BASE, d50_es=noisy)).holds is False


def test_neutral_pools_seeds():
    # 64 discordant questions, balanced (mean difference 0): one seed cannot bound the difference
    # within 2 points, four seeds pooled can.
    def balanced(seed):
        return 1 - lower(1 - lower(BASE, 32, seed=seed), 32, seed=seed + 100)

    one = _grid(BASE, BASE, d50_es=balanced(0))
    assert harm.neutral_at_early_stop(one).holds is False
    four = records(*[_grid(BASE, BASE, d50_es=balanced(s), seed=s) for s in range(4)])
    c = harm.neutral_at_early_stop(four)
    assert c.holds and "seeds:" in c.ours


def test_harmful_at_convergence_holds_and_fails():
    assert harm.harmful_at_convergence(_grid(BASE, BASE, d50_conv=lower(BASE, 40))).holds
    assert harm.harmful_at_convergence(_grid(BASE, BASE, d50_conv=BASE)).holds is False


def test_harm_grows_needs_two_shares_and_tests_growth():
    assert harm.harm_grows(_grid(BASE, BASE)).holds is None  # one share with D_Known

    def grid(gap25, gap75):
        return records(
            run("unknown_0", test_es=BASE, test_conv=BASE),
            run("unknown_25", test_es=BASE, test_conv=lower(BASE, gap25)),
            run("known_25", test_es=BASE, test_conv=BASE),
            run("unknown_75", test_es=BASE, test_conv=lower(BASE, gap75)),
            run("known_75", test_es=BASE, test_conv=BASE),
        )

    assert harm.harm_grows(grid(8, 60)).holds
    assert harm.harm_grows(grid(30, 30)).holds is False


def test_dknown_steadier_holds_and_fails():
    assert harm.dknown_steadier(_grid(BASE, BASE, d50_conv=lower(BASE, 40))).holds
    both = _grid(BASE, BASE, d50_conv=lower(BASE, 40), dk50_conv=lower(BASE, 40))
    assert harm.dknown_steadier(both).holds is False


def test_without_d_known_runs_the_checks_are_not_decidable():
    rec = records(run("unknown_0", test_es=BASE, test_conv=BASE), run("unknown_100", test_es=BASE, test_conv=BASE))
    for check in (harm.neutral_at_early_stop, harm.harmful_at_convergence, harm.dknown_steadier):
        assert check(rec).holds is None


@pytest.mark.parametrize("check", harm.checks(_grid(lower(BASE, 30), lower(BASE, 80))))
def test_every_check_states_claim_statistic_and_threshold(check):
    assert check.claim and check.paper and check.ours
    if check.holds is not None:
        assert check.statistic and check.threshold
