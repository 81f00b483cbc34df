"""The findings page: every check of every chapter, gathered by the paper's finding.

:func:`results` calls each chapter's ``results`` (the same functions the
chapters display, reading the run store of this build) and :func:`collect`
gathers their checks, so the page and the chapters cannot disagree;
:func:`summary` gives one row per finding with its verdict, and every check
stays one click away (:func:`to_html`).
"""

from __future__ import annotations

import html

import pandas as pd

from newknowledge.book import chapters
from newknowledge.evaluation import checks, paper

# Where each finding is shown: (chapter file stem, figure).
WHERE = {
    1: ("02_unknown_harm", "Figure 2.1"),
    2: ("02_unknown_harm", "Figure 2.2"),
    3: ("03_fitting_speed", "Figure 3.1"),
    4: ("04_linear_model", "Figure 4.1"),
    5: ("05_knowledge_types", "Figure 5.1"),
    6: ("06_slick_analysis", "Figure 6.1"),
    7: ("07_idk_relabelling", "Figure 7.1"),
}
STEMS = {
    1: "01_quantifying_knowledge",
    2: "02_unknown_harm",
    3: "03_fitting_speed",
    4: "04_linear_model",
    5: "05_knowledge_types",
    6: "06_slick_analysis",
    7: "07_idk_relabelling",
}


def results(setup) -> dict[int, chapters.Chapter]:
    """Every chapter's results, by chapter number (the run store of this build; nothing retrained)."""
    return {number: chapters.module(number).results(setup) for number in chapters.MODULES}


def collect(chs: dict[int, chapters.Chapter]) -> list[tuple[int, checks.Check]]:
    """Every chapter's checks as ``(chapter, check)``; a check shown by several chapters is listed once."""
    out, seen = [], set()
    for number, ch in chs.items():
        for c in ch.checks:
            if (c.key, c.ours) not in seen:
                seen.add((c.key, c.ours))
                out.append((number, c))
    return out


def groups(collected: list[tuple[int, checks.Check]]) -> list[tuple[str, str, list[tuple[int, checks.Check]]]]:
    """Rows of the page: the preconditions, the seven findings, then what only our world can measure.

    Returns:
        ``(label, title, [(chapter, check), ...])`` per row.
    """
    rows = [
        (
            "setup",
            "Preconditions of the miniature (the paper's set-up)",
            [(n, c) for n, c in collected if c.kind == "setup"],
        )
    ]
    for f, title in paper.FINDINGS.items():
        rows.append((str(f), title, [(n, c) for n, c in collected if c.kind == "finding" and c.finding == f]))
    rows.append(
        (
            "beyond",
            "Beyond the paper (ground truth of our world, another fine-tuning format)",
            [(n, c) for n, c in collected if c.kind == "beyond"],
        )
    )
    return rows


def summary(collected: list[tuple[int, checks.Check]]) -> pd.DataFrame:
    """One row per group: its verdict, how many checks hold, and the first checks' numbers."""
    out = []
    for label, title, items in groups(collected):
        cs = [c for _, c in items]
        decided = [c.holds for c in cs if c.holds is not None]
        out.append(
            {
                "#": label,
                "finding": title,
                "verdict": checks.verdict(cs) if cs else "no check",
                "checks holding": f"{sum(decided)}/{len(cs)}",
            }
        )
    return pd.DataFrame(out)


def _link(number: int, figure: str | None = None) -> str:
    stem = STEMS[number]
    return f'<a href="chapters/{stem}.html">chapter {number}{", " + figure if figure else ""}</a>'


def to_html(collected: list[tuple[int, checks.Check]]) -> str:
    """The findings table: one compact row per finding, the full check list in a dropdown.

    Each row shows the verdict, the checks that hold, the deciding numbers (the first two checks'
    "ours" beside the paper's) and a link to the chapter; ``<details>`` holds every check with its
    statistic and threshold.
    """
    rows = []
    for label, title, items in groups(collected):
        cs = [c for _, c in items]
        verdict = checks.verdict(cs) if cs else "no check"
        deciding = "<br>".join(f"{checks.mark(c.holds)} {html.escape(c.ours[:140])}" for c in cs[:2])
        papers = "<br>".join(html.escape(c.paper) for c in cs[:2])
        details = "".join(
            f"<li>{checks.mark(c.holds)} <b>{html.escape(c.claim)}</b> ({_link(n)}). "
            f"<i>Statistic:</i> {html.escape(c.statistic)}. <i>Threshold:</i> {html.escape(c.threshold)}. "
            f"<i>Paper:</i> {html.escape(c.paper)}. <i>Ours:</i> {html.escape(c.ours)}</li>"
            for n, c in items
        )
        where = _link(int(label), WHERE[int(label)][1]) if label.isdigit() else ""
        rows.append(
            f"<tr class='verdict-{verdict.split()[0]}'><td>{label}</td><td>{html.escape(title)}"
            f"<details><summary>{len(cs)} checks</summary><ul>{details}</ul></details></td>"
            f"<td>{verdict}</td><td>{papers}</td><td>{deciding}</td><td>{where}</td></tr>"
        )
    head = "<tr><th>#</th><th>finding</th><th>verdict</th><th>paper</th><th>ours (this build)</th><th>see</th></tr>"
    return (
        f"<div class='table-scroll'><table class='findings-table'><thead>{head}</thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def readme_summary(collected: list[tuple[int, checks.Check]], profile: str) -> str:
    """The README's "what reproduces" paragraph, generated from this build's checks (Markdown).

    ``make readme`` writes it between the README's ``findings`` markers, so the README says what the
    last build's findings page says.
    """
    lines = [
        f"In the last `{profile}` build, finding by finding (every check and its threshold are on the "
        "book's findings page):",
        "",
    ]
    for label, title, items in groups(collected):
        cs = [c for _, c in items]
        held = sum(c.holds is True for c in cs)
        failing = [c.claim for c in cs if c.holds is False]
        open_ = [c.claim for c in cs if c.holds is None]
        name = {"setup": "Preconditions", "beyond": "Beyond the paper"}.get(label, f"Finding {label}")
        line = f"- **{name}** ({title}): {checks.verdict(cs) if cs else 'no check'}, {held} of {len(cs)} checks hold."
        if failing:
            line += " Not holding: " + "; ".join(failing) + "."
        if open_:
            line += " Not decidable in this build: " + "; ".join(open_) + "."
        lines.append(line)
    return "\n".join(lines) + "\n"


def save_summary(collected: list[tuple[int, checks.Check]], profile: str):
    """Write :func:`readme_summary` to ``<artifacts>/findings/<profile>.md`` (``make readme`` reads it)."""
    from newknowledge.core import store

    path = store.artifacts_root() / "findings" / f"{profile}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(readme_summary(collected, profile))
    return path
