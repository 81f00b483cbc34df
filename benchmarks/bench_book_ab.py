"""The book's time per chapter at an old commit and now, back to back on this machine (issue 22, item 6).

Each side executes every notebook of a profile from an empty artifacts folder, as ``make book`` does
(``tools/run_notebook.py`` with the profile file; the HTML is not built): the old side from a git
worktree of ``--old`` (its own package code, its own notebooks), the new side from this checkout, one
after the other, so both see the same machine.  The table gives each chapter's seconds on both sides
and their ratio (new / old; below 1 is faster), and the total.

    python benchmarks/bench_book_ab.py [--old <commit>] [--profile quick] [--keep]

Both sides use this checkout's virtual environment (the old code is put first on the path); a build
from an empty cache takes 15-40 minutes a side on 2 cores, so ``make bench`` runs it only without
``--quick``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import report

ROOT = Path(__file__).resolve().parents[1]
OLD = "48a2727"  # the last commit before issue 22's evaluation changes (research-log E15)


def build(tree: Path, profile: str, artifacts: Path, out: Path) -> dict[str, float]:
    """Execute every notebook of ``tree`` with ``profile`` into ``out``; seconds per notebook."""
    env = {**os.environ, "NEWKNOWLEDGE_ARTIFACTS": str(artifacts), "PYTHONPATH": str(tree / "src")}
    times = {}
    for nb in sorted((tree / "notebooks").glob("*.ipynb")):
        t = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "tools" / "run_notebook.py"), str(nb), str(out / nb.name), "-k", "python3"]
        cmd += ["-f", str(tree / "src" / "newknowledge" / "profiles" / f"{profile}.yaml")]
        rc = subprocess.run(cmd, cwd=tree, env=env).returncode
        times[nb.stem] = time.perf_counter() - t if rc == 0 else float("nan")
        print(f"{tree.name}: {nb.stem} {times[nb.stem]:.0f} s" + ("" if rc == 0 else " (failed)"), flush=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", default=OLD, help="the commit to compare with")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--keep", action="store_true", help="keep the artifacts folders (printed)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_book_ab_"))
    old_tree = work / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old], check=True)
    try:
        sides = {}
        for name, tree in (("old", old_tree), ("new", ROOT)):
            (work / f"{name}-out").mkdir()
            sides[name] = build(tree, args.profile, work / f"{name}-artifacts", work / f"{name}-out")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"artifacts kept in {work}")
    df = pd.DataFrame(sides).rename_axis("chapter").reset_index()
    df.loc[len(df)] = ["(total)", df["old"].sum(), df["new"].sum()]
    df["new / old"] = (df["new"] / df["old"]).round(2)
    df[["old", "new"]] = df[["old", "new"]].round(0)
    df = df.rename(columns={"old": f"s at {args.old}", "new": "s now"})
    report(df, "bench_book_ab", f"The {args.profile} book per chapter from an empty cache, at {args.old} and now")


if __name__ == "__main__":
    main()
