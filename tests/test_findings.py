"""The findings page, verdicts, conclusions, the IDK outcomes and SliCK's N_ex ablation on hand-made inputs."""

from __future__ import annotations

import json

import pandas as pd

from newknowledge.book import chapters, findings
from newknowledge.book.chapters import idk
from newknowledge.evaluation import checks
from newknowledge.finetuning import run_store
from newknowledge.knowledge import categories


def _write_run(folder, variant, correct_by_epoch):
    """A hand-made run folder in the run store's format (config.json + epoch parquet files)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"variant": variant, "seed": 0}))
    for epoch, flags in enumerate(correct_by_epoch):
        rows = [(epoch, "dev", i, "HighlyKnown", bool(f)) for i, f in enumerate(flags)]
        rows += [(epoch, "test", i, "HighlyKnown", bool(f)) for i, f in enumerate(flags)]
        rows += [(epoch, "train", i, "HighlyKnown", bool(f)) for i, f in enumerate(flags)]
        idk = [False] * len(rows)
        pd.DataFrame(rows, columns=["epoch", "split", "example", "category", "correct"]).assign(idk=idk).to_parquet(
            folder / f"epoch_{epoch:03d}.parquet"
        )


def test_findings_page_is_built_from_the_run_store_and_follows_it(tmp_path):
    _write_run(tmp_path / "a", "unknown_50", [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])
    _write_run(tmp_path / "b", "idk_50", [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]])

    def page():
        rec = run_store.load_records([tmp_path / "a", tmp_path / "b"])
        chs = {7: chapters.Chapter(7, checks=[idk.converged(rec), idk.abstains_on_unknown(rec)])}
        return findings.to_html(findings.collect(chs)), findings.summary(findings.collect(chs))

    html, summary = page()
    # one row per finding, the preconditions first and the beyond-the-paper checks last
    assert html.count("<tr") == 1 + len(findings.paper.FINDINGS) + 2
    assert list(summary["#"]) == ["setup", *map(str, findings.paper.FINDINGS), "beyond"]
    assert 'href="chapters/07_idk_relabelling.html"' in html and "<details>" in html
    # Change one stored flag: the page changes with it.
    f = tmp_path / "b" / "epoch_002.parquet"
    df = pd.read_parquet(f)
    df.loc[(df.split == "train"), "correct"] = False
    df.to_parquet(f)
    html2, _ = page()
    assert html2 != html


def test_a_check_shown_by_two_chapters_is_listed_once():
    c = checks.Check("k", 1, "finding", "claim", "stat", "thr", "paper", "ours", True)
    chs = {2: chapters.Chapter(2, checks=[c]), 3: chapters.Chapter(3, checks=[c])}
    assert findings.collect(chs) == [(2, c)]


def test_verdicts():
    def c(h):
        return checks.Check("k", 1, "finding", "claim", "s", "t", "p", "o", h)

    assert checks.verdict([c(True), c(True)]) == "holds"
    assert checks.verdict([c(True), c(False)]) == "partly"
    assert checks.verdict([c(False), c(False)]) == "does not hold"
    assert checks.verdict([c(True), c(None)]) == "holds where decidable"
    assert checks.verdict([c(None)]) == "not decidable"


def test_across_seeds_holds_only_in_every_seed():
    text, ok = checks.across({0: (-0.05, True), 1: (-0.03, True), 2: (0.01, False)})
    assert ok is False and "holds in 2/3" in text and "across 3 seeds" in text
    assert checks.across({0: (-0.05, True)}) == ("-5.0", True)
    assert checks.across({0: (0.1, None)})[1] is None


def test_conclusion_is_rendered_from_the_checks():
    cs = [
        checks.Check("a", 1, "finding", "claim A", "s", "t", "p", "ours A", True),
        checks.Check("b", None, "setup", "claim B", "s", "t", "p", "ours B", False),
    ]
    text = checks.conclusion(
        cs, {"always": "Fixed.", "a:holds": "A held.", "a:fails": "A failed.", "b:fails": "B failed."}
    )
    assert "claim A* (finding 1) holds: ours A" in text and "A held." in text and "A failed." not in text
    assert "does **not** hold" in text and "B failed." in text and text.endswith("Fixed.")


def test_check_kinds_are_validated():
    import pytest

    with pytest.raises(ValueError, match="kind"):
        checks.Check("k", 1, "nonsense", "c", "s", "t", "p", "o", True)
    with pytest.raises(ValueError, match="finding number"):
        checks.Check("k", None, "finding", "c", "s", "t", "p", "o", True)


def test_fewer_exemplar_sets_recategorise_without_the_model():
    table = pd.DataFrame(
        {
            "prompt_greedy": [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
            "prompt_sample": [[1.0, 1.0, 1.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]],
        }
    )
    assert categories.categories_with(table, 1, "sampling").tolist() == ["HighlyKnown", "Unknown", "Unknown"]
    assert categories.categories_with(table, 2, "sampling").tolist() == ["MaybeKnown", "WeaklyKnown", "Unknown"]
    assert categories.categories_with(table, 3, "sampling").tolist() == ["MaybeKnown", "MaybeKnown", "Unknown"]


def test_idk_relabelling_changes_only_unknown_answers():
    from newknowledge.finetuning import variants

    d = pd.DataFrame(
        {
            "relation": ["P1"] * 4,
            "question": list("abcd"),
            "answer": list("wxyz"),
            "category": ["Unknown", "HighlyKnown", "Unknown", "MaybeKnown"],
        }
    )
    r = variants.relabel_idk(d)
    assert r.answer.tolist() == ["I don't know", "x", "I don't know", "z"]
    assert r.loc[[1, 3], "answer"].tolist() == d.loc[[1, 3], "answer"].tolist()
