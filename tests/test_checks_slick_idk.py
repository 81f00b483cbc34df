"""Chapters 1, 6 and 7's checks on hand-built tables: each holds on one input and fails on another."""

from __future__ import annotations

import numpy as np
import pandas as pd
from records import TEST_CATS, N, lower, ones, records, run

from newknowledge.book.chapters import idk, knowledge, slick_analysis
from newknowledge.evaluation import analysis
from newknowledge.knowledge import ptrue
from newknowledge.knowledge.categories import CATEGORIES


# ------------------------------------------------------------------ chapter 6
def _test(slick_acc=0.02, ptrue_acc=0.4, leaked_acc=0.5, n_leaked=40, seed=0, exposures=True):
    """400 test questions: 100 SliCK Unknown (P(True) in the middle), 100 lowest-P(True) Known ones."""
    n = N
    cat = np.array(["HighlyKnown"] * 200 + ["Unknown"] * 100 + ["MaybeKnown"] * 100)
    p = np.r_[np.linspace(0.7, 0.99, 200), np.linspace(0.3, 0.6, 100), np.linspace(0.01, 0.29, 100)]
    correct = np.r_[ones(0.9, 200), ones(slick_acc, 100, seed=1), ones(ptrue_acc, 100, seed=2)]
    # prompt outcomes: Unknown never right; n_leaked MaybeKnown questions right in exemplar set 10 only
    greedy = [[1.0] * 10] * 200 + [[0.0] * 10] * 100 + [[0.0] * 9 + [1.0]] * n_leaked + [[1.0] * 10] * (100 - n_leaked)
    correct[300 : 300 + n_leaked] = ones(leaked_acc, n_leaked, seed=3)
    df = pd.DataFrame(
        {
            "seed": seed,
            "category": cat,
            "p_true": p,
            "correct_after": correct,
            "prompt_greedy": greedy,
            "prompt_sample": [[0.0] * 10] * n,
        }
    )
    if exposures:
        df["exposures"] = np.r_[np.full(200, 5), np.zeros(100), np.ones(100)].astype(int)
    return df


def test_slick_beats_ptrue_holds_and_fails():
    assert slick_analysis.slick_beats_ptrue(_test()).holds
    assert slick_analysis.slick_beats_ptrue(_test(slick_acc=0.4, ptrue_acc=0.4)).holds is False


def test_slick_beats_ptrue_needs_enough_questions():
    small = _test().iloc[::10].reset_index(drop=True)  # 10 SliCK Unknown questions
    assert slick_analysis.slick_beats_ptrue(small).holds is None


def test_fewer_exemplars_leakier_holds_and_fails():
    assert slick_analysis.fewer_exemplars_leakier(_test(), 10, "sampling", 16).holds
    assert slick_analysis.fewer_exemplars_leakier(_test(leaked_acc=0.02), 10, "sampling", 16).holds is False
    # No leaked question (0% vs 0%): the claim fails rather than passing on equality.
    assert slick_analysis.fewer_exemplars_leakier(_test(n_leaked=0), 10, "sampling", 16).holds is False


def test_truly_unseen_holds_fails_and_needs_exposures():
    assert slick_analysis.truly_unseen(_test()).holds
    t = _test()
    t["exposures"] = 3
    assert slick_analysis.truly_unseen(t).holds is False
    assert slick_analysis.truly_unseen(_test(exposures=False)).holds is None


def test_estimators_agree_threshold():
    assert slick_analysis.estimators_agree(0.97, 200).holds
    assert slick_analysis.estimators_agree(0.90, 200).holds is False


def test_matched_threshold_labels_the_requested_share():
    scores = np.linspace(0, 1, 101)
    t = ptrue.matched_threshold(scores, 0.25)
    assert abs((scores < t).mean() - 0.25) <= 1 / len(scores)
    assert (scores < ptrue.matched_threshold(scores, 0.0)).sum() == 0
    assert (scores < ptrue.matched_threshold(scores, 1.0)).all()


# ------------------------------------------------------------------ chapter 7
def _idk_grid(idk_acc_es=0.7, idk_acc_conv=0.7, d_conv_drop=40, abstain_unknown=True):
    base = ones(0.45)
    unk = TEST_CATS == "Unknown"
    abst = unk.astype(float) if abstain_unknown else np.zeros(N)

    def idk_correct(acc):
        c = np.zeros(N)
        answered = np.flatnonzero(abst == 0)
        c[answered[: round(acc * len(answered))]] = 1
        return c

    return records(
        run("unknown_50", test_es=base, test_conv=lower(base, d_conv_drop)),
        run("idk_50", test_es=idk_correct(idk_acc_es), test_conv=idk_correct(idk_acc_conv), idk_es=abst, idk_conv=abst),
    )


