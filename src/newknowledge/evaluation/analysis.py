"""From fine-tuning records to the paper's quantities (Sec. 4 and 5).

Records (see :mod:`newknowledge.finetuning.finetune`) have one row per run x epoch x
example: ``variant``, ``seed``, ``epoch``, ``split`` (train/dev/test/ood_test),
``example``, ``category``, ``correct``.  These functions turn them into
accuracy curves, the EARLY_STOP and CONVERGENCE epochs, fitted shares and the
points of the linear model.
"""

from __future__ import annotations

import pandas as pd

from newknowledge.core.tidy import RUN
from newknowledge.knowledge.categories import KNOWN


def accuracy(records: pd.DataFrame, by_category: bool = False) -> pd.DataFrame:
    """Accuracy per run, epoch and split (and SliCK category of the example).

    Returns:
        Columns ``variant, seed, epoch, split, [category,] accuracy, n``.
    """
    keys = RUN + ["epoch", "split"] + (["category"] if by_category else [])
    g = records.groupby(keys, observed=True)["correct"]
    return g.agg(accuracy="mean", n="size").reset_index()


def early_stop(records: pd.DataFrame) -> pd.DataFrame:
    """EARLY_STOP (best dev accuracy, earliest on ties, epochs >= 1) and CONVERGENCE (last epoch) per run.

    Returns:
        Columns ``variant, seed, early_stop, convergence``.
    """
    dev = accuracy(records[(records["split"] == "dev") & (records["epoch"] >= 1)])
    dev = dev.sort_values(RUN + ["accuracy", "epoch"], ascending=[True, True, False, True])
    es = dev.groupby(RUN).head(1)[RUN + ["epoch"]].rename(columns={"epoch": "early_stop"})
    conv = records.groupby(RUN)["epoch"].max().rename("convergence").reset_index()
    return es.merge(conv, on=RUN)


