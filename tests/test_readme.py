"""The README and `make readme` (tools/update_readme.py): the findings table, the figure, the benchmark tables.

The findings page saves a record per build (``build_record.save``); the tool writes it as one
profile's column of the README's findings table and keeps the others, copies the findings page's figure, and
copies ``make bench``'s tables into the book's Performance page. The committed README stays a
five-minute read.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from newknowledge.book import build_record, findings
from newknowledge.core import config
from newknowledge.evaluation import checks, paper

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "update_readme.py"
sys.path.insert(0, str(TOOL.parent))

import update_readme as tool  # noqa: E402  (tools/ is not a package)

HOLDS = checks.Check("k", 2, "finding", "claim X", "s", "t", "p", "o", True)
FAILS = checks.Check("f", 2, "finding", "claim Y", "s", "t", "p", "o", False)
OPEN = checks.Check("u", 2, "finding", "claim U", "s", "t", "p", "o", None)
SETUP = checks.Check("s", 1, "setup", "claim S", "s", "t", "p", "o", True)


def _study(profile: str, **overrides):
    """The study a build of ``profile`` runs (``overrides``: PARAMS given on the command line)."""
    return config.from_params({**config.load_profile(profile), "profile": profile, **overrides})


PNG = b"\x89PNG\r\n\x1a\n a figure"


def _readme(path: Path) -> Path:
    """A README with a findings table of two columns whose cells are stale, text around it."""
    rows = {"F2": ["old title", "STALE QUICK", "FULL CELL"], "built": ["date, CPU, cores", "OLD DATE", "FULL DATE"]}
    table = tool.render_table(["quick", "full"], rows)
    path.write_text(f"intro\n{tool.FINDINGS_START}\n{table}{tool.FINDINGS_END}\nrest\n")
    return path


def _performance(path: Path) -> Path:
    path.write_text(f"# Performance\n\n{tool.BENCH_START}\nOLD TABLE\n{tool.BENCH_END}\n\nprose\n")
    return path


def _findings_page(path: Path, profile: str, png: bytes | None = PNG) -> Path:
    """An executed findings page as papermill leaves it: recorded parameters, the figure's cell with its PNG."""
    outputs = [{"output_type": "execute_result", "data": {"text/plain": "a table"}, "metadata": {}}]
    if png is not None:
        data = {"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"}
        outputs.append({"output_type": "display_data", "data": data, "metadata": {}})
    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": [f"the figure: {tool.FIGURE_CELL}chs)"]},
            {
                "cell_type": "code",
                "metadata": {},
                "source": [f"fig, axes = {tool.FIGURE_CELL}chs)  # the figure"],
                "outputs": outputs,
            },
        ],
        "metadata": {"papermill": {"parameters": {"profile": profile}}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


def test_the_build_record_has_every_row_its_verdict_and_the_build(tmp_path, monkeypatch):
    record = build_record.summary([(1, SETUP), (2, HOLDS), (2, FAILS), (2, OPEN)], _study("quick"))
    labels = [r["label"] for r in record["rows"]]
    assert labels == ["setup", *map(str, range(1, 8)), "beyond"]  # the findings page's rows, in order
    rows = {r["label"]: r for r in record["rows"]}
    assert (rows["2"]["verdict"], rows["2"]["held"], rows["2"]["checks"]) == ("partly", 1, 3)
    assert (rows["setup"]["verdict"], rows["setup"]["held"], rows["setup"]["checks"]) == ("holds", 1, 1)
    assert rows["3"]["verdict"] == "no check" and rows["3"]["checks"] == 0
    assert record["profile"] == "quick" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["date"])
    assert record["machine"]["cpu"] and record["machine"]["cores"] >= 1
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "art"))
    path = build_record.save([(2, FAILS)], _study("full"))
    assert path == tmp_path / "art" / "findings" / "full.json"
    assert json.loads(path.read_text())["rows"][2]["verdict"] == "does not hold"


def test_the_table_reads_back_what_it_writes():
    rows = {"F1": [r"title \| with a bar", "holds (1/1)", "–"], "built": ["date, CPU, cores", "d", "e"]}
    text = tool.render_table(["quick", "full"], rows)
    assert tool.parse_table(f"\n{text}") == (["quick", "full"], rows)
    with pytest.raises(ValueError, match="no findings table"):
        tool.parse_table("no table here\n")