def test_idk_outcomes_sum_to_one():
    out = analysis.idk_outcomes(_idk_grid())
    assert np.allclose(out[["correct", "abstained", "wrong"]].sum(axis=1), 1)
    row = out[(out["variant"] == "D_IDK") & (out["duration"] == "EARLY_STOP")].iloc[0]
    assert row["answered"] == 0.75 and abs(row["accuracy_answered"] - 0.7) < 0.01
    assert (out.loc[out["variant"] == "D", "answered"] == 1).all()


def test_more_accurate_when_answering_holds_and_fails():
    assert idk.more_accurate_when_answering(_idk_grid(), "EARLY_STOP").holds
    assert idk.more_accurate_when_answering(_idk_grid(idk_acc_es=0.45), "EARLY_STOP").holds is False


def test_protects_against_drop_holds_and_fails():
    assert idk.protects_against_drop(_idk_grid()).holds
    assert idk.protects_against_drop(_idk_grid(idk_acc_conv=0.6, d_conv_drop=0)).holds is False


def test_abstains_on_unknown_holds_and_fails():
    assert idk.abstains_on_unknown(_idk_grid()).holds
    assert idk.abstains_on_unknown(_idk_grid(abstain_unknown=False)).holds is False


def test_why_abstain_reads_fitted_labels_and_abstention_by_exposure():
    exposures = {"HighlyKnown": 20, "MaybeKnown": 3, "WeaklyKnown": 1, "Unknown": 0}
    evals = pd.DataFrame({"example": 2000 + np.arange(N), "exposures": [exposures[c] for c in TEST_CATS]})
    t = idk.why_abstain(_idk_grid(), evals, seed=0)
    es, conv = t.loc["EARLY_STOP"], t.loc["CONVERGENCE"]
    assert (es["epoch"], conv["epoch"]) == (2, 5)
    # records.run fits round(0.04 e^2 * 20) of the 20 relabelled (Unknown) train examples: 3 at epoch 2, all at 5.
    assert (es['"I don\'t know" labels fitted %'], conv['"I don\'t know" labels fitted %']) == (15, 100)
    # It abstains exactly on the Unknown test questions, whose facts were never seen.
    assert es["abstains, exposures 0 %"] == 100 and es["abstains, exposures 1-3 %"] == 0
    assert es["abstains, exposures 16+ %"] == 0 and np.isnan(es["abstains, exposures 4-15 %"])
    # Real data have no exposure counts: the fitted labels only.
    assert list(idk.why_abstain(_idk_grid(), evals[["example"]], seed=0).columns) == [
        "epoch",
        '"I don\'t know" labels fitted %',
    ]


# ------------------------------------------------------------------ chapter 1
def _slick_table(dev_mix=True, popular=0.1, seed=0):
    rows = []
    rng = np.random.default_rng(seed)
    for split, n in (("train", 400), ("dev", 80), ("test", 200)):
        for i in range(n):
            cat = CATEGORIES[i % 4] if (split != "dev" or dev_mix) else "HighlyKnown"
            exp = {"HighlyKnown": 20, "MaybeKnown": 3, "WeaklyKnown": 1, "Unknown": 0}[cat]
            answer = "Pop" if rng.random() < popular else f"a{i}"
            rows.append(
                {
                    "split": split,
                    "relation": "P17",
                    "category": cat,
                    "exposures": exp,
                    "answer": answer,
                    "p_greedy": {"HighlyKnown": 1.0, "MaybeKnown": 0.5}.get(cat, 0.0),
                    "seed": seed,
                }
            )
    return pd.DataFrame(rows)


def test_categories_present_holds_and_fails():
    assert knowledge.categories_present(_slick_table(), "dev").holds
    assert knowledge.categories_present(_slick_table(dev_mix=False), "dev").holds is False


def test_answer_prior_weak_holds_and_fails():
    assert knowledge.answer_prior_weak(_slick_table(popular=0.05)).holds
    assert knowledge.answer_prior_weak(_slick_table(popular=0.6)).holds is False


def test_known_means_seen_holds_and_fails():
    assert knowledge.known_means_seen(_slick_table()).holds
    t = _slick_table()
    t["exposures"] = 0
    assert knowledge.known_means_seen(t).holds is False


def test_tracks_exposure_holds_and_fails():
    # Seven exposure buckets; the HighlyKnown share rises with them and never-seen facts are Unknown.
    rows = []
    for b, e in enumerate([0, 1, 2, 3, 6, 12, 20]):
        for i in range(30):
            hk = i < 5 * b
            rows.append(
                {
                    "split": "train",
                    "seed": 0,
                    "exposures": e,
                    "category": "HighlyKnown" if hk else ("Unknown" if e == 0 or i % 2 else "MaybeKnown"),
                }
            )
    t = pd.DataFrame(rows)
    rho, never = knowledge.tracks_exposure(t)
    assert rho.holds and never.holds
    t["category"] = np.where(t["exposures"] == 0, "HighlyKnown", "Unknown")
    rho, never = knowledge.tracks_exposure(t)
    assert rho.holds is False and never.holds is False
