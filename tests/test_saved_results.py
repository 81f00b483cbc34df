"""Saved chapter results: each chapter saves what it computed, and the findings page only reads them.

No model and no run store: hand-made chapters are saved through the decorator every chapter's
``results`` wears, under a study's parameters, into the private artifacts folder of the tests.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from newknowledge.book import chapters, findings  # noqa: E402
from newknowledge.core import config, store  # noqa: E402
from newknowledge.evaluation import checks  # noqa: E402


def _chapter(number: int) -> chapters.Chapter:
    """A chapter with one check per chapter, and the data the findings page's figure reads."""
    holds = number != 5
    c = checks.Check(f"c{number}", number, "finding", f"claim {number}", "s", "t", "paper", f"ours {number}", holds)
    data = {}
    if number == 2:
        data["accuracy_test"] = pd.DataFrame(
            [
                {"pct_unknown": x, "duration": d, "accuracy": 0.5 - x / 400 - (d == "CONVERGENCE") * x / 800}
                for x in (0, 50, 100)
                for d in ("EARLY_STOP", "CONVERGENCE", "epoch 3")
            ]
        )
    if number == 3:
        data = {
            "variant": "unknown_50",
            "early_stop": 2.0,
            "curves": pd.DataFrame(
                [
                    {"epoch": e, "series": s, "accuracy": min(1.0, e / k)}
                    for e in range(6)
                    for s, k in (("Train (Known)", 2), ("Train (Unknown)", 8), ("Dev", 5))
                ]
            ),
        }
    return chapters.Chapter(number, data=data, checks=[c])


def _run_notebooks(study, numbers=chapters.MODULES) -> None:
    """What running each chapter's notebook does here: its (decorated) ``results(setup)``."""
    for n in numbers:
        chapters.saved(lambda setup, n=n: _chapter(n))(SimpleNamespace(study=study))


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "artifacts"))
    return config.from_params({"profile": "quick"})


def test_every_chapter_saves_what_its_results_return():
    for number in chapters.MODULES:
        assert hasattr(chapters.module(number).results, "__wrapped__"), f"chapter {number} is not @saved"


def test_a_saved_chapter_is_read_back_under_the_same_parameters(study):
    _run_notebooks(study, [2])
    s = chapters.load(2, study)
    assert s.chapter.checks == _chapter(2).checks
    pd.testing.assert_frame_equal(s.chapter.data["accuracy_test"], _chapter(2).data["accuracy_test"])
    assert s.params == study.params() and s.path.parent == chapters.saved_dir(study)
    assert (s.path.parent / "params.json").is_file() and s.path.parent.parent.name == "quick"


def test_a_chapter_run_with_other_parameters_is_named_stale_with_what_differs(study):
    _run_notebooks(study, [2])
    other = config.from_params({"profile": "quick", "n_ex": 3, "seeds": [0, 1]})
    with pytest.raises(chapters.NotSaved, match="chapter 2 is stale") as err:
        chapters.load(2, other)
    assert "n_ex=3 here, 10 there" in str(err.value) and "seeds=[0, 1] here, [0] there" in str(err.value)
    with pytest.raises(chapters.NotSaved, match="chapter 5 has no saved results"):
        chapters.load(5, study)


def test_the_findings_page_names_every_notebook_to_run(study):
    _run_notebooks(study, [1, 2, 3, 4, 6])
    with pytest.raises(chapters.NotSaved) as err:
        findings.load(study)
    msg = str(err.value)
    assert "2 are missing or stale for profile 'quick'" in msg
    assert "notebooks/05_knowledge_types.ipynb: chapter 5 has no saved results" in msg
    assert 'make notebooks NOTEBOOKS="notebooks/05_knowledge_types.ipynb notebooks/07_idk_relabelling.ipynb"' in msg
    assert "notebooks/02_unknown_harm.ipynb" not in msg


def test_the_findings_page_reads_without_recomputing(study):
    _run_notebooks(study)
    start = time.time()
    saved = findings.load(study)
    assert time.time() - start < 5 and sorted(saved) == sorted(chapters.MODULES)
    chs = {n: s.chapter for n, s in saved.items()}
    html = findings.to_html(findings.collect(chs))
    assert "ours 5" in html and "partly" not in html and "does not hold" in html
    prov = findings.provenance(study, saved)
    assert prov.loc["profile", "value"] == "quick"
    folder = chapters.saved_dir(study).relative_to(store.artifacts_root())
    assert prov.loc["saved results read from", "value"] == str(folder)
    # A chapter rerun with other results: the page follows it.
    chapters.save(
        chapters.Chapter(5, checks=[checks.Check("c5", 5, "finding", "c", "s", "t", "p", "new", True)]), study
    )
    chs = {n: s.chapter for n, s in findings.load(study).items()}
    assert "does not hold" not in findings.to_html(findings.collect(chs))


def test_the_findings_figure_is_numbered_as_in_its_chapters():
    chs = {2: _chapter(2), 3: _chapter(3)}
    fig, (a, b) = findings.figure(chs)
    assert a.get_title().startswith("Figure 2.1:") and b.get_title().startswith("Figure 3.1:")
    assert fig.get_suptitle() == "" and "unknown_50" in b.get_title()
    plt.close(fig)


def test_the_findings_table_shows_the_deciding_checks_once_each():
    def c(key, holds, paper, **nums):
        return checks.Check(key, 1, "finding", key, "s", "t", paper, f"ours {key}", holds, **nums)

    collected = [
        (2, c("a", True, "up to -14 points")),
        (2, c("b", True, "up to -14 points")),
        (2, c("c", False, "grows", **checks.numbers(-0.001, 0.0, "above", se=0.01))),
    ]
    html = findings.to_html(collected)
    row = html[html.index("<tr class='verdict-partly'>") :].split("</tr>")[0]
    ours = row.split("</details>")[1]
    assert ours.index("ours c") < ours.index("ours a")  # the failing check first
    assert row.count("up to -14 points</td>") + row.count("up to -14 points<br>") <= 1
    assert "fragile" in row and "(-0.1 SE, fragile)" in row and "(n/a)" in row
    assert checks.FRAGILE_RULE in html.replace("&#x27;", "'")
