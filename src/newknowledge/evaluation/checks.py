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

How firm a verdict is.  Where the check function has a statistic with a
standard error or an interval, the check also carries them as numbers
(``value``, ``bar``: the threshold on the same scale, ``direction``: the side
of ``bar`` the claim needs, ``se``, ``interval``); where several statistics
must all pass (every seed, every share of Unknown) the numbers are those of the
one nearest to failing (:func:`weakest`).  :func:`margin` is the distance from
the threshold in standard errors, positive on the side the claim needs.  The
rule, fixed before the build that first shows it: **a check is fragile when its
statistic lies within one standard error of its threshold, or when its interval
crosses the threshold** (:func:`fragile`); a verdict is fragile when one of its
checks is.  A check without these numbers shows "n/a": no margin is guessed.
The thresholds and verdicts themselves do not depend on these numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from newknowledge.evaluation.stats import mean_ci

KINDS = ("finding", "setup", "beyond")
DIRECTIONS = ("above", "below", "within")  # value > bar, value < bar, |value| < bar
# The rule of the module docstring, as the findings page states it.
FRAGILE_RULE = (
    "Fragile (a rule fixed before the build that first showed it): a check whose statistic lies within one "
    "standard error of its threshold, or whose interval crosses it; a verdict is fragile when one of its "
    "checks is. Thresholds and verdicts do not depend on this mark."
)


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
    # The numbers behind the verdict, where the check has them (None: "n/a"; see the module docstring).
    value: float | None = None  # the statistic (of the seed or share nearest to failing)
    bar: float | None = None  # the threshold on the statistic's scale ("within": the band's half-width)
    direction: str | None = None  # where the claim needs the value: "above", "below" or "within" the bar
    se: float | None = None  # the statistic's standard error
    interval: tuple[float, float] | None = None  # its interval (95% unless the check function says otherwise)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "finding" and self.finding not in range(1, 8):
            raise ValueError(f"a finding check needs a finding number 1-7, got {self.finding!r}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def numbers(
    value: float, bar: float, direction: str, se: float | None = None, interval: tuple[float, float] | None = None
) -> dict[str, Any]:
    """The numeric fields of a :class:`Check`, as keyword arguments: ``Check(..., **numbers(...))``.

    A NaN or infinite value, bar or standard error (or a zero standard error) is dropped to None, and
    an interval with a NaN end is dropped, so that nothing is shown that was not measured.
    """
    se = _finite(se)
    lo, hi = (None, None) if interval is None else (_finite(interval[0]), _finite(interval[1]))
    return {
        "value": _finite(value),
        "bar": _finite(bar),
        "direction": direction,
        "se": se if se else None,
        "interval": (lo, hi) if lo is not None and hi is not None else None,
    }


def from_means(means, bar: float, direction: str, level: float = 0.95) -> dict[str, Any]:
    """:func:`weakest` of several estimates with standard errors, e.g. one
    :class:`newknowledge.evaluation.significance.Mean` per seed: the mean, its standard error and
    its two-sided ``level`` interval (``Mean.ci``)."""
    return weakest([numbers(m.mean, bar, direction, se=m.se, interval=m.ci(level)) for m in means])


def margin(check: Check) -> float | None:
    """How far the statistic lies from its threshold, in standard errors; None without the numbers.

    Positive on the side the claim needs (above the bar for "above", below it for "below", inside
    the band ``-bar..bar`` for "within", measured to the nearer edge), negative on the other.
    """
    if check.value is None or check.bar is None or not check.se or check.direction is None:
        return None
    gap = {
        "above": check.value - check.bar,
        "below": check.bar - check.value,
        "within": check.bar - abs(check.value),
    }[check.direction]
    return gap / check.se


def crosses(check: Check) -> bool | None:
    """Whether the check's interval contains its threshold (either edge of the band for "within")."""
    if check.interval is None or check.bar is None or check.direction is None:
        return None
    lo, hi = check.interval
    edges = (-check.bar, check.bar) if check.direction == "within" else (check.bar,)
    return any(lo <= e <= hi for e in edges)


