"""One module per chapter of the book: that chapter's results and checks, defined once.

Each module has the chapter's checks, pure functions of tidy tables (each
docstring states the paper's claim, the statistic and the threshold, fixed
before any run), and ``results(setup)``, which reads or trains what the chapter
needs and returns a :class:`Chapter`.  The notebook displays what ``results``
returns; the findings page calls the same functions, so the two cannot
disagree.

======================  =============================================  ============
module                  chapter                                        paper
======================  =============================================  ============
``knowledge``           1. Quantifying knowledge with SliCK            Sec. 3
``harm``                2. Is fine-tuning on Unknown examples harmful  Sec. 4.1-4.2
``speed``               3. How fast are examples fitted                Sec. 4.3
``linear``              4. A linear model of test accuracy             Sec. 4.4
``knowledge_types``     5. Which kinds of examples to fine-tune on     Sec. 5
``slick_analysis``      6. How good is SliCK                           Sec. 6
``idk``                 7. Teaching the model to say "I don't know"    App. K
======================  =============================================  ============

Importing this package does not import torch: ``results`` imports the
pipeline when it runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from newknowledge.evaluation import analysis
from newknowledge.evaluation.checks import Check, across, conclusion, pct

MODULES = {1: "knowledge", 2: "harm", 3: "speed", 4: "linear", 5: "knowledge_types", 6: "slick_analysis", 7: "idk"}


@dataclass
class Chapter:
    """What one chapter shows: its tables, the tidy data behind its figures, its checks."""

    number: int
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    prose: dict[str, str] = field(default_factory=dict)  # fixed text for the conclusion (see checks.conclusion)

    def conclusion(self) -> str:
        """ "What we found", rendered from this build's checks (Markdown)."""
        return conclusion(self.checks, self.prose)


def module(number: int):
    """The module of chapter ``number`` (1-7)."""
    return importlib.import_module(f"{__name__}.{MODULES[number]}")


def shares_of_unknown(records: pd.DataFrame, prefix: str = "unknown") -> list[float]:
    """The X of every ``<prefix>_X`` variant in the records, ascending."""
    v = pd.Series(pd.unique(records["variant"]))
    v = v[v.str.match(rf"^{prefix}_\d")]
    return sorted(analysis.pct_unknown(v).tolist())


def name(prefix: str, x: float) -> str:
    """``("unknown", 50.0)`` -> ``"unknown_50"``."""
    return f"{prefix}_{x:g}"


def per_seed(wide: pd.DataFrame, values) -> dict[int, np.ndarray]:
    """Apply ``values(rows)`` to each seed's rows of a :func:`analysis.correct_at` table.

    Returns:
        seed -> per-question values (rows with a missing variant dropped).
    """
    out = {}
    for seed, rows in wide.groupby(level="seed"):
        v = np.asarray(values(rows), dtype=float)
        out[int(seed)] = v[np.isfinite(v)]
    return out


def converged(records: pd.DataFrame, bar: float = 0.99) -> Check:
    """Setup (Sec. 4, App. E): CONVERGENCE means the model fits its training data.

    The paper's CONVERGENCE is the end of 50 epochs, where train accuracy is
    100%.  Statistic: each run's train accuracy (greedy answer = gold) at its
    last epoch.  Threshold: at least 99% in every run (one or two examples of a
    few hundred may stay unfitted); a run below it is named, and claims about
    CONVERGENCE are then claims about a model that has not converged.
    """
    train = records[records["split"] == "train"]
    last = train[train["epoch"] == train.groupby(["variant", "seed"])["epoch"].transform("max")]
    acc = last.groupby(["variant", "seed"])["correct"].mean()
    low = acc[acc < bar]
    ours = (
        f"train accuracy at the last epoch: lowest {pct(acc.min())}% ({len(acc)} runs)"
        if low.empty
        else "below 99%: " + ", ".join(f"{v} seed {s} ({pct(a)}%)" for (v, s), a in low.items())
    )
    return Check(
        "converged",
        None,
        "setup",
        "CONVERGENCE: train accuracy ~100% at the last epoch (Sec. 4, App. E)",
        "train accuracy of every run at its last epoch",
        ">= 99% in every run",
        "100% after 50 epochs",
        ours,
        bool(low.empty),
    )


def seeds_text(per: dict[int, tuple[float, bool | None]], fmt=lambda v: pct(v, signed=True)) -> tuple[str, bool | None]:
    """:func:`newknowledge.evaluation.checks.across` with signed percentage points (the usual case)."""
    return across(per, fmt)
