"""Write the last build's findings summary into the README (between the ``findings`` markers).

    python tools/update_readme.py [--profile quick]

The findings page (notebooks/08_findings.ipynb) saves the summary of its checks to
``<artifacts>/findings/<profile>.md``; this script copies it into README.md, so the
README's "what reproduces" paragraph says what the last build's findings page says.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from newknowledge import store

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- findings:start -->", "<!-- findings:end -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    summary = store.artifacts_root() / "findings" / f"{args.profile}.md"
    if not summary.exists():
        print(f"error: {summary} does not exist; build the book first (make book PROFILE={args.profile})",
              file=sys.stderr)
        return 2
    text = args.readme.read_text()
    if START not in text or END not in text:
        print(f"error: {args.readme} lacks the markers {START} ... {END}", file=sys.stderr)
        return 2
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{summary.read_text()}{END}",
                 text, flags=re.S)
    args.readme.write_text(new)
    print(f"README: findings summary of profile {args.profile!r} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
