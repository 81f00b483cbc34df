"""Chapter 4's and 5's checks (findings 4, 5 and 6's Table 2 part) on hand-built inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from records import TEST_CATS, N, lower, ones, raise_, records, run

from newknowledge.book.chapters import knowledge_types as types
from newknowledge.book.chapters import linear
from newknowledge.evaluation import analysis
from newknowledge.evaluation.stats import LinearModelResult


def _fit(b_kn, b_unk, r2, kn_ci=None, unk_ci=None):
    ci = {
        "b0": (0.3, 0.4),
        "b_kn": kn_ci or (b_kn - 0.02, b_kn + 0.02),
        "b_unk": unk_ci or (b_unk - 0.02, b_unk + 0.02),
    }
    return LinearModelResult(0.35, b_kn, b_unk, ci, r2, 100, 8, "")


def test_linear_signs_hold_and_fail():
    assert linear.signs(_fit(0.07, -0.08, 0.9), "in-distribution").holds
    assert linear.signs(_fit(0.07, -0.08, 0.9, kn_ci=(-0.01, 0.15)), "in-distribution").holds is False
    assert linear.signs(_fit(0.07, 0.01, 0.9), "OOD").holds is False


def test_linear_about_as_much_holds_and_fails():
    assert linear.about_as_much(_fit(0.073, -0.083, 0.9), "in-distribution").holds
    assert linear.about_as_much(_fit(0.02, -0.11, 0.9), "in-distribution").holds is False  # 5.5x
    assert linear.about_as_much(_fit(-0.01, -0.01, 0.9), "in-distribution").holds is False  # b_kn <= 0


def test_linear_r2_holds_and_fails():
    assert linear.explains_variance(_fit(0.07, -0.08, 0.86), "in-distribution").holds
    assert linear.explains_variance(_fit(0.07, -0.08, 0.5), "in-distribution").holds is False


def test_linear_contrast_checks_are_beyond_the_paper():
    cs = linear.checks(_fit(0.07, -0.08, 0.9), _fit(0.03, -0.03, 0.95), kind="beyond", label=" (qa format)")
    assert all(c.kind == "beyond" and c.finding is None and "qa format" in c.claim for c in cs)


def test_linear_without_ood_questions_is_not_decidable():
    # A real ENTITYQUESTIONS folder without the OOD relations' test files: no traceback, the OOD
    # checks not decidable, Table 1's OOD column n/a; the in-distribution fit is unaffected.
    rec = records(
        run("unknown_0", test_es=ones(0.5), test_conv=ones(0.5)),
        run("unknown_100", test_es=ones(0.5), test_conv=lower(ones(0.5), 80)),
    )
    assert "ood_test" not in set(rec["split"])
    _, res_in = linear.fit(rec, 40, "test")
    pts, res_ood = linear.fit(rec, 40, "ood_test")
    assert res_in is not None and res_ood is None and len(pts) == 10
    cs = linear.checks(res_in, res_ood)
    ood = [c for c in cs if "OOD" in c.key]
    assert len(ood) == 3 and all(c.holds is None and c.ours.startswith("no fit: no OOD test questions") for c in ood)
    assert all(c.holds is not None for c in cs if "OOD" not in c.key)
    assert (linear.table1(res_in, res_ood)["OOD (ours)"] == "n/a").all()
    # Too few points (one run, one epoch) is not decidable either.
    one = rec[(rec["variant"] == "unknown_0") & (rec["epoch"] <= 1)]
    assert linear.fit(one, 40, "test")[1] is None


def test_linear_points_include_d_known_runs_and_scale_by_full_size():
    rec = records(
        run("unknown_50", test_es=ones(0.5), test_conv=ones(0.4)),
        run("known_50", test_es=ones(0.5), test_conv=ones(0.5), n_unknown=0),
    )
    pts = analysis.linear_points(rec, {0: 40})
    assert set(pts["variant"]) == {"unknown_50", "known_50"} and pts["epoch"].min() == 1
    k = pts[(pts["variant"] == "known_50") & (pts["epoch"] == 5)]
    assert k["kn"].item() == 0.5 and k["unk"].item() == 0.0  # 20 Known fitted of |D| = 40


# ------------------------------------------------------------------ Table 2
HK, MK = TEST_CATS == "HighlyKnown", TEST_CATS == "MaybeKnown"


def _t2(mk_es=None, mk_conv=None, hk=None, natural_conv=None, collapse=True):
    """Five Table 2 runs on 400 test questions (a quarter per category)."""
    base = ones(0.5)
    mk_es = base if mk_es is None else mk_es
    drop = np.where(HK | MK, lower(base, 80, seed=4), base) if collapse else base
    runs = [
        run(
            "HighlyKnown",
            test_es=hk if hk is not None else lower(base, 40),
            test_conv=hk if hk is not None else lower(base, 40),
        ),
        run("MaybeKnown", test_es=mk_es, test_conv=mk_es if mk_conv is None else mk_conv),
        run("WeaklyKnown", test_es=base, test_conv=drop),
        run("Unknown", test_es=base, test_conv=drop),
        run("natural", test_es=base, test_conv=lower(base, 30) if natural_conv is None else natural_conv),
    ]
    return records(*runs)


def _hk_run_on_mk(k):
    """D_HighlyKnown's answers: D_MaybeKnown's with k MaybeKnown questions wrong."""
    base = ones(0.5)
    out = base.copy()
    idx = np.flatnonzero(MK & (base == 1))[:k]
    out[idx] = 0
    return out


def test_maybeknown_best_holds_and_fails():
    rec = _t2()
    assert types.maybeknown_best(types.significance_tables(rec), "EARLY_STOP").holds
    worse = _t2(mk_es=lower(ones(0.5), 60), hk=ones(0.5))
    assert types.maybeknown_best(types.significance_tables(worse), "EARLY_STOP").holds is False


def test_highlyknown_below_best_holds_and_fails():
    rec = _t2(hk=lower(ones(0.5), 50))
    assert types.highlyknown_below_best(rec, types.significance_tables(rec)).holds
    same = _t2(hk=ones(0.5))
    assert types.highlyknown_below_best(same, types.significance_tables(same)).holds is False


def test_maybeknown_above_highlyknown_on_maybeknown_questions():
    assert types.maybeknown_above_highlyknown(_t2(hk=_hk_run_on_mk(30))).holds
    assert types.maybeknown_above_highlyknown(_t2(hk=ones(0.5))).holds is False


def test_the_category_contrast_reads_each_run_at_its_early_stop_on_the_whole_dev_set():
    # D_HighlyKnown's MaybeKnown dev questions peak at epoch 4, where it ties D_MaybeKnown on the MaybeKnown
    # test questions; its EARLY_STOP on the whole dev set is epoch 2, where it is 30 questions behind.
    rec = _t2(hk=_hk_run_on_mk(30))
    hk4 = (rec["variant"] == "HighlyKnown") & (rec["epoch"] == 4)
    rec.loc[hk4 & (rec["split"] == "dev") & (rec["category"] == "MaybeKnown"), "correct"] = True
    rec.loc[hk4 & (rec["split"] == "test"), "correct"] = ones(0.5).astype(bool)
    assert analysis.early_stop(rec).set_index("variant").loc["HighlyKnown", "early_stop"] == 2
    assert types.maybeknown_above_highlyknown(rec).holds


def test_maybeknown_checks_with_too_few_questions_are_not_decidable_there():
    # A world whose test set holds a single MaybeKnown question (a tiny world can): App. I's test
    # cannot run on it, so the check is not decidable there instead of stopping the chapter.
    one = _t2(hk=_hk_run_on_mk(30))
    test_mk = (one["split"] == "test") & (one["category"] == "MaybeKnown")
    one.loc[test_mk & (one["example"] != one.loc[test_mk, "example"].min()), "category"] = "WeaklyKnown"
    check = types.maybeknown_above_highlyknown(one)
    assert check.holds is None and "fewer than 4 MaybeKnown test questions in seed 0" in check.ours
    # with a second world that has them, that world decides and the first still counts against "every seed"
    two = pd.concat([one, _t2(hk=_hk_run_on_mk(30)).assign(seed=1)], ignore_index=True)
    check = types.maybeknown_above_highlyknown(two)
    assert check.holds is False and "holds in 1/2" in check.ours and "in seed 0:" in check.ours
    assert "across 1 of 2 seeds" in check.ours and "points; fewer than 4" in check.ours
    # a world with no MaybeKnown test question at all is named too, not dropped
    none = one[~((one["split"] == "test") & (one["category"] == "MaybeKnown"))]
    check = types.maybeknown_above_highlyknown(pd.concat([none, two[two["seed"] == 1]], ignore_index=True))
    assert check.holds is False and "in seed 0:" in check.ours
    # D_Natural against D_MaybeKnown on a test set of three questions: not decidable
    three = one[(one["split"] != "test") | (one["example"] < one.loc[one["split"] == "test", "example"].min() + 3)]
    check = types.natural_below_maybeknown(three)
    assert check.holds is None and "fewer than 4 test questions in seed 0" in check.ours


def test_natural_below_maybeknown_at_convergence():
    assert types.natural_below_maybeknown(_t2()).holds
    assert types.natural_below_maybeknown(_t2(natural_conv=ones(0.5))).holds is False


def test_collapse_on_highly_and_maybe_known_questions():
    assert types.collapse(_t2()).holds
    assert types.collapse(_t2(collapse=False)).holds is False
    # A drop spread evenly over the categories is not "mostly on HK and MK".
    keep = _t2()
    keep = keep[~keep["variant"].isin(["WeaklyKnown", "Unknown"])]
    even = records(
        keep,
        run("WeaklyKnown", test_es=ones(0.5), test_conv=lower(ones(0.5), 80)),
        run("Unknown", test_es=ones(0.5), test_conv=lower(ones(0.5), 80)),
    )
    assert types.collapse(even).holds is False


def test_unknown_near_zero_holds_and_fails():
    base = ones(0.5)
    low = np.where(TEST_CATS == "Unknown", 0, base)
    rec = records(*[run(v, test_es=low, test_conv=low) for v in analysis.TABLE2_VARIANTS])
    assert types.unknown_near_zero(analysis.table2_long(rec)).holds
    high = np.where(TEST_CATS == "Unknown", raise_(np.zeros(N), 40), base)
    rec = records(*[run(v, test_es=high, test_conv=high) for v in analysis.TABLE2_VARIANTS])
    assert types.unknown_near_zero(analysis.table2_long(rec)).holds is False


def test_table2_long_and_correctness_at():
    rec = _t2()
    t2 = analysis.table2_long(rec)
    assert set(t2["variant"]) == set(analysis.TABLE2_VARIANTS.values())
    row = t2[(t2["variant"] == "D_MaybeKnown") & (t2["duration"] == "EARLY_STOP") & (t2["subset"] == "All")]
    assert row["accuracy"].item() == 0.5 and row["n"].item() == N
    c = analysis.correctness_at(rec, "CONVERGENCE", 0)
    assert list(pd.unique(c["model"])) == list(analysis.TABLE2_VARIANTS.values()) and len(c) == 5 * N


def test_learning_by_type_measures_exposures_fitting_and_known_questions_at_early_stop():
    hk_test = ones(0.9, seed=3)
    recs = records(
        run(
            "HighlyKnown",
            test_es=hk_test,
            test_conv=hk_test,
            es=2,
            epochs=6,
            known=lambda e: min(1.0, 0.3 * e),
            n_unknown=0,
        ),
        run(
            "MaybeKnown", test_es=ones(0.5), test_conv=ones(0.5), es=4, epochs=6, known=lambda e: 0.05 * e, n_unknown=0
        ),
        run("MaybeKnown", seed=1, test_es=ones(0.1), test_conv=ones(0.1), es=1, n_unknown=0),
    )  # another seed
    trains = {
        "HighlyKnown": pd.DataFrame({"exposures": [0] * 5 + [20] * 15}),
        "MaybeKnown": pd.DataFrame({"exposures": [4] * 20}),
    }
    t = types.learning_by_type(recs, trains, seed=0)
    hk, mk = t.loc["D_HighlyKnown"], t.loc["D_MaybeKnown"]
    assert (hk["median exposures"], hk["never exposed %"]) == (20, 25)
    assert (mk["median exposures"], mk["never exposed %"]) == (4, 0)
    # Half fitted: 0.3 * e >= 0.5 first at epoch 2; 0.05 * e never within 6 epochs.
    assert hk["half fitted (epoch)"] == 2 and np.isnan(mk["half fitted (epoch)"])
    assert (hk["EARLY_STOP epoch"], mk["EARLY_STOP epoch"]) == (2, 4)
    assert (hk["fitted at EARLY_STOP %"], mk["fitted at EARLY_STOP %"]) == (60, 20)
    on_hk = TEST_CATS == "HighlyKnown"
    assert hk["HighlyKnown test acc. at EARLY_STOP %"] == round(100 * hk_test[on_hk].mean(), 1)
    assert mk["MaybeKnown test acc. at EARLY_STOP %"] == round(100 * ones(0.5)[TEST_CATS == "MaybeKnown"].mean(), 1)
    # Real data have no exposure counts: NaN, not a made-up number.
    real = types.learning_by_type(recs, {"HighlyKnown": pd.DataFrame({"question": ["q"] * 20})}, seed=0)
    assert np.isnan(real.loc["D_HighlyKnown", "median exposures"])
