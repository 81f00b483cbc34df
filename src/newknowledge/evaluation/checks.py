"""The paper's claims as checks written before the results: what is claimed, the statistic, the threshold.

Every chapter ends with its checks, and the findings page gathers them.  A
:class:`Check` carries the claim in the paper's words (with its section), the
statistic we compute, the criterion it must meet (fixed in the check
function's docstring before any run, and justified there by the paper's effect
size or by our noise), the paper's number and ours.  Nothing is typed in:
``ours`` comes from the run store of the same build.

Three kinds of check:

- ``finding``: a claim of the paper, tagged with its finding number (1-7,
  :data:`newknowledge.evaluation.paper.FINDINGS`);
- ``setup``: a precondition the miniature must meet for the findings to mean
  what the paper's mean (a natural dev split, CONVERGENCE at ~100% train
  accuracy, ...); a finding checked on a failed precondition says so;
- ``beyond``: what only the controlled world can measure (the true exposure
  counts), or a contrast the book shows (another fine-tuning format).

With several seeds a check is evaluated per seed and holds only if it holds in
every seed ("holds in k/n seeds"), except where the docstring says the seeds
are pooled (equivalence tests, whose power comes from pooling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from newknowledge.evaluation.stats import mean_ci

KINDS = ("finding", "setup", "beyond")


@dataclass(frozen=True)
class Check:
    """One claim checked on this build."""

    key: str  # a stable name, e.g. "harm.neutral_at_early_stop" (chapter prose refers to it)
    finding: int | None  # the paper's finding (1-7); None for a setup or beyond-the-paper check
    kind: str  # "finding", "setup" or "beyond"
    claim: str  # the claim, in the paper's words, with its section
    statistic: str  # what we compute
    threshold: str  # the criterion, fixed before the run
    paper: str  # the paper's number(s)
    ours: str  # this build's number(s)
    holds: bool | None  # None: not decidable in this build (``ours`` says why)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "finding" and self.finding not in range(1, 8):
            raise ValueError(f"a finding check needs a finding number 1-7, got {self.finding!r}")


def mark(holds: bool | None) -> str:
    """✓, ✗ or – (not decidable)."""
    return {True: "✓", False: "✗"}.get(holds, "–")


def pct(x: float, signed: bool = False, decimals: int = 1) -> str:
    """A fraction as percent (points) text, ``+``-signed if asked; NaN as "n/a"."""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{100 * x:{'+' if signed else ''}.{decimals}f}"


def across(
    per_seed: dict[int, tuple[float, bool | None]], fmt: Callable[[float], str] = pct
) -> tuple[str, bool | None]:
    """Combine a per-seed statistic: the text (mean, 95% interval across seeds, k/n) and the verdict.

    Args:
        per_seed: seed -> (value, holds in that seed); ``holds`` None means not decidable there.
        fmt: formats a value.

    Returns:
        ``(text, holds)``: holds only if it holds in every seed; None when no seed decides.
    """
    values = np.array([v for v, _ in per_seed.values()], dtype=float)
    verdicts = [h for _, h in per_seed.values()]
    decided = [h for h in verdicts if h is not None]
    if len(per_seed) == 1:
        text = fmt(values[0])
    else:
        finite = values[np.isfinite(values)]
        m, lo, hi = mean_ci(finite) if len(finite) else (np.nan,) * 3
        over = f"{len(values)}" if len(finite) == len(values) else f"{len(finite)} of {len(values)}"
        text = f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}] across {over} seeds, holds in {sum(decided)}/{len(verdicts)}"
    holds = None if not decided else (len(decided) == len(verdicts) and all(decided))
    return text, holds


def table(checks: list[Check]) -> pd.DataFrame:
    """Checks as a display table, one row each, ``holds`` as ✓ / ✗ / –."""
    df = pd.DataFrame([asdict(c) for c in checks])
    df["holds"] = df["holds"].map(mark)
    df["finding"] = df["finding"].map(lambda f: "" if f is None or pd.isna(f) else str(int(f)))
    return df[["holds", "finding", "kind", "claim", "statistic", "threshold", "paper", "ours"]]


def verdict(checks: list[Check]) -> str:
    """A finding's verdict from its checks: "holds" only if every decidable check holds.

    "partly" when some hold and some do not, "does not hold" when none holds,
    "not decidable" when no check could be decided in this build.
    """
    decided = [c.holds for c in checks if c.holds is not None]
    if not decided:
        return "not decidable"
    if all(decided):
        return "holds" if len(decided) == len(checks) else "holds where decidable"
    return "partly" if any(decided) else "does not hold"


def conclusion(checks: list[Check], prose: dict[str, str] | None = None) -> str:
    """A chapter's "What we found", rendered from its checks (Markdown).

    One line per check with its verdict and our number, each followed by the
    ``prose`` keyed ``"<check key>:holds"`` or ``"<check key>:fails"`` as the
    check came out, then ``prose["always"]``: fixed text that is true whatever
    the outcome.  No number or verdict is typed into a chapter by hand.
    """
    prose = prose or {}
    lines = []
    for c in checks:
        state = {True: "holds", False: "does **not** hold", None: "is not decidable in this build"}[c.holds]
        tag = f"finding {c.finding}" if c.finding else c.kind
        lines.append(f"- *{c.claim}* ({tag}) {state}: {c.ours}.")
        outcome = {True: "holds", False: "fails"}.get(c.holds)
        if outcome and f"{c.key}:{outcome}" in prose:
            lines.append(f"  {prose[f'{c.key}:{outcome}']}")
    if "always" in prose:
        lines += ["", prose["always"]]
    return "\n".join(lines)
