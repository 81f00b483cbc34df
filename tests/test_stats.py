"""Tests of newknowledge.evaluation.stats on tiny inputs with answers known by hand or by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from newknowledge.book import page
from newknowledge.evaluation import significance, stats

T_975_DF2 = 4.302652729911275  # Student-t 97.5% quantile, 2 degrees of freedom
Z_975 = 1.959963984540054  # standard normal 97.5% quantile


# --------------------------------------------------------------------------- linear model
def _synthetic_points(noise: float, seed: int = 0) -> pd.DataFrame:
    """8 runs (variants with 0..70% Unknown) x 10 epochs; acc = 0.3 + 0.2 kn - 0.1 unk + noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for run, x in enumerate(np.linspace(0, 0.7, 8)):
        for epoch in range(1, 11):
            kn = (1 - x) * min(1.0, epoch / 3)  # Known fitted fast
            unk = x * (epoch / 10) ** 2  # Unknown fitted slowly
            acc = 0.3 + 0.2 * kn - 0.1 * unk + noise * rng.standard_normal()
            rows.append({"run": run, "epoch": epoch, "kn": kn, "unk": unk, "acc": acc})
    return pd.DataFrame(rows)


def test_linear_model_recovers_coefficients_with_clusters():
    res = stats.fit_linear_model(_synthetic_points(noise=0.005))
    assert res.n == 80 and res.n_clusters == 8
    for name, truth in {"b0": 0.3, "b_kn": 0.2, "b_unk": -0.1}.items():
        assert getattr(res, name) == pytest.approx(truth, abs=0.01)
        lo, hi = res.ci[name]
        assert lo < truth < hi
        assert hi - lo < 0.05  # informative, not vacuous
    assert 0.9 < res.r2 < 1.0
    assert "OLS Regression Results" in res.summary


def test_linear_model_cluster_ci_matches_hand_computed_sandwich():
    pts = _synthetic_points(noise=0.01, seed=5)
    res = stats.fit_linear_model(pts)
    X = np.column_stack([np.ones(len(pts)), pts["kn"], pts["unk"]])
    y = pts["acc"].to_numpy()
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ X.T @ y
    u = y - X @ beta
    meat = sum(np.outer(X[g].T @ u[g], X[g].T @ u[g]) for g in (pts["run"] == r for r in range(8)))
    n, k, G = len(y), 3, 8
    cov = bread @ meat @ bread * G / (G - 1) * (n - 1) / (n - k)  # Stata's small-sample factor
    half = sps.t.ppf(0.975, G - 1) * np.sqrt(np.diag(cov))  # t on G - 1 df
    for i, name in enumerate(["b0", "b_kn", "b_unk"]):
        assert res.ci[name] == pytest.approx((beta[i] - half[i], beta[i] + half[i]), rel=1e-8)


def test_linear_model_exact_fit_and_table():
    pts = _synthetic_points(noise=0.0)
    res = stats.fit_linear_model(pts, cluster=None)
    assert res.n_clusters is None
    assert res.r2 == pytest.approx(1.0, abs=1e-12)
    assert (res.b0, res.b_kn, res.b_unk) == pytest.approx((0.3, 0.2, -0.1), abs=1e-10)
    tab = res.table(scale=100)
    assert list(tab.index) == ["b0", "b_kn", "b_unk", "R2"]
    assert list(tab.columns) == ["estimate", "ci_low", "ci_high"]
    assert tab.loc["b_kn", "estimate"] == pytest.approx(20.0)
    assert tab.loc["R2", "estimate"] == pytest.approx(1.0)  # R2 not scaled
    assert np.isnan(tab.loc["R2", "ci_low"])


def test_linear_model_cluster_column_absent_or_single_group_is_plain_ols():
    pts = _synthetic_points(noise=0.005)
    plain = stats.fit_linear_model(pts, cluster=None)
    assert stats.fit_linear_model(pts.drop(columns="run")).ci == plain.ci
    assert stats.fit_linear_model(pts.assign(run=0)).n_clusters is None
    clustered = stats.fit_linear_model(pts)
    assert clustered.ci != plain.ci  # the robust covariance changes the intervals
    assert clustered.b_kn == pytest.approx(plain.b_kn)  # but not the estimates


def test_linear_model_input_errors():
    pts = _synthetic_points(noise=0.005)
    with pytest.raises(ValueError, match="unk"):
        stats.fit_linear_model(pts.drop(columns="unk"))
    with pytest.raises(ValueError, match="at least 4"):
        stats.fit_linear_model(pts.head(3))


# --------------------------------------------------------------------------- chunked t-test
def _long(results: dict[str, list[int]], subsets: list[str] | None = None) -> pd.DataFrame:
    rows = []
    for model, correct in results.items():
        for i, c in enumerate(correct):
            row = {"model": model, "example": i, "correct": bool(c)}
            if subsets is not None:
                row["subset"] = subsets[i]
            rows.append(row)
    return pd.DataFrame(rows)


