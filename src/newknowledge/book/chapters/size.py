"""Chapter 8, beyond the paper: how big must the miniature be?

The paper's findings rest on preconditions its 2024 LLM met without trying: fine-tuning teaches the
answer format within an epoch or two, EARLY_STOP falls after that, fine-tuning on known facts erases
nothing, and Unknown examples hurt *through* being fitted (Sec. 4.3-4.4: accuracy falls as they are
fitted, after EARLY_STOP).  A small model can miss them (research-log.md, E4-E10).  This chapter
pretrains the first world's model at several sizes (``size_models``: d_model at the study's depth),
fine-tunes each on D with 50% Unknown and on D_Known, with one |D| for every size (section 4's), and
on Known examples in the pretraining format, and shows per size:

- each precondition, with the checks of chapter 3 applied to that size's runs;
- per epoch, D - D_Known on the test questions against the share of D's Unknown examples fitted, so
  a reader sees whether the harm follows the fitting (the paper's mechanism) or comes before it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from newknowledge.book.chapters import Chapter, converged, harm, saved, speed
from newknowledge.evaluation import analysis, significance
from newknowledge.evaluation.checks import Check, numbers, pct
from newknowledge.finetuning.variants import VariantError

PCT = 50  # the share of Unknown of the D compared with its D_Known (the paper's Figure 3b middle)


def curves(records: pd.DataFrame) -> pd.DataFrame:
    """Per epoch (>= 1): D - D_Known on test and the share of D's Unknown examples fitted.

    Args:
        records: records of ``unknown_<PCT>`` and ``known_<PCT>`` (one model size, any seeds).

    Returns:
        Columns ``seed, epoch, gap, unknown_fitted`` (shares 0-1).
    """
    gap = analysis.gap_by_epoch(records)
    gap = gap[(gap["pct_unknown"] == PCT) & (gap["epoch"] >= 1)][["seed", "epoch", "gap"]]
    ep = analysis.epoch_table(records[records["variant"] == f"unknown_{PCT}"])
    return gap.merge(ep[["seed", "epoch", "unknown_fitted"]], on=["seed", "epoch"]).reset_index(drop=True)


def window(records: pd.DataFrame) -> list[int]:
    """The epochs after the format is learned and before Unknown examples are fitted: from D_Known's
    EARLY_STOP (its best dev accuracy: the format is learned by then) while fewer than
    :data:`~newknowledge.book.chapters.speed.FEW_UNKNOWN` of D's Unknown examples are fitted."""
    stops = analysis.early_stop(records[records["variant"] == f"known_{PCT}"])
    if stops.empty:
        return []
    ep = analysis.epoch_table(records[records["variant"] == f"unknown_{PCT}"]).groupby("epoch")["unknown_fitted"]
    fitted = ep.mean()
    start = int(stops["early_stop"].max())
    return [int(e) for e in fitted.index if e >= start and fitted[e] < speed.FEW_UNKNOWN]


def _head(label: str) -> tuple:
    """Key, finding, kind, claim, statistic, threshold and the paper's side of the size check."""
    claim = f"{label}: Unknown examples do not hurt before they are fitted (Sec. 4.2-4.3)"
    stat = (
        f"D - D_Known on test ({PCT}% Unknown), per question over the epochs from D_Known's EARLY_STOP "
        f"with < {speed.FEW_UNKNOWN:.0%} of Unknown fitted"
    )
    thr = f">= -{100 * harm.MARGIN:g} points (finding 2's margin)"
    return (
        f"size.follows_fitting.{label.replace(' ', '_')}",
        None,
        "beyond",
        claim,
        stat,
        thr,
        "neutral at EARLY_STOP",
    )


def harm_follows_fitting(records: pd.DataFrame, label: str) -> Check:
    """Beyond the paper (Sec. 4.2-4.3): Unknown examples hurt through being fitted, not before.

    The paper's mechanism: at EARLY_STOP few Unknown examples are fitted and D equals D_Known; the
    harm comes as they are fitted.  Statistic: D - D_Known on the test questions, each question's
    difference averaged over the :func:`window` epochs (from D_Known's EARLY_STOP, while fewer than a
    quarter of D's Unknown examples are fitted: finding 3's "few"), its mean and App. I's chunked
    standard error, on the chapter's world.  Threshold: the mean at least -2 points (finding 2's
    equivalence margin, chapter 2).  Not decidable when the window is empty (Unknown examples are
    fitted before D_Known has learned the format).

    Args:
        records: ``unknown_<PCT>`` and ``known_<PCT>`` records of one model size and one world.
    """
    epochs = window(records)
    head = _head(label)
    if not epochs:
        return Check(*head, "no epoch in the window: Unknown examples fitted before the format was learned", None)
    test = records[(records["split"] == "test") & records["epoch"].isin(epochs)]
    flags = test.pivot_table(index="example", columns="variant", values="correct", aggfunc="mean")
    m = significance.chunked_mean((flags[f"unknown_{PCT}"] - flags[f"known_{PCT}"]).to_numpy(dtype=float))
    where = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"
    ours = f"{pct(m.mean, signed=True)} points (SE {100 * m.se:.1f}) over {where}"
    return Check(*head, ours, bool(m.mean >= -harm.MARGIN), **numbers(m.mean, -harm.MARGIN, "above", se=m.se))


