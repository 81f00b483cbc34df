"""The findings page, chapter 6 and 7 analyses, and SliCK's N_ex ablation on hand-made inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from newknowledge import analysis, checks, finetune, findings, slick


def _write_run(folder, variant, correct_by_epoch):
    """A hand-made run folder in the run store's format (config.json + epoch parquet files)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"variant": variant, "seed": 0}))
    for epoch, flags in enumerate(correct_by_epoch):
        rows = [(epoch, "dev", i, "HighlyKnown", bool(f)) for i, f in enumerate(flags)]
        rows += [(epoch, "test", i, "HighlyKnown", bool(f)) for i, f in enumerate(flags)]
        idk = [False] * len(rows)
        pd.DataFrame(rows, columns=["epoch", "split", "example", "category", "correct"]).assign(idk=idk).to_parquet(
            folder / f"epoch_{epoch:03d}.parquet")


def test_findings_table_is_built_from_the_run_store_and_follows_it(tmp_path):
    _write_run(tmp_path / "a", "unknown_50", [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])
    _write_run(tmp_path / "b", "idk_50", [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]])
    rec = finetune.load_records([tmp_path / "a", tmp_path / "b"])
    page = findings.to_html(findings.table({7: checks.idk_checks(analysis.idk_table(rec))}))
    assert "100.0 vs 75.0" in page  # D_IDK vs D at EARLY_STOP (epoch 1), read from the store
    # Change one stored flag: the page changes with it.
    f = tmp_path / "b" / "epoch_001.parquet"
    df = pd.read_parquet(f)
    df.loc[(df.split == "test") & (df.example == 3), "correct"] = False
    df.to_parquet(f)
    rec = finetune.load_records([tmp_path / "a", tmp_path / "b"])
    page2 = findings.to_html(findings.table({7: checks.idk_checks(analysis.idk_table(rec))}))
    assert page2 != page and "75.0 vs 75.0" in page2 and "100.0 vs 75.0" not in page2
    assert page.count("<tr") == 1 + len(findings.FINDINGS)  # header + one row per finding
    assert 'href="chapters/07_idk_relabelling.html"' in page


def test_idk_table_scores_only_answered_questions():
    rows = []
    for variant, idk in (("unknown_50", [False] * 4), ("idk_50", [False, False, True, True])):
        for epoch in (0, 1):
            for i in range(4):
                rows.append((variant, 0, epoch, "test", i, "HighlyKnown", i == 0, idk[i]))
                rows.append((variant, 0, epoch, "dev", i, "HighlyKnown", i < epoch + 1, False))
    rec = pd.DataFrame(rows, columns=["variant", "seed", "epoch", "split", "example", "category", "correct", "idk"])
    t = analysis.idk_table(rec).set_index(["variant", "duration"])
    assert t.loc[("D_IDK", "EARLY_STOP"), "answered"] == 0.5
    assert t.loc[("D_IDK", "EARLY_STOP"), "accuracy_answered"] == 0.5
    assert t.loc[("D", "EARLY_STOP"), "accuracy_answered"] == 0.25


def test_fewer_exemplar_sets_recategorise_without_the_model():
    table = pd.DataFrame({"prompt_greedy": [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
                          "prompt_sample": [[1.0, 1.0, 1.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]]})
    assert slick.categories_with(table, 1, "sampling").tolist() == ["HighlyKnown", "Unknown", "Unknown"]
    assert slick.categories_with(table, 2, "sampling").tolist() == ["MaybeKnown", "WeaklyKnown", "Unknown"]
    assert slick.categories_with(table, 3, "sampling").tolist() == ["MaybeKnown", "MaybeKnown", "Unknown"]


def test_idk_relabelling_changes_only_unknown_answers():
    from newknowledge import variants

    d = pd.DataFrame({"relation": ["P1"] * 4, "question": list("abcd"), "answer": list("wxyz"),
                      "category": ["Unknown", "HighlyKnown", "Unknown", "MaybeKnown"]})
    r = variants.relabel_idk(d)
    assert r.answer.tolist() == ["I don't know", "x", "I don't know", "z"]
    assert r.loc[[1, 3], "answer"].tolist() == d.loc[[1, 3], "answer"].tolist()
