"""Statistics for the paper's tables and figures: pure functions, no I/O, no plotting.

The linear model of Sec. 4.4 / Table 1 (:func:`fit_linear_model`); the chunked
paired t-test of App. I behind Table 2 / Table 7 of Sec. 5
(:func:`chunked_paired_ttest`, :func:`significance_table`, :func:`format_table2`,
:func:`paired_duration_test`); the P(True) baseline of Sec. 6 / Fig. 5
(:func:`threshold_sweep`); intervals over seeds and for proportions.
Categories: "HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown" (Known = the
first three). Accuracies are fractions in [0, 1] throughout.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from .metrics import CATEGORIES, KNOWN  # noqa: F401  (re-exported)

_TERMS = {"Intercept": "b0", "kn": "b_kn", "unk": "b_unk"}


def _require_columns(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {list(df.columns)}")


# Linear model (Sec. 4.4, Table 1)
@dataclass(frozen=True)
class LinearModelResult:
    """Fit of ``acc = b0 + b_kn * kn + b_unk * unk``.

    Attributes:
        b0, b_kn, b_unk: coefficients in accuracy fractions (x 100 = Table 1's points).
        ci: "b0"/"b_kn"/"b_unk" -> (low, high), 95% confidence interval.
        r2: R^2. n: number of points (run x epoch).
        n_clusters: clusters (runs) of the robust covariance; None for plain OLS.
        summary: statsmodels' summary text.
    """

    b0: float
    b_kn: float
    b_unk: float
    ci: dict[str, tuple[float, float]]
    r2: float
    n: int
    n_clusters: int | None
    summary: str

    def table(self, scale: float = 1.0) -> pd.DataFrame:
        """Table 1 layout: rows b0, b_kn, b_unk, R2; columns estimate, ci_low, ci_high.

        Args:
            scale: multiplies coefficients and intervals (100 gives the paper's
                points); R2 is not scaled and its interval is NaN.
        """
        rows = {k: (getattr(self, k) * scale, self.ci[k][0] * scale, self.ci[k][1] * scale)
                for k in ("b0", "b_kn", "b_unk")}
        rows["R2"] = (self.r2, np.nan, np.nan)
        return pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "ci_low", "ci_high"])


def fit_linear_model(points: pd.DataFrame, *, cluster: str | None = "run") -> LinearModelResult:
    """OLS of test accuracy on the fractions of fitted Known and Unknown train examples.

    The epochs of one run are autocorrelated, so when ``cluster`` names a column
    with at least 2 distinct values the covariance is cluster-robust
    (``cov_type="cluster"``, t intervals on n_clusters - 1 df); else plain OLS.

    Args:
        points: one row per (run, epoch): ``acc`` (test accuracy), ``kn``
            (N_kn / |D|), ``unk`` (N_unk / |D|), optionally the cluster column.
        cluster: name of the cluster column, or None for plain OLS.

    Returns:
        A :class:`LinearModelResult`.

    Raises:
        ValueError: a required column missing or with NaN, or fewer than 4 points.
    """
    _require_columns(points, ["acc", "kn", "unk"], "points")
    if len(points) < 4:
        raise ValueError(f"the linear model needs at least 4 points, got {len(points)}")
    data = points.reset_index(drop=True)
    if data[["acc", "kn", "unk"]].isna().any().any():
        raise ValueError("points has NaN in acc, kn or unk")
    model = smf.ols("acc ~ kn + unk", data=data)
    n_clusters = None
    if cluster is not None and cluster in data.columns and data[cluster].nunique() >= 2:
        groups = pd.factorize(data[cluster])[0]
        n_clusters = int(groups.max() + 1)
        res = model.fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)
    else:
        res = model.fit()
    conf = res.conf_int(alpha=0.05)
    with warnings.catch_warnings():  # normality tests warn on tiny or exact fits
        warnings.simplefilter("ignore")
        summary = str(res.summary())
    est = {name: float(res.params[term]) for term, name in _TERMS.items()}
    ci = {name: (float(conf.loc[term, 0]), float(conf.loc[term, 1])) for term, name in _TERMS.items()}
    return LinearModelResult(**est, ci=ci, r2=float(res.rsquared), n=int(res.nobs),
                             n_clusters=n_clusters, summary=summary)


# Chunked paired t-test (App. I) and Table 2
def _correct_matrix(correct: pd.DataFrame) -> tuple[list, np.ndarray]:
    """Models in order of appearance and a 0/1 matrix of shape (n_examples, n_models)."""
    _require_columns(correct, ["model", "example", "correct"], "correct")
    if correct.empty or correct.duplicated(["model", "example"]).any():
        raise ValueError("correct is empty or has duplicated (model, example) rows")
    values = correct["correct"].astype(float)
    if not values.isin([0.0, 1.0]).all():
        raise ValueError("correct['correct'] must be boolean or 0/1")
    models = list(pd.unique(correct["model"]))
    sets = correct.groupby("model", sort=False)["example"].agg(frozenset)
    for m in models[1:]:
        if sets[m] != sets[models[0]]:
            raise ValueError(f"model {m!r} does not have the same example set as model {models[0]!r}")
    # sorted ids make the result independent of the row order of the input
    examples = pd.Index(sorted(sets[models[0]]))
    wide = correct.assign(correct=values).pivot(index="example", columns="model", values="correct")
    return models, wide.loc[examples, models].to_numpy()


def _chunk_accuracies(matrix: np.ndarray, n_chunks: int, seed: int) -> np.ndarray:
    """Per-chunk accuracy, shape (n_used_chunks, n_models), n_used = max(2, min(n_chunks, n // 2))."""
    n_used = max(2, min(n_chunks, matrix.shape[0] // 2))
    order = np.random.default_rng(seed).permutation(matrix.shape[0])
    return np.stack([matrix[idx].mean(axis=0) for idx in np.array_split(order, n_used)])


def _paired_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test p-value; identical chunk accuracies give 1.0 (scipy gives NaN)."""
    with warnings.catch_warnings():  # scipy warns on (near-)constant differences
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_rel(a, b).pvalue
    return 1.0 if np.isnan(p) else float(p)


def chunked_paired_ttest(correct: pd.DataFrame, *, n_chunks: int = 100, seed: int = 0) -> pd.DataFrame:
    """Paired t-test of every model against the best one on chunk accuracies (App. I).

    Examples (sorted by id) are shuffled with ``np.random.default_rng(seed)`` and
    split by ``np.array_split`` into ``max(2, min(n_chunks, n_examples // 2))``
    near-equal chunks (small subsets get chunks of >= 2 examples). The best model
    has the highest overall accuracy (ties: the first to appear); each other
    model's chunk accuracies are compared with its by ``scipy.stats.ttest_rel``.
    Chunk accuracies identical to the best's (scipy: NaN) give p = 1.0. With
    fewer than 2 examples there is no test: n_chunks 0, every p-value NaN.

    Args:
        correct: one row per (model, example): ``model``, ``example`` (id),
            ``correct`` (bool or 0/1); every model has the same example set.
        n_chunks: number of chunks for large sets (100 in the paper).
        seed: seed of the shuffle.

    Returns:
        One row per model (order of appearance): model, accuracy, n_examples,
        n_chunks, is_best, p_value (NaN for the best), significant_05 (p < 0.05),
        significant_01 (p < 0.01).

    Raises:
        ValueError: missing columns, non-0/1 values, duplicated rows, or a model
            whose example set differs from the first model's (named).
    """
    if n_chunks < 2:
        raise ValueError(f"n_chunks must be at least 2, got {n_chunks}")
    models, matrix = _correct_matrix(correct)
    n_ex = matrix.shape[0]
    accuracy = matrix.mean(axis=0)
    best = int(np.argmax(accuracy))  # argmax returns the first maximum
    if n_ex >= 2:
        chunks = _chunk_accuracies(matrix, n_chunks, seed)  # (n_used, n_models)
        used, ref = chunks.shape[0], chunks[:, best]
        p = [np.nan if j == best else _paired_p(chunks[:, j], ref) for j in range(len(models))]
    else:
        used, p = 0, [np.nan] * len(models)
    p = np.asarray(p, dtype=float)
    return pd.DataFrame({  # NaN p-values compare False below
        "model": models, "accuracy": accuracy, "n_examples": n_ex, "n_chunks": used,
        "is_best": np.arange(len(models)) == best, "p_value": p,
        "significant_05": p < 0.05, "significant_01": p < 0.01})


def significance_table(correct: pd.DataFrame, *, subset_col: str = "subset", all_label: str | None = "All",
                       n_chunks: int = 100, seed: int = 0) -> pd.DataFrame:
    """:func:`chunked_paired_ttest` for each test subset (Table 2 columns).

    Args:
        correct: ``model``, ``example``, ``correct`` and ``subset_col`` (e.g. the
            SliCK category of each test example).
        subset_col: name of the subset column.
        all_label: if not None, the whole test set is tested first under this
            name, which must not already be a value of ``subset_col``.
        n_chunks, seed: as in :func:`chunked_paired_ttest`.

    Returns:
        :func:`chunked_paired_ttest`'s rows for every subset with a first column
        ``subset``; subsets in order of appearance (``all_label`` first).
    """
    _require_columns(correct, [subset_col], "correct")
    if all_label is not None and (correct[subset_col] == all_label).any():
        raise ValueError(f"{subset_col!r} already contains {all_label!r}; pass all_label=None")
    parts = [] if all_label is None else [(all_label, correct)]
    parts += list(correct.groupby(subset_col, sort=False))
    tables = [chunked_paired_ttest(g, n_chunks=n_chunks, seed=seed).assign(subset=name) for name, g in parts]
    out = pd.concat(tables, ignore_index=True)
    return out[["subset"] + [c for c in out.columns if c != "subset"]]


def format_table2(sig: pd.DataFrame, *, decimals: int = 1) -> pd.DataFrame:
    """Table 2 in the paper's style from a :func:`significance_table` result.

    Cells hold accuracy x 100. The best model of each column and every model not
    significantly worse (p >= 0.05) are bold (``**43.6**``); the others get the
    significance level against the best (paper Table 7) as a marker: ``†`` for
    0.01 <= p < 0.05, ``‡`` for p < 0.01. A model absent from a subset gets "".

    Args:
        sig: columns ``subset``, ``model``, ``accuracy``, ``p_value``.
        decimals: decimals of the percentage.

    Returns:
        Strings; rows = models, columns = subsets, both in order of appearance.
    """
    _require_columns(sig, ["subset", "model", "accuracy", "p_value"], "sig")

    def cell(row: pd.Series) -> str:
        text = f"{100 * row['accuracy']:.{decimals}f}"
        p = row["p_value"]
        if np.isnan(p) or p >= 0.05:
            return f"**{text}**"
        return text + ("‡" if p < 0.01 else "†")

    cells = sig.assign(cell=sig.apply(cell, axis=1))
    wide = cells.pivot(index="model", columns="subset", values="cell")
    wide = wide.reindex(index=pd.unique(sig["model"]), columns=pd.unique(sig["subset"])).fillna("")
    wide.index.name, wide.columns.name = "model", None
    return wide


def paired_duration_test(es: pd.DataFrame, conv: pd.DataFrame, *, n_chunks: int = 100,
                         seed: int = 0) -> dict[str, float]:
    """EARLY_STOP against CONVERGENCE for one variant, chunked paired t-test.

    Args:
        es: test results at EARLY_STOP, columns ``example``, ``correct``.
        conv: test results at CONVERGENCE on the same examples.
        n_chunks, seed: as in :func:`chunked_paired_ttest`.

    Returns:
        dict: acc_es, acc_conv, diff (acc_conv - acc_es, < 0 when longer training
        hurts), p_value (two-sided; NaN with < 2 examples), n_chunks (used).
    """
    for name, df in (("es", es), ("conv", conv)):
        _require_columns(df, ["example", "correct"], name)
    both = pd.concat([es[["example", "correct"]].assign(model="EARLY_STOP"),
                      conv[["example", "correct"]].assign(model="CONVERGENCE")], ignore_index=True)
    _, matrix = _correct_matrix(both)
    acc_es, acc_conv = matrix.mean(axis=0)
    if matrix.shape[0] >= 2:
        chunks = _chunk_accuracies(matrix, n_chunks, seed)
        used, p = chunks.shape[0], _paired_p(chunks[:, 0], chunks[:, 1])
    else:
        used, p = 0, np.nan
    return {"acc_es": float(acc_es), "acc_conv": float(acc_conv), "diff": float(acc_conv - acc_es),
            "p_value": p, "n_chunks": used}


# Intervals
def mean_ci(values, *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of ``values`` (shape (n,), n >= 1), e.g. over seeds.

    Returns:
        (mean, low, high) at ``confidence``; a single value v gives (v, nan, nan).
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    m = float(x.mean())
    if x.size == 1:
        return m, np.nan, np.nan
    half = stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return m, float(m - half), float(m + half)


def summarize_seeds(df: pd.DataFrame, by: list[str], value: str, *, confidence: float = 0.95) -> pd.DataFrame:
    """:func:`mean_ci` of ``value`` per group of ``by`` (order of appearance).

    Returns:
        DataFrame with columns ``by`` + mean, ci_low, ci_high, n.
    """
    _require_columns(df, [*by, value], "df")
    rows = []
    for key, g in df.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append((*key, *mean_ci(g[value], confidence=confidence), len(g)))
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])


def proportion_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """Wilson score interval for the proportion k / n; returns (k / n, low, high)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need n > 0 and 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z = stats.norm.ppf((1 + confidence) / 2)
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return p, float(max(0.0, centre - half)), float(min(1.0, centre + half))


def binomial_se(p: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of a proportion."""
    return float(np.sqrt(p * (1 - p) / n))


# P(True) threshold baseline (Sec. 6, Fig. 5)
def threshold_sweep(scores: np.ndarray, correct_after: np.ndarray, thresholds=None) -> pd.DataFrame:
    """Label pairs with score < t as Unknown, for each threshold t.

    Args:
        scores: P(True) per test pair, shape (n,).
        correct_after: post-fine-tuning correctness per pair, shape (n,), bool or 0/1.
        thresholds: default: the unique quantiles of ``scores`` at 0.05, 0.10, ..., 0.95.

    Returns:
        One row per threshold (ascending): threshold, share (fraction of pairs
        labelled Unknown), n (their count), accuracy (mean ``correct_after``
        over them; NaN when none).
    """
    s = np.asarray(scores, dtype=float).ravel()
    c = np.asarray(correct_after, dtype=float).ravel()
    if s.size == 0 or s.shape != c.shape:
        raise ValueError(f"scores and correct_after must be non-empty and equally long, got {s.size}, {c.size}")
    if thresholds is None:
        thresholds = np.unique(np.quantile(s, np.arange(1, 20) / 20))
    rows = []
    for t in np.sort(np.asarray(thresholds, dtype=float)):
        mask = s < t
        k = int(mask.sum())
        rows.append((float(t), k / s.size, k, float(c[mask].mean()) if k else np.nan))
    return pd.DataFrame(rows, columns=["threshold", "share", "n", "accuracy"])
