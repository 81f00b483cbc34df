"""Write the last build's findings summary and the last benchmarks' tables into the README.

    python tools/update_readme.py [--profile quick]

The findings page (notebooks/08_findings.ipynb) saves the summary of its checks to
``<artifacts>/findings/<profile>.md``; this script copies it into README.md (between that
profile's ``findings`` markers, see :func:`findings_markers`), so the README's "what
reproduces" section says what the last build of each profile's findings page says.  Every
benchmark script (``make bench``) writes its table as ``benchmarks/results/<name>.md``; those present are copied between the ``bench``
markers, in :data:`BENCH_ORDER`, so no number of the Performance section is typed by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from newknowledge.core import store

ROOT = Path(__file__).resolve().parents[1]
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"
BENCH = ROOT / "benchmarks" / "results"
# The Performance section's tables, in the order the README explains them.
BENCH_ORDER = (
    "bench_book",
    "bench_slick",
    "bench_slick_tool",
    "bench_train",
    "bench_eval",
    "bench_grouped",
    "bench_grouped_epoch",
    "bf16",
    "bench_pretrain_length",
)


def findings_markers(profile: str) -> tuple[str, str]:
    """The README markers around ``profile``'s findings summary (quick's and full's are in the README)."""
    return f"<!-- findings:{profile}:start -->", f"<!-- findings:{profile}:end -->"


def replace_block(text: str, start: str, end: str, body: str) -> str:
    """``text`` with everything between the markers ``start`` and ``end`` replaced by ``body``."""
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{body}{end}", text, flags=re.S)


def bench_block(results: Path = BENCH) -> str | None:
    """The benchmark tables found in ``results`` as one Markdown block, or None when there are none."""
    parts = [(results / f"{name}.md").read_text() for name in BENCH_ORDER if (results / f"{name}.md").exists()]
    return "\n".join(parts) if parts else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--bench", type=Path, default=BENCH, help="folder of the benchmark tables")
    args = parser.parse_args(argv)
    summary = store.artifacts_root() / "findings" / f"{args.profile}.md"
    if not summary.exists():
        print(
            f"error: {summary} does not exist; build the book first (make book PROFILE={args.profile})", file=sys.stderr
        )
        return 2
    text = args.readme.read_text()
    start, end = findings_markers(args.profile)
    for marks in ((start, end), (BENCH_START, BENCH_END)):
        if not all(m in text for m in marks):
            print(f"error: {args.readme} lacks the markers {marks[0]} ... {marks[1]}", file=sys.stderr)
            return 2
    text = replace_block(text, start, end, summary.read_text())
    print(f"README: findings summary of profile {args.profile!r} written")
    bench = bench_block(args.bench)
    if bench is None:
        print(f"README: no benchmark tables in {args.bench} (make bench writes them); Performance left as it was")
    else:
        text = replace_block(text, BENCH_START, BENCH_END, bench)
        print(f"README: benchmark tables from {args.bench} written")
    args.readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
