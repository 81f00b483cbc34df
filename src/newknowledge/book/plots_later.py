"""The figures of chapters 4-8 from tidy tables: Table 1 (the linear model), Table 2 (knowledge types),
Figure 5 (SliCK against P(True)), Table 8 ("I don't know") and chapter 8's model sizes.

In the book's style and with the helpers of :mod:`newknowledge.book.plots` (chapters 1-3); each function
takes tidy DataFrames (and an optional ``ax``) and returns ``(fig, ax)``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from newknowledge.book.plots import (
    GROUP_COLORS,
    PALETTE,
    WIDTH,
    _duration_key,
    _fig_ax,
    _finish,
    _grouped_bars,
    _line,
    _styled,
    _summary,
)
from newknowledge.core.tidy import require_columns
from newknowledge.knowledge.categories import ABBREV, CATEGORIES


@_styled
def linear_fit(points: pd.DataFrame, result, ax=None):
    """Table 1's linear model: observed vs predicted test accuracy (%), one colour per variant.

    Args:
        points: one row per run x epoch: ``acc`` (0-1), ``kn``, ``unk`` (fitted Known/Unknown / |D|), ``variant``.
        result: a :class:`newknowledge.evaluation.stats.LinearModelResult`; the equation shows coefficients x 100.
    """
    require_columns(points, ["acc", "kn", "unk", "variant"], "points")
    pred = (100 * (result.b0 + result.b_kn * points["kn"] + result.b_unk * points["unk"])).to_numpy()
    obs = (100 * points["acc"]).to_numpy()
    variants = list(pd.unique(points["variant"]))
    palette = sns.color_palette("colorblind" if len(variants) <= len(PALETTE) else "viridis", len(variants))
    fig, ax = _fig_ax(ax, 4.2, width=6.2)
    for v, c in zip(variants, palette):
        m = (points["variant"] == v).to_numpy()
        ax.scatter(pred[m], obs[m], s=14, color=c, alpha=0.8, label=str(v), edgecolors="none")
    lo, hi = np.nanmin(np.r_[pred, obs]) - 1, np.nanmax(np.r_[pred, obs]) + 1  # 1 point of margin
    ax.axline((lo, lo), slope=1, ls="--", color="0.4", lw=1, label="y = x")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
    terms = "".join(
        f" {'+' if b >= 0 else '−'} {abs(100 * b):.1f}·{t}" for b, t in ((result.b_kn, "kn"), (result.b_unk, "unk"))
    )
    ax.text(
        0.03,
        0.97,
        f"acc = {100 * result.b0:.1f}{terms}\nR² = {result.r2:.2f}",
        transform=ax.transAxes,
        va="top",
        fontsize=9,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
    )
    _finish(
        ax,
        "predicted test accuracy (%)",
        "observed test accuracy (%)",
        "Linear model of test accuracy (points: run × epoch)",
        legend=("variant",),
        markerscale=1.5,
    )
    return fig, ax


# Knowledge types (Sec. 5), SliCK vs P(True) (Sec. 6), "I don't know" (Table 8)
@_styled
def table2_heatmap(acc: pd.DataFrame, ax=None):
    """Table 2: an annotated heat map per duration, best per column bold; returns ``(fig, axes)``.

    Args:
        acc: ``variant`` (rows in the order given), ``subset`` (All, HighlyKnown, ...), ``duration``
            (EARLY_STOP/CONVERGENCE), ``accuracy`` (0-1), optionally ``seed`` (averaged).
        ax: None, or a sequence of Axes, one per duration; they share one 0-100% colour bar.
    """
    s, note = _summary(acc, ["duration", "variant", "subset"], "accuracy", "acc")
    variants, present, first = list(pd.unique(acc["variant"])), list(pd.unique(s["subset"])), ("All", *CATEGORIES)
    subsets = [c for c in first if c in present] + [c for c in present if c not in first]
    durations = sorted(pd.unique(s["duration"]), key=_duration_key)
    if ax is None:
        ax = plt.subplots(
            1, len(durations), figsize=(WIDTH + 0.5, 0.4 * len(variants) + 1.8), layout="constrained", squeeze=False
        )[1]
    axes = np.asarray(ax).ravel()
    fig = axes[0].figure
    for i, (d, a) in enumerate(zip(durations, axes)):
        wide = s[s["duration"] == d].pivot(index="variant", columns="subset", values="mean")
        wide = wide.reindex(index=variants, columns=subsets)
        sns.heatmap(
            wide,
            ax=a,
            vmin=0,
            vmax=100,
            cmap="viridis",
            annot=True,
            fmt=".1f",
            annot_kws={"fontsize": 9},
            linewidths=0.5,
            cbar=False,
        )
        for text in a.texts:  # cell centres are at (col + 0.5, row + 0.5)
            if text.get_text() == f"{np.nanmax(wide.iloc[:, int(text.get_position()[0])]):.1f}":
                text.set_fontweight("bold")
        a.set_xticks(np.arange(len(subsets)) + 0.5, [ABBREV.get(c, c) for c in subsets], rotation=0)
        a.set_yticks(np.arange(len(variants)) + 0.5, variants if i == 0 else [], rotation=0)
        a.tick_params(which="both", top=False, right=False, length=0)
        _finish(a, "test subset", "fine-tuning variant" if i == 0 else "", d)
    fig.colorbar(axes[0].collections[0], ax=list(axes), label="test accuracy (%)", fraction=0.04, pad=0.02)
    fig.suptitle(f"Test accuracy (%) by variant and test subset{f' ({note})' if note else ''}; bold: best in column")
    return fig, axes


@_styled
def threshold_sweep(sweep: pd.DataFrame, slick_points: pd.DataFrame | None = None, ax=None):
    """Figure 5: accuracy after fine-tuning on the test examples labelled Unknown vs their share (%).

    Args:
        sweep: ``method`` (e.g. "P(True)"), ``share`` (0-1, of the test set labelled Unknown), ``accuracy``
            (0-1), optionally ``threshold`` and ``seed`` (seeds averaged per threshold if given, else per share).
        slick_points: optional ``label``, ``share``, ``accuracy``: one marker each.
    """
    require_columns(sweep, ["method", "share", "accuracy"], "sweep")
    key = "threshold" if "threshold" in sweep.columns else "share"  # shares differ between seeds
    s, note = _summary(sweep, ["method", key], "accuracy", "sweep")
    if key == "threshold":  # the mean share of each threshold
        s = s.merge(sweep.groupby(["method", key], as_index=False)["share"].mean(), on=["method", key])
    fig, ax = _fig_ax(ax, 3.6)
    for i, m in enumerate(pd.unique(s["method"])):
        _line(
            ax,
            s[s["method"] == m].assign(share=lambda g: 100 * g["share"]),
            "share",
            bool(note),
            label=m,
            color=PALETTE[(i + 4) % len(PALETTE)],
            lw=1.8,
            marker=".",
            ms=6,
        )
    if slick_points is not None:
        require_columns(slick_points, ["label", "share", "accuracy"], "slick_points")
        for marker, (_, r) in zip("o^sDvP*X" * 4, slick_points.iterrows()):
            ax.scatter(
                100 * r["share"],
                100 * r["accuracy"],
                s=55,
                marker=marker,
                color=GROUP_COLORS["Unknown"],
                edgecolors="black",
                linewidths=0.6,
                zorder=4,
                label=str(r["label"]),
            )
    _finish(
        ax,
        "% of test set labelled Unknown",
        "accuracy after fine-tuning on them (%)",
        "Test examples labelled Unknown: accuracy after fine-tuning",
        legend=(note,),
    )
    return fig, ax


@_styled
def idk_bars(table: pd.DataFrame, ax=None):
    """Table 8: accuracy on the answered questions and % answered, side by side, per variant and duration.

    Args:
        table: ``variant`` ("D", "D_IDK"), ``duration``, ``accuracy_answered``, ``answered`` (0-1), [``seed``].
    """
    require_columns(table, ["variant", "duration", "accuracy_answered", "answered"], "table")
    t = table.assign(
        group=table["variant"].astype(str) + "\n" + table["duration"].astype(str),
        **{"accuracy on answered": table["accuracy_answered"]},
    )
    long = t.melt(
        id_vars=[c for c in ("group", "seed") if c in t.columns],
        value_vars=["accuracy on answered", "answered"],
        var_name="metric",
        value_name="value",
    )
    s, note = _summary(long, ["group", "metric"], "value", "table")
    colors = {"accuracy on answered": PALETTE[0], "answered": PALETTE[7]}
    fig, ax = _fig_ax(ax, 3.4)
    for bars, text_color in zip(_grouped_bars(ax, s, "group", "metric", colors, bool(note)), ("white", "black")):
        ax.bar_label(bars, fmt="%.1f", label_type="center", fontsize=9, color=text_color)
    _finish(
        ax,
        "fine-tuning data and duration",
        "accuracy or answer rate (%)",
        'Relabelling Unknown answers as "I don\'t know"',
        legend=(note,),
    )
    return fig, ax


def size_curves(curves: pd.DataFrame, margin: float):
    """Figure 8.1: D - D_Known on test (points) per epoch, and against the share of D's Unknown examples
    fitted, one line per model size (chapter 8).

    Args:
        curves: columns ``d_model, seed, epoch, gap, unknown_fitted`` (shares 0-1), as
            :func:`newknowledge.book.chapters.size.curves` gives per size.
        margin: finding 2's equivalence margin (a share), drawn as a grey band around 0.

    Returns:
        ``(fig, axes)`` with two panels.
    """
    require_columns(curves, ("d_model", "seed", "epoch", "gap", "unknown_fitted"), "size curves")
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.2), layout="constrained", sharey=True)
    mean = curves.groupby(["d_model", "epoch"])[["gap", "unknown_fitted"]].mean().reset_index()
    for k, (d, g) in enumerate(mean.groupby("d_model")):
        style = dict(color=PALETTE[k % len(PALETTE)], marker="o", markersize=3, label=f"d_model {d}")
        axes[0].plot(g["epoch"], 100 * g["gap"], **style)
        axes[1].plot(100 * g["unknown_fitted"], 100 * g["gap"], **style)
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.8)
        ax.axhspan(-100 * margin, 100 * margin, color="grey", alpha=0.12, lw=0)  # finding 2's equivalence margin
    axes[0].set(xlabel="epoch", ylabel="D - D_Known, test (points)")
    axes[1].set(xlabel="Unknown examples of D fitted (%)")
    axes[0].legend(frameon=False)
    return fig, axes
