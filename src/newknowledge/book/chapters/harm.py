"""Chapter 2: is fine-tuning on Unknown examples harmful? (Sec. 4.1, 4.2 and 4.5; Figures 3 and 7)

Findings 1 and 2.  Every check pairs fine-tuned models on the *same* test
questions with the paper's chunked paired t-test (App. I), per seed, so a
difference is tested against the noise of the questions rather than eyeballed.
"""

from __future__ import annotations

import pandas as pd

from newknowledge.book.chapters import Chapter, converged, name, per_seed, saved, seeds_text, shares_of_unknown
from newknowledge.evaluation import analysis, paper
from newknowledge.evaluation.checks import Check, from_means, numbers, pct, weakest
from newknowledge.evaluation.significance import chunked_mean, pooled

# "Almost identical" (Finding 2): D within 2 points of D_Known.  Table 8 gives the paper's harm
# at CONVERGENCE for 50% Unknown: D falls from 43.0 at EARLY_STOP to 38.8 (4.2 points) while
# D_Known does not; a difference at EARLY_STOP must stay well below that effect, and half of it
# is the margin.  Fixed here, before any run; not derived from a run's noise.
MARGIN = 0.02
ALPHA = 0.05


def _paired(wide: pd.DataFrame, fn) -> dict:
    """Per seed: App. I's chunked test of ``fn(rows)``, a per-question quantity (a :class:`Mean`)."""
    return {s: chunked_mean(v, seed=s) for s, v in per_seed(wide, fn).items() if len(v) >= 4}


def lower_with_more_unknown(records: pd.DataFrame, duration: str, split: str = "test") -> Check:
    """Finding 1 (Sec. 4.1, Figure 3a): the higher the share of Unknown, the lower the test accuracy,
    "regardless of the fine-tuning duration".

    Statistic: per seed, accuracy of D with the largest share of Unknown minus D with the smallest
    (normally 100% and 0%), paired on the same questions of ``split`` at ``duration``, with App. I's
    chunked paired t-test.  Threshold: negative with one-sided p < 0.05, in every seed.  The paper's
    drop reaches 14 points in-distribution (6 OOD) at CONVERGENCE and is visible at every duration;
    we test its direction with the paper's own test, not its size, which depends on the model.
    """
    xs = shares_of_unknown(records)
    where = "OOD test" if split == "ood_test" else "test"
    claim = f"{duration}: more Unknown in D, lower {where} accuracy (Sec. 4.1, Figure {'7' if split == 'ood_test' else '3a'})"
    stat = f"accuracy at {xs[-1]:g}% minus at {xs[0]:g}% Unknown, paired on the {where} questions" if xs else ""
    drop = paper.MAX_DROP_OOD if split == "ood_test" else paper.MAX_DROP_IN_DISTRIBUTION
    if len(xs) < 2:
        return Check(
            f"harm.lower.{duration}.{split}",
            1,
            "finding",
            claim,
            stat,
            "needs two shares of Unknown",
            f"up to -{drop} points",
            "one share of Unknown only",
            None,
        )
    wide = analysis.correct_at(records, duration, split)
    hi, lo = name("unknown", xs[-1]), name("unknown", xs[0])
    tests = _paired(wide, lambda r: r[hi] - r[lo])
    if not tests:  # a real folder without the OOD relations' test files, or fewer than 4 questions
        return Check(
            f"harm.lower.{duration}.{split}",
            1,
            "finding",
            claim,
            stat,
            "negative, one-sided p < 0.05 (App. I test), every seed",
            f"up to -{drop} points at CONVERGENCE",
            f"not decidable: {len(wide)} {where} questions in the data (the test needs 4)",
            None,
        )
    text, ok = seeds_text({s: (m.mean, m.mean < 0 and m.p_less() < ALPHA) for s, m in tests.items()})
    p = " ".join(f"p={m.p_less():.3g}" for m in tests.values())
    return Check(
        f"harm.lower.{duration}.{split}",
        1,
        "finding",
        claim,
        stat,
        "negative, one-sided p < 0.05 (App. I test), every seed",
        f"up to -{drop} points at CONVERGENCE",
        f"{text} points ({p})",
        ok,
        **from_means(tests.values(), 0.0, "below"),
    )


