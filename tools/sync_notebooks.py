"""Rewrite the ``parameters`` cell of every notebook in notebooks/ from the config.

    python tools/sync_notebooks.py          # rewrite
    python tools/sync_notebooks.py --check  # exit 1 if any notebook has drifted

The cell lists every parameter with its type, the quick profile's value and the
comment from ``newknowledge.core.config``, so ``papermill --help-notebook`` documents
them all.  Outputs are cleared: source notebooks are committed without outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from newknowledge.core.config import parameters_cell

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def sync(path: Path, check: bool) -> bool:
    nb = nbformat.read(path, as_version=4)
    want = parameters_cell()
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    dirty = cells[0].source != want or any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    if dirty and not check:
        cells[0].source = want
        for c in nb.cells:
            if c.cell_type == "code":
                c.outputs, c.execution_count = [], None
        nbformat.write(nb, path)
    return dirty


if __name__ == "__main__":
    check = "--check" in sys.argv
    drifted = [p.name for p in sorted(NOTEBOOKS.glob("*.ipynb")) if sync(p, check)]
    if check and drifted:
        sys.exit(f"parameters cell out of date (run python tools/sync_notebooks.py): {', '.join(drifted)}")
    print(("drifted: " if check else "synced: ") + (", ".join(drifted) or "none"))
