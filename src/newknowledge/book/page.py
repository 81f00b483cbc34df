"""What a chapter page shows besides figures: the data in a few numbers, tables and checks as HTML, provenance.

Display only: every number comes from the functions that compute it
(:mod:`newknowledge.evaluation.analysis`, the chapter modules); these functions lay
them out.  Tables are written as HTML so bold is bold, significance marks
are marks and wide tables scroll inside their own box (``book/_static/book.css``).
"""

from __future__ import annotations

import html
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd


def describe(prep) -> pd.DataFrame:
    """One world's data and model in a few numbers (one row per quantity).

    Args:
        prep: a :class:`newknowledge.book.pipeline.Prepared`.
    """
    t = prep.table
    rows = [
        (
            "relations (in-distribution / OOD)",
            f"{t.loc[t.split != 'ood_test', 'relation'].nunique()} / {t.loc[t.split == 'ood_test', 'relation'].nunique()}",
        )
    ]
    rows += [(f"{split} questions", f"{(t.split == split).sum():,}") for split in ("train", "dev", "test", "ood_test")]
    if "exposures" in t:
        ex = t.loc[t.split.isin(["train", "test", "ood_test"]), "exposures"]
        rows += [
            ("never-exposed facts (train/test)", f"{(ex == 0).mean():.0%}"),
            (
                "exposures of exposed facts: median / mean / max",
                f"{ex[ex > 0].median():.0f} / {ex[ex > 0].mean():.1f} / {ex.max()}",
            ),
        ]
    stats_file = Path(prep.model_path).parent / "stats.json"
    if stats_file.exists():
        st = json.loads(stats_file.read_text())
        rows += [
            ("model parameters", f"{st['parameters']:,}"),
            ("pretraining corpus (tokens)", f"{st['corpus_tokens']:,}"),
            ("pretraining tokens seen", f"{st['train_tokens']:,}"),
            ("final pretraining loss", f"{st['final_loss']:.2f}"),
            ("pretraining time (s, when built)", f"{st['seconds']:.0f}"),
        ]
    else:
        rows.append(("model", prep.model_path))
    s = prep.study.slick
    rows.append(
        (
            "SliCK prompts per question (greedy + samples each)",
            f"{s.n_ex} x (1 + {s.n_samples}), estimator {s.estimator}",
        )
    )
    return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")


def commit() -> str:
    """The checkout's short git commit, or "unknown" (an installed package, no git)."""
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=5,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(setup) -> pd.DataFrame:
    """Closing cell of every chapter: parameters, run time and the cached artifacts used.

    Args:
        setup: the chapter's :class:`newknowledge.book.pipeline.Setup` (its ``runs`` are
            the fine-tuning runs the chapter read).
    """
    from newknowledge import __version__
    from newknowledge.core import store
    from newknowledge.core.config import config_hash

    root = store.artifacts_root()

    def rel(p) -> str:
        p = Path(p)
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    study = setup.study
    rows = [
        ("profile", study.study.profile),
        ("parameters hash", config_hash(study.params())),
        ("package version / commit", f"{__version__} / {commit()}"),
        ("chapter run time (s)", f"{time.time() - setup.started:.0f}"),
    ]
    for seed, prep in setup.worlds().items():
        name = f" (seed {seed})" if len(setup.worlds()) > 1 else ""
        rows += [
            (f"world{name}", rel(prep.world_dir) if prep.world_dir else study.study.eq_dir),
            (f"model{name}", rel(prep.model_path)),
        ]
        rows += [(f"stage time in this run{name}: {k} (s)", f"{v:.0f}") for k, v in prep.seconds.items()]
    if setup.runs:
        rows.append(("fine-tuning runs used", ", ".join(sorted({rel(p) for p in setup.runs}))))
    rows.append(("all parameters", ", ".join(f"{k}={v}" for k, v in study.params().items())))
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def html_table(df: pd.DataFrame, caption: str = "", cls: str = "numeric-table", escape: bool = True) -> str:
    """A DataFrame as an HTML table in a box that scrolls sideways when it is wider than the page.

    Args:
        df: the table; its index becomes the first column(s).
        caption: shown above the table.
        cls: CSS class (``numeric-table`` right-aligns numbers with tabular figures).
        escape: escape cell text; pass False when cells hold HTML (marks, links).
    """
    body = df.to_html(escape=escape, classes=cls, border=0, na_rep="")
    cap = f"<p class='table-caption'>{html.escape(caption)}</p>" if caption else ""
    return f"<div class='table-scroll'>{cap}{body}</div>"


def marked(acc: float, p: float, decimals: int = 1) -> str:
    """A Table 2 cell (App. I): bold when best or not significantly worse (p >= 0.05), else † or ‡.

    Args:
        acc: accuracy in [0, 1]; shown in %.
        p: the paired test's p-value against the column's best model (NaN for the best itself).
    """
    text = f"{100 * acc:.{decimals}f}"
    if np.isnan(p) or p >= 0.05:
        return f"<strong>{text}</strong>"
    return f"{text}<sup>{'‡' if p < 0.01 else '†'}</sup>"


def table2_html(sig: pd.DataFrame, caption: str) -> str:
    """One duration of Table 2 as HTML from :func:`newknowledge.evaluation.significance.significance_table`'s rows.

    Args:
        sig: columns ``subset``, ``model``, ``accuracy``, ``p_value`` (one duration, one seed).
        caption: e.g. "Ours, EARLY_STOP".
    """
    cells = sig.assign(cell=[marked(a, p) for a, p in zip(sig["accuracy"], sig["p_value"])])
    wide = cells.pivot(index="model", columns="subset", values="cell")
    wide = wide.reindex(index=pd.unique(sig["model"]), columns=pd.unique(sig["subset"])).fillna("")
    wide.index.name, wide.columns.name = "fine-tuned on", None
    return html_table(wide, caption, escape=False)


def checks_html(checks) -> str:
    """A chapter's checks as an HTML table: verdict, claim, statistic, threshold, the paper's number, ours.

    Args:
        checks: a list of :class:`newknowledge.evaluation.checks.Check`.
    """
    from newknowledge.evaluation.checks import table

    df = table(checks).rename(columns={"holds": "", "finding": "finding #"})
    return html_table(df.set_index(""), cls="checks-table")