def gap_grows(records: pd.DataFrame, split: str = "test") -> Check:
    """Finding 1 (Sec. 4.1, Figure 3a): the gap between EARLY_STOP and longer training grows with %
    Unknown.

    Statistic: per question, (EARLY_STOP - CONVERGENCE correctness at the largest share of Unknown)
    minus (the same at the smallest), averaged, with the chunked test.  Threshold: positive with
    one-sided p < 0.05, in every seed.  In the paper's Figure 3a the lines of the two durations start
    together at 0% Unknown and part as the share grows.
    """
    xs = shares_of_unknown(records)
    claim = "the EARLY_STOP - CONVERGENCE gap grows with % Unknown (Sec. 4.1, Figure 3a)"
    if len(xs) < 2:
        return Check(
            "harm.gap_grows",
            1,
            "finding",
            claim,
            "",
            "needs two shares of Unknown",
            "grows",
            "one share of Unknown only",
            None,
        )
    es, conv = analysis.correct_at(records, "EARLY_STOP", split), analysis.correct_at(records, "CONVERGENCE", split)
    hi, lo = name("unknown", xs[-1]), name("unknown", xs[0])
    both = es[[hi, lo]] - conv[[hi, lo]]
    tests = _paired(both, lambda r: r[hi] - r[lo])
    text, ok = seeds_text({s: (m.mean, m.mean > 0 and m.p_greater() < ALPHA) for s, m in tests.items()})
    return Check(
        "harm.gap_grows",
        1,
        "finding",
        claim,
        f"(ES - CONV accuracy) at {xs[-1]:g}% minus at {xs[0]:g}% Unknown, paired per question",
        "positive, one-sided p < 0.05, every seed",
        "grows from ~0 (Figure 3a)",
        f"{text} points",
        ok,
        **from_means(tests.values(), 0.0, "above"),
    )


def _with_dknown(records: pd.DataFrame) -> list[float]:
    """Shares of Unknown that have both a D and a D_Known run."""
    return [x for x in shares_of_unknown(records, "known") if x in shares_of_unknown(records)]


def neutral_at_early_stop(records: pd.DataFrame, split: str = "test") -> Check:
    """Finding 2 (Sec. 4.2, Figure 3b): at EARLY_STOP, D and D_Known are almost identical.

    Statistic: for each share of Unknown X with a D_Known run, accuracy of D minus D_Known at
    EARLY_STOP, paired per question (chunked test), pooled over seeds (mean of the seeds' means,
    standard errors combined).  Threshold: equivalence by two one-sided tests at alpha 0.05 within
    +-2 points (:data:`MARGIN`: half the paper's 4.2-point harm at CONVERGENCE, Table 8), for every
    X.  A noisy difference does not pass: absence of evidence is not equivalence.  Seeds are pooled
    because equivalence needs power that one seed's test set lacks; the per-seed means are shown.
    """
    claim = "EARLY_STOP: D and D_Known are almost identical (Sec. 4.2, Figure 3b)"
    stat = "D - D_Known accuracy at EARLY_STOP, paired per question, pooled over seeds"
    thr = f"90% interval inside +-{100 * MARGIN:.0f} points (TOST, alpha 0.05), every X"
    xs = _with_dknown(records)
    if not xs:
        return Check("harm.neutral", 2, "finding", claim, stat, thr, "almost identical", "no D_Known run", None)
    wide = analysis.correct_at(records, "EARLY_STOP", split)
    parts, ok, nums = [], True, []
    for x in xs:
        tests = _paired(wide, lambda r: r[name("unknown", x)] - r[name("known", x)])  # noqa: B023 (called within the iteration)
        if not tests:
            return Check(
                "harm.neutral", 2, "finding", claim, stat, thr, "almost identical", "fewer than 4 test questions", None
            )
        m = pooled(list(tests.values()))
        lo, hi = m.ci(0.90)
        ok &= m.equivalent(MARGIN, ALPHA)
        nums.append(numbers(m.mean, MARGIN, "within", se=m.se, interval=(lo, hi)))  # the TOST's 90% interval
        seeds = "" if len(tests) == 1 else " (seeds: " + ", ".join(pct(t.mean, True) for t in tests.values()) + ")"
        parts.append(f"X={x:g}%: {pct(m.mean, True)} [90%: {pct(lo, True)}, {pct(hi, True)}]{seeds}")
    return Check(
        "harm.neutral",
        2,
        "finding",
        claim,
        stat,
        thr,
        "almost identical (Figure 3b)",
        "; ".join(parts) + " points",
        bool(ok),
        **weakest(nums),
    )