def at_stops(records: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """The records (of ``split``, if given) at EARLY_STOP and at CONVERGENCE, with a ``duration`` column.

    The stops are chosen on the dev records, so pass the full records and
    select the split here, not before.
    """
    stops = early_stop(records)
    if split is not None:
        records = records[records["split"] == split]
    out = []
    for name in ("early_stop", "convergence"):
        sel = records.merge(stops[RUN + [name]].rename(columns={name: "epoch"}), on=RUN + ["epoch"])
        out.append(sel.assign(duration="EARLY_STOP" if name == "early_stop" else "CONVERGENCE"))
    return pd.concat(out, ignore_index=True)


def fitted_share(records: pd.DataFrame) -> pd.DataFrame:
    """Share of Known and of Unknown train examples fitted, per run and epoch.

    Returns:
        Columns ``variant, seed, epoch, group`` (Known/Unknown or a Known
        category), ``fitted``, ``n``.
    """
    train = records[records["split"] == "train"].copy()
    train["group"] = train["category"].where(train["category"] == "Unknown", "Known")
    by_group = train.groupby(RUN + ["epoch", "group"])["correct"].agg(fitted="mean", n="size").reset_index()
    by_cat = (
        train.groupby(RUN + ["epoch", "category"])["correct"]
        .agg(fitted="mean", n="size")
        .reset_index()
        .rename(columns={"category": "group"})
    )
    by_cat = by_cat[by_cat["group"].isin(KNOWN)]
    return pd.concat([by_group, by_cat], ignore_index=True)


def linear_points(records: pd.DataFrame, size, split: str = "test", min_epoch: int = 1) -> pd.DataFrame:
    """Points of the linear model (Sec. 4.4, App. G): one per run and epoch.

    ``acc`` is accuracy on ``split``; ``kn`` = N_kn/|D| and ``unk`` = N_unk/|D|
    count the Known and Unknown train examples fitted at that epoch, with |D|
    the full variant size for every run (D_Known runs are smaller, so their
    fractions stay below 1 - X).  The epoch-0 point (before fine-tuning) is
    excluded: the paper collects points after each epoch.

    Args:
        size: |D|, or a mapping seed -> |D| (each seed's world has its own).
    """
    rec = records[records["epoch"] >= min_epoch]
    train = rec[rec["split"] == "train"]
    unk = train["category"] == "Unknown"
    n_kn = train[~unk & train["correct"]].groupby(RUN + ["epoch"]).size().rename("n_kn")
    n_unk = train[unk & train["correct"]].groupby(RUN + ["epoch"]).size().rename("n_unk")
    acc = rec[rec["split"] == split].groupby(RUN + ["epoch"])["correct"].mean().rename("acc")
    pts = pd.concat([n_kn, n_unk, acc], axis=1).fillna({"n_kn": 0, "n_unk": 0}).reset_index()
    d = pts["seed"].map(size) if isinstance(size, dict) else size
    pts["kn"], pts["unk"] = pts["n_kn"] / d, pts["n_unk"] / d
    pts["run"] = pts["variant"] + "/" + pts["seed"].astype(str)
    return pts


def middle_share(shares: list[float]) -> float:
    """The one rule for "the middle variant": 50% Unknown when the grid has it (the paper's
    Figure 1 and Table 8), else the share closest to 50 (the lower one on a tie)."""
    if not len(shares):
        raise ValueError("no share of Unknown to choose from")
    return min((float(x) for x in shares), key=lambda x: (abs(x - 50), x))


def pct_unknown(variant: pd.Series) -> pd.Series:
    """The X of ``unknown_X`` / ``known_X`` / ``idk_X`` variant names, as a float."""
    return variant.str.rsplit("_", n=1).str[-1].astype(float)


def by_duration(records: pd.DataFrame, split: str = "test", epochs: list[int] | None = None) -> pd.DataFrame:
    """Accuracy on ``split`` at EARLY_STOP, at fixed epochs and at CONVERGENCE (Figure 3a).

    Returns:
        Columns ``variant, seed, duration, epoch, accuracy``.
    """
    acc = accuracy(records[records["split"] == split])
    stops = early_stop(records)
    last = int(records["epoch"].max())
    epochs = epochs if epochs is not None else sorted({max(1, last // 4), max(1, last // 2), max(1, 3 * last // 4)})
    rows = [
        acc.merge(stops[RUN + ["early_stop"]].rename(columns={"early_stop": "epoch"}), on=RUN + ["epoch"]).assign(
            duration="EARLY_STOP"
        )
    ]
    rows += [acc[acc["epoch"] == e].assign(duration=f"epoch {e}") for e in epochs if e < last]
    rows.append(
        acc.merge(stops[RUN + ["convergence"]].rename(columns={"convergence": "epoch"}), on=RUN + ["epoch"]).assign(
            duration="CONVERGENCE"
        )
    )
    return pd.concat(rows, ignore_index=True)[RUN + ["duration", "epoch", "accuracy"]]


def harm_table(records: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """D (``unknown_X``) vs D_Known (``known_X``) at EARLY_STOP and CONVERGENCE (Figure 3b).

    ``known_0`` is ``unknown_0`` (no Unknown to remove); D_Known of X = 100 is
    empty and has no run.

    Returns:
        Columns ``pct_unknown, data`` (D / D_Known), ``seed, duration, epoch, accuracy``.
    """
    d = by_duration(records, split, epochs=[])
    d = d[d["variant"].str.match(r"^(unknown|known)_")].copy()
    d["pct_unknown"] = pct_unknown(d["variant"])
    d["data"] = d["variant"].str.startswith("unknown").map({True: "D", False: "D_Known"})
    zero = d[(d["data"] == "D") & (d["pct_unknown"] == 0)].assign(data="D_Known")
    return pd.concat([d, zero], ignore_index=True).sort_values(["data", "pct_unknown", "duration"])


def training_curves(records: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Figure 1: train accuracy on Known and Unknown examples, dev and test accuracy, per epoch.

    Returns:
        Columns ``seed, epoch, series, accuracy``.
    """
    rec = records[records["variant"] == variant]
    fit = fitted_share(rec)
    fit = fit[fit["group"].isin(["Known", "Unknown"])]
    out = [fit.assign(series="Train (" + fit["group"] + ")", accuracy=fit["fitted"])]
    for split, name in (("dev", "Dev"), ("test", "Test")):
        acc = accuracy(rec[rec["split"] == split])
        out.append(acc.assign(series=name))
    return pd.concat(out, ignore_index=True)[["seed", "epoch", "series", "accuracy"]]


def fitted_at_early_stop(records: pd.DataFrame) -> pd.DataFrame:
    """Figure 4: share of Known and of Unknown train examples fitted at EARLY_STOP, per variant.

    Returns:
        Columns ``variant, seed, pct_unknown, group`` (Known/Unknown), ``fitted``, ``epoch``.
    """
    rec = records[records["variant"].str.startswith("unknown_")]
    stops = early_stop(rec).rename(columns={"early_stop": "epoch"})[RUN + ["epoch"]]
    fit = fitted_share(rec).merge(stops, on=RUN + ["epoch"])
    fit = fit[fit["group"].isin(["Known", "Unknown"])].copy()
    fit["pct_unknown"] = pct_unknown(fit["variant"])
    # An empty group (no Unknown in D at X=0, no Known at X=100) has no share.
    return fit[fit["n"] > 0].reset_index(drop=True)


def epochs_to_fit(records: pd.DataFrame, variant: str, share: float = 0.9) -> pd.DataFrame:
    """First epoch at which ``share`` of each group of ``variant``'s train examples is fitted.

    Returns:
        Columns ``seed, group, epoch`` (NaN when never reached).
    """
    fit = fitted_share(records[records["variant"] == variant])
    rows = []
    for (seed, group), g in fit.groupby(["seed", "group"]):
        hit = g.loc[g["fitted"] >= share, "epoch"]
        rows.append((seed, group, hit.min() if len(hit) else float("nan")))
    return pd.DataFrame(rows, columns=["seed", "group", "epoch"])


# Section 5's single-category variants, in the paper's Table 2 order, with their display names.
TABLE2_VARIANTS = {
    "HighlyKnown": "D_HighlyKnown",
    "MaybeKnown": "D_MaybeKnown",
    "WeaklyKnown": "D_WeaklyKnown",
    "Unknown": "D_Unknown",
    "natural": "D_Natural",
}


def table2_long(records: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Accuracy per variant, seed, duration and test subset (All and each SliCK category).

    Returns:
        Columns ``variant`` (display name), ``seed, duration, subset, accuracy, n``.
    """
    at = at_stops(records[records["variant"].isin(list(TABLE2_VARIANTS))], split)
    per_cat = at.groupby(RUN + ["duration", "category"])["correct"].agg(accuracy="mean", n="size").reset_index()
    per_cat = per_cat.rename(columns={"category": "subset"})
    overall = (
        at.groupby(RUN + ["duration"])["correct"].agg(accuracy="mean", n="size").reset_index().assign(subset="All")
    )
    out = pd.concat([overall, per_cat], ignore_index=True)
    out["variant"] = out["variant"].map(TABLE2_VARIANTS)
    return out


def correct_at(records: pd.DataFrame, duration: str, split: str = "test") -> pd.DataFrame:
    """Per-question correctness of every run at one duration, side by side.

    Args:
        duration: "EARLY_STOP" or "CONVERGENCE" (each run's own epoch).

    Returns:
        Index ``(seed, example)``, one column per variant, values 0/1 (NaN where a
        variant has no run for that seed); the rows of one seed are the same
        questions for every variant, which is what paired tests need.
    """
    at = at_stops(records, split)
    at = at[at["duration"] == duration]
    wide = at.pivot_table(index=["seed", "example"], columns="variant", values="correct", aggfunc="first")
    wide.columns.name = None
    return wide.astype(float)


def correctness_at(records: pd.DataFrame, duration: str, seed: int, split: str = "test") -> pd.DataFrame:
    """Per-example correctness of every section-5 model at one duration, for the significance tests.

    Returns:
        Columns ``model`` (display name), ``example``, ``subset`` (the SliCK category), ``correct``.
    """
    at = at_stops(records[records["variant"].isin(list(TABLE2_VARIANTS)) & (records["seed"] == seed)], split)
    at = at[at["duration"] == duration]
    order = {name: i for i, name in enumerate(TABLE2_VARIANTS)}
    at = at.sort_values("variant", key=lambda v: v.map(order))
    return pd.DataFrame(
        {
            "model": at["variant"].map(TABLE2_VARIANTS),
            "example": at["example"],
            "subset": at["category"],
            "correct": at["correct"].astype(int),
        }
    )


def idk_outcomes(records: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Appendix K / Table 8: each question answered correctly, abstained on, or answered wrongly.

    A model fine-tuned on D_IDK (``idk_X``) may answer "I don't know" (the
    ``idk`` column of its records: its greedy answer matches "I don't know"
    after the same normalisation as exact match); the plain D (``unknown_X``)
    never has that column and counts as always answering.

    Returns:
        One row per run and duration: ``variant`` (D / D_IDK), ``seed``,
        ``duration``, ``correct``, ``abstained``, ``wrong`` (shares of the
        questions, summing to 1), ``answered`` (1 - abstained),
        ``accuracy_answered`` (correct / answered), ``n``.
    """
    at = at_stops(records[records["variant"].str.match(r"^(idk|unknown)_")], split).copy()
    at["idk"] = at["idk"].fillna(False).astype(bool) if "idk" in at else False
    rows = []
    for (variant, seed, duration), g in at.groupby(["variant", "seed", "duration"]):
        correct, abstained = g["correct"].astype(bool), g["idk"]
        answered = ~abstained
        rows.append(
            {
                "variant": "D_IDK" if variant.startswith("idk") else "D",
                "seed": seed,
                "duration": duration,
                "correct": (correct & answered).mean(),
                "abstained": abstained.mean(),
                "wrong": (~correct & answered).mean(),
                "answered": answered.mean(),
                "accuracy_answered": (correct & answered).sum() / answered.sum() if answered.any() else float("nan"),
                "n": len(g),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Setup checks: the paper's preconditions, measured before the findings.
# ---------------------------------------------------------------------------


def popular_answer_baseline(table: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The answer prior: accuracy of always answering the relation's most common train answer.

    A model that only learned each relation's answer distribution scores this
    much; test accuracy well above it means "Known" mostly means "stored".

    Args:
        table: SliCK table (``split``, ``relation``, ``answer``).
        split: where the baseline is scored (``test``; ``ood_test`` relations
            have no train answers and get none).

    Returns:
        One row per relation with ``popular`` (the answer), ``train_share`` (its
        share of train answers), ``baseline`` (its share of ``split``'s
        answers) and ``n``; a last row ``all`` weights relations by ``n``.
    """
    train = table[table["split"] == "train"]
    popular = train.groupby("relation")["answer"].agg(lambda a: a.value_counts().index[0])
    share = train.groupby("relation")["answer"].agg(lambda a: a.value_counts(normalize=True).iloc[0])
    sub = table[(table["split"] == split) & table["relation"].isin(popular.index)]
    hit = sub["answer"].to_numpy() == sub["relation"].map(popular).to_numpy()
    out = (
        pd.DataFrame({"relation": sub["relation"].to_numpy(), "hit": hit})
        .groupby("relation")["hit"]
        .agg(baseline="mean", n="size")
        .reset_index()
    )
    out.insert(1, "popular", out["relation"].map(popular))
    out.insert(2, "train_share", out["relation"].map(share))
    total = pd.DataFrame(
        [
            {
                "relation": "all",
                "popular": "",
                "train_share": float("nan"),
                "baseline": float(hit.mean()) if len(hit) else float("nan"),
                "n": len(hit),
            }
        ]
    )
    return pd.concat([out, total], ignore_index=True)


def known_never_exposed(table: pd.DataFrame) -> pd.DataFrame:
    """Share of Known facts (SliCK) that pretraining never showed, per split (controlled world only).

    Such facts are "known" by guessing from the answer prior, not from storage.

    Returns:
        One row per split with ``known`` (number of Known facts), ``never_exposed``
        (how many of them have 0 exposures) and ``share``.
    """
    sub = table[(table["category"] != "Unknown") & table["exposures"].notna()]
    g = sub.groupby("split")["exposures"]
    out = pd.DataFrame({"known": g.size(), "never_exposed": g.agg(lambda e: int((e == 0).sum()))})
    out["share"] = out["never_exposed"] / out["known"]
    return out.reset_index()


def epoch_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per run and epoch: dev/test accuracy, HighlyKnown dev accuracy, Known and Unknown fitted.

    The setup checks of EARLY_STOP: the format is learned when HighlyKnown dev
    questions are answered; Unknown examples should be mostly unfitted then.

    Returns:
        Columns ``variant, seed, epoch, dev, test, ood_test, dev_hk, train, known_fitted, unknown_fitted``
        (shares 0-1; NaN where a run has no such examples).
    """
    acc = accuracy(records).pivot_table(index=RUN + ["epoch"], columns="split", values="accuracy")
    hk = records[(records["split"] == "dev") & (records["category"] == "HighlyKnown")]
    acc["dev_hk"] = hk.groupby(RUN + ["epoch"])["correct"].mean()
    fit = fitted_share(records)
    for group, name in (("Known", "known_fitted"), ("Unknown", "unknown_fitted")):
        acc[name] = fit[fit["group"] == group].set_index(RUN + ["epoch"])["fitted"]
    cols = [c for c in ("dev", "test", "ood_test", "dev_hk", "train", "known_fitted", "unknown_fitted") if c in acc]
    return acc[cols].reset_index()


def gap_by_epoch(records: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """D minus D_Known accuracy on ``split`` at every epoch (not only at the two stops), per X and seed.

    Returns:
        Columns ``pct_unknown, seed, epoch, D, D_Known, gap`` (shares 0-1).
    """
    acc = accuracy(records[(records["split"] == split) & records["variant"].str.match(r"^(unknown|known)_")])
    acc["pct_unknown"] = pct_unknown(acc["variant"])
    acc["data"] = acc["variant"].str.startswith("unknown").map({True: "D", False: "D_Known"})
    wide = acc.pivot_table(index=["pct_unknown", "seed", "epoch"], columns="data", values="accuracy")
    wide = wide.reindex(columns=["D", "D_Known"]).dropna()  # pairs only: X with both runs
    wide["gap"] = wide["D"] - wide["D_Known"]
    return wide.reset_index()
