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


def _across(values: pd.Series, test, fmt: str = "{:+.1f}", scale: float = 100.0) -> tuple[str, bool]:
    """Mean over seeds (with its 95% interval when there are several) and "holds in k/n seeds"."""
    from .stats import mean_ci

    v = values.to_numpy(dtype=float)
    mean, lo, hi = mean_ci(v)
    ok = [bool(test(x)) for x in v]
    text = fmt.format(scale * mean)
    if len(v) > 1:
        text += f" [{fmt.format(scale * lo)}, {fmt.format(scale * hi)}], holds in {sum(ok)}/{len(ok)} seeds"
    return text, all(ok)


def harm_checks(harm: pd.DataFrame, harm_ood: pd.DataFrame, n_test: int) -> list[Check]:
    """Chapter 2 (Sec. 4.1, 4.2, 4.5) from :func:`newknowledge.analysis.harm_table` outputs."""
    out = []
    for h, where, paper_drop in ((harm, "test", "up to -14 points"), (harm_ood, "OOD test", "up to -6 points")):
        d = h[h["data"] == "D"].pivot_table(index="seed", columns=["duration", "pct_unknown"], values="accuracy")
        lo, hi = d.columns.get_level_values(1).min(), d.columns.get_level_values(1).max()
        drop = d[("CONVERGENCE", hi)] - d[("CONVERGENCE", lo)]
        text, ok = _across(drop, lambda x: x < 0)
        out.append(Check("Harm of Unknown", f"{where}: at CONVERGENCE accuracy falls from {lo:.0f}% to {hi:.0f}% Unknown",
                         paper_drop, f"{text} points", ok))
        if where == "test":
            gap = (d[("EARLY_STOP", hi)] - d[("CONVERGENCE", hi)]) - (d[("EARLY_STOP", lo)] - d[("CONVERGENCE", lo)])
            text, ok = _across(gap, lambda x: x > 0)
            out.append(Check("Harm of Unknown", "the EARLY_STOP - CONVERGENCE gap grows with % Unknown",
                             "grows (Figure 3a)", f"gap at {hi:.0f}% minus gap at {lo:.0f}%: {text} points", ok))
    both = harm.pivot_table(index=["seed", "pct_unknown"], columns=["duration", "data"], values="accuracy").dropna()
    both = both[both.index.get_level_values("pct_unknown") > 0]
    se = 100 * np.sqrt(2 * 0.5 * 0.5 / n_test)  # largest standard error of a difference of two accuracies
    es = (both[("EARLY_STOP", "D")] - both[("EARLY_STOP", "D_Known")]).groupby("seed").apply(lambda s: s.abs().max())
    text, ok = _across(es, lambda x: 100 * x <= 2 * se, fmt="{:.1f}")
    out.append(Check("Unknown neutral at EARLY_STOP", "D and D_Known are almost identical at EARLY_STOP",
                     "almost identical (Figure 3b)", f"largest |D - D_Known| {text} points (2 SE = {2 * se:.1f})", ok))
    conv = both[("CONVERGENCE", "D")] - both[("CONVERGENCE", "D_Known")]
    at_max = conv[conv.index.get_level_values("pct_unknown") == conv.index.get_level_values("pct_unknown").max()]
    text, ok = _across(at_max.droplevel("pct_unknown"), lambda x: x < 0)
    out.append(Check("Unknown harmful at CONVERGENCE", "D is below D_Known at CONVERGENCE",
                     "below, gap growing with % Unknown", f"D - D_Known at the largest X with a D_Known run: {text} points",
                     ok))
    return out


