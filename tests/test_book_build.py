"""The book's scaffolding: table of contents, configuration, strict build.

The strict build here covers the static pages only (intro, findings, glossary,
run it yourself) in a temporary copy, so a broken reference in them fails
`make test` in seconds, before `make book` spends minutes on the notebooks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import make_toc  # noqa: E402  (tools/ is not a package)


def _files(toc: dict) -> list[str]:
    return [ch["file"] for part in toc["parts"] for ch in part["chapters"]]


def test_toc_lists_present_chapters_in_paper_order(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    for stem in ["05_knowledge_types", "02_unknown_harm", "99_extra"]:
        (chapters / f"{stem}.ipynb").write_text("{}")
    assert make_toc.main(["--book", str(tmp_path)]) == 0
    toc = yaml.safe_load((tmp_path / "_toc.yml").read_text())
    assert toc["format"] == "jb-book" and toc["root"] == "intro"
    assert _files(toc) == [
        "findings",
        "chapters/02_unknown_harm",
        "chapters/05_knowledge_types",
        "chapters/99_extra",
        "glossary",
        "run_it_yourself",
    ]
    assert make_toc.main(["--book", str(tmp_path), "--require-all"]) == 1


def test_toc_without_chapters_has_no_empty_part(tmp_path):
    (tmp_path / "chapters").mkdir()
    make_toc.main(["--book", str(tmp_path)])
    toc = yaml.safe_load((tmp_path / "_toc.yml").read_text())
    assert [p["caption"] for p in toc["parts"]] == ["Findings", "Reference"]


def test_config_never_executes_and_needs_no_network():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["sphinx"]["config"]["nb_execution_mode"] == "off"
    assert cfg["only_build_toc_files"] is True
    assert cfg["launch_buttons"]["thebe"] is False
    assert not cfg["launch_buttons"]["binderhub_url"]
    assert not cfg["repository"]["url"]
    assert not cfg["sphinx"]["config"]["mathjax_path"].startswith("http")


def test_static_pages_build_strictly(tmp_path):
    jb = Path(sys.executable).with_name("jupyter-book")
    if not jb.exists():
        pytest.skip("jupyter-book is not installed next to this Python")
    book = tmp_path / "book"
    book.mkdir()
    for page in (ROOT / "book").glob("*.md"):
        shutil.copy(page, book / page.name)
    shutil.copytree(ROOT / "book" / "_static", book / "_static")
    # The findings page is an executed notebook (book/findings.ipynb); a stub stands in for it here.
    (book / "findings.md").write_text("# Findings\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n")
    make_toc.main(["--book", str(book)])
    cmd = [str(jb), "build", str(book), "--config", str(ROOT / "_config.yml"),
           "--toc", str(book / "_toc.yml"), "--path-output", str(book),
           "-n", "-W", "--keep-going", "--all", "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = book / "_build" / "html"
    for page in ["intro", "findings", "glossary", "run_it_yourself"]:
        assert (html / f"{page}.html").is_file()
    # MathJax is served from the build itself, not from a CDN.
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
