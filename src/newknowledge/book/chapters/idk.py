"""Chapter 7: teaching the model to say "I don't know" (App. K; Table 8)

Finding 7: relabelling the Unknown fine-tuning examples as "I don't know"
lets the model abstain on what it does not know, so it is more accurate on
the questions it does answer, and longer training no longer costs accuracy.
Each test question has one of three outcomes: correct, abstained (the greedy
answer is "I don't know" after exact match's normalisation) or wrong.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from newknowledge.book.chapters import Chapter, converged, name, saved
from newknowledge.evaluation import analysis, paper, significance
from newknowledge.evaluation.checks import Check, across, numbers, pct, weakest

ALPHA = 0.05
N_BOOT = 2000


def _outcomes(records: pd.DataFrame) -> pd.DataFrame:
    """Per seed, duration and question: correct (0/1), abstained (0/1) for D and D_IDK side by side."""
    at = analysis.at_stops(records[records["variant"].str.match(r"^(idk|unknown)_")], "test").copy()
    at["idk"] = at["idk"].fillna(False).astype(bool) if "idk" in at else False
    at["model"] = np.where(at["variant"].str.startswith("idk"), "D_IDK", "D")
    return at.pivot_table(
        index=["seed", "duration", "example"], columns="model", values=["correct", "idk"], aggfunc="first"
    )


def more_accurate_when_answering(records: pd.DataFrame, duration: str) -> Check:
    """Finding 7 (App. K, Table 8): D_IDK is more accurate than D on the questions it answers.

    Statistic: D_IDK's accuracy on the questions it answers (not abstained) against D's accuracy on
    all (D never abstains by construction of its data).  Threshold: higher with one-sided
    two-proportion p < 0.05, in every seed.  Paper: 61.8 vs 43.0 (EARLY_STOP), 61.8 vs 38.8
    (CONVERGENCE), answering 58.7% and 55.6% of the questions.
    """
    wide = _outcomes(records)
    per, parts, nums = {}, [], []
    for seed in wide.index.get_level_values("seed").unique():
        g = wide.loc[(seed, duration)]
        answered = ~g[("idk", "D_IDK")].astype(bool)
        k1, n1 = int(g.loc[answered, ("correct", "D_IDK")].sum()), int(answered.sum())
        k2, n2 = int(g[("correct", "D")].sum()), len(g)
        p = significance.proportions_less(k2, n2, k1, n1)
        a1, a2 = (k1 / n1 if n1 else np.nan), k2 / n2
        per[int(seed)] = (a1 - a2, bool(n1 > 0 and p < ALPHA))
        nums.append(numbers(a1 - a2, 0.0, "above", se=significance.proportions_se(k2, n2, k1, n1)))
        parts.append(f"{pct(a1)} vs {pct(a2)} (answering {pct(n1 / n2, decimals=0)}% vs 100%, p={p:.2g})")
    text, ok = across(per, lambda v: pct(v, True))
    t8 = paper.TABLE8["accuracy on answered (%)"]
    return Check(
        f"idk.accuracy.{duration}",
        7,
        "finding",
        f"{duration}: D_IDK is more accurate on the questions it answers than D (App. K, Table 8)",
        "D_IDK's accuracy on answered minus D's",
        "positive, one-sided two-proportion p < 0.05, every seed",
        f"{t8[('D_IDK', duration)]} vs {t8[('D', duration)]}",
        f"{text} points; " + "; ".join(parts),
        ok,
        **weakest(nums),  # the z-test's standard error
    )


def protects_against_drop(records: pd.DataFrame, seed: int = 0) -> Check:
    """Finding 7 (App. K, Table 8): with relabelling, longer training no longer costs accuracy on the
    answered questions (D_IDK 61.8 -> 61.8; D 43.0 -> 38.8).

    Statistic: (D_IDK's CONVERGENCE - EARLY_STOP accuracy on answered) minus (D's), with a bootstrap
    over test questions (2,000 resamples).  Threshold: the one-sided 95% lower bound above 0, in
    every seed.
    """
    wide = _outcomes(records)
    rng = np.random.default_rng(seed)
    per, parts, nums = {}, [], []
    for s in wide.index.get_level_values("seed").unique():
        es, conv = wide.loc[(s, "EARLY_STOP")], wide.loc[(s, "CONVERGENCE")].reindex(wide.loc[(s, "EARLY_STOP")].index)
        arrays = [
            np.asarray(x, dtype=float)
            for x in (
                es[("correct", "D_IDK")],
                1 - es[("idk", "D_IDK")].astype(float),
                conv[("correct", "D_IDK")],
                1 - conv[("idk", "D_IDK")].astype(float),
                es[("correct", "D")],
                conv[("correct", "D")],
            )
        ]

        def stat(ix):
            c1, a1, c2, a2, d1, d2 = (x[ix] for x in arrays)  # noqa: B023 (called within the iteration)
            idk = (c2 * a2).sum() / max(a2.sum(), 1) - (c1 * a1).sum() / max(a1.sum(), 1)
            return idk - (d2.mean() - d1.mean())

        n = len(arrays[0])
        value = stat(np.arange(n))
        boots = np.array([stat(rng.integers(0, n, n)) for _ in range(N_BOOT)])
        low = np.quantile(boots, ALPHA)
        per[int(s)] = (value, bool(low > 0))
        # the bootstrap's standard error and its 90% interval, whose lower end is the check's bound
        nums.append(numbers(value, 0.0, "above", se=boots.std(ddof=1), interval=(low, np.quantile(boots, 1 - ALPHA))))
        parts.append(f"{pct(value, True)} (95% lower bound {pct(low, True)})")
    text, ok = across(per, lambda v: pct(v, True))
    return Check(
        "idk.drop",
        7,
        "finding",
        "relabelling protects against the EARLY_STOP -> CONVERGENCE drop (App. K, Table 8)",
        "change ES -> CONV in accuracy on answered: D_IDK's minus D's (bootstrap)",
        "one-sided 95% lower bound > 0, every seed",
        "D_IDK 0.0 vs D -4.2 points",
        f"{text} points; " + "; ".join(parts),
        ok,
        **weakest(nums),
    )


def abstains_on_unknown(records: pd.DataFrame) -> Check:
    """Beyond the paper: D_IDK abstains more on the test questions SliCK calls Unknown than on the
    HighlyKnown ones (abstaining where it does not know is what should make it more accurate).

    Statistic: abstention rate on Unknown minus on HighlyKnown test questions at CONVERGENCE.
    Threshold: positive with one-sided Fisher exact p < 0.05, in every seed.
    """
    at = analysis.at_stops(records[records["variant"].str.startswith("idk_")], "test")
    at = at[at["duration"] == "CONVERGENCE"]
    per, parts = {}, []
    for seed, g in at.groupby("seed"):
        idk = g["idk"].fillna(False).astype(bool) if "idk" in g else pd.Series(False, index=g.index)
        u, h = idk[g["category"] == "Unknown"], idk[g["category"] == "HighlyKnown"]
        p = significance.fisher_greater(int(u.sum()), len(u), int(h.sum()), len(h))
        per[int(seed)] = (u.mean() - h.mean(), bool(len(u) and len(h) and p < ALPHA))
        parts.append(f"Unknown {pct(u.mean())}% vs HighlyKnown {pct(h.mean())}% (p={p:.2g})")
    text, ok = across(per, lambda v: pct(v, True))
    return Check(
        "idk.where",
        None,
        "beyond",
        "D_IDK abstains more on Unknown than on HighlyKnown test questions",
        "abstention rate at CONVERGENCE: Unknown minus HighlyKnown questions",
        "positive, one-sided Fisher p < 0.05, every seed",
        "not reported",
        f"{text} points; " + "; ".join(parts),
        ok,
    )


# Test facts by how often pretraining showed them: label -> lowest exposure count of the bin.
EXPOSURE_BINS = {"0": 0, "1-3": 1, "4-15": 4, "16+": 16}


def why_abstain(records: pd.DataFrame, evals: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Where D_IDK abstains, and whether it has learned to by then: a measurement beside Table 8 (App. K).

    Per duration (the run of ``seed``): the epoch; the share of the relabelled train examples (the Unknown ones,
    now "I don't know") fitted, i.e. answered "I don't know"; and the abstention rate on test questions
    by how often their fact was seen in pretraining (:data:`EXPOSURE_BINS`; the world's ground truth,
    so only with an ``exposures`` column).  A model that has not yet fitted its "I don't know" labels
    at EARLY_STOP cannot abstain there, whatever it knows.

    Args:
        records: D and D_IDK records; evals: ``seed``'s evaluation table (``example``, ``exposures``).
    """
    idk = records[records["variant"].str.startswith("idk_") & (records["seed"] == seed)]
    stops = analysis.early_stop(idk).iloc[0]
    exposure = evals.set_index("example")["exposures"] if "exposures" in evals else pd.Series(dtype=float)
    rows = {}
    for duration, epoch in (("EARLY_STOP", stops["early_stop"]), ("CONVERGENCE", stops["convergence"])):
        at = idk[idk["epoch"] == epoch]
        train = at[(at["split"] == "train") & (at["category"] == "Unknown")]
        test = at[at["split"] == "test"]
        row = {"epoch": int(epoch), '"I don\'t know" labels fitted %': 100 * float(train["correct"].mean())}
        if len(exposure):
            seen = pd.cut(
                exposure.reindex(test["example"]).to_numpy(),
                [*EXPOSURE_BINS.values(), np.inf],
                right=False,
                labels=list(EXPOSURE_BINS),
            )
            abst = test["idk"].eq(True).groupby(seen, observed=False).mean()
            row.update({f"abstains, exposures {b} %": 100 * float(abst.get(b, np.nan)) for b in EXPOSURE_BINS})
        rows[duration] = row
    return pd.DataFrame(rows).T.round(1)