def speed_checks(records: pd.DataFrame, fitted_es: pd.DataFrame, variant: str = "unknown_50") -> list[Check]:
    """Chapter 3 (Sec. 4.3) from the records and :func:`analysis.fitted_at_early_stop`."""
    from .analysis import accuracy, early_stop, epochs_to_fit

    out = []
    f = fitted_es[fitted_es["variant"] == variant].pivot_table(index="seed", columns="group", values="fitted")
    text_k, _ = _across(f["Known"], lambda x: True, fmt="{:.0f}")
    text_u, ok = _across(f["Known"] - f["Unknown"], lambda x: x > 0.3, fmt="{:+.0f}")
    out.append(Check("Unknown fitted slower", f"at EARLY_STOP most Known and few Unknown examples are fitted ({variant})",
                     "most Known, few Unknown (Figure 1)",
                     f"Known {text_k}% fitted; Known - Unknown {text_u} points", ok))
    # A group never 90% fitted within the run counts as fitted "after the last epoch".
    last = int(records["epoch"].max())
    fits = epochs_to_fit(records, variant).pivot(index="seed", columns="group", values="epoch")
    never = fits[["Known", "Unknown"]].isna().any()
    fits = fits.fillna(last + 1)

    def when(group):
        return f"after epoch {last} (never)" if never[group] else f"at epoch {fits[group].mean():.0f}"

    text, ok = _across(fits["Unknown"] - fits["Known"], lambda x: x > 0, fmt="{:+.0f}", scale=1)
    out.append(Check("Unknown fitted slower", "epochs to fit 90% of the Unknown examples exceed those for Known",
                     "Unknown fitted much later (Figure 1)",
                     f"90% of Known fitted {when('Known')}, of Unknown {when('Unknown')}", ok))
    every = fitted_es.pivot_table(index=["variant", "seed"], columns="group", values="fitted").dropna()
    share_ok = (every["Known"] > every["Unknown"]).mean()
    out.append(Check("Unknown fitted slower", "for every variant, a larger share of Known than Unknown is fitted at EARLY_STOP",
                     "every variant (Figure 4)", f"{100 * share_ok:.0f}% of the variant runs", bool(share_ok == 1.0)))
    rec = records[records["variant"] == variant]
    dev = accuracy(rec[rec["split"] == "dev"]).merge(early_stop(rec), on=["variant", "seed"])
    peak = dev[dev["epoch"] == dev["early_stop"]].set_index("seed")["accuracy"]
    last = dev[dev["epoch"] == dev["convergence"]].set_index("seed")["accuracy"]
    text, ok = _across(last - peak, lambda x: x < 0)
    out.append(Check("Overfitting to Unknown", "after its peak, dev accuracy falls as Unknown examples get fitted",
                     "falls (Figure 1)", f"dev at CONVERGENCE minus dev at EARLY_STOP: {text} points", ok))
    return out


def linear_checks(res_in, res_ood) -> list[Check]:
    """Chapter 4 (Sec. 4.4, Table 1) from two :class:`newknowledge.stats.LinearModelResult`."""
    def ci(r, name):
        lo, hi = r.ci[name]
        return f"{100 * getattr(r, name):+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"

    out = []
    for r, where, paper in ((res_in, "in-distribution", ("+7.3", "-8.3", "0.86")),
                            (res_ood, "OOD", ("+3.2", "-3.0", "0.95"))):
        out.append(Check("Linear model", f"{where}: fitting Unknown examples lowers accuracy (b_unk < 0)",
                         f"b_unk {paper[1]}", f"b_unk {ci(r, 'b_unk')}", bool(r.ci["b_unk"][1] < 0)))
        out.append(Check("Linear model", f"{where}: fitting Known examples raises accuracy (b_kn > 0)",
                         f"b_kn {paper[0]}", f"b_kn {ci(r, 'b_kn')}", bool(r.ci["b_kn"][0] > 0)))
        out.append(Check("Linear model", f"{where}: the model explains most of the variance", f"R^2 {paper[2]}",
                         f"R^2 {r.r2:.2f}", bool(r.r2 > 0.5)))
    return out


# The paper's Table 2 (test accuracy, %), for display beside ours.
PAPER_TABLE2 = pd.DataFrame(
    [[40.5, 98.7, 60.1, 9.0, 0.6, 40.0, 98.4, 58.8, 8.5, 0.7],
     [43.6, 98.4, 69.9, 12.1, 1.0, 43.2, 97.5, 68.2, 12.9, 1.3],
     [39.2, 95.0, 59.2, 8.6, 0.4, 35.4, 73.5, 55.8, 17.2, 2.2],
     [37.5, 95.6, 52.9, 6.5, 0.6, 25.8, 55.8, 36.6, 12.2, 3.2],
     [43.5, 98.0, 67.6, 14.1, 1.8, 41.8, 95.5, 61.7, 14.8, 2.5]],
    index=["D_HighlyKnown", "D_MaybeKnown", "D_WeaklyKnown", "D_Unknown", "D_Natural"],
    columns=pd.MultiIndex.from_product([["EARLY_STOP", "CONVERGENCE"], ["All", *CATEGORIES]]),
)


