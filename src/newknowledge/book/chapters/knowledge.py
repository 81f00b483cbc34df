"""Chapter 1: quantifying knowledge with SliCK (Sec. 3; Figure 2)

SliCK's categories on our world, and the preconditions of the world itself:
categories large enough for every variant, a dev split with the natural mix
of categories (EARLY_STOP is chosen on it), and an answer prior weak enough
that "Known" means "seen in pretraining" rather than "guessed".  Beyond the
paper: SliCK against the true exposure counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from newknowledge.book.chapters import Chapter, saved
from newknowledge.evaluation import analysis, paper
from newknowledge.evaluation.checks import Check, across, across_numbers, pct
from newknowledge.knowledge.categories import CATEGORIES, KNOWN, exposure_table, split_shares


def _per_world(tables: pd.DataFrame, fn) -> dict[int, tuple[float, bool]]:
    return {int(s): fn(g) for s, g in tables.groupby("seed")}


def categories_present(tables: pd.DataFrame, split: str = "train", bar: float = 0.05) -> Check:
    """Setup (Sec. 3, 5): every SliCK category holds a real share of ``split``.

    Section 5 fine-tunes on one category at a time and |D| is set by the smallest category of each
    relation, so each category must be present; on the dev split, which chooses EARLY_STOP, the paper
    has the natural mix.  Statistic: each category's share of ``split``.  Threshold: at least 5% for
    every category, in every world.
    """

    def one(g):
        s = split_shares(g, split)
        return s.min(), bool((s >= bar).all())

    per = _per_world(tables, one)
    text, ok = across(per, lambda v: pct(v))
    shares = split_shares(tables, split)
    where = "dev (EARLY_STOP is chosen on it)" if split == "dev" else split
    return Check(
        f"knowledge.present.{split}",
        None,
        "setup",
        f"all four SliCK categories are present in {where}",
        "each category's share of the split (smallest shown)",
        f">= {100 * bar:.0f}% each, every world",
        " / ".join(f"{v}" for v in paper.CATEGORY_SHARES.values()) + " % (train: HK / MK / WK / Unk)",
        " / ".join(pct(shares[c], decimals=0) for c in CATEGORIES) + f" %; smallest {text}%",
        ok,
        **across_numbers(per, bar, "above"),
    )


def popular_answer_baseline(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of always answering the relation's most common train answer, per relation (test split).

    Returns:
        Index ``relation``; columns ``baseline`` (fraction of test facts whose answer is the
        relation's most common train answer), ``probe`` (the 4-shot probe's accuracy: mean
        P_correct(T=0)), ``n``.
    """
    base = analysis.popular_answer_baseline(table, "test")
    base = base[base["relation"] != "all"].set_index("relation")
    probe = table[table["split"] == "test"].groupby("relation")["p_greedy"].mean()
    return base[["baseline", "n"]].assign(probe=probe.reindex(base.index))[["baseline", "probe", "n"]]


def answer_prior_weak(tables: pd.DataFrame) -> Check:
    """Setup: knowing a fact is more than guessing the relation's popular answer.

    Statistic: on the test split, the accuracy of always answering each relation's most common train
    answer, against the 4-shot probe's accuracy (mean P_correct(T=0)).  Threshold: the baseline at
    most half the probe's, in every world (so most of what the probe gets right is knowledge).
    """

    def one(g):
        b = popular_answer_baseline(g)
        base, probe = np.average(b["baseline"], weights=b["n"]), np.average(b["probe"], weights=b["n"])
        return base, bool(base <= 0.5 * probe)

    per = _per_world(tables, one)
    text, ok = across(per, pct)
    probe = tables[tables["split"] == "test"]["p_greedy"].mean()
    return Check(
        "knowledge.prior",
        None,
        "setup",
        "the answer prior is weak: guessing the popular answer is far below the probe",
        "popular-answer accuracy on test vs the 4-shot probe's",
        "baseline <= half the probe's, every world",
        "not reported",
        f"popular answer {text}% vs probe {pct(probe)}%",
        ok,
    )


def known_means_seen(tables: pd.DataFrame, bar: float = 0.25) -> Check:
    """Setup (controlled world): "Known" mostly means seen in pretraining.

    Statistic: the share of Known train and test facts that were never exposed in pretraining (they
    are Known by a lucky guess of the answer prior).  Threshold: at most 25%, in every world.
    """
    if "exposures" not in tables or tables["exposures"].isna().any():
        return Check(
            "knowledge.known_seen",
            None,
            "setup",
            "Known facts were seen in pretraining",
            "",
            "",
            "",
            "real data: no exposure counts",
            None,
        )

    def one(g):
        k = g[g["split"].isin(["train", "test"]) & g["category"].isin(KNOWN)]
        share = (k["exposures"] == 0).mean()
        return share, bool(share <= bar)

    per = _per_world(tables, one)
    text, ok = across(per, pct)
    return Check(
        "knowledge.known_seen",
        None,
        "setup",
        "Known facts were seen in pretraining (not guessed)",
        "share of Known train/test facts never exposed",
        f"<= {100 * bar:.0f}%, every world",
        "not measurable on real data",
        f"{text}%",
        ok,
        **across_numbers(per, bar, "below"),
    )


