"""Significance tests of the paper's appendix I, and the tests our pre-registered checks use.

The paper compares two fine-tuned models on the same test questions with a
*chunked paired t-test* (App. I): shuffle the questions, split them into 100
near-equal chunks, compute each model's accuracy per chunk and run a paired
t-test on the chunk accuracies (:func:`chunked_paired_ttest`,
:func:`significance_table`, :func:`paired_duration_test`).

The checks (:mod:`newknowledge.evaluation.checks`) need the same test in a general form:
:func:`chunked_mean` tests the mean of any per-question quantity (a paired
difference of two models' correctness, or a difference of two such
differences) with the chunk method, and returns a :class:`Mean` that gives
one-sided p-values, intervals and the two one-sided tests (TOST) of
equivalence.  :func:`pooled` combines seeds (worlds); :func:`proportions_less`
and :func:`fisher_greater` compare accuracies on disjoint or differently chosen
question sets.  Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from newknowledge.core.tidy import require_columns


def _correct_matrix(correct: pd.DataFrame) -> tuple[list, np.ndarray]:
    """Models in order of appearance and a 0/1 matrix of shape (n_examples, n_models)."""
    require_columns(correct, ["model", "example", "correct"], "correct")
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
    return pd.DataFrame(
        {  # NaN p-values compare False below
            "model": models,
            "accuracy": accuracy,
            "n_examples": n_ex,
            "n_chunks": used,
            "is_best": np.arange(len(models)) == best,
            "p_value": p,
            "significant_05": p < 0.05,
            "significant_01": p < 0.01,
        }
    )


def significance_table(
    correct: pd.DataFrame,
    *,
    subset_col: str = "subset",
    all_label: str | None = "All",
    n_chunks: int = 100,
    seed: int = 0,
) -> pd.DataFrame:
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
    require_columns(correct, [subset_col], "correct")
    if all_label is not None and (correct[subset_col] == all_label).any():
        raise ValueError(f"{subset_col!r} already contains {all_label!r}; pass all_label=None")
    parts = [] if all_label is None else [(all_label, correct)]
    parts += list(correct.groupby(subset_col, sort=False))
    tables = [chunked_paired_ttest(g, n_chunks=n_chunks, seed=seed).assign(subset=name) for name, g in parts]
    out = pd.concat(tables, ignore_index=True)
    return out[["subset"] + [c for c in out.columns if c != "subset"]]


def paired_duration_test(
    es: pd.DataFrame, conv: pd.DataFrame, *, n_chunks: int = 100, seed: int = 0
) -> dict[str, float]:
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
        require_columns(df, ["example", "correct"], name)
    both = pd.concat(
        [
            es[["example", "correct"]].assign(model="EARLY_STOP"),
            conv[["example", "correct"]].assign(model="CONVERGENCE"),
        ],
        ignore_index=True,
    )
    _, matrix = _correct_matrix(both)
    acc_es, acc_conv = matrix.mean(axis=0)
    if matrix.shape[0] >= 2:
        chunks = _chunk_accuracies(matrix, n_chunks, seed)
        used, p = chunks.shape[0], _paired_p(chunks[:, 0], chunks[:, 1])
    else:
        used, p = 0, np.nan
    return {
        "acc_es": float(acc_es),
        "acc_conv": float(acc_conv),
        "diff": float(acc_conv - acc_es),
        "p_value": p,
        "n_chunks": used,
    }


@dataclass(frozen=True)
class Mean:
    """A mean with its standard error and degrees of freedom (a Student-t estimate).

    Attributes:
        mean: the estimate (e.g. a difference of accuracies, as a fraction).
        se: its standard error; 0 when every chunk agrees exactly.
        df: degrees of freedom of the t distribution (chunks - 1).
        n: questions behind it.
    """

    mean: float
    se: float
    df: float
    n: int

    def _t(self, value: float) -> float:
        if self.se > 0:
            return (self.mean - value) / self.se
        return 0.0 if self.mean == value else np.inf * np.sign(self.mean - value)

    def p_less(self, value: float = 0.0) -> float:
        """One-sided p-value of H0: mean >= value (small when the mean is clearly below ``value``)."""
        return float(stats.t.cdf(self._t(value), self.df)) if self.df > 0 else np.nan

    def p_greater(self, value: float = 0.0) -> float:
        """One-sided p-value of H0: mean <= value (small when the mean is clearly above ``value``)."""
        return float(stats.t.sf(self._t(value), self.df)) if self.df > 0 else np.nan

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Two-sided ``level`` interval."""
        if self.df <= 0:
            return np.nan, np.nan
        half = stats.t.ppf((1 + level) / 2, self.df) * self.se
        return self.mean - half, self.mean + half

    def equivalent(self, margin: float, alpha: float = 0.05) -> bool:
        """Two one-sided tests (TOST): is the mean within (-margin, +margin)?

        True when both H0: mean <= -margin and H0: mean >= +margin are rejected
        at ``alpha``, i.e. the (1 - 2 alpha) interval lies inside the margin.
        Absence of a difference is not evidence of equivalence: a noisy
        estimate fails.
        """
        return bool(self.p_greater(-margin) < alpha and self.p_less(margin) < alpha)