def knowledge_type_checks(t2: pd.DataFrame, sig: dict[str, pd.DataFrame]) -> list[Check]:
    """Chapter 5 (Sec. 5, Table 2) from :func:`analysis.table2_long` and per-duration significance tables.

    ``sig`` maps a duration to :func:`newknowledge.stats.significance_table`'s output
    (one seed), used to say whether a "best" is significantly best.
    """
    mean = t2.groupby(["variant", "duration", "subset"])["accuracy"].mean().unstack(["duration", "subset"])
    out = []

    def best(duration, subset):
        return mean[(duration, subset)].idxmax()

    def tied_with_best(duration, subset, model):
        s = sig[duration]
        row = s[(s["subset"] == subset) & (s["model"] == model)]
        return bool(row["is_best"].item() or not row["significant_05"].item())

    for duration in ("EARLY_STOP", "CONVERGENCE"):
        b = best(duration, "All")
        ok = b in ("D_MaybeKnown", "D_Natural") or tied_with_best(duration, "All", "D_MaybeKnown")
        paper = "D_MaybeKnown (43.6)" if duration == "EARLY_STOP" else "D_MaybeKnown (43.2)"
        out.append(Check("Knowledge types", f"{duration}: D_MaybeKnown or D_Natural is best overall (or tied with the best)",
                         paper, f"best: {b} ({100 * mean.loc[b, (duration, 'All')]:.1f}); D_MaybeKnown "
                         f"{100 * mean.loc['D_MaybeKnown', (duration, 'All')]:.1f}, D_HighlyKnown "
                         f"{100 * mean.loc['D_HighlyKnown', (duration, 'All')]:.1f}", ok))
    hk_best = [s for s in ("All", *CATEGORIES) if best("EARLY_STOP", s) == "D_HighlyKnown"]
    out.append(Check("Knowledge types", "D_HighlyKnown is best only on HighlyKnown test questions (EARLY_STOP)",
                     "best only on HighlyKnown", f"best on: {', '.join(hk_best) or 'none'}",
                     hk_best in (["HighlyKnown"], [])))
    drop = (mean.xs("CONVERGENCE", axis=1, level=0) - mean.xs("EARLY_STOP", axis=1, level=0))
    worst = drop["All"].nsmallest(2).index.tolist()
    out.append(Check("Knowledge types", "D_WeaklyKnown and D_Unknown lose the most from EARLY_STOP to CONVERGENCE",
                     "D_Unknown -11.7, D_WeaklyKnown -3.8 (All)",
                     "; ".join(f"{v} {100 * drop.loc[v, 'All']:+.1f}" for v in drop.index),
                     set(worst) == {"D_WeaklyKnown", "D_Unknown"}))
    hkmk = drop.loc["D_Unknown", ["HighlyKnown", "MaybeKnown"]].mean()
    out.append(Check("Knowledge types", "D_Unknown's loss is mainly on HighlyKnown and MaybeKnown test questions",
                     "HK -39.8, MK -16.3", f"HK {100 * drop.loc['D_Unknown', 'HighlyKnown']:+.1f}, MK "
                     f"{100 * drop.loc['D_Unknown', 'MaybeKnown']:+.1f}, Unk {100 * drop.loc['D_Unknown', 'Unknown']:+.1f}",
                     bool(hkmk < drop.loc["D_Unknown", "Unknown"])))
    unk = mean.xs("Unknown", axis=1, level=1)
    out.append(Check("SliCK sanity", "accuracy on Unknown test questions is near zero for every variant",
                     "0.4-3.2%", f"at most {100 * unk.max().max():.1f}%", bool(unk.max().max() < 0.05)))
    return out