def checks(records: pd.DataFrame) -> list[Check]:
    """Every check of chapter 7 on the D and D_IDK records."""
    return [
        converged(records),
        more_accurate_when_answering(records, "EARLY_STOP"),
        more_accurate_when_answering(records, "CONVERGENCE"),
        protects_against_drop(records),
        abstains_on_unknown(records),
    ]


PROSE = {
    "always": "Abstaining trades coverage for precision, so the share answered is part of the result; the "
    "three outcomes per question (correct, abstained, wrong) are in the table above.",
}


@saved
def results(setup) -> Chapter:
    """Chapter 7: Table 8 beside the paper's, the three outcomes, where the model abstains, the checks."""
    x = analysis.middle_share([float(v) for v in setup.study.finetune.pct_unknown])
    records = setup.records([name("unknown", x), name("idk", x)])
    out = analysis.idk_outcomes(records)
    ours = (100 * out.groupby(["variant", "duration"])[["accuracy_answered", "answered"]].mean()).round(1)
    ours.columns = ["accuracy on answered (%)", "answered (%)"]
    table8 = pd.concat({"paper": paper.TABLE8, "ours": ours.reindex(paper.TABLE8.index)}, axis=1)
    outcomes = (100 * out.groupby(["variant", "duration"])[["correct", "abstained", "wrong"]].mean()).round(1)
    at = analysis.at_stops(records[records["variant"].str.startswith("idk_")], "test")
    where = (100 * at.groupby(["duration", "category"])["idk"].mean().unstack("category")).round(1)
    data = {"idk": out, "x": x}
    tables = {
        "table8": table8,
        "outcomes": outcomes.reindex(paper.TABLE8.index),
        "where": where,
        "why": why_abstain(records, setup.prep.evals, setup.seeds[0]),
    }
    return Chapter(7, tables, data, checks(records), PROSE)