def harmful_at_convergence(records: pd.DataFrame, split: str = "test") -> Check:
    """Finding 2 (Sec. 4.2, Figure 3b): at CONVERGENCE, D under-performs D_Known.

    Statistic: for each X with a D_Known run, D minus D_Known at CONVERGENCE, paired per question.
    Threshold: negative with one-sided p < 0.05 (App. I's test), for every X and every seed.
    """
    claim = "CONVERGENCE: D is below D_Known (Sec. 4.2, Figure 3b)"
    stat = "D - D_Known accuracy at CONVERGENCE, paired per question"
    xs = _with_dknown(records)
    if not xs:
        return Check("harm.harmful", 2, "finding", claim, stat, "", "below", "no D_Known run", None)
    wide = analysis.correct_at(records, "CONVERGENCE", split)
    parts, ok, means = [], True, []
    for x in xs:
        tests = _paired(wide, lambda r: r[name("unknown", x)] - r[name("known", x)])  # noqa: B023 (called within the iteration)
        text, holds = seeds_text({s: (m.mean, m.mean < 0 and m.p_less() < ALPHA) for s, m in tests.items()})
        ok = ok and bool(holds)
        parts.append(f"X={x:g}%: {text}")
        means += tests.values()
    return Check(
        "harm.harmful",
        2,
        "finding",
        claim,
        stat,
        "negative, one-sided p < 0.05, every X and seed",
        "below, by more as X grows",
        "; ".join(parts) + " points",
        ok,
        **from_means(means, 0.0, "below"),
    )


def harm_grows(records: pd.DataFrame, split: str = "test") -> Check:
    """Finding 2 (Sec. 4.2, Figure 3b): the harm at CONVERGENCE grows with the share of Unknown.

    Statistic: per question, (D_Known - D at the largest X with a D_Known run) minus (the same at the
    smallest), at CONVERGENCE, chunked test.  Threshold: positive with one-sided p < 0.05, every seed.
    Needs two shares of Unknown with D_Known runs; with one (the quick profile) it is not decidable.
    """
    claim = "CONVERGENCE: the D_Known - D gap grows with % Unknown (Sec. 4.2, Figure 3b)"
    xs = _with_dknown(records)
    if len(xs) < 2:
        return Check(
            "harm.grows",
            2,
            "finding",
            claim,
            "",
            "needs two shares of Unknown with D_Known runs",
            "grows",
            f"D_Known runs at {', '.join(f'{x:g}%' for x in xs) or 'no X'} only",
            None,
        )
    wide = analysis.correct_at(records, "CONVERGENCE", split)
    (lo, hi) = xs[0], xs[-1]
    tests = _paired(
        wide,
        lambda r: (r[name("known", hi)] - r[name("unknown", hi)]) - (r[name("known", lo)] - r[name("unknown", lo)]),
    )
    text, ok = seeds_text({s: (m.mean, m.mean > 0 and m.p_greater() < ALPHA) for s, m in tests.items()})
    return Check(
        "harm.grows",
        2,
        "finding",
        claim,
        f"(D_Known - D) at {hi:g}% minus at {lo:g}%, paired",
        "positive, one-sided p < 0.05, every seed",
        "grows",
        f"{text} points",
        ok,
        **from_means(tests.values(), 0.0, "above"),
    )