def slick_analysis_checks(sweep: pd.DataFrame, points: pd.DataFrame, scores: np.ndarray, test: pd.DataFrame,
                          agreement: float | None = None) -> list[Check]:
    """Chapter 6 (Sec. 6, App. J): SliCK's Unknown vs P(True), the N_ex ablation, ground truth."""
    from .ptrue import matched_threshold
    from .stats import threshold_sweep

    out = []
    share, acc = float(points["share"].iloc[0]), float(points["accuracy"].iloc[0])
    correct = test["correct_after"].to_numpy()
    t = matched_threshold(scores, share)
    pt = threshold_sweep(scores, correct, thresholds=[t]).iloc[0]
    out.append(Check("SliCK vs P(True)", "at the same share of the test set, SliCK's Unknown gets lower accuracy "
                     "after fine-tuning than P(True)'s", "much lower (Figure 5)",
                     f"SliCK {100 * acc:.1f}% vs P(True) {100 * pt['accuracy']:.1f}% at {100 * share:.0f}% of the test set",
                     bool(acc < pt["accuracy"])))
    line = sweep[sweep["method"].str.startswith("SliCK")].set_index("threshold")["accuracy"]
    out.append(Check("N_ex ablation", "fewer exemplar sets make SliCK's Unknown leakier (higher accuracy)",
                     "leakier with N_ex < 10 (Figure 5)",
                     f"accuracy on Unknown: N_ex=1 {100 * line.iloc[0]:.1f}%, N_ex={int(line.index[-1])} {100 * line.iloc[-1]:.1f}%",
                     bool(line.iloc[0] >= line.iloc[-1])))
    if "exposures" in test and test["exposures"].notna().all():
        never = test["exposures"].to_numpy() == 0
        slick_unknown = (test["category"] == "Unknown").to_numpy()
        pt_unknown = scores < t
        s_rate, p_rate = never[slick_unknown].mean(), never[pt_unknown].mean() if pt_unknown.any() else np.nan
        out.append(Check("SliCK vs ground truth", "SliCK's Unknown is truly never-seen more often than P(True)'s",
                         "not measurable on real data",
                         f"never exposed: SliCK {100 * s_rate:.0f}%, P(True) {100 * p_rate:.0f}% (same share)",
                         bool(s_rate >= p_rate)))
    if agreement is not None:
        out.append(Check("Exact vs sampling estimator", "both estimators give the same categories",
                         "the paper samples", f"{100 * agreement:.1f}% of questions agree", bool(agreement >= 0.95)))
    return out


def idk_checks(idk: pd.DataFrame) -> list[Check]:
    """Chapter 7 (App. K, Table 8) from :func:`analysis.idk_table`."""
    m = idk.groupby(["variant", "duration"])[["accuracy_answered", "answered"]].mean()
    out = []
    for d in ("EARLY_STOP", "CONVERGENCE"):
        a, b = m.loc[("D_IDK", d)], m.loc[("D", d)]
        out.append(Check("I don't know", f"{d}: D_IDK is more accurate on the questions it answers than D",
                         "61.8 vs 43.0 (ES), 61.8 vs 38.8 (CONV)" if d == "EARLY_STOP" else "61.8 vs 38.8",
                         f"{100 * a['accuracy_answered']:.1f} vs {100 * b['accuracy_answered']:.1f} "
                         f"(answering {100 * a['answered']:.0f}% vs {100 * b['answered']:.0f}%)",
                         bool(a["accuracy_answered"] > b["accuracy_answered"])))
    drop_idk = m.loc[("D_IDK", "CONVERGENCE"), "accuracy_answered"] - m.loc[("D_IDK", "EARLY_STOP"), "accuracy_answered"]
    drop_d = m.loc[("D", "CONVERGENCE"), "accuracy_answered"] - m.loc[("D", "EARLY_STOP"), "accuracy_answered"]
    out.append(Check("I don't know", "relabelling protects against the convergence drop",
                     "D_IDK 0.0 vs D -4.2 points", f"D_IDK {100 * drop_idk:+.1f} vs D {100 * drop_d:+.1f} points",
                     bool(drop_idk > drop_d)))
    return out