def test_chunked_ttest_best_identical_and_worse_models():
    rng = np.random.default_rng(1)
    best = np.ones(200, dtype=int)
    worse = (rng.random(200) < 0.5).astype(int)
    out = significance.chunked_paired_ttest(_long({"worse": worse, "best": best, "twin": best}))
    assert list(out.columns) == [
        "model",
        "accuracy",
        "n_examples",
        "n_chunks",
        "is_best",
        "p_value",
        "significant_05",
        "significant_01",
    ]
    out = out.set_index("model")
    assert list(out.index) == ["worse", "best", "twin"]
    assert out["n_chunks"].eq(100).all() and out["n_examples"].eq(200).all()
    # "best" and "twin" tie at 1.0; the first to appear is the best
    assert out.loc["best", "is_best"] and not out.loc["twin", "is_best"]
    assert np.isnan(out.loc["best", "p_value"])
    assert out.loc["twin", "p_value"] == 1.0 and not out.loc["twin", "significant_05"]
    assert out.loc["worse", "accuracy"] == pytest.approx(worse.mean())
    assert out.loc["worse", "p_value"] < 0.01 and out.loc["worse", "significant_01"]


def test_chunked_ttest_p_value_matches_manual_computation():
    a = np.array([1, 1, 0, 1, 1, 0, 1, 1, 1, 0])
    b = np.array([1, 0, 0, 1, 0, 0, 1, 1, 0, 0])
    out = significance.chunked_paired_ttest(_long({"a": a, "b": b}), n_chunks=5, seed=3)
    order = np.random.default_rng(3).permutation(10)
    chunks = np.array_split(order, 5)
    expected = sps.ttest_rel([b[c].mean() for c in chunks], [a[c].mean() for c in chunks]).pvalue
    assert out.loc[1, "p_value"] == pytest.approx(expected)
    assert out.loc[1, "n_chunks"] == 5


