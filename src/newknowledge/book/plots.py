"""The book's plot style and the figures of chapters 1-3 (Fig. 1, 3a, 3b, 4 and plots of the data).

The figures of chapters 4-8 (Tables 1, 2 and 8, Fig. 5, model size) are in :mod:`newknowledge.book.plots_later`,
drawn with this module's style and helpers.

Each function takes tidy DataFrames and an optional ``ax``, draws in the book's style (:func:`use`), returns ``(fig, ax)``.
Accuracies are fractions in [0, 1], drawn in %. Several seeds (a ``seed`` column) give the mean and a t-based
95% interval over seeds (:func:`newknowledge.evaluation.stats.summarize_seeds`). Colours are fixed (colour-blind palette).
"""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

with warnings.catch_warnings():  # scienceplots 2.x calls style helpers deprecated in matplotlib 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    import scienceplots  # noqa: F401  (registers the "science" styles)

from newknowledge.core.tidy import require_columns
from newknowledge.evaluation import paper
from newknowledge.evaluation.stats import summarize_seeds
from newknowledge.knowledge import categories
from newknowledge.knowledge.categories import CATEGORIES

PALETTE = tuple(sns.color_palette("colorblind"))
CATEGORY_COLORS = dict(zip(CATEGORIES, (PALETTE[0], PALETTE[2], PALETTE[1], PALETTE[3])))  # blue green orange red
GROUP_COLORS = {"Known": PALETTE[0], "Unknown": PALETTE[3]}  # Unknown as in CATEGORY_COLORS
DURATION_COLORS = {"EARLY_STOP": PALETTE[2], "CONVERGENCE": PALETTE[4]}
SPLIT_ORDER = ("train", "dev", "test", "ood_test")
WIDTH = 6.5  # inches: the page width of the book
_RC = {
    "text.usetex": False,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "xtick.minor.visible": False,
    "ytick.minor.visible": False,
}  # no minor ticks on categories


def use() -> None:
    """The book's look, applied globally: scienceplots' "science" + "no-latex" styles, readable font sizes.

    The one style entry point: notebooks call it once (``pipeline.start`` does) and every plot
    function calls it before drawing.  It restores nothing on purpose: restoring matplotlib's
    settings after a figure (``rc_context``) switches off the inline backend's display of every
    later figure in a notebook (measured: only the first figure of a chapter showed).
    """
    plt.style.use(["science", "no-latex"])
    mpl.rcParams.update(_RC)


