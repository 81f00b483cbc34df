"""Statistics for the paper's tables and figures: pure functions, no I/O, no plotting.

The linear model of Sec. 4.4 / Table 1 (:func:`fit_linear_model`); the P(True)
baseline of Sec. 6 / Fig. 5 (:func:`threshold_sweep`); intervals over seeds and
for proportions.  The significance tests (App. I) are in
:mod:`newknowledge.evaluation.significance`.
Categories: "HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown" (Known = the
first three). Accuracies are fractions in [0, 1] throughout.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from newknowledge.core.tidy import require_columns

_TERMS = {"Intercept": "b0", "kn": "b_kn", "unk": "b_unk"}


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
        se: "b0"/"b_kn"/"b_unk" -> standard error (the covariance of ``ci``); empty when not given.
    """

    b0: float
    b_kn: float
    b_unk: float
    ci: dict[str, tuple[float, float]]
    r2: float
    n: int
    n_clusters: int | None
    summary: str
    se: dict[str, float] = field(default_factory=dict)

    def table(self, scale: float = 1.0) -> pd.DataFrame:
        """Table 1 layout: rows b0, b_kn, b_unk, R2; columns estimate, ci_low, ci_high.

        Args:
            scale: multiplies coefficients and intervals (100 gives the paper's
                points); R2 is not scaled and its interval is NaN.
        """
        rows = {
            k: (getattr(self, k) * scale, self.ci[k][0] * scale, self.ci[k][1] * scale) for k in ("b0", "b_kn", "b_unk")
        }
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
    import statsmodels.formula.api as smf  # imported here: loading it takes seconds

    require_columns(points, ["acc", "kn", "unk"], "points")
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
    se = {name: float(res.bse[term]) for term, name in _TERMS.items()}
    return LinearModelResult(
        **est, ci=ci, r2=float(res.rsquared), n=int(res.nobs), n_clusters=n_clusters, summary=summary, se=se
    )


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
    require_columns(df, [*by, value], "df")
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