def tracks_exposure(tables: pd.DataFrame) -> list[Check]:
    """Beyond the paper: SliCK against the ground truth of our world.

    (a) Statistic: Spearman correlation between the exposure bucket (0, 1, 2, 3-4, ...) and the
    HighlyKnown share of the bucket (train and test facts).  Threshold: above 0.8 in every world
    (a near-monotone rise).  (b) Statistic: the most common category among never-exposed facts.
    Threshold: Unknown, in every world (a never-seen fact can only be guessed).
    """
    if "exposures" not in tables or tables["exposures"].isna().any():
        return []
    rho, top = {}, {}
    for seed, g in tables.groupby("seed"):
        facts = g[g["split"].isin(["train", "test", "ood_test"])]
        t = exposure_table(facts)
        r = sps.spearmanr(np.arange(len(t)), t["HighlyKnown"]).statistic
        rho[int(seed)] = (r, bool(r > 0.8))
        never = facts[facts["exposures"] == 0]["category"].value_counts(normalize=True)
        top[int(seed)] = (never.get("Unknown", 0.0), bool(len(never) and never.index[0] == "Unknown"))
    t_rho, ok_rho = across(rho, lambda v: f"{v:.2f}")
    t_top, ok_top = across(top, pct)
    return [
        Check(
            "knowledge.exposure",
            None,
            "beyond",
            "the HighlyKnown share rises with the pretraining exposures",
            "Spearman rho of bucket vs HighlyKnown share",
            "> 0.8, every world",
            "not measurable on real data",
            f"rho {t_rho}",
            ok_rho,
            **across_numbers(rho, 0.8, "above"),
        ),
        Check(
            "knowledge.never_seen",
            None,
            "beyond",
            "Unknown is the largest category among never-exposed facts",
            "the commonest category of never-exposed facts",
            "Unknown, every world",
            "not measurable on real data",
            f"{t_top}% of never-exposed facts are Unknown",
            ok_top,
        ),
    ]


def checks(tables: pd.DataFrame) -> list[Check]:
    """Every check of chapter 1 on the SliCK tables of every world."""
    return [
        categories_present(tables, "train"),
        categories_present(tables, "dev"),
        answer_prior_weak(tables),
        known_means_seen(tables),
    ] + tracks_exposure(tables)


PROSE = {
    "always": "SliCK needs nothing but the model's answers under few-shot prompts; the category mix depends on "
    "the model and on how often it saw each fact, so ours need not match the paper's shares.",
    "knowledge.present.dev:fails": "A dev split without the natural mix makes EARLY_STOP a choice on facts the "
    "model already knew, unlike the paper's.",
}


@saved
def results(setup) -> Chapter:
    """Chapter 1: the world in numbers, category shares per split and relation (Figures 1.1, 1.2),
    the exposure heat map (Figure 1.3), the popular-answer baseline, and the checks."""
    from newknowledge.book import page
    from newknowledge.finetuning import variants
    from newknowledge.knowledge import slick

    tables = setup.tables()
    prep = setup.prep
    first = prep.table
    shares = pd.DataFrame({s: split_shares(first, s) for s in ["train", "dev", "test", "ood_test"]})
    # Figure 2b's analogue: the first train question of each category, a few of its prompts, answered now.
    train = first[first["split"] == "train"]
    examples = pd.concat([train[train["category"] == c].head(1) for c in CATEGORIES])
    shown = slick.explain(
        prep.model_path, examples, prep.exemplars, prep.study.slick, n_prompts=3, device=prep.study.study.device
    )
    cols = ["category", "question", "answer", "p_greedy", "p_sample"] + (["exposures"] if "exposures" in first else [])
    out = {
        "describe": page.describe(prep),
        "shares": (100 * shares).round(1),
        "examples": examples[cols].reset_index(drop=True),
        "explain": shown,
        "baseline": (100 * popular_answer_baseline(first)[["baseline", "probe"]]).round(1),
    }
    # The paper's Table 3 shape: train examples per relation and category; each relation's smallest
    # category is its quota in every variant, and their sum is |D| (Sec. 4.1).
    per_relation = variants.summary(train)
    per_relation["quota"] = per_relation[list(CATEGORIES)].min(axis=1)
    per_relation.loc["total", "quota"] = per_relation["quota"].drop("total").sum()
    out["per_relation"] = per_relation
    if "exposures" in first:
        out["exposures"] = exposure_table(first[first["split"] != "dev"]).round(1)
    data = {"table": first, "tables": tables}
    return Chapter(1, out, data, checks(tables), PROSE)
