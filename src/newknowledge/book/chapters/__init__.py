"""One module per chapter of the book: that chapter's results and checks, defined once.

Each module has the chapter's checks, pure functions of tidy tables (each
docstring states the paper's claim, the statistic and the threshold, fixed
before any run), and ``results(setup)``, which reads or trains what the chapter
needs and returns a :class:`Chapter`.  The notebook displays what ``results``
returns, and ``results`` (decorated with :func:`saved`) also saves it under
the build's parameters; the findings page reads those saved results
(:func:`load`), so the two cannot disagree and the page recomputes nothing.

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
``size``                8. How big must the miniature be?              beyond
======================  =============================================  ============

Importing this package does not import torch: ``results`` imports the
pipeline when it runs.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from newknowledge.evaluation import analysis
from newknowledge.evaluation.checks import Check, across, conclusion, pct

MODULES = {1: "knowledge", 2: "harm", 3: "speed", 4: "linear", 5: "knowledge_types", 6: "slick_analysis", 7: "idk"}
# Chapters beyond the paper: not on the findings page (they test the miniature, not a finding).
BEYOND = {8: "size"}


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
    """The module of chapter ``number`` (1-8)."""
    return importlib.import_module(f"{__name__}.{({**MODULES, **BEYOND})[number]}")


# Saved results.  Each chapter's ``results`` is decorated with :func:`saved`, so running a chapter's
# notebook also writes what it computed; the findings page reads these files (:func:`load`) instead
# of recomputing every chapter.


class NotSaved(LookupError):
    """A chapter has no saved results for these parameters: never run, or run with other parameters."""


@dataclass
class Saved:
    """One chapter's saved results and what they were made with."""

    chapter: Chapter
    params: dict[str, Any]  # the study's flat parameters (``Study.params()``)
    saved_at: str  # UTC, ISO 8601
    version: str  # package version / git commit
    path: Path


def saved_dir(study) -> Path:
    """Where the chapters of a build with ``study``'s parameters are saved:
    ``<artifacts>/chapters/<profile>/<parameters hash>/`` (the hash every chapter's provenance shows)."""
    from newknowledge.core import store
    from newknowledge.core.config import config_hash

    return store.artifacts_root() / "chapters" / study.study.profile / config_hash(study.params())


def save(ch: Chapter, study) -> Path:
    """Write ``ch`` with ``study``'s parameters, the time and the commit to ``<saved_dir>/<NN>.pkl``.

    The folder also holds ``params.json`` (it describes itself).  The file is written under a
    temporary name and renamed, so a save cut off halfway leaves the previous one whole.
    """
    from newknowledge import __version__
    from newknowledge.book import page
    from newknowledge.core import store

    folder = saved_dir(study)
    folder.mkdir(parents=True, exist_ok=True)
    store.write_json(folder / "params.json", study.params())
    record = {
        "chapter": ch,
        "params": study.params(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": f"{__version__} / {page.commit()}",
    }
    path = folder / f"{ch.number:02d}.pkl"
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(pickle.dumps(record))
    tmp.replace(path)
    return path


def saved(results):
    """Decorator of a chapter module's ``results(setup)``: the :class:`Chapter` it returns is also
    saved (:func:`save`) under the setup's parameters, for the findings page."""

    @functools.wraps(results)
    def wrapper(setup) -> Chapter:
        ch = results(setup)
        save(ch, setup.study)
        return ch

    return wrapper


def load(number: int, study) -> Saved:
    """Chapter ``number``'s results saved under ``study``'s parameters.

    Raises:
        NotSaved: none saved with these parameters; the message says whether the chapter was saved
            with other parameters (and which differ) or never.
    """
    from newknowledge.core import store

    path = saved_dir(study) / f"{number:02d}.pkl"
    if path.is_file():
        record = pickle.loads(path.read_bytes())
        if record["params"] == study.params():
            return Saved(record["chapter"], record["params"], record["saved_at"], record["version"], path)
    # Not for these parameters: the newest save of this chapter under any others says what differs.
    others = sorted(
        (p for p in (store.artifacts_root() / "chapters").glob(f"*/*/{number:02d}.pkl") if p != path),
        key=lambda p: p.stat().st_mtime,
    )
    if not others and not path.is_file():
        raise NotSaved(f"chapter {number} has no saved results (its notebook has not run, with any parameters)")
    theirs = store.read_json((others[-1] if others else path).parent / "params.json")  # not the whole pickle
    ours = study.params()
    differ = {k: (theirs.get(k), ours[k]) for k in ours if theirs.get(k) != ours[k]}
    shown = ", ".join(f"{k}={b!r} here, {a!r} there" for k, (a, b) in list(differ.items())[:6])
    raise NotSaved(
        f"chapter {number} is stale: its last results were made with other parameters ({shown}"
        + (f", and {len(differ) - 6} more" if len(differ) > 6 else "")
        + ")"
    )


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
