"""The general tests behind the checks (chunked means, TOST, pooling, proportions) and the analysis
functions that decide verdicts (EARLY_STOP, stops, fitted shares, correctness side by side)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from records import lower, ones, records, run
from scipy import stats as sps

from newknowledge.evaluation import analysis, significance


def test_chunked_mean_of_a_paired_difference_is_the_app_i_test():
    a, b = ones(0.6, 200, seed=1), ones(0.5, 200, seed=2)
    m = significance.chunked_mean(a - b, n_chunks=50, seed=3)
    order = np.random.default_rng(3).permutation(200)
    chunks = np.array_split(order, 50)
    ca, cb = [a[c].mean() for c in chunks], [b[c].mean() for c in chunks]
    assert m.mean == pytest.approx(np.mean(ca) - np.mean(cb))
    assert m.p_greater() == pytest.approx(sps.ttest_rel(ca, cb, alternative="greater").pvalue)
    assert m.p_less() == pytest.approx(sps.ttest_rel(ca, cb, alternative="less").pvalue)
    lo, hi = m.ci(0.95)
    assert lo < m.mean < hi and m.df == 49 and m.n == 200


def test_equivalence_needs_a_tight_interval_inside_the_margin():
    same = significance.chunked_mean(np.zeros(400))
    assert same.se == 0 and same.equivalent(0.02)
    shifted = significance.chunked_mean(np.r_[-np.ones(20), np.zeros(380)])  # -5 points, consistent
    assert not shifted.equivalent(0.02) and shifted.p_less() < 0.01
    noisy = significance.chunked_mean(np.r_[np.ones(40), -np.ones(40), np.zeros(320)], seed=1)  # mean 0
    assert abs(noisy.mean) < 1e-12 and not noisy.equivalent(0.02) and noisy.equivalent(0.10)


def test_pooled_averages_means_and_combines_errors():
    m = significance.pooled([significance.Mean(0.02, 0.02, 9, 100), significance.Mean(0.0, 0.02, 9, 100)])
    assert m.mean == pytest.approx(0.01) and m.se == pytest.approx(np.sqrt(2 * 0.02**2) / 2)
    assert m.df == 18 and m.n == 200
    with pytest.raises(ValueError):
        significance.pooled([])


def test_proportion_and_fisher_tests():
    assert significance.proportions_less(5, 100, 40, 100) < 0.001
    assert significance.proportions_less(40, 100, 40, 100) == pytest.approx(0.5)
    assert np.isnan(significance.proportions_less(0, 0, 4, 10))
    assert significance.fisher_greater(30, 40, 5, 100) < 0.001
    assert significance.fisher_greater(0, 10, 0, 100) == 1.0


def test_chunked_mean_needs_a_few_questions():
    with pytest.raises(ValueError, match="at least 4"):
        significance.chunked_mean([1, 0])


# ------------------------------------------------------------------ analysis
def test_early_stop_is_the_best_dev_epoch_earliest_on_ties_never_epoch_0():
    rec = run("unknown_50", test_es=ones(0.5), test_conv=ones(0.4), es=3)
    stops = analysis.early_stop(rec)
    assert stops[["early_stop", "convergence"]].values.tolist() == [[3, 5]]
    # a tie between epochs 2 and 4: the earliest wins; a higher epoch-0 dev accuracy is ignored
    dev = rec["split"] == "dev"
    rec.loc[dev & (rec["epoch"] == 4), "correct"] = rec.loc[dev & (rec["epoch"] == 3), "correct"].to_numpy()
    rec.loc[dev & (rec["epoch"] == 0), "correct"] = True
    assert analysis.early_stop(rec)["early_stop"].item() == 3


def test_at_stops_and_correct_at_pair_runs_on_the_same_questions():
    a, b = ones(0.5), lower(ones(0.5), 20)
    rec = records(run("unknown_0", test_es=a, test_conv=b), run("known_50", test_es=b, test_conv=a, es=3))
    at = analysis.at_stops(rec, "test")
    assert set(zip(at["variant"], at["duration"], at["epoch"])) == {
        ("unknown_0", "EARLY_STOP", 2),
        ("unknown_0", "CONVERGENCE", 5),
        ("known_50", "EARLY_STOP", 3),
        ("known_50", "CONVERGENCE", 5),
    }
    es = analysis.correct_at(rec, "EARLY_STOP")
    assert list(es.columns) == ["known_50", "unknown_0"] and es.index.names == ["seed", "example"]
    assert np.array_equal(es["unknown_0"].to_numpy(), a) and np.array_equal(es["known_50"].to_numpy(), b)


def test_fitted_share_per_group_and_category():
    rec = run("unknown_50", test_es=ones(0.5), test_conv=ones(0.5))
    fit = analysis.fitted_share(rec).set_index(["epoch", "group"])["fitted"]
    assert fit[(2, "Known")] == 0.8 and fit[(2, "Unknown")] == 0.15 and fit[(2, "HighlyKnown")] == 0.8


def test_middle_share_rule():
    assert analysis.middle_share([0, 25, 50, 75, 100]) == 50
    assert analysis.middle_share([0, 40, 60, 100]) == 40  # a tie: the lower one
    assert analysis.middle_share([0, 100]) == 0
    with pytest.raises(ValueError):
        analysis.middle_share([])


def test_epochs_to_fit():
    rec = run("unknown_50", test_es=ones(0.5), test_conv=ones(0.5))
    e = analysis.epochs_to_fit(rec, "unknown_50", share=0.5).set_index("group")["epoch"]
    assert e["Known"] == 2 and e["Unknown"] == 4


def test_linear_points_exclude_epoch_zero_and_use_the_split():
    rec = run("unknown_50", test_es=ones(0.5), test_conv=ones(0.25))
    pts = analysis.linear_points(rec, 40, "test")
    assert pts["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert pts.set_index("epoch").loc[5, "acc"] == 0.25 and pts.set_index("epoch").loc[5, "unk"] == 0.5
    assert isinstance(pts, pd.DataFrame) and (pts["run"] == "unknown_50/0").all()
