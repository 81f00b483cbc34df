"""Fold the parameter cells of the executed notebooks in the book (``hide-cell``).

Every chapter opens with its ``parameters`` cell (all 58 parameters) and
papermill's ``injected-parameters`` copy; unfolded, they would fill each page's
first screen. This tags both ``hide-cell``, so the page shows a "Show code"
toggle instead; the provenance cell at the end of each chapter shows the values
that mattered. Run by ``make html`` before ``jupyter-book build``; only the
executed copies in ``book/`` change, never the sources in ``notebooks/``.

Usage:
    python tools/fold_parameters.py [--book book]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
PARAMETER_TAGS = {"parameters", "injected-parameters"}


def fold(path: Path) -> bool:
    """Tag the parameter cells of one notebook ``hide-cell``; True if the file changed."""
    nb = nbformat.read(path, as_version=4)
    dirty = False
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if PARAMETER_TAGS & set(tags) and "hide-cell" not in tags:
            tags.append("hide-cell")
            dirty = True
    if dirty:
        nbformat.write(nb, path)
    return dirty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, default=ROOT / "book", help="book source folder")
    args = parser.parse_args(argv)
    paths = sorted(args.book.glob("*.ipynb")) + sorted(args.book.glob("chapters/*.ipynb"))
    changed = [p for p in paths if fold(p)]
    print(f"fold_parameters: parameter cells folded in {len(changed)} of {len(paths)} notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
