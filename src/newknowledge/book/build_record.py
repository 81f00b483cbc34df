"""What each build's findings page saves, and every profile's last build side by side.

The findings page (:mod:`newknowledge.book.findings`) saves one record per build (:func:`save`:
each row's verdict, the miniature it ran, the date and machine) in ``<artifacts>/findings/<profile>.json``.
``make readme`` writes it as the profile's column of the README's findings table, and the page sets
every saved profile's record beside its own (:func:`side_by_side`), so a reader sees which miniature
meets the paper's preconditions (:func:`preconditions_met`).
"""

from __future__ import annotations

import pandas as pd

from newknowledge.book import findings
from newknowledge.evaluation import checks


def _machine() -> dict:
    """The CPU model (``/proc/cpuinfo``'s model name, else ``platform.processor()``) and usable cores."""
    import os
    import platform
    import re
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.is_file() else None
    cpu = found.group(1) if found else platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": " ".join(re.sub(r"\((R|TM)\)", "", cpu).split()), "cores": cores}


def summary(collected: list[tuple[int, checks.Check]], study) -> dict:
    """This build's verdict per row of the findings page, with the build's date and machine.

    ``make readme`` writes the record's verdicts as the profile's column of the README's findings table,
    only for a build with the profile's own parameters (``overridden`` false).

    Returns:
        ``{"profile", "date" (UTC, YYYY-MM-DD), "machine": {"cpu", "cores"}, "overridden", "rows"}``,
        ``rows`` one ``{"label", "title", "verdict", "held", "checks", "fragile"}`` per row of
        :func:`newknowledge.book.findings.groups`, in its order (``fragile``: :func:`newknowledge.evaluation.checks.verdict_fragile`);
        ``overridden``: the build's parameters differ from its profile's (``PARAMS`` on the command line).
    """
    import datetime

    from newknowledge.core import config

    profile = study.study.profile
    own = config.from_params({**config.load_profile(profile), "profile": profile}) if profile_exists(profile) else None
    rows = []
    for label, title, items in findings.groups(collected):
        cs = [c for _, c in items]
        held = sum(c.holds is True for c in cs)
        verdict = checks.verdict(cs) if cs else "no check"
        rows.append(
            {
                "label": label,
                "title": title,
                "verdict": verdict,
                "held": held,
                "checks": len(cs),
                "fragile": checks.verdict_fragile(cs),
            }
        )
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    overridden = own is None or own.params() != study.params()
    return {
        "profile": profile,
        "date": date,
        "machine": _machine(),
        "overridden": overridden,
        "design": design(study),
        "rows": rows,
    }


def design(study) -> str:
    """The miniature a build ran, in one line: worlds, facts per relation, model size, section 4's |D|, rate."""
    s, ft = study.study, study.finetune
    worlds = len(s.seeds) if s.seed_scope == "world" else 1
    model = s.model or f"d_model {study.pretrain.d_model}"
    data = "ENTITYQUESTIONS" if s.eq_dir else f"{study.world.n_train} train facts per relation"
    d4 = f"|D| {ft.section4_size}" if ft.section4_size else "|D| by the rule"
    return f"{worlds} world{'s' if worlds > 1 else ''}, {data}, {model}, section 4's {d4}, lr {ft.ft_lr:g}"


def cell(row: dict) -> str:
    """A row of a saved record as one table cell: ``verdict (held/checks)``, ", fragile" where it could turn."""
    return f"{row['verdict']} ({row['held']}/{row['checks']})" + (", fragile" if row.get("fragile") else "")


def row_key(label: str) -> str:
    """A findings-page row's short name (``"setup"``, ``"1"``-``"7"``, ``"beyond"``)."""
    return {"setup": "Preconditions", "beyond": "Beyond"}.get(label, f"F{label}")


def side_by_side(current: str | None = None) -> pd.DataFrame:
    """The last build of every profile whose record is in this machine's artifacts, side by side.

    One column per ``<artifacts>/findings/<profile>.json`` (:func:`save`), ``current`` first; one row
    per findings-page row with its verdict cell (:func:`cell`), then the build's design and date.  A
    record the findings page saved before designs were recorded shows "not recorded" there.
    """
    import json

    from newknowledge.core import store

    paths = sorted((store.artifacts_root() / "findings").glob("*.json"), key=lambda p: (p.stem != current, p.stem))
    cols = {}
    for path in paths:
        record = json.loads(path.read_text())
        col = {row_key(r["label"]): cell(r) for r in record["rows"]}
        col["design"] = record.get("design", "not recorded")
        col["built"] = record["date"] + (", parameters overridden" if record.get("overridden") else "")
        cols[path.stem] = col
    return pd.DataFrame(cols)


def preconditions_met(table: pd.DataFrame) -> str:
    """One sentence from :func:`side_by_side`: in which profiles' last builds every precondition holds."""
    if table.empty or "Preconditions" not in table.index:
        return "No build has saved its findings yet."
    row = table.loc["Preconditions"].dropna()
    met = [p for p, c in row.items() if c.startswith("holds")]
    not_met = [f"{p} ({c})" for p, c in row.items() if not c.startswith("holds")]
    parts = []
    if met:
        parts.append(f"Every precondition holds in the last build of: {', '.join(met)}.")
    if not_met:
        parts.append(
            f"Not every precondition holds in: {', '.join(not_met)}; their findings are read with that caveat."
        )
    return " ".join(parts)


def profile_exists(name: str) -> bool:
    from newknowledge.core import config

    return config.profile_path(name).is_file()


def save(collected: list[tuple[int, checks.Check]], study):
    """Write :func:`summary` to ``<artifacts>/findings/<profile>.json`` (``make readme`` reads it)."""
    import json

    from newknowledge.core import store

    path = store.artifacts_root() / "findings" / f"{study.study.profile}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary(collected, study), indent=1) + "\n")
    return path