def _styled(draw):
    """Decorator: apply :func:`use` before a plot function draws."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        use()
        return draw(*args, **kwargs)

    return wrapper


def save(fig, path) -> Path:
    """Write ``fig`` as PNG at dpi 150 with a tight bounding box, creating parent folders; returns the path."""
    (path := Path(path)).parent.mkdir(parents=True, exist_ok=True)
    use()
    fig.savefig(path, dpi=150, bbox_inches="tight", format="png")
    return path


def _fig_ax(ax, height: float, width: float = WIDTH):
    return plt.subplots(figsize=(width, height), layout="constrained") if ax is None else (ax.figure, ax)


def _finish(ax, xlabel: str, ylabel: str, title: str, legend: tuple | None = None, pad: float = 6, **kw) -> None:
    """Axis labels, title and, if ``legend`` (title lines; empty ones dropped), a legend right of the axes."""
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, pad=pad)
    if legend is not None:  # outside the axes, so it never covers data
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), title="\n".join(filter(None, legend)) or None, **kw)


def _summary(df: pd.DataFrame, by: list[str], value: str, name: str) -> tuple[pd.DataFrame, str]:
    """Mean and 95% CI of ``value``, in %, per group of ``by``; a note on the seeds ("" for one)."""
    require_columns(df, [*by, value], name)
    s = summarize_seeds(df, by, value)
    s[["mean", "ci_low", "ci_high"]] *= 100
    n = df["seed"].nunique() if "seed" in df.columns else 1
    return s, f"mean ± 95% CI over {n} seeds" if n > 1 else ""


def _line(ax, s: pd.DataFrame, x: str, band: bool, **kw):  # mean vs x, and the CI band in the same colour
    s = s.sort_values(x)
    (line,) = ax.plot(s[x], s["mean"], **kw)
    if band:
        ax.fill_between(s[x], s["ci_low"], s["ci_high"], color=line.get_color(), alpha=0.2, lw=0)


def _duration_key(name: str):  # EARLY_STOP, then "epoch k" by k, CONVERGENCE, anything else
    m = re.search(r"\d+", name)
    return ({"EARLY_STOP": 0, "CONVERGENCE": 2}.get(name, 1 if m else 3), int(m.group()) if m else 0, name)


# Data: SliCK categories (Sec. 3)
def _stacked_barh(ax, shares: pd.DataFrame, title: str) -> None:
    """Bars stacked by category; ``shares``: rows = bars (top first), columns CATEGORIES (%) and n (0: no label)."""
    y, left = np.arange(len(shares))[::-1], np.zeros(len(shares))
    labels = [f"{i} (n={n:,.0f})" if n else str(i) for i, n in zip(shares.index, shares["n"])]
    for cat in CATEGORIES:
        w = shares[cat].to_numpy(dtype=float)
        bars = ax.barh(y, w, left=left, color=CATEGORY_COLORS[cat], label=cat, height=0.7, edgecolor="white")
        ax.bar_label(
            bars,
            labels=[f"{v:.0f}" if v >= 6 else "" for v in w],
            label_type="center",
            fontsize=9,
            color="black" if cat == "WeaklyKnown" else "white",
        )
        left += w
    ax.set(yticks=y, yticklabels=labels, xlim=(0, 100))
    ax.tick_params(axis="y", which="both", left=False, right=False)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=4, handlelength=1.2)
    _finish(ax, "share of examples (%)", "", title, pad=22)


@_styled
def category_distribution(table: pd.DataFrame, paper_shares: dict | None = paper.CATEGORY_SHARES, ax=None):
    """Share (%) of each SliCK category per split, and the paper's ENTITYQUESTIONS train shares.

    Args:
        table: one row per example: ``split``, ``category``.
        paper_shares: category -> %, drawn as the bar "paper (EQ train)"; None to omit.
    """
    require_columns(table, ["split", "category"], "table")
    shares = categories.shares(table, "split")
    shares = shares.loc[sorted(shares.index, key=lambda s: (*SPLIT_ORDER, s).index(s))]  # other splits last
    if paper_shares is not None:
        shares = pd.concat([shares, pd.DataFrame([paper_shares], index=["paper (EQ train)"])]).fillna(0)
    fig, ax = _fig_ax(ax, 0.45 * len(shares) + 1.4)
    _stacked_barh(ax, shares, "SliCK categories per split")
    return fig, ax


@_styled
def category_by_relation(table: pd.DataFrame, ax=None):
    """Category shares (%) per relation, most Unknown at the bottom.

    Args:
        table: one row per example: ``relation``, ``category``, optionally ``split`` (then train rows only).
    """
    require_columns(table, ["relation", "category"], "table")
    if "split" in table.columns:
        table = table[table["split"] == "train"]
    shares = categories.shares(table, "relation").sort_values("Unknown")
    fig, ax = _fig_ax(ax, 0.3 * len(shares) + 1.4)
    _stacked_barh(ax, shares, "SliCK categories per relation (train)")
    return fig, ax


@_styled
def exposure_heatmap(table: pd.DataFrame, ax=None):
    """Heat map of :func:`exposure_table` (same input): category mix per pre-training exposure bucket."""
    data = categories.exposure_table(table)
    fig, ax = _fig_ax(ax, 0.38 * len(data) + 1.6, width=6.0)
    cells = data[list(CATEGORIES)]
    sns.heatmap(
        cells,
        ax=ax,
        vmin=0,
        vmax=100,
        cmap="viridis",
        annot=cells.map(lambda v: f"{v:.0f}%"),
        fmt="",
        annot_kws={"fontsize": 9},
        linewidths=0.5,
        cbar_kws={"label": "% of bucket"},
    )
    ax.set_yticks(np.arange(len(data)) + 0.5, [f"{b} (n={n:,})" for b, n in zip(data.index, data["n"])], rotation=0)
    ax.tick_params(which="both", top=False, right=False, length=0)
    _finish(ax, "SliCK category", "pre-training exposures of the fact", "Category mix by pre-training exposures")
    return fig, ax


# Fine-tuning on Unknown examples (Sec. 4)
@_styled
def accuracy_vs_unknown(acc: pd.DataFrame, ax=None, title: str = "Test accuracy vs % Unknown in D"):
    """Figure 3a: test accuracy (%) vs % Unknown, one line per training duration.

    Args:
        acc: ``pct_unknown`` (0..100), ``duration`` (EARLY_STOP, "epoch 5", ...), ``accuracy`` (0-1), [``seed``].
    """
    s, note = _summary(acc, ["duration", "pct_unknown"], "accuracy", "acc")
    durations = sorted(pd.unique(s["duration"]), key=_duration_key)
    greys = iter(sns.color_palette("Greys", sum(d not in DURATION_COLORS for d in durations) + 2)[2:])  # later: darker
    fig, ax = _fig_ax(ax, 3.6)
    for d in durations:
        main = d in DURATION_COLORS
        _line(
            ax,
            s[s["duration"] == d],
            "pct_unknown",
            bool(note),
            label=d,
            lw=2.2 if main else 1.2,
            color=DURATION_COLORS[d] if main else next(greys),
            ms=5 if main else 4,
            zorder=3 if main else 2,
            marker={"EARLY_STOP": "o", "CONVERGENCE": "s"}.get(d, "."),
        )
    _finish(ax, "% Unknown in D", "test accuracy (%)", title, legend=("training duration", note))
    return fig, ax


@_styled
def d_vs_dknown(acc: pd.DataFrame, ax=None):
    """Figure 3b: D (solid) vs D_Known (dashed), one colour per duration.

    Args:
        acc: ``pct_unknown``, ``duration``, ``data`` ("D" or "D_Known"), ``accuracy`` (0-1), [``seed``].
    """
    s, note = _summary(acc, ["duration", "data", "pct_unknown"], "accuracy", "acc")
    fig, ax = _fig_ax(ax, 3.6)
    for d in sorted(pd.unique(s["duration"]), key=_duration_key):
        for data, ls, marker, name in (("D", "-", "o", "$D$"), ("D_Known", "--", "^", "$D_{Known}$")):
            if len(g := s[(s["duration"] == d) & (s["data"] == data)]):
                _line(
                    ax,
                    g,
                    "pct_unknown",
                    bool(note),
                    ls=ls,
                    lw=1.8,
                    marker=marker,
                    ms=4,
                    color=DURATION_COLORS.get(d, "0.4"),
                    label=f"{name}, {d}",
                )
    _finish(
        ax, "% Unknown in D", "test accuracy (%)", "Fine-tuning on D vs on D_Known (D without Unknown)", legend=(note,)
    )
    return fig, ax


@_styled
def training_curves(curves: pd.DataFrame, early_stop: float | None = None, ax=None):
    """Figure 1: accuracy (%) per epoch for each series, EARLY_STOP marked by a dotted line (in the legend).

    Args:
        curves: ``epoch``, ``series`` ("Train (Known)", "Train (Unknown)": GROUP_COLORS, solid; others such
            as "Dev": dashed), ``accuracy`` (0-1), optionally ``seed``.
        early_stop: the EARLY_STOP epoch, or None.
    """
    s, note = _summary(curves, ["series", "epoch"], "accuracy", "curves")
    fig, ax = _fig_ax(ax, 3.6)
    other = iter(["black", PALETTE[5], PALETTE[7], *PALETTE[8:]] * 3)  # colours of series such as Dev
    for name in pd.unique(s["series"]):
        group = "Unknown" if "Unknown" in name else "Known" if "Known" in name else None  # "Unknown" lacks "Known"
        _line(
            ax,
            s[s["series"] == name],
            "epoch",
            bool(note),
            label=name,
            lw=1.8,
            ls="-" if group else "--",
            color=GROUP_COLORS[group] if group else next(other),
        )
    if early_stop is not None:
        # Named in the legend, not written above the axes, where a caller's title would run into it.
        ax.axvline(early_stop, color="0.3", ls=":", lw=1.2, label="EARLY_STOP")
    ax.set_ylim(-2, 102)
    _finish(ax, "epoch", "accuracy (%)", "Fitting Known vs Unknown train examples", legend=(note,))
    return fig, ax


def _grouped_bars(ax, s: pd.DataFrame, x: str, hue: str, colors: dict, band: bool, xfmt: str = "{}") -> list:
    """Bars of ``mean`` per ``x``, one per hue (keys of ``colors``) side by side; CI error bars if ``band``."""
    xs, hues = list(pd.unique(s[x])), [h for h in colors if h in set(s[hue])]
    width, containers = 0.8 / len(hues), []
    for j, h in enumerate(hues):
        g = s[s[hue] == h].set_index(x).reindex(xs).dropna(subset=["mean"])  # absent combinations: no bar
        pos = np.array([xs.index(v) for v in g.index]) + (j - (len(hues) - 1) / 2) * width
        containers.append(ax.bar(pos, g["mean"], width=width * 0.95, color=colors[h], label=str(h)))
        if band:
            err = np.nan_to_num(np.vstack([g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]]))
            ax.errorbar(pos, g["mean"], yerr=err, fmt="none", ecolor="black", elinewidth=1, capsize=2)
    ax.set_xticks(np.arange(len(xs)), [xfmt.format(v) for v in xs])
    ax.tick_params(axis="x", which="both", top=False, bottom=False)
    ax.set_ylim(0, 105)
    return containers


@_styled
def fitted_at_early_stop(shares: pd.DataFrame, ax=None):
    """Figure 4: % of the Known and of the Unknown train examples fitted at EARLY_STOP, per variant.

    Args:
        shares: ``pct_unknown``, ``group`` ("Known"/"Unknown"), ``fitted`` (0-1), optionally ``seed``.
    """
    s, note = _summary(shares, ["pct_unknown", "group"], "fitted", "shares")
    fig, ax = _fig_ax(ax, 3.4)
    _grouped_bars(
        ax, s.sort_values("pct_unknown", kind="stable"), "pct_unknown", "group", GROUP_COLORS, bool(note), xfmt="{:g}%"
    )
    _finish(
        ax,
        "% Unknown in D",
        "train examples fitted (%)",
        "Known vs Unknown examples fitted at EARLY_STOP",
        legend=("train examples", note),
    )
    return fig, ax
