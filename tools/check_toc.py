"""Check book/_toc.yml against the pages in book/ and the notebooks in notebooks/.

The table of contents is written by hand and lists every chapter, so a chapter
can only leave the book by an edit to it. Run by ``make html`` before
``jupyter-book build``, this fails (exit 1, one line per problem, each naming
the fix) when:

- a page listed in the toc has no source in ``book/`` (``.md`` or ``.ipynb``):
  a chapter that papermill has not executed, or whose run failed;
- a notebook in ``notebooks/`` has no page in the toc (``NN_name.ipynb`` is
  ``chapters/NN_name``; ``*_findings.ipynb`` is ``findings``);
- an executed chapter in ``book/chapters/`` is not listed (it would be left out
  of the book without a word: ``only_build_toc_files`` is on).

Usage:
    python tools/check_toc.py [--book book] [--notebooks notebooks]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` of a jb-book toc (root first), nested sections included."""
    out = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                out.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return out


def page_for(notebook: Path) -> str:
    """The toc entry of a source notebook (where the Makefile executes it to)."""
    return "findings" if notebook.stem.endswith("_findings") else f"chapters/{notebook.stem}"


def problems(book: Path, notebooks: Path) -> list[str]:
    """What is wrong between the toc, the executed pages and the source notebooks."""
    listed = toc_files(yaml.safe_load((book / "_toc.yml").read_text()))
    out = []
    for page in listed:
        if not any((book / f"{page}{ext}").is_file() for ext in (".md", ".ipynb")):
            source = notebooks / f"{Path(page).name}.ipynb"
            if page == "findings":
                source = next(iter(sorted(notebooks.glob("*_findings.ipynb"))), source)
            fix = (
                f"execute it: make notebooks NOTEBOOKS={source.relative_to(notebooks.parent)}"
                if source.is_file()
                else f"write book/{page}.md or drop it from book/_toc.yml"
            )
            out.append(f"book/_toc.yml lists {page}, but book/{page}.ipynb does not exist; {fix}")
    for nb in sorted(notebooks.glob("*.ipynb")):
        if page_for(nb) not in listed:
            out.append(f"notebooks/{nb.name} has no page in book/_toc.yml; add '- file: {page_for(nb)}'")
    for executed in sorted((book / "chapters").glob("*.ipynb")):
        page = f"chapters/{executed.stem}"
        if page not in listed:
            out.append(
                f"book/{page}.ipynb is not in book/_toc.yml, so the book would leave it out; add '- file: {page}'"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, default=ROOT / "book", help="book source folder")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="source notebooks")
    args = parser.parse_args(argv)
    found = problems(args.book, args.notebooks)
    for line in found:
        print(f"check_toc: {line}", file=sys.stderr)
    if found:
        return 1
    print(f"check_toc: every page of {args.book.name}/_toc.yml is present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