@pytest.mark.parametrize("n_examples, expected", [(2, 2), (3, 2), (9, 4), (30, 15), (200, 100), (1000, 100)])
def test_chunk_count_rule(n_examples, expected):
    df = _long({"m": [1, 0] * (n_examples // 2) + [1] * (n_examples % 2)})
    assert significance.chunked_paired_ttest(df)["n_chunks"].iloc[0] == expected


def test_chunked_ttest_single_example_gives_no_test():
    out = significance.chunked_paired_ttest(_long({"a": [1], "b": [0]}))
    assert out["n_chunks"].eq(0).all() and out["p_value"].isna().all()
    assert not out["significant_05"].any()


def test_chunked_ttest_mismatched_example_sets_name_the_model():
    df = pd.concat([_long({"a": [1, 0, 1]}), _long({"b": [1, 0]})], ignore_index=True)
    with pytest.raises(ValueError, match="'b'"):
        significance.chunked_paired_ttest(df)


def test_chunked_ttest_does_not_depend_on_row_order():
    rng = np.random.default_rng(2)
    df = _long({"a": rng.integers(0, 2, 60), "b": rng.integers(0, 2, 60)})
    shuffled = df.sample(frac=1, random_state=0)
    pd.testing.assert_frame_equal(significance.chunked_paired_ttest(df), significance.chunked_paired_ttest(shuffled))


def test_significance_table_per_subset():
    subsets = ["HighlyKnown"] * 4 + ["Unknown"] * 6
    df = _long({"x": [1, 1, 1, 1, 0, 0, 0, 0, 0, 1], "y": [1, 1, 0, 0, 1, 1, 1, 1, 1, 1]}, subsets)
    sig = significance.significance_table(df, n_chunks=100)
    assert list(sig["subset"]) == ["All", "All", "HighlyKnown", "HighlyKnown", "Unknown", "Unknown"]
    best = sig[sig["is_best"]].set_index("subset")["model"]
    assert best.to_dict() == {"All": "y", "HighlyKnown": "x", "Unknown": "y"}
    assert list(sig["n_chunks"]) == [5, 5, 2, 2, 3, 3]
    assert sig.loc[sig["subset"] == "HighlyKnown", "accuracy"].tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="all_label"):
        significance.significance_table(df.assign(subset="All"))


def test_table2_cells_bold_and_markers_as_html():
    sig = pd.DataFrame(
        {
            "subset": ["All"] * 4 + ["Unknown"] * 3,
            "model": ["D_HK", "D_MK", "D_WK", "D_Unk", "D_MK", "D_HK", "D_WK"],
            "accuracy": [0.405, 0.436, 0.392, 0.375, 0.010, 0.006, 0.004],
            "p_value": [0.03, np.nan, 0.2, 0.001, 0.0499, np.nan, 0.05],
        }
    )
    assert page.marked(0.436, np.nan) == "<strong>43.6</strong>"  # best
    assert page.marked(0.392, 0.2) == "<strong>39.2</strong>"  # not significantly worse
    assert page.marked(0.405, 0.03) == "40.5<sup>†</sup>"  # p < 0.05
    assert page.marked(0.375, 0.001) == "37.5<sup>‡</sup>"  # p < 0.01
    assert page.marked(0.004, 0.05) == "<strong>0.4</strong>"  # p = 0.05 is not < 0.05
    assert page.marked(0.436, np.nan, decimals=2) == "<strong>43.60</strong>"
    html = page.table2_html(sig, "Ours")
    assert "**" not in html and "table-scroll" in html and "Ours" in html
    assert html.index("D_HK") < html.index("D_MK") < html.index("D_WK") < html.index("D_Unk")


def test_paired_duration_test():
    n = 100
    es = pd.DataFrame({"example": range(n), "correct": [1] * n})
    conv = pd.DataFrame({"example": range(n), "correct": [i % 2 for i in range(n)]})
    res = significance.paired_duration_test(es, conv)
    assert res["acc_es"] == 1.0 and res["acc_conv"] == 0.5 and res["diff"] == -0.5
    assert res["n_chunks"] == 50 and res["p_value"] < 0.01
    assert significance.paired_duration_test(es, es)["p_value"] == 1.0
    with pytest.raises(ValueError, match="CONVERGENCE"):
        significance.paired_duration_test(es, conv.head(50))


# --------------------------------------------------------------------------- intervals
def test_mean_ci_known_sample():
    mean, lo, hi = stats.mean_ci([1, 2, 3])
    half = T_975_DF2 * 1.0 / np.sqrt(3)  # sample sd of [1, 2, 3] is 1
    assert mean == 2.0
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    m1, lo1, hi1 = stats.mean_ci([0.7])
    assert m1 == 0.7 and np.isnan(lo1) and np.isnan(hi1)
    assert stats.mean_ci([5, 5, 5]) == (5.0, 5.0, 5.0)
    with pytest.raises(ValueError):
        stats.mean_ci([])


def test_summarize_seeds():
    df = pd.DataFrame({"variant": ["b", "b", "b", "a"], "dur": ["ES"] * 4, "acc": [1.0, 2.0, 3.0, 0.5]})
    out = stats.summarize_seeds(df, ["variant", "dur"], "acc")
    assert list(out.columns) == ["variant", "dur", "mean", "ci_low", "ci_high", "n"]
    assert list(out["variant"]) == ["b", "a"]
    assert out.loc[0, "mean"] == 2.0 and out.loc[0, "n"] == 3
    assert out.loc[0, "ci_high"] == pytest.approx(2 + T_975_DF2 / np.sqrt(3))
    assert out.loc[1, "n"] == 1 and np.isnan(out.loc[1, "ci_low"])


def test_proportion_ci_wilson():
    # Newcombe (1998), Table I: 81/263 -> Wilson 0.2553 to 0.3662
    p, lo, hi = stats.proportion_ci(81, 263)
    assert p == pytest.approx(81 / 263)
    assert (lo, hi) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    # k = 0: the interval is [0, z^2 / (n + z^2)]
    p0, lo0, hi0 = stats.proportion_ci(0, 10)
    assert p0 == 0 and lo0 == pytest.approx(0.0, abs=1e-15)
    assert hi0 == pytest.approx(Z_975**2 / (10 + Z_975**2))
    with pytest.raises(ValueError):
        stats.proportion_ci(5, 4)


def test_binomial_se():
    assert stats.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert stats.binomial_se(0.0, 10) == 0.0


# --------------------------------------------------------------------------- P(True) sweep
def test_threshold_sweep_hand_made():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    correct = np.array([0, 1, 0, 1, 1])
    out = stats.threshold_sweep(scores, correct, thresholds=[0.35, 0.05, 0.6])
    assert list(out.columns) == ["threshold", "share", "n", "accuracy"]
    assert out["threshold"].tolist() == [0.05, 0.35, 0.6]
    assert out["n"].tolist() == [0, 3, 5]
    assert out["share"].tolist() == [0.0, 0.6, 1.0]
    assert np.isnan(out.loc[0, "accuracy"])
    assert out.loc[1, "accuracy"] == pytest.approx(1 / 3)
    assert out.loc[2, "accuracy"] == pytest.approx(0.6)
    # strict "<": a pair whose score equals the threshold is not Unknown
    assert stats.threshold_sweep(scores, correct, thresholds=[0.3])["n"].tolist() == [2]


def test_threshold_sweep_default_thresholds_are_unique_quantiles():
    scores = np.repeat([0.0, 1.0], 50)
    out = stats.threshold_sweep(scores, np.zeros(100))
    assert out["threshold"].tolist() == pytest.approx(np.unique(np.quantile(scores, np.arange(1, 20) / 20)))
    assert out["threshold"].is_unique
    big = stats.threshold_sweep(np.arange(100) / 100, np.ones(100))
    assert len(big) == 19 and big["share"].iloc[0] == pytest.approx(0.05, abs=0.011)
    with pytest.raises(ValueError):
        stats.threshold_sweep(np.zeros(3), np.zeros(4))
