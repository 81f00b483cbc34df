"""Chapter 3: how fast are Known and Unknown examples fitted? (Sec. 4.3; Figures 1, 4 and 6)

Finding 3, and the preconditions of the fine-tuning protocol the paper
relies on: fine-tuning must teach the answer format (the model cannot answer
zero-shot in it beforehand, and answers in it by EARLY_STOP), EARLY_STOP must
fall after that, and CONVERGENCE must fit the training data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from newknowledge.book.chapters import Chapter, converged, name, per_seed, saved, seeds_text, shares_of_unknown
from newknowledge.evaluation import analysis, paper
from newknowledge.evaluation.checks import Check, across, across_numbers, from_means, numbers, pct, weakest
from newknowledge.evaluation.significance import chunked_mean

ALPHA = 0.05


def _middle(records: pd.DataFrame) -> str:
    return name("unknown", analysis.middle_share(shares_of_unknown(records)))


def known_fitted_faster(records: pd.DataFrame) -> Check:
    """Finding 3 (Sec. 4.3, Figure 1): Known examples are fitted much faster than Unknown ones.

    Statistic: in the middle variant (50% Unknown), the first epoch at which half of the Known and
    half of the Unknown train examples are fitted (a group never half fitted counts as one epoch after
    the last).  Threshold: Unknown's epoch at least twice Known's, in every seed.  In the paper's
    Figure 1 most Known examples are fitted by EARLY_STOP (epoch 5-10) and the Unknown ones only over
    the following tens of epochs; "much faster" read as a factor of at least 2.
    """
    variant = _middle(records)
    last = int(records["epoch"].max())
    claim = f"Known examples are fitted much faster than Unknown ones ({variant}; Sec. 4.3, Figure 1)"
    groups = set(analysis.fitted_share(records[records["variant"] == variant])["group"])
    if not {"Known", "Unknown"} <= groups:
        return Check(
            "speed.faster", 3, "finding", claim, "", "", "", f"{variant} lacks Known or Unknown examples", None
        )
    fits = analysis.epochs_to_fit(records, variant, share=0.5).pivot(index="seed", columns="group", values="epoch")
    fits = fits.reindex(columns=["Known", "Unknown"]).fillna(last + 1)
    per = {
        int(s): (r["Unknown"] / max(r["Known"], 1), r["Unknown"] >= 2 * max(r["Known"], 1)) for s, r in fits.iterrows()
    }
    text, ok = across(per, lambda v: f"{v:.1f}x")
    when = "; ".join(
        f"seed {s}: Known at epoch {r['Known']:.0f}, Unknown at {r['Unknown']:.0f}"
        + (" (never)" if r["Unknown"] > last else "")
        for s, r in fits.iterrows()
    )
    return Check(
        "speed.faster",
        3,
        "finding",
        claim,
        "epoch at which half of each group is fitted; Unknown's / Known's",
        ">= 2 in every seed",
        "Known by EARLY_STOP, Unknown tens of epochs later",
        f"{text} ({when})",
        ok,
        **across_numbers(per, 2.0, "above"),
    )


def few_unknown_at_early_stop(records: pd.DataFrame) -> Check:
    """Finding 3 (Sec. 4.3, Figure 4): at EARLY_STOP most Known and few Unknown examples are fitted,
    for every variant.

    Statistic: the share of the Known and of the Unknown train examples fitted at EARLY_STOP, in
    every D run.  Threshold: Known above 50% ("most") and Unknown below 25% ("few", read as at most
    a quarter), in every run that has the group.
    """
    fit = analysis.fitted_at_early_stop(records)
    wide = fit.pivot_table(index=["variant", "seed"], columns="group", values="fitted")
    known_ok = wide.get("Known", pd.Series(dtype=float)).dropna() > 0.5
    unknown_ok = wide.get("Unknown", pd.Series(dtype=float)).dropna() < FEW_UNKNOWN
    bad = sorted(set(known_ok[~known_ok].index) | set(unknown_ok[~unknown_ok].index))
    rng = lambda g: (
        f"{pct(wide[g].min())}-{pct(wide[g].max())}%"
        if g in wide and wide[g].notna().any()  # noqa: E731
        else "none"
    )
    ours = f"Known fitted {rng('Known')}, Unknown {rng('Unknown')} across {len(wide)} runs"
    if bad:
        ours += "; failing: " + ", ".join(f"{v} seed {s}" for v, s in bad)
    return Check(
        "speed.at_es",
        3,
        "finding",
        "at EARLY_STOP most Known and few Unknown examples are fitted, every variant (Sec. 4.3, Figure 4)",
        "share of Known and of Unknown train examples fitted at EARLY_STOP",
        "Known > 50% and Unknown < 25% in every D run",
        "most Known, few Unknown",
        ours,
        not bad,
    )


def falls_after_peak(records: pd.DataFrame) -> Check:
    """Finding 3 (Sec. 4.3, Figure 1): after the dev peak (EARLY_STOP), accuracy falls as the Unknown
    examples get fitted.

    Dev accuracy at CONVERGENCE can never exceed its maximum, so the fall is measured on questions
    that did not choose the epoch.  Statistic: in the middle variant, test accuracy at CONVERGENCE
    minus at EARLY_STOP, paired per question (App. I's chunked test).  Threshold: negative with
    one-sided p < 0.05, in every seed.
    """
    variant = _middle(records)
    rec = records[records["variant"] == variant]
    es, conv = analysis.correct_at(rec, "EARLY_STOP"), analysis.correct_at(rec, "CONVERGENCE")
    tests = {s: chunked_mean(v, seed=s) for s, v in per_seed(conv - es, lambda r: r[variant]).items()}
    text, ok = seeds_text({s: (m.mean, m.mean < 0 and m.p_less() < ALPHA) for s, m in tests.items()})
    return Check(
        "speed.falls",
        3,
        "finding",
        f"after EARLY_STOP, accuracy falls as Unknown examples are fitted ({variant}; Sec. 4.3, Figure 1)",
        "test accuracy at CONVERGENCE minus at EARLY_STOP, paired",
        "negative, one-sided p < 0.05, every seed",
        "falls",
        f"{text} points",
        ok,
        **from_means(tests.values(), 0.0, "below"),
    )


def format_learned(records: pd.DataFrame, bar: float = 0.9) -> Check:
    """Setup (Sec. 4, App. E): by EARLY_STOP the model answers in the fine-tuning format.

    Fine-tuning is meant to teach the format, so what the model knew must come out in it.
    Statistic: accuracy on the HighlyKnown dev questions at EARLY_STOP (facts the model answers
    under every few-shot prompt), in every D run.  Threshold: at least 90% in every run (the paper's
    HighlyKnown test accuracy is 95-99% at EARLY_STOP for every variant, Table 2).
    """
    rec = records[records["variant"].str.startswith("unknown_")]
    at = analysis.at_stops(rec, "dev")
    at = at[(at["duration"] == "EARLY_STOP") & (at["category"] == "HighlyKnown")]
    acc = at.groupby(["variant", "seed"])["correct"].mean()
    if acc.empty:
        return Check(
            "speed.format",
            None,
            "setup",
            "by EARLY_STOP the model answers in the fine-tuning format",
            "",
            "",
            "",
            "no HighlyKnown dev question",
            None,
        )
    low = acc[acc < bar]
    ours = f"HighlyKnown dev accuracy at EARLY_STOP {pct(acc.min())}-{pct(acc.max())}% over {len(acc)} runs"
    if len(low):
        ours += "; below 90%: " + ", ".join(f"{v} seed {s}" for v, s in low.index)
    return Check(
        "speed.format",
        None,
        "setup",
        "by EARLY_STOP the model answers in the fine-tuning format (Sec. 4, App. E)",
        "accuracy on HighlyKnown dev questions at EARLY_STOP, every D run",
        ">= 90% in every run",
        "95-99% on HighlyKnown test questions (Table 2)",
        ours,
        low.empty,
    )


def no_erosion(records: pd.DataFrame, bar: float = 0.9, missing: str = "no Known-only run") -> Check:
    """Setup (Sec. 4, Table 2): fine-tuning itself does not erase what the model knew.

    The paper's D_Known keeps its test accuracy from EARLY_STOP to CONVERGENCE (Figure 3,
    Table 2), so fine-tuning on facts the model knows, in a format it can answer, costs nothing.
    A small model can lose stored facts to any long fine-tuning (world-v3 trials: 96.9% -> 73.2% of
    HighlyKnown dev questions in 10 epochs), and then every CONVERGENCE comparison measures that
    erosion besides the harm of Unknown examples.  Statistic: a Known-only run (``unknown_0``) in
    the pretraining format (``qa``, nothing to teach), its HighlyKnown dev accuracy at CONVERGENCE
    over that at epoch 0, per world.  Threshold: at least 90% in every world (issue 21's rule (b),
    fixed before World v3's study: a tenth of the HighlyKnown facts lost is far from the paper's
    flat D_Known, yet within what one small world's dev split can resolve).

    Args:
        records: the ``qa`` runs of ``unknown_0`` (any seeds).
        missing: what ``ours`` says when there is no such run.
    """
    rec = records[(records["split"] == "dev") & (records["category"] == "HighlyKnown")]
    rec = rec[rec["variant"] == "unknown_0"]
    claim = "fine-tuning on Known examples alone keeps what the model knew (Sec. 4, Table 2)"
    stat = "HighlyKnown dev accuracy at CONVERGENCE / at epoch 0, Known-only run in the pretraining format"
    thr = ">= 90% in every world"
    if rec.empty:
        return Check("speed.erosion", None, "setup", claim, stat, thr, "flat", missing, None)
    kept, nums = {}, []
    for seed, g in rec.groupby("seed"):
        acc = g.groupby("epoch")["correct"].agg(["mean", "size"])
        first, last = acc.iloc[0], acc.loc[acc.index.max()]
        ratio = last["mean"] / first["mean"] if first["mean"] > 0 else np.nan
        kept[int(seed)] = (ratio, bool(ratio >= bar) if np.isfinite(ratio) else None)
        # The binomial standard error of the last epoch's accuracy, over the epoch-0 accuracy.
        se = np.sqrt(last["mean"] * (1 - last["mean"]) / last["size"]) / first["mean"] if first["mean"] > 0 else None
        nums.append(numbers(ratio, bar, "above", se=se))
    decided = [h for _, h in kept.values() if h is not None]
    ok = None if not decided else (len(decided) == len(kept) and all(decided))  # every world, as across()
    ours = ", ".join(f"{pct(v)}% (world {s})" for s, (v, _) in kept.items()) + " of epoch 0's accuracy kept"
    return Check(
        "speed.erosion",
        None,
        "setup",
        claim,
        stat,
        thr,
        "D_Known flat from EARLY_STOP to CONVERGENCE (Figure 3)",
        ours,
        ok,
        **weakest(nums),
    )


def zero_shot_below_probe(records: pd.DataFrame, tables: pd.DataFrame) -> Check:
    """Setup (Sec. 3, footnote 4): before fine-tuning the model cannot answer in the fine-tuning format.

    The paper's base model needed few-shot exemplars to answer in the right format, so fine-tuning
    taught it to answer zero-shot.  Statistic: on the test questions, zero-shot accuracy in the
    fine-tuning format before fine-tuning (epoch 0 of the records) and the 4-shot probe's accuracy
    (SliCK's P_correct(T=0), averaged).  Threshold: zero-shot at most half the probe's, in every world.
    """
    ep0 = records[(records["epoch"] == 0) & (records["split"] == "test")].drop_duplicates(["seed", "example"])
    probe = tables[tables["split"] == "test"].set_index(["seed", "example"])["p_greedy"]
    per = {}
    for seed, g in ep0.groupby("seed"):
        world = seed if seed in set(tables["seed"]) else int(tables["seed"].iloc[0])
        shot4 = probe.loc[world].reindex(g["example"]).mean()
        zero = g["correct"].mean()
        per[int(seed)] = ((zero, shot4), zero <= 0.5 * shot4)
    text, ok = across({s: (v[0], h) for s, (v, h) in per.items()})
    shot = np.mean([v[1] for v, _ in per.values()])
    return Check(
        "speed.zero_shot",
        None,
        "setup",
        "before fine-tuning, the model cannot answer zero-shot in the fine-tuning format (Sec. 3, footnote 4)",
        "test accuracy zero-shot in the fine-tuning format (epoch 0) vs the 4-shot probe's",
        "zero-shot <= half the probe's, every world",
        "needed few-shot prompts",
        f"zero-shot {text}% vs 4-shot {pct(shot)}%",
        ok,
    )


def early_stop_after_first_epoch(records: pd.DataFrame) -> Check:
    """Setup (Sec. 4): EARLY_STOP comes after the format is learned, not at the first epoch.

    The paper's EARLY_STOP is epoch 5-10 of 50.  An EARLY_STOP at epoch 1 compares near-copies of
    the pretrained model.  Statistic: each D run's EARLY_STOP epoch (best dev accuracy).
    Threshold: later than epoch 1 in every D run.
    """
    stops = analysis.early_stop(records[records["variant"].str.startswith("unknown_")])
    first = stops[stops["early_stop"] <= 1]
    ours = (
        f"EARLY_STOP at epochs {stops['early_stop'].min()}-{stops['early_stop'].max()} of "
        f"{stops['convergence'].max()} ({len(stops)} runs)"
    )
    if len(first):
        ours += "; at epoch 1: " + ", ".join(f"{v} seed {s}" for v, s in zip(first["variant"], first["seed"]))
    lo, hi = paper.EARLY_STOP_EPOCHS
    return Check(
        "speed.es_epoch",
        None,
        "setup",
        "EARLY_STOP falls after the first epoch (Sec. 4)",
        "EARLY_STOP epoch of every D run",
        "> 1 in every run",
        f"epoch {lo}-{hi} of {paper.FT_EPOCHS}",
        ours,
        first.empty,
    )


def checks(records: pd.DataFrame, tables: pd.DataFrame, known_only_qa: pd.DataFrame | None = None) -> list[Check]:
    """Every check of chapter 3 on the section-4 records, the SliCK tables and the Known-only run in the
    pretraining format (``known_only_qa``; the erosion check is not decidable without it)."""
    return [
        zero_shot_below_probe(records, tables),
        format_learned(records),
        no_erosion(records.iloc[:0], missing="a real model: its pretraining format is not known")
        if known_only_qa is None
        else no_erosion(known_only_qa),
        early_stop_after_first_epoch(records),
        converged(records),
        known_fitted_faster(records),
        few_unknown_at_early_stop(records),
        falls_after_peak(records),
    ]


# "Few" Unknown examples fitted (finding 3's reading of Figure 4; chapter 8 uses the same).
FEW_UNKNOWN = 0.25

# The format pretraining wrote Q/A lines in (the probe's): fine-tuning in it has no format to teach.
PRETRAINING_FORMAT = "qa"

PROSE = {
    "speed.erosion:fails": "Fine-tuned on facts it knows, in the format it was pretrained on, the model still "
    "loses part of what it knew by CONVERGENCE: fine-tuning itself erodes its knowledge, so a drop from "
    "EARLY_STOP to CONVERGENCE in this book mixes that erosion with the harm of Unknown examples "
    "(research-log.md, E10).",
    "always": "An example is fitted when the model's greedy answer to its question is the gold answer. "
    "Known examples need only the format; Unknown ones need a new fact stored, one example at a time.",
    "speed.zero_shot:fails": "The model already answers in the fine-tuning format before fine-tuning, so Known "
    "examples have no format left to teach: fine-tuning is then mostly about facts.",
    "speed.es_epoch:fails": "A run whose EARLY_STOP falls at the first epoch (the check names them) enters every "
    "EARLY_STOP comparison of this book as a model that is nearly the pretrained one.",
    "speed.format:fails": "The model answers in the new format, but brings out only part of what it knows through "
    "it: HighlyKnown facts are ones it answers under every 4-shot prompt, yet at EARLY_STOP it "
    "answers only the share above of those dev questions. The paper's model answers 95-99% of "
    "its HighlyKnown test questions at EARLY_STOP; in this small model, extraction in a format "
    "pretraining never wrote stays partial (research-log.md, E4-E6), so its EARLY_STOP models "
    "use part of their knowledge.",
}


@saved
def results(setup) -> Chapter:
    """Chapter 3 from the section-4 runs: fitting curves (Figures 3.1, 3.2), shares fitted at EARLY_STOP
    (Figure 3.3), EARLY_STOP epochs, and the checks."""
    records = setup.section4()
    variant = _middle(records)
    stops = analysis.early_stop(records)
    data = {
        "variant": variant,
        "curves": analysis.training_curves(records, variant),
        "early_stop": float(stops.loc[stops["variant"] == variant, "early_stop"].mean()),
        "by_category": analysis.fitted_share(records[records["variant"] == variant]),
        "fitted_es": analysis.fitted_at_early_stop(records),
    }
    tables = {
        "stops": stops.set_index(["variant", "seed"]),
        "fitted_es": (100 * data["fitted_es"].pivot_table(index="pct_unknown", columns="group", values="fitted")).round(
            1
        ),
    }
    every = max(1, int(records["epoch"].max()) // 10)
    curves = data["curves"].pivot_table(index="epoch", columns="series", values="accuracy")
    tables["curves"] = (100 * curves).round(1).iloc[::every]
    trade = tradeoff(records, variant)  # every early epoch (where EARLY_STOP falls), then every `every`-th
    tables["tradeoff"] = (100 * trade[(trade.index <= 10) | (trade.index % every == 0)]).round(1)
    # The Known-only run in the pretraining format, every world (the erosion precondition); a real
    # model's pretraining format is not ours to know, so there the check is not decidable.
    if setup.study.study.model:
        return Chapter(3, tables, data, checks(records, setup.tables(), None), PROSE)
    known_only_qa = setup.records(["unknown_0"], ft_format=PRETRAINING_FORMAT)
    erosion = analysis.epoch_table(known_only_qa).set_index(["seed", "epoch"])[["dev_hk", "test"]]
    ep = erosion.index.get_level_values("epoch")
    tables["erosion"] = (100 * erosion[(ep <= 10) | (ep % every == 0)]).round(1)
    return Chapter(3, tables, data, checks(records, setup.tables(), known_only_qa), PROSE)


def tradeoff(records: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Format learned against new facts memorised, epoch by epoch (the EARLY_STOP trade-off, Sec. 4.3).

    Per epoch (mean over seeds) for ``variant``: accuracy on HighlyKnown dev questions (the format
    reaching stored knowledge), the shares of Known and Unknown train examples fitted, dev accuracy,
    and D minus D_Known on test at the same epoch (when the grid has D_Known for this share).
    """
    ep = analysis.epoch_table(records[records["variant"] == variant])
    gap = analysis.gap_by_epoch(records)
    pct = float(analysis.pct_unknown(pd.Series([variant])).iloc[0])
    gap = gap[gap["pct_unknown"] == pct][["seed", "epoch", "gap"]].rename(columns={"gap": "D - D_Known (test)"})
    ep = ep.merge(gap, on=["seed", "epoch"], how="left")
    cols = {
        "dev_hk": "HighlyKnown dev",
        "known_fitted": "Known fitted",
        "unknown_fitted": "Unknown fitted",
        "dev": "dev",
        "D - D_Known (test)": "D - D_Known (test)",
    }
    return ep.groupby("epoch")[[c for c in cols if c in ep]].mean().rename(columns=cols)
