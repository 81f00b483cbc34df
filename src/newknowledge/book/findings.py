"""The findings page: every check of every chapter, gathered by the paper's finding.

:func:`load` reads what each chapter's notebook saved when it ran (the
:class:`~newknowledge.book.chapters.Chapter` its ``results`` returned, see
:func:`newknowledge.book.chapters.save`) under this page's parameters: the
page recomputes nothing, and a chapter not run with these parameters stops it
with the notebook to run.  :func:`collect` gathers the chapters' checks, so the
page and the chapters cannot disagree; :func:`summary` gives one row per
finding with its verdict, and every check stays one click away
(:func:`to_html`) with its margin in standard errors and, where the verdict
could turn, the mark "fragile" (the rule of :mod:`newknowledge.evaluation.checks`).  What a build saves of it,
and every profile's last build side by side: :mod:`newknowledge.book.build_record`.
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


def load(study) -> dict[int, chapters.Saved]:
    """Every chapter's saved results under ``study``'s parameters, by chapter number (nothing recomputed).

    Raises:
        chapters.NotSaved: one or more chapters have no results saved with these parameters; the
            message names each chapter's notebook, why (never run, or run with other parameters) and
            the command that runs them.
    """
    from newknowledge.core.config import config_hash

    found, problems = {}, {}
    for number in chapters.MODULES:
        try:
            found[number] = chapters.load(number, study)
        except chapters.NotSaved as err:
            problems[f"notebooks/{STEMS[number]}.ipynb"] = str(err)
    if problems:
        profile = study.study.profile
        raise chapters.NotSaved(
            f"the findings page reads the results each chapter saved when its notebook ran, and "
            f"{len(problems)} are missing or stale for profile {profile!r} (parameters hash "
            f"{config_hash(study.params())}): "
            + "; ".join(f"{nb}: {why}" for nb, why in problems.items())
            + ". Run them first with this page's parameters: make notebooks "
            + f'NOTEBOOKS="{" ".join(problems)}" PROFILE={profile} (and the same PARAMS), or make book.'
        )
    return found


def provenance(study, saved: dict[int, chapters.Saved]) -> pd.DataFrame:
    """The findings page's closing table: the parameters, and when and from which commit each chapter's
    results were saved (the page itself computes nothing)."""
    from newknowledge import __version__
    from newknowledge.book import page
    from newknowledge.core import store
    from newknowledge.core.config import config_hash

    root = store.artifacts_root()
    rows = [
        ("profile", study.study.profile),
        ("parameters hash", config_hash(study.params())),
        ("package version / commit", f"{__version__} / {page.commit()}"),
    ]
    rows += [(f"chapter {n} results (saved, version / commit)", f"{s.saved_at}, {s.version}") for n, s in saved.items()]
    folders = sorted({str(s.path.parent.relative_to(root)) for s in saved.values() if s.path.is_relative_to(root)})
    rows.append(("saved results read from", ", ".join(folders) or "elsewhere"))
    rows.append(("all parameters", ", ".join(f"{k}={v}" for k, v in study.params().items())))
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def figure(chs: dict[int, chapters.Chapter]):
    """The two central pictures, numbered as in their chapters (:data:`WHERE`): test accuracy against the
    share of Unknown at EARLY_STOP and CONVERGENCE (chapter 2), and the fitting curves (chapter 3).

    Returns:
        ``(fig, (left, right))``.
    """
    import matplotlib.pyplot as plt

    from newknowledge.book import plots

    plots.use()
    acc = chs[2].data["accuracy_test"].query("duration in ['EARLY_STOP', 'CONVERGENCE']")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    plots.accuracy_vs_unknown(acc, ax=a, title=f"{WHERE[1][1]}: test accuracy vs % Unknown")
    plots.training_curves(chs[3].data["curves"], early_stop=chs[3].data["early_stop"], ax=b)
    b.set_title(f"{WHERE[3][1]}: fitting Known vs Unknown examples ({chs[3].data['variant']})")
    return fig, (a, b)


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


def _ours(c: checks.Check) -> str:
    """One check in the "ours" column: its mark, its number, its margin (and "fragile")."""
    fragile = checks.fragile(c)
    cls = "margin fragile" if fragile else "margin"
    return (
        f"{checks.mark(c.holds)} {html.escape(c.ours[:140])}{'…' if len(c.ours) > 140 else ''} "
        f"<span class='{cls}'>({html.escape(checks.margin_text(c))})</span>"
    )


def to_html(collected: list[tuple[int, checks.Check]]) -> str:
    """The findings table: one compact row per finding, the full check list in a dropdown.

    Each row shows the verdict (marked fragile when one of its checks is, :func:`checks.verdict_fragile`),
    the checks that hold, the checks that decide the verdict (:func:`checks.deciding`: failing ones
    first) with their margins beside the paper's numbers (each line once), and a link to the chapter;
    ``<details>`` holds every check with its statistic, threshold and margin.  A legend under the
    table states the fragility rule.
    """
    rows = []
    for label, title, items in groups(collected):
        cs = [c for _, c in items]
        verdict = checks.verdict(cs) if cs else "no check"
        shown = checks.deciding(cs)
        fragile = checks.verdict_fragile(cs)
        deciding = "<br>".join(_ours(c) for c in shown)
        papers = "<br>".join(html.escape(p) for p in dict.fromkeys(c.paper for c in shown if c.paper))
        details = "".join(
            f"<li>{checks.mark(c.holds)} <b>{html.escape(c.claim)}</b> ({_link(n)}). "
            f"<i>Statistic:</i> {html.escape(c.statistic)}. <i>Threshold:</i> {html.escape(c.threshold)}. "
            f"<i>Paper:</i> {html.escape(c.paper)}. <i>Ours:</i> {html.escape(c.ours)}. "
            f"<i>Margin:</i> {html.escape(checks.margin_text(c))}.</li>"
            for n, c in items
        )
        where = _link(int(label), WHERE[int(label)][1]) if label.isdigit() else ""
        mark = "<br><span class='margin fragile'>fragile</span>" if fragile else ""
        rows.append(
            f"<tr class='verdict-{verdict.split()[0]}'><td>{label}</td><td>{html.escape(title)}"
            f"<details><summary>{len(cs)} checks</summary><ul>{details}</ul></details></td>"
            f"<td>{verdict}{mark}</td><td>{papers}</td><td>{deciding}</td><td>{where}</td></tr>"
        )
    head = "<tr><th>#</th><th>finding</th><th>verdict</th><th>paper</th><th>ours (this build)</th><th>see</th></tr>"
    legend = (
        "<p class='table-legend'><i>Ours</i> shows the checks that decide each verdict, failing ones first. "
        "In brackets, each check's margin: how far its statistic lies from its threshold, in standard "
        "errors, positive on the side the claim needs (n/a: the check has no standard error). "
        f"{html.escape(checks.FRAGILE_RULE)}</p>"
    )
    return (
        f"<div class='table-scroll'><table class='findings-table'><thead>{head}</thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>{legend}"
    )