def _not_built(label: str, why: str) -> Check:
    """The check of a size whose data set cannot be drawn: not decidable, with the reason."""
    return Check(*_head(label), f"D cannot be drawn: {why}", None)


def preconditions(records: pd.DataFrame, known_only_qa: pd.DataFrame, tables: pd.DataFrame) -> list[Check]:
    """Chapter 3's preconditions on one size's runs (D with 50% Unknown, D_Known, the Known-only run)."""
    return [
        speed.zero_shot_below_probe(records, tables),
        speed.format_learned(records),
        speed.no_erosion(known_only_qa),
        speed.early_stop_after_first_epoch(records),
        converged(records),
    ]


def summary_row(d_model: int, model_path: str, size: int, records, known_only_qa, tables) -> dict:
    """One row of the chapter's table: the model, |D| and each precondition's statistic."""
    stats_file = Path(model_path).parent / "stats.json"
    params = json.loads(stats_file.read_text())["parameters"] if stats_file.exists() else np.nan
    stops = analysis.early_stop(records).set_index("variant")
    ep = analysis.epoch_table(records).set_index(["variant", "epoch"])
    d = f"unknown_{PCT}"
    es = int(stops.loc[d, "early_stop"])
    qa = analysis.epoch_table(known_only_qa).set_index("epoch")["dev_hk"]
    test = tables[tables["split"] == "test"]
    return {
        "d_model": d_model,
        "parameters (M)": round(params / 1e6, 2),
        "probe, test (%)": round(100 * test["p_greedy"].mean(), 1),
        "|D|": size,
        "zero-shot, test (%)": round(100 * ep.loc[(d, 0), "test"], 1),
        "HighlyKnown dev at EARLY_STOP (%)": round(100 * ep.loc[(d, es), "dev_hk"], 1),
        "EARLY_STOP epoch": es,
        "Unknown fitted at EARLY_STOP (%)": round(100 * ep.loc[(d, es), "unknown_fitted"], 1),
        "kept, Known-only qa run (%)": round(100 * qa.iloc[-1] / qa.iloc[0], 1),
        "train at CONVERGENCE (%)": round(100 * ep.loc[(d, int(stops.loc[d, "convergence"])), "train"], 1),
    }


@saved
def results(setup) -> Chapter:
    """Chapter 8: the first world at each size of ``size_models``; for each, chapter 3's preconditions,
    the summary table and D - D_Known per epoch against Unknown fitted (Figure 8.1)."""
    from newknowledge.book import pipeline

    study, seed = setup.study, setup.seeds[0]
    size4 = setup.prep.size4  # one |D| for every size: the comparison is of models, not of data sets
    rows, checks, all_curves = [], [], []
    sizes = [] if study.study.model else study.study.size_models  # a real model has one size: its own
    for d in sizes:
        sized = dataclasses.replace(
            study,
            study=dataclasses.replace(study.study, seeds=[seed]),
            pretrain=dataclasses.replace(study.pretrain, d_model=int(d)),
            finetune=dataclasses.replace(study.finetune, section4_size=size4),
        )
        s = setup if int(d) == study.pretrain.d_model else pipeline.setup(sized)  # the book's own model: cached
        label = f"d_model {int(d)}"
        try:
            rec = s.records([f"unknown_{PCT}", f"known_{PCT}"], seeds=[seed])
            qa = s.records(["unknown_0"], seeds=[seed], ft_format=speed.PRETRAINING_FORMAT)
        except VariantError as err:  # a model that knows too little to supply D's (or D_Known's) examples
            rows.append({"d_model": int(d), "|D|": size4, "not built": str(err).splitlines()[0]})
            checks.append(_not_built(label, str(err).splitlines()[0]))
            continue
        tables = s.tables().query("seed == @seed")  # the book's own setup holds every world
        rows.append(summary_row(int(d), s.preps[seed].model_path, size4, rec, qa, tables))
        checks += [
            dataclasses.replace(c, key=f"{c.key}.{int(d)}", claim=f"{label}: {c.claim}")
            for c in preconditions(rec, qa, tables)
        ]
        all_curves.append(curves(rec).assign(d_model=int(d)))
        checks.append(harm_follows_fitting(rec, label))
    table = (
        pd.DataFrame(rows, columns=["d_model"]).set_index("d_model")
        if not rows
        else pd.DataFrame(rows).set_index("d_model")
    )
    cv = (
        pd.concat(all_curves, ignore_index=True)
        if all_curves
        else pd.DataFrame(columns=["seed", "epoch", "gap", "unknown_fitted", "d_model"])
    )
    return Chapter(8, {"sizes": table}, {"curves": cv, "margin": harm.MARGIN}, checks, PROSE)


PROSE = {
    "always": "Each size is pretrained on the same world with the same recipe, and fine-tuned on data sets of "
    "the same |D|; only the model's width changes.",
}
