"""The book's scaffolding: table of contents, parameter folding, configuration, strict build.

The strict build here covers the committed table of contents with the static
pages (intro, glossary, run it yourself) and stub chapters, in a temporary
copy, so a broken reference fails `make test` in seconds, before `make book`
spends minutes on the notebooks.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import check_toc  # noqa: E402  (tools/ is not a package)
import fold_parameters  # noqa: E402

TOC = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _notebook(path: Path, title: str) -> None:
    """A small executed-looking notebook: a title, a parameters cell, papermill's injected cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nA stub page."),
        nbformat.v4.new_code_cell("n_ex: int = 10  # prompts", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("n_ex = 3", metadata={"tags": ["injected-parameters"]}),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _book_with_every_page(tmp_path: Path) -> Path:
    """A copy of book/ (static pages, committed toc) with a stub for every executed page."""
    book = tmp_path / "book"
    book.mkdir()
    for page in (ROOT / "book").glob("*.md"):
        shutil.copy(page, book / page.name)
    shutil.copy(ROOT / "book" / "_toc.yml", book / "_toc.yml")
    shutil.copytree(ROOT / "book" / "_static", book / "_static")
    for nb in NOTEBOOKS:
        _notebook(book / f"{check_toc.page_for(nb)}.ipynb", nb.stem.replace("_", " "))
    return book


def test_toc_lists_every_notebook_in_order():
    files = check_toc.toc_files(TOC)
    pages = [check_toc.page_for(nb) for nb in NOTEBOOKS]
    assert files[0] == "intro" and "findings" in files and "glossary" in files
    chapters = [f for f in files if f.startswith("chapters/")]
    assert chapters == [p for p in pages if p.startswith("chapters/")]  # every chapter, in file order
    assert len(chapters) == 8  # the paper's seven parts and chapter 8 (beyond the paper: model size)


def test_check_toc_passes_when_every_page_is_there(tmp_path):
    book = _book_with_every_page(tmp_path)
    assert check_toc.problems(book, ROOT / "notebooks") == []


def test_check_toc_names_a_missing_chapter_and_the_command_that_makes_it(tmp_path, capsys):
    book = _book_with_every_page(tmp_path)
    (book / "chapters" / "05_knowledge_types.ipynb").unlink()
    assert check_toc.main(["--book", str(book), "--notebooks", str(ROOT / "notebooks")]) == 1
    err = capsys.readouterr().err
    assert "lists chapters/05_knowledge_types, but book/chapters/05_knowledge_types.ipynb does not exist" in err
    assert "make notebooks NOTEBOOKS=notebooks/05_knowledge_types.ipynb" in err


def test_check_toc_names_an_unlisted_notebook_and_executed_chapter(tmp_path):
    book = _book_with_every_page(tmp_path)
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    shutil.copy(notebooks / "02_unknown_harm.ipynb", notebooks / "09_extra.ipynb")
    _notebook(book / "chapters" / "09_extra.ipynb", "extra")
    found = check_toc.problems(book, notebooks)
    assert any(p.startswith("notebooks/09_extra.ipynb has no page") for p in found)
    assert any(p.startswith("book/chapters/09_extra.ipynb is not in book/_toc.yml") for p in found)


def test_fold_parameters_hides_both_parameter_cells_only(tmp_path):
    book = tmp_path / "book"
    _notebook(book / "chapters" / "01_x.ipynb", "x")
    assert fold_parameters.main(["--book", str(book)]) == 0
    cells = nbformat.read(book / "chapters" / "01_x.ipynb", as_version=4).cells
    assert [("hide-cell" in c.metadata.get("tags", [])) for c in cells] == [False, True, True]
    assert not fold_parameters.fold(book / "chapters" / "01_x.ipynb")  # a second run changes nothing


def test_config_never_executes_and_needs_no_network():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["sphinx"]["config"]["nb_execution_mode"] == "off"
    assert cfg["only_build_toc_files"] is True
    assert cfg["launch_buttons"]["thebe"] is False
    assert not cfg["launch_buttons"]["binderhub_url"]
    assert not cfg["repository"]["url"]
    assert not cfg["sphinx"]["config"]["mathjax_path"].startswith("http")


def _build(book: Path) -> subprocess.CompletedProcess:
    jb = Path(sys.executable).with_name("jupyter-book")
    if not jb.exists():
        pytest.skip("jupyter-book is not installed next to this Python")
    cmd = [
        str(jb),
        "build",
        str(book),
        "--config",
        str(ROOT / "_config.yml"),
        "--toc",
        str(book / "_toc.yml"),
        "--path-output",
        str(book),
        "-n",
        "-W",
        "--keep-going",
        "--all",
        "-q",
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_committed_toc_builds_strictly_with_every_page(tmp_path):
    book = _book_with_every_page(tmp_path)
    result = _build(book)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = book / "_build" / "html"
    for page in check_toc.toc_files(TOC):
        assert (html / f"{page}.html").is_file(), page
    # MathJax is served from the build itself, not from a CDN.
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    # The footer carries the year of the build (_config.yml's %Y, tools/book_fixes.py).
    footer = (html / "intro.html").read_text()
    assert f"Copyright {time.gmtime().tm_year}." in footer and "%Y" not in footer