def test_make_readme_writes_the_profile_column_and_keeps_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "art"))
    readme, perf = _readme(tmp_path / "README.md"), _performance(tmp_path / "performance.md")
    bench = tmp_path / "results"
    bench.mkdir()
    figure = tmp_path / "static" / "readme_figure.png"
    run = [sys.executable, str(TOOL), "--readme", str(readme), "--performance", str(perf), "--bench", str(bench)]
    run += ["--figure-notebook", str(tmp_path / "findings.ipynb"), "--figure", str(figure)]

    out = subprocess.run(run, capture_output=True, text=True)  # no build yet: a clear error, nothing written
    assert out.returncode == 2 and "quick.json does not exist" in out.stderr and "make book" in out.stderr

    build_record.save([(2, HOLDS), (2, FAILS)], _study("quick"))
    before_perf = perf.read_text()
    out = subprocess.run(run, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n")
    profiles, rows = tool.parse_table(tool.block(text, tool.FINDINGS_START, tool.FINDINGS_END))
    assert profiles == ["quick", "full"]
    assert rows["F2"] == [paper.FINDINGS[2], "partly (1/2)", "FULL CELL"]  # full's cell kept
    assert rows["F1"][1:] == ["no check (0/0)", "–"]  # a row only the record has: the others get "–"
    assert list(rows)[-1] == "built" and rows["built"][2] == "FULL DATE"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}, .+, \d+ cores", rows["built"][1])
    assert "STALE QUICK" not in text and "OLD DATE" not in text
    assert perf.read_text() == before_perf and "no benchmark tables" in out.stdout  # nothing measured
    assert not figure.exists() and "figure left as it was" in out.stdout  # no executed findings page

    build_record.save([(2, FAILS)], _study("full"))
    assert subprocess.run(run + ["--profile", "full"], capture_output=True, text=True).returncode == 0
    rows = tool.parse_table(readme.read_text())[1]
    assert rows["F2"][1:] == ["partly (1/2)", "does not hold (0/1)"]  # quick's kept, full's written
    assert rows["design"][1].startswith("1 world, ") and rows["design"][2].startswith("3 worlds, ")  # each miniature
    assert list(rows)[-1] == "built"

    build_record.save([(2, FAILS)], _study("paper"))  # a profile the table has no column for: a clear error
    before = readme.read_text()
    out = subprocess.run(run + ["--profile", "paper"], capture_output=True, text=True)
    assert out.returncode == 2 and "no column for profile 'paper'" in out.stderr and "quick, full" in out.stderr
    assert readme.read_text() == before

    build_record.save([(2, HOLDS)], _study("quick", ft_lr=3e-5))  # a quick build with PARAMS: refused
    out = subprocess.run(run, capture_output=True, text=True)
    assert out.returncode == 2 and "parameters other than the profile's" in out.stderr
    assert readme.read_text() == before


def _bench_setup(tmp_path, monkeypatch):
    """A quick build's record, a README, a Performance page with an old table, an empty results folder,
    and the tool's arguments for them (no executed findings page)."""
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "art"))
    build_record.save([(2, HOLDS)], _study("quick"))
    readme, perf = _readme(tmp_path / "README.md"), _performance(tmp_path / "performance.md")
    bench = tmp_path / "results"
    bench.mkdir()
    args = ["--readme", str(readme), "--performance", str(perf), "--bench", str(bench)]
    return readme, perf, bench, args + ["--figure-notebook", str(tmp_path / "none.ipynb")]


def test_make_readme_puts_the_benchmark_tables_in_the_performance_page(tmp_path, monkeypatch):
    readme, perf, bench, args = _bench_setup(tmp_path, monkeypatch)
    (bench / "bf16.md").write_text("**bf16** table B\n")
    (bench / "bench_book.md").write_text("**book** table A\n")
    (bench / "other.md").write_text("not a Performance table\n")
    perf.write_text(perf.read_text().replace("OLD TABLE", f"{tool.bench_marker('bench_book')}\nOLD TABLE"))
    assert tool.main(args) == 0
    page = perf.read_text()
    assert "OLD TABLE" not in page and "not a Performance" not in page and page.endswith("prose\n")
    assert page.index("table A") < page.index("table B") < page.index(tool.BENCH_END)  # in BENCH_ORDER
    assert "table A" not in readme.read_text()
    perf.write_text("# Performance without markers\n")
    assert tool.main(args) == 2  # a page without the markers: an error, README untouched
    assert "table A" not in readme.read_text()


def test_a_benchmark_run_here_replaces_its_table_and_keeps_the_others(tmp_path, monkeypatch):
    _, perf, bench, args = _bench_setup(tmp_path, monkeypatch)
    (bench / "bench_book.md").write_text("**book** table A\n")
    assert tool.main(args) == 0 and "OLD TABLE" in perf.read_text()  # unmarked tables: not merged, page kept
    for name in tool.BENCH_ORDER:  # a machine that ran them all writes every table with its marker
        (bench / f"{name}.md").write_text(f"**{name}** first\n")
    assert tool.main(args) == 0
    assert tool.page_tables(tool.block(perf.read_text(), tool.BENCH_START, tool.BENCH_END)) == {
        n: f"**{n}** first\n" for n in tool.BENCH_ORDER
    }
    for f in bench.iterdir():  # another machine runs one benchmark only
        f.unlink()
    (bench / "bf16.md").write_text("**bf16** second\n")
    assert tool.main(args) == 0
    tables = tool.page_tables(tool.block(perf.read_text(), tool.BENCH_START, tool.BENCH_END))
    assert tables["bf16"] == "**bf16** second\n" and tables["bench_book"] == "**bench_book** first\n"
    assert list(tables) == list(tool.BENCH_ORDER)


