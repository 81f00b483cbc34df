"""The paper's claims as computed checks: paper's number, ours, does it hold?

Each chapter ends with its checks, and the findings page gathers them all.
A check is computed from the run store in the same build; nothing is typed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from .slick import CATEGORIES


@dataclass(frozen=True)
class Check:
    """One claim of the paper checked on our run."""

    finding: str  # short name, e.g. "SliCK categories"
    claim: str  # what the paper (or the issue) says, in words
    paper: str  # the paper's number(s)
    ours: str  # our number(s), with intervals where they exist
    holds: bool | None  # None: not applicable / not decidable in this run


def table(checks: list[Check]) -> pd.DataFrame:
    """Checks as a display table (``holds`` as yes / no / n.a.)."""
    df = pd.DataFrame([asdict(c) for c in checks])
    df["holds"] = df["holds"].map({True: "yes", False: "NO", None: "n/a"})
    return df


def category_shares(table_: pd.DataFrame, split: str = "train") -> pd.Series:
    """Share of each SliCK category among ``split``'s examples (0-1, all four present)."""
    sub = table_[table_["split"] == split]["category"]
    return sub.value_counts(normalize=True).reindex(list(CATEGORIES), fill_value=0.0)


def exposure_trend(table_: pd.DataFrame) -> pd.DataFrame:
    """HighlyKnown and Unknown share per exposure count group (train and test facts).

    Returns:
        One row per exposure group (0, 1, 2, 3-4, 5-8, 9-16, 17+) with
        ``n``, ``HighlyKnown`` and ``Unknown`` shares.
    """
    sub = table_[table_["split"].isin(["train", "test", "ood_test"])]
    bins = [-1, 0, 1, 2, 4, 8, 16, np.inf]
    labels = ["0", "1", "2", "3-4", "5-8", "9-16", "17+"]
    group = pd.cut(sub["exposures"], bins=bins, labels=labels)
    out = sub.groupby(group, observed=True)["category"].agg(
        n="size",
        HighlyKnown=lambda c: (c == "HighlyKnown").mean(),
        Unknown=lambda c: (c == "Unknown").mean(),
    )
    return out.reset_index(names="exposures")


def knowledge_checks(table_: pd.DataFrame) -> list[Check]:
    """Chapter 1 (Sec. 3): SliCK's categories on our world."""
    shares = category_shares(table_)
    checks = [Check(
        "SliCK categories", "all four categories hold at least 5% of train",
        "24 / 23 / 17 / 36 % (HK / MK / WK / Unk)",
        " / ".join(f"{100 * shares[c]:.0f}" for c in CATEGORIES) + " %",
        bool((shares >= 0.05).all()),
    )]
    if "exposures" in table_ and table_["exposures"].notna().any():
        trend = exposure_trend(table_)
        rho = sps.spearmanr(np.arange(len(trend)), trend["HighlyKnown"]).statistic
        checks.append(Check(
            "SliCK vs ground truth", "the HighlyKnown share rises with the exposure count",
            "not measurable on real data",
            f"HighlyKnown {100 * trend['HighlyKnown'].iloc[0]:.0f}% at 0 exposures -> "
            f"{100 * trend['HighlyKnown'].iloc[-1]:.0f}% at {trend['exposures'].iloc[-1]}; Spearman rho {rho:.2f}",
            bool(rho > 0.8),
        ))
        never = table_[(table_["exposures"] == 0) & table_["split"].isin(["train", "test", "ood_test"])]
        top = never["category"].value_counts(normalize=True)
        checks.append(Check(
            "SliCK vs ground truth", "Unknown is the largest category among never-exposed facts",
            "not measurable on real data",
            f"{100 * top.get('Unknown', 0):.0f}% of {len(never)} never-exposed facts Unknown "
            f"(largest: {top.index[0]})",
            bool(len(top) and top.index[0] == "Unknown"),
        ))
    return checks