def dknown_steadier(records: pd.DataFrame, split: str = "test") -> Check:
    """Finding 2 (Sec. 4.2, Figure 3b): the EARLY_STOP - CONVERGENCE gap is small for D_Known and
    large for D.

    Statistic: for each X with a D_Known run, per question (D's ES - CONV) minus (D_Known's ES -
    CONV), chunked test.  Threshold: positive with one-sided p < 0.05, for every X and seed.
    """
    claim = "the EARLY_STOP - CONVERGENCE gap is larger for D than for D_Known (Sec. 4.2, Figure 3b)"
    xs = _with_dknown(records)
    if not xs:
        return Check("harm.steadier", 2, "finding", claim, "", "", "small for D_Known", "no D_Known run", None)
    es, conv = analysis.correct_at(records, "EARLY_STOP", split), analysis.correct_at(records, "CONVERGENCE", split)
    gap = es - conv
    parts, ok, means = [], True, []
    for x in xs:
        tests = _paired(gap, lambda r: r[name("unknown", x)] - r[name("known", x)])  # noqa: B023 (called within the iteration)
        text, holds = seeds_text({s: (m.mean, m.mean > 0 and m.p_greater() < ALPHA) for s, m in tests.items()})
        ok = ok and bool(holds)
        parts.append(f"X={x:g}%: {text}")
        means += tests.values()
    return Check(
        "harm.steadier",
        2,
        "finding",
        claim,
        "D's ES - CONV gap minus D_Known's, paired per question",
        "positive, one-sided p < 0.05, every X and seed",
        "small for D_Known, large for D",
        "; ".join(parts) + " points",
        ok,
        **from_means(means, 0.0, "above"),
    )


def checks(records: pd.DataFrame) -> list[Check]:
    """Every check of chapter 2 on the section-4 records."""
    return [
        converged(records),
        lower_with_more_unknown(records, "EARLY_STOP"),
        lower_with_more_unknown(records, "CONVERGENCE"),
        lower_with_more_unknown(records, "CONVERGENCE", "ood_test"),
        gap_grows(records),
        neutral_at_early_stop(records),
        harmful_at_convergence(records),
        harm_grows(records),
        dknown_steadier(records),
    ]


PROSE = {
    "always": "Test questions share no subject with the fine-tuning data, so a change in test accuracy is a "
    "change in how the model uses what it knew before fine-tuning. Each line above is a test fixed "
    "before the run; the figures show the numbers behind it.",
    "harm.neutral:fails": "Equivalence was not shown: either D and D_Known differ at EARLY_STOP, or the test set "
    "is too small to bound their difference within the margin (the interval says which).",
}


@saved
def results(setup) -> Chapter:
    """Chapter 2 from the section-4 runs (trained if missing): accuracy per share of Unknown and
    duration (Figures 2.1, 2.3), D vs D_Known (Figures 2.2, 2.4), accuracy per test category, checks."""
    records = setup.section4()
    d_only = records[records["variant"].str.startswith("unknown_")]
    tables, data = {}, {}
    for split in ("test", "ood_test"):
        acc = analysis.by_duration(d_only, split)
        data[f"accuracy_{split}"] = acc.assign(pct_unknown=analysis.pct_unknown(acc["variant"]))
        data[f"harm_{split}"] = analysis.harm_table(records, split)
    tables["accuracy"] = (
        100 * data["accuracy_test"].pivot_table(index="pct_unknown", columns="duration", values="accuracy")
    ).round(1)
    tables["harm"] = (
        100 * data["harm_test"].pivot_table(index="pct_unknown", columns=["duration", "data"], values="accuracy")
    ).round(1)
    at = analysis.at_stops(d_only, "test")
    tables["by_category"] = (
        100 * at.groupby(["duration", "variant", "category"])["correct"].mean().unstack("category")
    ).round(1)
    return Chapter(2, tables, data, checks(records), PROSE)