def test_make_readme_copies_the_figure_of_a_quick_build_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "art"))
    build_record.save([(2, HOLDS)], _study("quick"))
    readme, perf = _readme(tmp_path / "README.md"), _performance(tmp_path / "performance.md")
    figure = tmp_path / "static" / "readme_figure.png"
    args = ["--readme", str(readme), "--performance", str(perf), "--bench", str(tmp_path / "none")]
    args += ["--figure", str(figure), "--figure-notebook", str(tmp_path / "findings.ipynb")]
    _findings_page(tmp_path / "findings.ipynb", "full")
    assert tool.main(args) == 0 and not figure.exists()
    assert "a 'full' build, not 'quick'" in capsys.readouterr().out
    _findings_page(tmp_path / "findings.ipynb", "quick")
    assert tool.main(args) == 0 and figure.read_bytes() == PNG  # the PNG papermill recorded, byte for byte
    _findings_page(tmp_path / "findings.ipynb", "quick", png=None)
    build_record.save([(2, FAILS)], _study("quick"))  # a new record, not written: the error comes first
    before = readme.read_text()
    assert tool.main(args) == 2 and "has no PNG output" in capsys.readouterr().err
    assert readme.read_text() == before and "holds (1/1)" in before


def test_committed_readme_is_short_and_its_table_is_the_tools():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    profiles, rows = tool.parse_table(tool.block(text, tool.FINDINGS_START, tool.FINDINGS_END))
    assert profiles == ["quick", "full"]
    labels = [label for label, _, _ in findings.groups([])]
    assert list(rows) == [tool.row_key(label) for label in labels] + ["design", tool.BUILD_ROW]
    assert all(len(cells) == 1 + len(profiles) for cells in rows.values())
    assert tool.FIGURE.relative_to(ROOT).as_posix() in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):  # every relative link points at a file of the repository
        if not target.startswith("http") and ROOT / target != tool.FIGURE:
            assert (ROOT / target).exists(), target
    assert len((ROOT / "CONTRIBUTING.md").read_text().splitlines()) < 80


def test_the_book_has_the_reference_pages_the_readme_sends_readers_to():
    perf = (ROOT / "book" / "performance.md").read_text()
    assert perf.count(tool.BENCH_START) == 1 and perf.count(tool.BENCH_END) == 1
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    reference = next(p for p in toc["parts"] if p["caption"] == "Reference")
    assert {"design", "performance"} <= {c["file"] for c in reference["chapters"]}
    for page in ("design", "performance"):
        text = re.sub(r"^```.*?^```", "", (ROOT / "book" / f"{page}.md").read_text(), flags=re.M | re.S)
        headings = [line for line in text.splitlines() if line.startswith("# ")]
        assert text.startswith("# ") and len(headings) == 1, headings  # one title (code blocks left out)


def test_a_fragile_verdict_is_marked_in_its_cell():
    record = {
        "date": "2026-12-05",
        "machine": {"cpu": "CPU", "cores": 2},
        "rows": [
            {"label": "2", "title": "t", "verdict": "holds", "held": 1, "checks": 1, "fragile": True},
            {"label": "3", "title": "u", "verdict": "holds", "held": 1, "checks": 1, "fragile": False},
        ],
    }
    cells = tool.column(record)
    assert [cell for key, (_, cell) in cells.items() if key != tool.BUILD_ROW] == [
        "holds (1/1), fragile",
        "holds (1/1)",
    ]


def test_the_findings_page_sets_every_saved_profile_beside_this_build(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "art"))
    build_record.save([(1, SETUP), (2, HOLDS)], _study("quick"))
    unmet = checks.Check("s2", 1, "setup", "claim T", "s", "t", "p", "o", False)
    build_record.save([(1, SETUP), (1, unmet), (2, HOLDS)], _study("full"))
    table = build_record.side_by_side(current="full")
    assert list(table.columns) == ["full", "quick"]  # this build first
    assert table.loc["Preconditions", "full"] == "partly (1/2)"
    assert table.loc["Preconditions", "quick"] == "holds (1/1)"
    full = config.load_profile("full")
    assert (
        f"3 worlds, {full['n_train']} train facts per relation, d_model {full['d_model']}"
        in table.loc["design", "full"]
    )
    assert f"section 4's |D| {full['section4_size']}" in table.loc["design", "full"]
    assert table.loc["design", "quick"].startswith("1 world, 130 train facts per relation, d_model 128")
    assert "section 4's |D| by the rule" in table.loc["design", "quick"]
    sentence = build_record.preconditions_met(table)
    assert "holds in the last build of: quick." in sentence and "full (partly (1/2))" in sentence


def test_a_record_saved_before_designs_were_recorded_still_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "art"))
    path = build_record.save(
        [(1, checks.Check("s2", 1, "setup", "claim T", "s", "t", "p", "o", False))], _study("quick")
    )
    old = json.loads(path.read_text())
    del old["design"]
    path.write_text(json.dumps(old))
    table = build_record.side_by_side()
    assert table.loc["design", "quick"] == "not recorded"
    assert build_record.preconditions_met(table).startswith(
        "Not every precondition holds in: quick (does not hold (0/1))"
    )
    assert "design" not in tool.column(old)  # the README's table gets no design cell it cannot fill
    assert build_record.preconditions_met(pd.DataFrame()) == "No build has saved its findings yet."
