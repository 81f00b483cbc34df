"""Wall time of each chapter in the last ``make book``, from papermill's records.

papermill stores, in every executed notebook, the run's duration
(``metadata.papermill.duration``, seconds), its start time, and the parameters
it injected (``profile`` among them); each cell has its own duration too.  This
reads the executed copies in ``book/chapters/`` (and ``book/findings.ipynb``)
and prints one row per chapter, grouped by profile, with the slowest cell and
whether it finished (a chapter still running has no duration yet).

    python benchmarks/bench_book.py [--book book]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from _common import report

ROOT = Path(__file__).resolve().parents[1]


def chapter_times(book: Path) -> pd.DataFrame:
    """One row per executed notebook: profile, seconds, start time, slowest cell."""
    rows = []
    for path in sorted(book.glob("chapters/*.ipynb")) + sorted(book.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        pm = nb.get("metadata", {}).get("papermill", {})
        if not pm:
            continue  # not executed by papermill
        cells = [
            (c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0, k)
            for k, c in enumerate(nb.get("cells", []))
            if c.get("cell_type") == "code"
        ]
        slow_s, slow_k = max(cells, default=(0.0, -1))
        rows.append(
            {
                "profile": (pm.get("parameters") or {}).get("profile", "?"),
                "chapter": path.stem,
                "seconds": round(float(pm["duration"]), 1) if pm.get("duration") else float("nan"),
                "started": (pm.get("start_time") or "")[:19],
                "slowest cell": f"#{slow_k} ({slow_s:.0f} s)" if slow_k >= 0 else "",
                # papermill writes the duration at the end: none yet means running (or killed)
                "status": "failed" if pm.get("exception") else "ok" if pm.get("duration") else "running",
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--book", type=Path, default=ROOT / "book", help="the book folder")
    args = ap.parse_args()
    df = chapter_times(args.book)
    if df.empty:
        print(f"\n## Book chapters\n\nNo executed chapters in {args.book}/chapters: run `make book` first.")
        return
    df = df.sort_values(["profile", "chapter"]).reset_index(drop=True)
    totals = df.groupby("profile", as_index=False)["seconds"].sum().assign(chapter="(total)")
    out = pd.concat([df, totals], ignore_index=True)
    text = ["started", "slowest cell", "status"]
    out[text] = out[text].fillna("")
    out["seconds"] = out["seconds"].map(lambda v: "" if pd.isna(v) else f"{v:.0f}")  # not 2.46e+03
    report(out, "bench_book", "Book: wall time per chapter (papermill)")


if __name__ == "__main__":
    main()