def chunked_mean(values, *, n_chunks: int = 100, seed: int = 0) -> Mean:
    """The mean of a per-question quantity, tested as App. I tests accuracies.

    The questions are shuffled with ``np.random.default_rng(seed)`` and split
    into ``max(2, min(n_chunks, n // 2))`` near-equal chunks; the estimate is
    the mean of the chunk means and its standard error their standard deviation
    over sqrt(chunks), on chunks - 1 degrees of freedom.  For ``values = a - b``
    (two models' 0/1 correctness on the same questions) this is exactly the
    paper's paired t-test on chunk accuracies.

    Args:
        values: shape (n,), one number per question; n >= 4.
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size < 4:
        raise ValueError(f"chunked_mean needs at least 4 questions, got {x.size}")
    chunks = _chunk_accuracies(x[:, None], n_chunks, seed)[:, 0]
    k = len(chunks)
    return Mean(float(chunks.mean()), float(chunks.std(ddof=1) / np.sqrt(k)), k - 1, int(x.size))


def pooled(means: list[Mean]) -> Mean:
    """The average of independent estimates (one per seed or world), with its standard error.

    mean = average of the means, se = sqrt(sum of se^2) / k, df = the sum of the dfs.
    """
    if not means:
        raise ValueError("pooled needs at least one estimate")
    k = len(means)
    return Mean(
        float(np.mean([m.mean for m in means])),
        float(np.sqrt(sum(m.se**2 for m in means)) / k),
        float(sum(m.df for m in means)),
        int(sum(m.n for m in means)),
    )


def proportions_less(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value that accuracy k1/n1 is below k2/n2 (two-proportion z-test, pooled variance).

    For question sets that overlap (two labellings of one test set) the test
    ignores their positive covariance, which makes it conservative.
    """
    se = proportions_se(k1, n1, k2, n2)
    if np.isnan(se):
        return np.nan
    if se == 0:
        return 1.0
    return float(stats.norm.cdf((k1 / n1 - k2 / n2) / se))


def proportions_se(k1: int, n1: int, k2: int, n2: int) -> float:
    """Standard error of k1/n1 - k2/n2 under equal proportions (the pooled variance of
    :func:`proportions_less`'s z-test); NaN when a set is empty."""
    if min(n1, n2) == 0:
        return np.nan
    p = (k1 + k2) / (n1 + n2)
    return float(np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2)))


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact p-value that k1/n1 is above k2/n2 (disjoint question sets)."""
    if min(n1, n2) == 0:
        return np.nan
    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater").pvalue)
