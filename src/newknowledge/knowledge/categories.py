"""SliCK's four knowledge categories: names, the rule, and tables of them (paper Sec. 3).

Pure Python, numpy and pandas (no torch), so analysis, checks, statistics
and plots can use the categories without loading a model.

=============  ================================================
HighlyKnown    P_correct(T=0) = 1
MaybeKnown     0 < P_correct(T=0) < 1
WeaklyKnown    P_correct(T=0) = 0 and P_correct(T>0) > 0
Unknown        P_correct(T=0) = 0 and P_correct(T>0) = 0
=============  ================================================

Known = the first three.  :func:`newknowledge.knowledge.slick.categorize` computes the
two P_correct values with a model; everything here works on its table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from newknowledge.core.tidy import require_columns

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
KNOWN = CATEGORIES[:3]
ABBREV = {"HighlyKnown": "HK", "MaybeKnown": "MK", "WeaklyKnown": "WK", "Unknown": "Unk"}
EXPOSURE_BUCKETS = ("0", "1", "2", "3-4", "5-8", "9-16", "17+")


def category(p_greedy: float, p_sample: float) -> str:
    """The paper's rule (Sec. 3, Figure 2a): category from P_correct(T=0) and P_correct(T>0)."""
    if not (0.0 <= p_greedy <= 1.0 and 0.0 <= p_sample <= 1.0):
        raise ValueError(f"P_correct values must lie in [0, 1], got {p_greedy!r}, {p_sample!r}")
    if p_greedy == 1.0:
        return "HighlyKnown"
    if p_greedy > 0.0:
        return "MaybeKnown"
    return "WeaklyKnown" if p_sample > 0.0 else "Unknown"


def p_any(p: np.ndarray, n_samples: int) -> float:
    """Probability that at least one of ``n_samples`` draws per prompt is correct.

    Args:
        p: per prompt, the exact probability that one sample is the gold answer, shape (n_prompts,).
    """
    return float(1.0 - np.prod((1.0 - np.clip(np.asarray(p, dtype=float), 0.0, 1.0)) ** n_samples))


def exact_category(p_greedy: float, p_any_correct: float) -> str:
    """The rule for the exact estimator: WeaklyKnown when the paper's samples would include a
    correct answer with probability at least one half (see :mod:`newknowledge.knowledge.slick`)."""
    return category(p_greedy, 1.0 if p_any_correct >= 0.5 else 0.0)


def categories_with(table: pd.DataFrame, n_ex: int, estimator: str, n_samples: int = 16) -> pd.Series:
    """Categories as SliCK with only the first ``n_ex`` exemplar sets would give them (paper App. J).

    Args:
        table: SliCK's table with per-prompt outcomes ``prompt_greedy`` (0/1 per
            prompt) and ``prompt_sample`` (share of correct samples, or the exact
            sampling probability), in exemplar-set order.
    """
    require_columns(table, ["prompt_greedy", "prompt_sample"], "table")
    cats = []
    for g, s in zip(table["prompt_greedy"], table["prompt_sample"]):
        g, s = np.asarray(g[:n_ex], dtype=float), np.asarray(s[:n_ex], dtype=float)
        cats.append(
            exact_category(g.mean(), p_any(s, n_samples)) if estimator == "exact" else category(g.mean(), s.mean())
        )
    return pd.Series(cats, index=table.index)


def shares(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """% of each category per value of ``by``, and the count ``n`` (rows sum to 100).

    Args:
        table: one row per example: ``by`` and ``category``.

    Returns:
        Index: the values of ``by``; columns: :data:`CATEGORIES` (%) and ``n``.
    """
    require_columns(table, [by, "category"], "table")
    if extra := sorted(set(table["category"].dropna()) - set(CATEGORIES)):
        raise ValueError(f"unknown categories {extra}; expected {CATEGORIES}")
    counts = pd.crosstab(table[by], table["category"]).reindex(columns=list(CATEGORIES), fill_value=0)
    return (counts.div(counts.sum(axis=1), axis=0) * 100).assign(n=counts.sum(axis=1))


def split_shares(table: pd.DataFrame, split: str = "train") -> pd.Series:
    """Share (0-1) of each category among ``split``'s examples, all four present."""
    require_columns(table, ["split", "category"], "table")
    sub = table[table["split"] == split]["category"]
    return sub.value_counts(normalize=True).reindex(list(CATEGORIES), fill_value=0.0)


def exposure_bucket(series: pd.Series) -> pd.Series:
    """Exposure counts (>= 0) -> ordered categorical with categories 0, 1, 2, 3-4, 5-8, 9-16, 17+."""
    x = pd.to_numeric(pd.Series(series), errors="raise")
    if x.isna().any() or (x < 0).any():
        raise ValueError("exposures must be non-negative numbers without NaN")
    return pd.cut(x, [-0.5, 0.5, 1.5, 2.5, 4.5, 8.5, 16.5, np.inf], labels=list(EXPOSURE_BUCKETS), ordered=True)


def exposure_table(table: pd.DataFrame) -> pd.DataFrame:
    """% of each category per pretraining exposure bucket (the controlled world's ground truth).

    Args:
        table: one row per fact: ``exposures`` (int), ``category``.

    Returns:
        Index ``exposures``: the non-empty buckets, in order; columns:
        :data:`CATEGORIES` (% of the row, sum 100) and ``n``.
    """
    require_columns(table, ["exposures", "category"], "table")
    out = shares(table.assign(bucket=exposure_bucket(table["exposures"])), "bucket").query("n > 0")
    return out.set_axis(out.index.astype(str).rename("exposures"))
