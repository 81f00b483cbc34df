"""Plot functions on small synthetic tidy frames: right artists, right numbers, fixed colours."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from newknowledge.book import plots, plots_later  # noqa: E402
from newknowledge.evaluation import paper
from newknowledge.evaluation.stats import LinearModelResult, mean_ci  # noqa: E402
from newknowledge.knowledge import categories
from newknowledge.knowledge.categories import CATEGORIES  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _bars(ax) -> list:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _category_table() -> pd.DataFrame:
    rows = []
    for split, counts in {"train": (2, 1, 1, 4), "test": (1, 1, 1, 1), "ood_test": (0, 0, 1, 3)}.items():
        for cat, k in zip(CATEGORIES, counts):
            rows += [{"split": split, "relation": f"P{k % 2}", "category": cat}] * k
    return pd.DataFrame(rows)


def _acc_vs_unknown(durations, seeds=(0,)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        [
            {"pct_unknown": p, "duration": d, "seed": s, "accuracy": 0.4 - p / 1000 + rng.normal(0, 0.01)}
            for d in durations
            for p in (0, 25, 50, 75, 100)
            for s in seeds
        ]
    )


def test_category_distribution_bars_and_shares():
    fig, ax = plots.category_distribution(_category_table())
    assert isinstance(fig, Figure) and ax in fig.axes
    bars = _bars(ax)
    assert [b.get_label() for b in bars] == list(CATEGORIES)
    assert all(len(b) == 4 for b in bars)  # train, test, ood_test, paper
    widths = np.array([[p.get_width() for p in b] for b in bars])  # (category, bar), bars top to bottom
    assert np.allclose(widths.sum(axis=0), 100)
    assert np.allclose(widths[:, 0], [25, 12.5, 12.5, 50])  # train: 2, 1, 1, 4 of 8
    assert np.allclose(widths[:, -1], list(paper.CATEGORY_SHARES.values()))
    assert ax.get_yticklabels()[-1].get_text() == "paper (EQ train)"  # paper at the bottom


def test_category_distribution_rejects_unknown_category():
    with pytest.raises(ValueError, match="unknown categories"):
        plots.category_distribution(pd.DataFrame({"split": ["train"], "category": ["Known"]}))


def test_category_colours_are_fixed_across_figures():
    _, ax1 = plots.category_distribution(_category_table())
    _, ax2 = plots.category_by_relation(_category_table())
    for b1, b2 in zip(_bars(ax1), _bars(ax2)):
        assert b1.get_label() == b2.get_label()
        c = to_rgba(plots.CATEGORY_COLORS[b1.get_label()])
        assert b1.patches[0].get_facecolor() == c == b2.patches[0].get_facecolor()
    assert plots.GROUP_COLORS["Unknown"] == plots.CATEGORY_COLORS["Unknown"]
    assert len({to_rgba(c) for c in plots.CATEGORY_COLORS.values()}) == 4


def test_category_by_relation_uses_train_only():
    _, ax = plots.category_by_relation(_category_table())
    # train rows: HK x2 and Unknown x4 in P0, MK and WK in P1; most Unknown at the bottom (y = 0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["P1 (n=2)", "P0 (n=6)"]  # top first
    unknown = {p.get_y() < 0.5: p.get_width() for p in _bars(ax)[3]}
    assert np.isclose(unknown[True], 400 / 6) and unknown[False] == 0


def test_exposure_bucket_edges():
    b = categories.exposure_bucket(pd.Series([0, 1, 2, 3, 4, 5, 8, 9, 16, 17, 500]))
    assert list(b.astype(str)) == ["0", "1", "2", "3-4", "3-4", "5-8", "5-8", "9-16", "9-16", "17+", "17+"]
    assert b.cat.ordered and list(b.cat.categories) == list(categories.EXPOSURE_BUCKETS)
    with pytest.raises(ValueError):
        categories.exposure_bucket(pd.Series([-1, 2]))


def test_exposure_table_rows_sum_to_100_and_heatmap():
    table = pd.DataFrame(
        {
            "exposures": [0, 0, 0, 0, 3, 4, 20],
            "category": ["Unknown", "Unknown", "Unknown", "WeaklyKnown", "MaybeKnown", "HighlyKnown", "HighlyKnown"],
        }
    )
    t = categories.exposure_table(table)
    assert list(t.index) == ["0", "3-4", "17+"]  # empty buckets dropped, order kept
    assert np.allclose(t[list(CATEGORIES)].sum(axis=1), 100)
    assert t.loc["0", "Unknown"] == 75 and t.loc["3-4", "HighlyKnown"] == 50
    assert list(t["n"]) == [4, 2, 1]
    _, ax = plots.exposure_heatmap(table)
    assert len(ax.texts) == 3 * 4 and ax.texts[0].get_text().endswith("%")
    assert ax.get_yticklabels()[0].get_text() == "0 (n=4)"


def test_accuracy_vs_unknown_one_line_per_duration():
    fig, ax = plots.accuracy_vs_unknown(_acc_vs_unknown(["EARLY_STOP", "epoch 5", "CONVERGENCE"]))
    assert isinstance(fig, Figure)
    assert len(ax.get_lines()) == 3 and not _bands(ax)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["EARLY_STOP", "epoch 5", "CONVERGENCE"]
    es = ax.get_lines()[0]
    assert es.get_linewidth() > ax.get_lines()[1].get_linewidth()  # EARLY_STOP emphasised
    assert np.allclose(es.get_ydata()[0], 100 * _acc_vs_unknown(["EARLY_STOP"])["accuracy"].iloc[0])
    assert ax.get_xlabel() == "% Unknown in D" and "%" in ax.get_ylabel()


def test_multi_seed_draws_ci_band_with_t_interval():
    acc = _acc_vs_unknown(["EARLY_STOP", "CONVERGENCE"], seeds=(0, 1, 2))
    _, ax = plots.accuracy_vs_unknown(acc)
    bands = _bands(ax)
    assert len(bands) == 2 and "3 seeds" in ax.get_legend().get_title().get_text()
    # the top of the first band at pct_unknown=0 is the t interval of the three seeds
    g = acc[(acc["duration"] == "EARLY_STOP") & (acc["pct_unknown"] == 0)]["accuracy"]
    _, _, high = mean_ci(g)
    verts = bands[0].get_paths()[0].vertices
    assert np.isclose(verts[verts[:, 0] == 0, 1].max(), 100 * high)
    assert np.isclose(ax.get_lines()[0].get_ydata()[0], 100 * g.mean())


def test_d_vs_dknown_four_lines_solid_and_dashed():
    acc = pd.concat([_acc_vs_unknown(["EARLY_STOP", "CONVERGENCE"]).assign(data=d) for d in ("D", "D_Known")])
    _, ax = plots.d_vs_dknown(acc)
    lines = ax.get_lines()
    assert len(lines) == 4
    assert sorted(ln.get_linestyle() for ln in lines) == ["-", "-", "--", "--"]
    colours = {ln.get_label(): to_rgba(ln.get_color()) for ln in lines}
    assert (
        colours["$D$, EARLY_STOP"] == colours["$D_{Known}$, EARLY_STOP"] == to_rgba(plots.DURATION_COLORS["EARLY_STOP"])
    )


def test_training_curves_and_early_stop_marker():
    curves = pd.DataFrame(
        [
            {"epoch": e, "series": s, "seed": seed, "accuracy": min(1, e / k) + 0.01 * seed}
            for e in range(6)
            for s, k in (("Train (Known)", 2), ("Train (Unknown)", 8), ("Dev", 5))
            for seed in (0, 1)
        ]
    )
    fig, ax = plots.training_curves(curves, early_stop=3)
    lines = ax.get_lines()
    assert len(lines) == 4  # 3 series + the EARLY_STOP line
    # EARLY_STOP is named in the legend, not above the axes where a caller's title would run into it
    assert "EARLY_STOP" in [t.get_text() for t in ax.get_legend().get_texts()] and not ax.texts
    ax.set_title("Figure 3.1: train accuracy (Known / Unknown examples) and dev/test accuracy, unknown_50")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = ax.title.get_window_extent(renderer)
    assert not any(title.overlaps(t.get_window_extent(renderer)) for t in ax.get_legend().get_texts())
    assert to_rgba(lines[1].get_color()) == to_rgba(plots.GROUP_COLORS["Unknown"])
    assert lines[1].get_linestyle() == "-" and lines[2].get_linestyle() == "--"
    assert len(_bands(ax)) == 3
    _, ax = plots.training_curves(curves[curves["seed"] == 0])
    assert len(ax.get_lines()) == 3 and not ax.texts and not _bands(ax)


def test_fitted_at_early_stop_grouped_bars_with_error_bars():
    shares = pd.DataFrame(
        [
            {"pct_unknown": p, "group": g, "seed": s, "fitted": 0.9 if g == "Known" else 0.2 + 0.01 * s}
            for p in (0, 50, 100)
            for g in ("Known", "Unknown")
            for s in (0, 1, 2)
            if not (p == 0 and g == "Unknown") and not (p == 100 and g == "Known")
        ]
    )
    _, ax = plots.fitted_at_early_stop(shares)
    assert sum(len(b) for b in _bars(ax)) == 4  # absent combinations draw no bar
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    _, ax = plots.fitted_at_early_stop(shares[shares["seed"] == 0].drop(columns="seed"))
    assert not any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0%", "50%", "100%"]


def test_linear_fit_scatter_equation():
    pts = pd.DataFrame(
        {"kn": [0.1, 0.5, 0.9, 0.2, 0.6], "unk": [0.0, 0.1, 0.2, 0.3, 0.5], "variant": ["a", "a", "b", "b", "c"]}
    )
    pts["acc"] = 0.369 + 0.073 * pts["kn"] - 0.083 * pts["unk"]
    res = LinearModelResult(b0=0.369, b_kn=0.073, b_unk=-0.083, ci={}, r2=0.86, n=5, n_clusters=None, summary="")
    _, ax = plots_later.linear_fit(pts, res)
    assert len(ax.collections) == 3  # one scatter per variant
    xy = np.vstack([c.get_offsets() for c in ax.collections])
    assert np.allclose(xy[:, 0], xy[:, 1])  # exact fit: predicted == observed
    text = ax.texts[0].get_text()
    assert "36.9" in text and "+ 7.3·kn" in text and "− 8.3·unk" in text and "R² = 0.86" in text


def test_table2_heatmap_two_panels_bold_best():
    variants = ["D_HighlyKnown", "D_MaybeKnown", "D_Natural"]
    subsets = ["All", *CATEGORIES]
    acc = pd.DataFrame(
        [
            {"variant": v, "subset": s, "duration": d, "accuracy": (i + 1) / 10 + j / 100 + k / 50}
            for k, d in enumerate(("CONVERGENCE", "EARLY_STOP"))
            for i, v in enumerate(variants)
            for j, s in enumerate(subsets)
        ]
    )
    fig, axes = plots_later.table2_heatmap(acc)
    assert len(axes) == 2 and [a.get_title() for a in axes] == ["EARLY_STOP", "CONVERGENCE"]
    assert all(len(a.texts) == 3 * 5 for a in axes)
    assert [t.get_text() for t in axes[0].get_yticklabels()] == variants
    bold = [t.get_text() for t in axes[0].texts if t.get_fontweight() == "bold"]
    assert bold == ["32.0", "33.0", "34.0", "35.0", "36.0"]  # D_Natural (last row) is best everywhere
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["All", "HK", "MK", "WK", "Unk"]
    mesh = [a.collections[0] for a in axes]
    assert all(m.get_clim() == (0, 100) for m in mesh)


def test_threshold_sweep_lines_and_markers():
    sweep = pd.DataFrame(
        [
            {"method": m, "share": s, "accuracy": s / 2 + (m == "P(True)") * 0.2}
            for m in ("P(True)", "SliCK N_ex")
            for s in (0.1, 0.3, 0.5)
        ]
    )
    pts = pd.DataFrame({"label": ["SliCK Unknown"], "share": [0.36], "accuracy": [0.03]})
    _, ax = plots_later.threshold_sweep(sweep, pts)
    assert len(ax.get_lines()) == 2 and len(ax.collections) == 1
    assert np.allclose(ax.collections[0].get_offsets(), [[36, 3]])
    assert np.allclose(ax.get_lines()[0].get_xdata(), [10, 30, 50])


def test_idk_bars_two_metrics_per_group():
    table = pd.DataFrame(
        {
            "variant": ["D", "D", "D_IDK", "D_IDK"],
            "duration": ["EARLY_STOP", "CONVERGENCE"] * 2,
            "accuracy_answered": [0.43, 0.388, 0.618, 0.618],
            "answered": [1, 1, 0.587, 0.556],
        }
    )
    _, ax = plots_later.idk_bars(table)
    bars = _bars(ax)
    assert len(bars) == 2 and all(len(b) == 4 for b in bars)
    assert np.allclose([p.get_height() for p in bars[0]], [43, 38.8, 61.8, 61.8])
    assert "58.7" in [t.get_text() for t in ax.texts]


def test_save_writes_png(tmp_path):
    fig, _ = plots.accuracy_vs_unknown(_acc_vs_unknown(["EARLY_STOP"]))
    path = plots.save(fig, tmp_path / "a" / "b" / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_column_is_reported():
    with pytest.raises(ValueError, match="pct_unknown"):
        plots.accuracy_vs_unknown(pd.DataFrame({"duration": ["EARLY_STOP"], "accuracy": [0.5]}))


def test_given_axes_are_drawn_on():
    fig, axes = plt.subplots(1, 2)
    out_fig, out_ax = plots.accuracy_vs_unknown(_acc_vs_unknown(["EARLY_STOP"]), ax=axes[1])
    assert out_fig is fig and out_ax is axes[1] and not axes[0].get_lines()


def test_table2_given_axes_and_seed_note():
    acc = pd.DataFrame(
        [
            {"variant": v, "subset": s, "duration": d, "seed": seed, "accuracy": 0.5 + 0.1 * seed}
            for v in ("D_A", "D_B")
            for s in ("All", "Unknown")
            for d in ("EARLY_STOP", "CONVERGENCE")
            for seed in (0, 1)
        ]
    )
    fig, given = plt.subplots(1, 2)
    out_fig, axes = plots_later.table2_heatmap(acc, ax=given)
    assert out_fig is fig and list(axes) == list(given)
    assert "2 seeds" in fig._suptitle.get_text()
    assert axes[0].texts[0].get_text() == "55.0"  # mean over the two seeds


def test_threshold_sweep_pairs_seeds_by_threshold():
    sweep = pd.DataFrame(
        {
            "method": "P(True)",
            "threshold": [0.2, 0.4, 0.2, 0.4, 0.2, 0.4],
            "seed": [0, 0, 1, 1, 2, 2],
            "share": [0.1, 0.3, 0.2, 0.4, 0.15, 0.35],
            "accuracy": [0.1, 0.2, 0.12, 0.22, 0.11, 0.21],
        }
    )
    _, ax = plots_later.threshold_sweep(sweep)
    line = ax.get_lines()[0]
    assert np.allclose(line.get_xdata(), [15, 35]) and np.allclose(line.get_ydata(), [11, 21])
    assert len(_bands(ax)) == 1 and "3 seeds" in ax.get_legend().get_title().get_text()


def test_style_is_latex_free_and_readable():
    plots.use()
    assert matplotlib.rcParams["text.usetex"] is False
    assert min(matplotlib.rcParams[k] for k in ("font.size", "legend.fontsize", "xtick.labelsize")) >= 9


def test_every_figure_of_a_notebook_is_displayed(tmp_path):
    """Regression: restoring matplotlib settings after a plot hid every later figure of a notebook."""
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    setup = (
        "import pandas as pd\nimport matplotlib.pyplot as plt\nfrom newknowledge.book import plots\n"
        "df = pd.DataFrame({'pct_unknown': [0, 50, 100] * 2, 'duration': ['EARLY_STOP'] * 3 + ['CONVERGENCE'] * 3,"
        " 'accuracy': [.5, .5, .5, .5, .4, .3]})"
    )
    nb.cells = [new_code_cell(setup)] + [new_code_cell("fig, ax = plots.accuracy_vs_unknown(df)") for _ in range(2)]
    nb.cells.append(new_code_cell("fig, ax = plt.subplots(); ax.plot([1, 2]);"))
    nbformat.write(nb, tmp_path / "in.ipynb")
    papermill.execute_notebook(
        str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False
    )
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    images = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in out.cells[1:]]
    assert images == [1, 1, 1]