def fragile(check: Check) -> bool | None:
    """The rule of the module docstring: within one standard error of the threshold, or an interval
    that crosses it.  None when the check has neither a standard error nor an interval."""
    m, x = margin(check), crosses(check)
    if m is None and x is None:
        return None
    return bool((m is not None and abs(m) < 1) or x)


def margin_text(check: Check) -> str:
    """The margin as a reader sees it: ``"+2.4 SE"``, ``"-0.3 SE, fragile"``, ``"interval crosses, fragile"``
    (an interval but no standard error), or ``"n/a"``."""
    m, f = margin(check), fragile(check)
    if f is None:
        return "n/a"
    text = f"{m:+.1f} SE" if m is not None else "interval " + ("crosses" if f else "clear")
    return f"{text}, fragile" if f else text


def weakest(options: list[dict[str, Any]]) -> dict[str, Any]:
    """Of several statistics that must all pass (one per seed, per share of Unknown, ...), the numbers
    (:func:`numbers`) of the one nearest to failing: a fragile one first, then the smallest margin (one
    without a margin counts as far).  ``{}`` for no options (the check then keeps no numbers)."""
    if not options:
        return {}

    def key(o):
        probe = Check("k", None, "setup", "", "", "", "", "", None, **o)
        m = margin(probe)
        return (not fragile(probe), m if m is not None else math.inf)

    return min(options, key=key)  # the first of equals


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


def across_numbers(per_seed: dict[int, tuple[float, bool | None]], bar: float, direction: str) -> dict[str, Any]:
    """The numbers (:func:`numbers`) of a per-seed statistic that has no standard error of its own.

    Such a check holds only if it holds in every seed, so its margin is the worst seed's: the value
    nearest to failing (the lowest for "above", the highest for "below", the largest in size for
    "within"), in units of the seeds' standard deviation (how far another world's value may fall
    from these), with no interval.  With one seed there is no spread, so no margin.
    """
    values = np.array([v for v, _ in per_seed.values()], dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {}
    worst = {"above": values.min(), "below": values.max(), "within": values[np.argmax(np.abs(values))]}[direction]
    if len(values) == 1:
        return numbers(worst, bar, direction)
    return numbers(worst, bar, direction, se=values.std(ddof=1))


def table(checks: list[Check]) -> pd.DataFrame:
    """Checks as a display table, one row each, ``holds`` as ✓ / ✗ / –, and each check's :func:`margin_text`."""
    cols = ["holds", "finding", "kind", "claim", "statistic", "threshold", "paper", "ours", "margin"]
    if not checks:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame([asdict(c) for c in checks])
    df["holds"] = df["holds"].map(mark)
    df["finding"] = df["finding"].map(lambda f: "" if f is None or pd.isna(f) else str(int(f)))
    df["margin"] = [margin_text(c) for c in checks]
    return df[cols]


def deciding(checks: list[Check], n: int = 3) -> list[Check]:
    """The checks that decide a verdict, in the order a reader needs them (at most ``n``).

    Failing checks first (they keep a finding from holding), then the undecided, both in the
    chapters' order; then the holding ones, the fragile and the smallest margin first (the nearest
    to failing decides whether "holds" stands), those without a margin last.  A "partly" verdict
    thus shows a failing check *and* a holding one: with ``n`` failing checks or more, the last
    place goes to the holding check nearest to failing.
    """

    def key(c: Check):
        if c.holds is not True:
            return (0 if c.holds is False else 1,)
        m = margin(c)
        return (2, not fragile(c), m is None, m if m is not None else 0.0)

    ordered = sorted(checks, key=key)  # stable: ties keep the chapter's order
    shown = ordered[:n]
    holding = [c for c in ordered if c.holds is True]
    if holding and shown and not any(c.holds is True for c in shown) and n > 1:
        shown = shown[:-1] + holding[:1]
    return shown


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


def verdict_fragile(checks: list[Check]) -> bool:
    """A verdict is fragile when one of its decided checks is (:func:`fragile`): one check nearer
    its threshold than a standard error, or with an interval across it, could change the verdict."""
    return any(fragile(c) is True for c in checks if c.holds is not None)


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
