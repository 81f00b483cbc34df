"""Write the last builds' findings table and figure into the README, and the benchmarks' tables into the book.

    python tools/update_readme.py [--profile quick]

- **Findings.** The findings page (notebooks/09_findings.ipynb) saves one record per build,
  ``<artifacts>/findings/<profile>.json`` (``newknowledge.book.build_record.save``: each row's
  verdict, the build's date and machine). This script writes that record as ``profile``'s column of
  the README's findings table (between :data:`FINDINGS_START` and :data:`FINDINGS_END`) and keeps
  every other column as the README has it, so ``make readme`` after a quick build and ``make readme
  PROFILE=full`` after a full one, on whichever machines built them, fill the table between them. A
  profile the table has no column for is an error: add its name to the table's header row first.
- **Figure.** When the executed findings page (``book/findings.ipynb``) is a build of the
  :data:`FIGURE_PROFILE` profile, the PNG papermill recorded for its figure (the cell calling
  :data:`FIGURE_CELL`) is copied to ``book/_static/readme_figure.png``, the README's one figure; no
  figure is drawn by hand.
- **Benchmarks.** Every benchmark script (``make bench``) writes its table as
  ``benchmarks/results/<name>.md``; those present are copied, in :data:`BENCH_ORDER`, between the
  ``bench`` markers of the book's Performance page (``book/performance.md``), each after its own
  marker, and the page keeps its tables of benchmarks not run here, so none of its numbers is
  typed by hand.

Nothing is written unless every step can be done: on an error the files are left as they were.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from pathlib import Path

from newknowledge.book import build_record
from newknowledge.core import store

ROOT = Path(__file__).resolve().parents[1]
FINDINGS_START, FINDINGS_END = "<!-- findings:start -->", "<!-- findings:end -->"
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"
BENCH = ROOT / "benchmarks" / "results"
PERFORMANCE = ROOT / "book" / "performance.md"
# The Performance page's tables, in the order the page explains them.
BENCH_ORDER = (
    "bench_book",
    "bench_book_ab",
    "bench_slick",
    "bench_slick_tool",
    "bench_train",
    "bench_eval",
    "bench_grouped",
    "bench_grouped_epoch",
    "bench_epoch_profile",
    "bench_grouped_bound",
    "bench_grouped_threads",
    "bench_eval_at_stops",
    "bench_idk_flags",
    "bf16",
    "bench_pretrain_length",
)
# The README's figure: the findings page's (Figures 2.1 and 3.1 of the chapters), from a build of this profile.
FIGURE_NOTEBOOK = ROOT / "book" / "findings.ipynb"
FIGURE_CELL = "findings.figure("
FIGURE_PROFILE = "quick"
FIGURE = ROOT / "book" / "_static" / "readme_figure.png"
# The findings table's first two columns and its last row (the build's date and machine).
HEAD = ["#", "finding"]
BUILD_ROW = "built"


def row_key(label: str) -> str:
    """The table's first cell for a findings-page row (``"setup"``, ``"1"``-``"7"``, ``"beyond"``)."""
    return build_record.row_key(label)


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table line, as written (an escaped ``\\|`` stays inside its cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _escape(text: str) -> str:
    return text.replace("|", r"\|")


def parse_table(block: str) -> tuple[list[str], dict[str, list[str]]]:
    """The findings table written by :func:`render_table`, read back.

    Returns:
        ``(profiles, rows)``: the profile columns in order, and per row key its cells after the key
        (the finding's title, then one cell per profile), in the table's order.

    Raises:
        ValueError: the block holds no table with the columns ``# | finding | <profile> ...``.
    """
    lines = [line for line in block.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2 or _cells(lines[0])[:2] != HEAD:
        raise ValueError(f"no findings table (header '| {' | '.join(HEAD)} | <profile> ... |') between the markers")
    profiles = _cells(lines[0])[2:]
    rows = {}
    for line in lines[2:]:
        cells = _cells(line)
        cells += [""] * (len(profiles) + 2 - len(cells))
        rows[cells[0]] = cells[1:]
    return profiles, rows


def render_table(profiles: list[str], rows: dict[str, list[str]]) -> str:
    """The findings table: one row per finding, one verdict column per profile, the build row last."""
    lines = ["| " + " | ".join(HEAD + profiles) + " |", "|" + " --- |" * (len(HEAD) + len(profiles))]
    ordered = [k for k in rows if k != BUILD_ROW] + [k for k in rows if k == BUILD_ROW]
    lines += ["| " + " | ".join([key, *rows[key]]) + " |" for key in ordered]
    return "\n".join(lines) + "\n"


def column(record: dict) -> dict[str, tuple[str, str]]:
    """A findings record (``build_record.summary``) as table cells: row key -> (title, cell)."""
    out = {row_key(r["label"]): (_escape(r["title"]), build_record.cell(r)) for r in record["rows"]}
    if "design" in record:
        out["design"] = ("the miniature: worlds, facts, model, section 4's D, rate", _escape(record["design"]))
    machine = record["machine"]
    out[BUILD_ROW] = ("date, CPU, cores", _escape(f"{record['date']}, {machine['cpu']}, {machine['cores']} cores"))
    return out


def findings_table(block: str, profile: str, record: dict) -> str:
    """``block``'s findings table with ``profile``'s column replaced by ``record``; other columns kept.

    A row the record lacks keeps its other cells and gets "–" in ``profile``'s column; a row only the
    record has is added, with "–" in the other columns.

    Raises:
        ValueError: no table in ``block``, or it has no column for ``profile``.
    """
    profiles, rows = parse_table(block)
    if profile not in profiles:
        raise ValueError(
            f"the findings table has no column for profile {profile!r} (its columns: {', '.join(profiles)}); "
            f"add '{profile}' to its header row to track that profile"
        )
    at = 1 + profiles.index(profile)
    new = column(record)
    for key, (title, cell) in new.items():
        rows.setdefault(key, [title] + ["–"] * len(profiles))
        rows[key][0], rows[key][at] = title, cell
    for key in rows.keys() - new.keys():
        rows[key][at] = "–"
    return render_table(profiles, rows)


def figure_png(notebook: Path, code: str = FIGURE_CELL) -> bytes:
    """The PNG that papermill recorded for the code cell of ``notebook`` whose source holds ``code``.

    Raises:
        LookupError: no code cell holds ``code``, or that cell has no PNG output.
    """
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and code in "".join(cell["source"]):
            for out in cell.get("outputs", []):
                if "image/png" in out.get("data", {}):
                    return base64.b64decode("".join(out["data"]["image/png"]))
            raise LookupError(f"{notebook.name}: the cell calling {code!r} has no PNG output")
    raise LookupError(f"{notebook.name}: no cell calls {code!r}; update FIGURE_CELL in {Path(__file__).name}")


def notebook_profile(notebook: Path) -> str | None:
    """The profile papermill ran ``notebook`` with (its recorded parameters), or None."""
    meta = json.loads(notebook.read_text()).get("metadata", {})
    return meta.get("papermill", {}).get("parameters", {}).get("profile")


def replace_block(text: str, start: str, end: str, body: str) -> str:
    """``text`` with everything between the markers ``start`` and ``end`` replaced by ``body``."""
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{body}{end}", text, flags=re.S)


def block(text: str, start: str, end: str) -> str:
    """What lies between the markers ``start`` and ``end`` of ``text``."""
    return text.split(start, 1)[1].split(end, 1)[0]


def bench_marker(name: str) -> str:
    """The comment that opens benchmark ``name``'s table on the Performance page."""
    return f"<!-- bench:table {name} -->"


def page_tables(block_text: str) -> dict[str, str]:
    """The tables of the Performance page's bench block, by benchmark name (from :func:`bench_marker`)."""
    parts = re.split(r"<!-- bench:table (\S+) -->\n", block_text)
    return {name: text.strip() + "\n" for name, text in zip(parts[1::2], parts[2::2])}


def bench_block(results: Path = BENCH, page: str = "") -> str | None:
    """The benchmark tables as one Markdown block, each after its :func:`bench_marker`, or None.

    A table ``make bench`` wrote to ``results`` replaces the page's; a benchmark not run here keeps the
    page's table (``page``: the block as the page has it), so a machine that ran one benchmark does not
    erase the others.  None when ``results`` holds no table, or when the page's tables carry no markers
    (written before them) and ``results`` lacks some: then the page cannot be merged table by table.
    """
    fresh = {n: (results / f"{n}.md").read_text() for n in BENCH_ORDER if (results / f"{n}.md").exists()}
    kept = page_tables(page)
    if not fresh or (page.strip() and not kept and len(fresh) < len(BENCH_ORDER)):
        return None
    parts = [
        f"{bench_marker(n)}\n{(fresh.get(n) or kept[n]).strip()}\n" for n in BENCH_ORDER if n in fresh or n in kept
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="the profile whose findings column to write")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--performance", type=Path, default=PERFORMANCE, help="the book's Performance page")
    parser.add_argument("--bench", type=Path, default=BENCH, help="folder of the benchmark tables")
    parser.add_argument("--figure-notebook", type=Path, default=FIGURE_NOTEBOOK, help="the executed findings page")
    parser.add_argument("--figure", type=Path, default=FIGURE, help="where the README's figure goes")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    record_path = store.artifacts_root() / "findings" / f"{args.profile}.json"
    if not record_path.exists():
        return fail(f"{record_path} does not exist; build the book first (make book PROFILE={args.profile})")
    for path, (start, end) in (
        (args.readme, (FINDINGS_START, FINDINGS_END)),
        (args.performance, (BENCH_START, BENCH_END)),
    ):
        if not path.is_file() or not all(m in path.read_text() for m in (start, end)):
            return fail(f"{path} lacks the markers {start} ... {end}")
    readme = args.readme.read_text()
    record = json.loads(record_path.read_text())
    if record.get("overridden"):
        return fail(
            f"{record_path.name}: the last {args.profile!r} build ran with parameters other than the "
            f"profile's (PARAMS); the README's column is for the profile as committed: rebuild with "
            f"make book PROFILE={args.profile}"
        )
    try:
        table = findings_table(block(readme, FINDINGS_START, FINDINGS_END), args.profile, record)
    except ValueError as e:
        return fail(f"{args.readme}: {e}")
    png = None
    if not args.figure_notebook.is_file():
        print(f"README: no {args.figure_notebook.name} executed (make book); figure left as it was")
    elif (ran := notebook_profile(args.figure_notebook)) != FIGURE_PROFILE:
        print(f"README: {args.figure_notebook.name} is a {ran!r} build, not {FIGURE_PROFILE!r}; figure left as it was")
    else:
        try:
            png = figure_png(args.figure_notebook)
        except LookupError as e:
            return fail(str(e))

    args.readme.write_text(replace_block(readme, FINDINGS_START, FINDINGS_END, table))
    print(f"README: the findings table's {args.profile!r} column written from {record_path.name}")
    if png is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        args.figure.write_bytes(png)
        print(f"README: the figure of the {FIGURE_PROFILE} build's findings page written to {args.figure.name}")
    page = args.performance.read_text()
    bench = bench_block(args.bench, block(page, BENCH_START, BENCH_END))
    if bench is None:
        print(
            f"Performance: no benchmark tables in {args.bench}, or only some and the page's tables predate the "
            "per-table markers (make bench writes them all); page left as it was"
        )
    else:
        args.performance.write_text(replace_block(page, BENCH_START, BENCH_END, bench))
        print(f"Performance: benchmark tables from {args.bench} written to {args.performance.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
