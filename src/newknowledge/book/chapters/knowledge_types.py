"""Chapter 5: which kinds of examples are worth fine-tuning on? (Sec. 5; Tables 2 and 7; App. I)

Finding 5 as the paper's bold marks mean it: a model is "best" in a column of
Table 2 when no other is significantly better by the chunked paired t-test of
App. I.  Every comparison pairs two fine-tuned models on the same test
questions, per seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from newknowledge.book.chapters import Chapter, converged, per_seed, saved
from newknowledge.evaluation import analysis, paper, significance
from newknowledge.evaluation.checks import Check, across, from_means, numbers, pct, weakest
from newknowledge.finetuning import variants
from newknowledge.knowledge.categories import CATEGORIES

ALPHA = 0.05
DURATIONS = ("EARLY_STOP", "CONVERGENCE")


def significance_tables(records: pd.DataFrame) -> dict[tuple[int, str], pd.DataFrame]:
    """App. I's tests of every Table 2 model against the column's best: (seed, duration) -> table."""
    out = {}
    for seed in sorted(records["seed"].unique()):
        for d in DURATIONS:
            out[(int(seed), d)] = significance.significance_table(
                analysis.correctness_at(records, d, seed), seed=int(seed)
            )
    return out


def _row(sig: pd.DataFrame, subset: str, model: str) -> pd.Series:
    return sig[(sig["subset"] == subset) & (sig["model"] == model)].iloc[0]


def maybeknown_best(sig: dict, duration: str) -> Check:
    """Finding 5 (Sec. 5, Table 2): D_MaybeKnown is the best overall (bold in the All column).

    Statistic: App. I's chunked paired t-test of D_MaybeKnown against the best model of the All
    column at ``duration``.  Threshold: D_MaybeKnown is the best or not significantly below it
    (p >= 0.05), in every seed (the paper's bold).
    """
    per = {}
    for (seed, d), s in sig.items():
        if d == duration:
            r = _row(s, "All", "D_MaybeKnown")
            best = s[(s["subset"] == "All") & s["is_best"]].iloc[0]
            per[seed] = (r["accuracy"] - best["accuracy"], bool(r["is_best"] or not r["significant_05"]))
    text, ok = across(per, lambda v: pct(v, True))
    bests = ", ".join(
        sorted(
            {s[(s["subset"] == "All") & s["is_best"]]["model"].iloc[0] for (_, d), s in sig.items() if d == duration}
        )
    )
    return Check(
        f"types.mk_best.{duration}",
        5,
        "finding",
        f"{duration}: D_MaybeKnown is best overall, or not significantly below the best (Sec. 5, Table 2)",
        "D_MaybeKnown minus the best model, All column; App. I test",
        "best or p >= 0.05 against the best, every seed",
        f"D_MaybeKnown {paper.TABLE2.loc['D_MaybeKnown', (duration, 'All')]} (best)",
        f"{text} points behind the best ({bests})",
        ok,
    )


def _paired(records: pd.DataFrame, duration: str, a: str, b: str, subset: str | None = None) -> dict:
    """Per seed, App. I's test of variant ``a`` minus ``b`` at ``duration`` (optionally one test category);
    None for a seed with fewer than 4 such questions (App. I's chunks need them): not decidable there.
    Each run's EARLY_STOP is its best epoch on the whole dev set (Sec. 4), the category is chosen after."""
    wide = analysis.correct_at(records, duration)
    if subset is not None:
        test = records[records["split"] == "test"].drop_duplicates(["seed", "example"])
        category = test.set_index(["seed", "example"])["category"].reindex(wide.index)
        wide = wide[(category == subset).to_numpy()]
    values = per_seed(wide, lambda r: r[a] - r[b]) if len(wide) else {}
    return {
        int(s): significance.chunked_mean(values[s], seed=int(s)) if len(values.get(s, ())) >= 4 else None
        for s in sorted(records["seed"].unique())
    }


def _too_few(per: dict, what: str) -> str:
    """The note on the seeds a check could not decide for want of questions ("" when none)."""
    seeds = [str(s) for s, (_, holds) in per.items() if holds is None]
    return f"; fewer than 4 {what} in seed {', '.join(seeds)}: not decidable there" if seeds else ""


def highlyknown_below_best(records: pd.DataFrame, sig: dict) -> Check:
    """Finding 5 (Sec. 5, Table 2): D_HighlyKnown is significantly below the best overall.

    Statistic: App. I's test of D_HighlyKnown against the All column's best, at both durations.
    Threshold: significantly below (p < 0.05) at both, in every seed.  (Paper: 40.5 vs 43.6 and
    40.0 vs 43.2: fine-tuning only on facts the model surely knows does not teach it to use the
    facts it knows less surely.)
    """
    per = {}
    for (seed, _duration), s in sig.items():
        r = _row(s, "All", "D_HighlyKnown")
        best = s[(s["subset"] == "All") & s["is_best"]].iloc[0]
        prev = per.get(seed, (0.0, True))
        per[seed] = (
            prev[0] + (r["accuracy"] - best["accuracy"]) / len(DURATIONS),
            prev[1] and bool(r["significant_05"]),
        )
    text, ok = across(per, lambda v: pct(v, True))
    p = paper.TABLE2["EARLY_STOP"]["All"]
    return Check(
        "types.hk_below",
        5,
        "finding",
        "D_HighlyKnown is significantly below the best overall, at both durations (Sec. 5, Table 2)",
        "D_HighlyKnown minus the best, All column (mean of the two durations)",
        "p < 0.05 at EARLY_STOP and at CONVERGENCE, every seed",
        f"{p['D_HighlyKnown']} vs {p.max()} (EARLY_STOP)",
        f"{text} points",
        ok,
    )


def maybeknown_above_highlyknown(records: pd.DataFrame) -> Check:
    """Finding 5 (Sec. 5, Table 2): on MaybeKnown test questions, D_MaybeKnown beats D_HighlyKnown
    (the paper's key contrast: 69.9 vs 60.1 at EARLY_STOP, 68.2 vs 58.8 at CONVERGENCE).

    Statistic: D_MaybeKnown minus D_HighlyKnown on the MaybeKnown test questions, paired, at both
    durations (each run's EARLY_STOP chosen on the whole dev set, as for every other check).  Threshold: positive with one-sided p < 0.05 at both, in every seed.
    """
    per, means = {}, []
    for d in DURATIONS:
        for s, m in _paired(records, d, "MaybeKnown", "HighlyKnown", "MaybeKnown").items():
            means += [m] if m is not None else []
            prev = per.get(s, (0.0, True))
            per[s] = (
                (np.nan, None)
                if m is None or prev[1] is None
                else (prev[0] + m.mean / len(DURATIONS), prev[1] and m.mean > 0 and m.p_greater() < ALPHA)
            )
    text, ok = across(per, lambda v: pct(v, True))
    text = f"{text} points" + _too_few(per, "MaybeKnown test questions")
    p = paper.TABLE2
    return Check(
        "types.mk_vs_hk",
        5,
        "finding",
        "on MaybeKnown test questions D_MaybeKnown beats D_HighlyKnown (Sec. 5, Table 2)",
        "D_MaybeKnown - D_HighlyKnown on MaybeKnown questions, paired (mean of both durations; each run's "
        "stops chosen on the whole dev set)",
        "positive, one-sided p < 0.05 at both durations, every seed",
        f"{p.loc['D_MaybeKnown', ('EARLY_STOP', 'MaybeKnown')]} vs "
        f"{p.loc['D_HighlyKnown', ('EARLY_STOP', 'MaybeKnown')]} (EARLY_STOP)",
        text,
        ok,
        **from_means(means, 0.0, "above"),  # the duration and seed nearest to failing
    )


def natural_below_maybeknown(records: pd.DataFrame) -> Check:
    """Finding 5 (Sec. 5, Table 2): at CONVERGENCE D_Natural is significantly below D_MaybeKnown
    (41.8 vs 43.2): the natural mix holds Unknown examples, which hurt when fitted.

    Statistic: D_Natural minus D_MaybeKnown at CONVERGENCE, paired.  Threshold: negative with
    one-sided p < 0.05, in every seed.
    """
    tests = _paired(records, "CONVERGENCE", "natural", "MaybeKnown")
    per = {s: (np.nan, None) if m is None else (m.mean, m.mean < 0 and m.p_less() < ALPHA) for s, m in tests.items()}
    text, ok = across(per, lambda v: pct(v, True))
    text = f"{text} points" + _too_few(per, "test questions")
    p = paper.TABLE2[("CONVERGENCE", "All")]
    return Check(
        "types.natural",
        5,
        "finding",
        "CONVERGENCE: D_Natural is below D_MaybeKnown (Sec. 5, Table 2)",
        "D_Natural - D_MaybeKnown at CONVERGENCE, paired",
        "negative, one-sided p < 0.05, every seed",
        f"{p['D_Natural']} vs {p['D_MaybeKnown']}",
        text,
        ok,
        **from_means([m for m in tests.values() if m is not None], 0.0, "below"),
    )


def collapse(records: pd.DataFrame) -> Check:
    """Finding 5 (Sec. 5, Table 2): D_WeaklyKnown and D_Unknown drop from EARLY_STOP to CONVERGENCE,
    mostly on the HighlyKnown and MaybeKnown test questions (D_Unknown: -39.8 and -16.3 there, +2.6 on
    Unknown questions).

    Statistic: for each of the two variants, CONVERGENCE minus EARLY_STOP accuracy per question (a)
    over all test questions, paired, and (b) its mean on HighlyKnown + MaybeKnown questions against
    WeaklyKnown + Unknown questions (Welch's t-test on the per-question changes).  Threshold: (a)
    negative with one-sided p < 0.05 and (b) the HK+MK change below the WK+Unk change with
    one-sided p < 0.05, both variants, every seed.
    """
    es, conv = analysis.correct_at(records, "EARLY_STOP"), analysis.correct_at(records, "CONVERGENCE")
    test = records[records["split"] == "test"]
    cats = test.drop_duplicates(["seed", "example"]).set_index(["seed", "example"])["category"]
    change = conv - es
    per, parts, nums = {}, [], []
    for variant in ("WeaklyKnown", "Unknown"):
        for seed, rows in change.groupby(level="seed"):
            v = rows[variant].dropna()
            m = significance.chunked_mean(v.to_numpy(), seed=int(seed))
            known = cats.reindex(v.index).isin(["HighlyKnown", "MaybeKnown"]).to_numpy()
            welch = sps.ttest_ind(v[known], v[~known], equal_var=False, alternative="less")
            ok = m.mean < 0 and m.p_less() < ALPHA and welch.pvalue < ALPHA
            diff = v[known].mean() - v[~known].mean()  # Welch's standard error: the difference over its t
            nums += [
                numbers(m.mean, 0.0, "below", se=m.se, interval=m.ci()),
                numbers(diff, 0.0, "below", se=diff / welch.statistic if welch.statistic else None),
            ]
            prev = per.get(int(seed), (0.0, True))
            per[int(seed)] = (prev[0] + m.mean / 2, prev[1] and bool(ok))
            parts.append(
                f"D_{variant} seed {seed}: {pct(m.mean, True)} overall, {pct(v[known].mean(), True)} on "
                f"HK+MK vs {pct(v[~known].mean(), True)} on WK+Unk"
            )
    _, ok = across(per)
    d = paper.table2_change()
    return Check(
        "types.collapse",
        5,
        "finding",
        "D_WeaklyKnown and D_Unknown lose accuracy from EARLY_STOP to "
        "CONVERGENCE, mostly on HighlyKnown and MaybeKnown questions (Sec. 5, Table 2)",
        "CONV - ES per question: overall (paired) and HK+MK vs WK+Unk (Welch)",
        "overall negative and HK+MK below WK+Unk, one-sided p < 0.05, both variants, every seed",
        f"D_Unknown {d.loc['D_Unknown', 'All']:+.1f} (HK {d.loc['D_Unknown', 'HighlyKnown']:+.1f}), "
        f"D_WeaklyKnown {d.loc['D_WeaklyKnown', 'All']:+.1f}",
        "; ".join(parts),
        ok,
        **weakest(nums),
    )


def unknown_near_zero(t2: pd.DataFrame, bar: float = 0.05) -> Check:
    """Finding 6 (Sec. 5, Table 2): whatever the fine-tuning data, test questions SliCK calls Unknown
    stay unanswered: SliCK's Unknown is really unknown.

    Statistic: accuracy on the Unknown test questions, every variant, duration and seed.
    Threshold: below 5% everywhere (paper: 0.4-3.2%; 5% leaves room for our smaller subsets).
    """
    unk = t2[t2["subset"] == "Unknown"]
    top = unk["accuracy"].max() if len(unk) else np.nan
    return Check(
        "types.unknown_zero",
        6,
        "finding",
        "test questions SliCK calls Unknown stay unanswered after any fine-tuning (Sec. 5, Table 2)",
        "accuracy on Unknown test questions, every variant and duration",
        "< 5% everywhere",
        "0.4-3.2%",
        f"at most {pct(top)}% ({len(unk)} runs x durations)",
        None if not len(unk) else bool(top < bar),
    )


def learning_by_type(records: pd.DataFrame, trains: dict[str, pd.DataFrame], seed: int) -> pd.DataFrame:
    """Why one kind of example is worth more than another: a measurement beside Table 2 (Sec. 5).

    The paper explains Table 2 by what each kind of example asks of the model:
    HighlyKnown ones little (it already answers them), Unknown ones new facts.
    For each single-category variant this measures, on one seed's run, what its
    train facts were in pretraining and how the run took them: the median
    exposure count of its train facts (the world's ground truth; NaN on real
    data) and the share never exposed; the first epoch by which half of them
    are fitted and the share fitted at EARLY_STOP; and test accuracy at
    EARLY_STOP on the HighlyKnown and MaybeKnown test questions (how well the
    run answers, in the new format, what the model knew; compare
    ``paper.TABLE2["EARLY_STOP"]``).

    Args:
        records: Table 2's records (the runs of ``seed`` are read).
        trains: variant -> its train table for ``seed`` (rows in the order the run
            saw them, an ``exposures`` column where known).
    """
    rec = records[(records["seed"] == seed) & records["variant"].isin(list(trains))]
    stops = analysis.early_stop(rec).set_index("variant")
    rows = []
    for variant, train in trains.items():
        if variant not in stops.index:
            continue
        r = rec[rec["variant"] == variant]
        es = int(stops.loc[variant, "early_stop"])
        fit = r[r["split"] == "train"].groupby("epoch")["correct"].mean()
        half = fit[fit >= 0.5]
        test = r[(r["split"] == "test") & (r["epoch"] == es)]
        exp = train["exposures"] if "exposures" in train else pd.Series(np.nan, index=train.index)
        rows.append(
            {
                "variant": analysis.TABLE2_VARIANTS.get(variant, variant),
                "median exposures": float(exp.median()),
                "never exposed %": 100 * float((exp == 0).mean()) if exp.notna().all() else np.nan,
                "half fitted (epoch)": int(half.index.min()) if len(half) else np.nan,
                "EARLY_STOP epoch": es,
                "fitted at EARLY_STOP %": 100 * float(fit.get(es, np.nan)),
                **{
                    f"{c} test acc. at EARLY_STOP %": 100 * float(test.loc[test["category"] == c, "correct"].mean())
                    for c in ("HighlyKnown", "MaybeKnown")
                },
            }
        )
    return pd.DataFrame(rows).set_index("variant").round(1)


def duration_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The EARLY_STOP-against-CONVERGENCE tests (:func:`significance.paired_duration_test`'s rows, one per
    variant) as the paper prints Table 7: accuracies in % and the change in points, one decimal; the
    two-sided p-value to two significant digits."""
    return pd.DataFrame(
        {
            "EARLY_STOP (%)": (100 * rows["acc_es"]).round(1).to_numpy(),
            "CONVERGENCE (%)": (100 * rows["acc_conv"]).round(1).to_numpy(),
            "CONVERGENCE - EARLY_STOP (points)": (100 * rows["diff"]).round(1).to_numpy(),
            "p (two-sided)": [f"{p:.2g}" for p in rows["p_value"]],
            "chunks": rows["n_chunks"].to_numpy(),
        },
        index=pd.Index(rows["variant"], name="variant"),
    )


def checks(records: pd.DataFrame) -> list[Check]:
    """Every check of chapter 5 on the Table 2 records."""
    sig = significance_tables(records)
    t2 = analysis.table2_long(records)
    return [
        converged(records),
        maybeknown_best(sig, "EARLY_STOP"),
        maybeknown_best(sig, "CONVERGENCE"),
        highlyknown_below_best(records, sig),
        maybeknown_above_highlyknown(records),
        natural_below_maybeknown(records),
        collapse(records),
        unknown_near_zero(t2),
    ]


PROSE = {
    "always": "All five fine-tuning sets have the same size and relation mix; only the SliCK category of their "
    "examples differs. The bold marks and the checks use the same test, the paper's chunked paired "
    "t-test (App. I).",
}


@saved
def results(setup) -> Chapter:
    """Chapter 5: Table 2 (per seed's significance marks), its heat map data, the EARLY_STOP vs
    CONVERGENCE test per variant (Table 7's last column), and the checks."""
    records = setup.records(list(analysis.TABLE2_VARIANTS))
    sig = significance_tables(records)
    t2 = analysis.table2_long(records)
    seed = setup.seeds[0]
    rows = []
    for variant, label in analysis.TABLE2_VARIANTS.items():
        at = analysis.at_stops(records[(records["variant"] == variant) & (records["seed"] == seed)], "test")
        es, conv = (at[at["duration"] == d][["example", "correct"]] for d in DURATIONS)
        rows.append({"variant": label, **significance.paired_duration_test(es, conv, seed=seed)})
    n_cat = setup.prep.table.query("split == 'test'")["category"].value_counts().reindex(list(CATEGORIES))
    prep = setup.preps[seed]
    same = setup.same_data()
    trains = {v: variants.build(prep.train, same.get(v, v), size=prep.size, seed=seed) for v in CATEGORIES}
    tables = {
        "duration_test": duration_table(pd.DataFrame(rows)),
        "test_questions": n_cat.rename("test questions").to_frame(),
        "learning": learning_by_type(records, trains, seed),
    }
    data = {"t2": t2, "sig": {d: sig[(seed, d)] for d in DURATIONS}, "seed": seed}
    return Chapter(5, tables, data, checks(records), PROSE)
