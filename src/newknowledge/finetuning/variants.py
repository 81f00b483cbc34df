"""Fine-tuning data set variants (paper Sec. 4 and 5, App. K).

Every variant is drawn from a categorised train table (one row per train
example with columns ``relation``, ``question``, ``answer`` and ``category``,
the SliCK category from Sec. 3) and has the same size |D|:

- |D| is the sum over relations of the relation's smallest category size
  (Sec. 4.1; 6,142 on ENTITYQUESTIONS), so every single-category variant can be
  built with the same relation mix. That per-relation minimum is the relation's
  *quota*.
- ``unknown_X`` (Sec. 4): X% Unknown and (100-X)% Known examples, X% of each
  relation's quota being Unknown, so the relation mix does not change with X.
  Section 4 may be larger than |D| (``section4_size``, research-log E13): it
  needs only Known and Unknown examples, so beyond |D| a relation's quota is
  the smaller of its Known and Unknown counts (the paper's rule over the two
  groups section 4 draws from), rescaled (:func:`section4_quotas`).
- ``known_X`` (Sec. 4.2, D_Known): ``unknown_X`` with its Unknown rows removed,
  size (1-X/100)|D|.
- ``HighlyKnown``/``MaybeKnown``/``WeaklyKnown``/``Unknown`` and ``natural``
  (Sec. 5, Table 2): each relation's quota drawn from one category only, or
  from all the relation's examples (the natural category mix).
- ``idk_X`` (App. K, Table 8): ``unknown_X`` with the Unknown answers replaced
  by "I don't know".

:func:`build` makes any of them from its name. Sampling is uniform without
replacement, from ``numpy.random.default_rng(seed)`` with the relations visited
in sorted order, so a seed always gives the same rows.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pandas as pd

from newknowledge.core.prompts import IDK
from newknowledge.core.tidy import TableError, require_columns
from newknowledge.knowledge.categories import CATEGORIES, KNOWN

REQUIRED_COLUMNS = ("relation", "question", "answer", "category")
VALID_SPECS = ("unknown_<X>", "known_<X>", "idk_<X>", *CATEGORIES, "natural")
_PCT_SPEC = re.compile(r"^(unknown|known|idk)_(\d+(?:\.\d+)?)$")


# Variants that are one data set under two names: D_Unknown of Sec. 5 (each relation's quota drawn from
# its Unknown examples) is D with 100% Unknown of Sec. 4 (100% of each relation's quota Unknown); with
# the same seed :func:`build` draws the same rows for both.  The book trains it once
# (:meth:`newknowledge.book.pipeline.Setup.records`).
SAME_DATA = {"Unknown": "unknown_100"}


class VariantError(ValueError):
    """A variant cannot be built: bad input table, bad spec or too few examples."""


def _check(categorized: pd.DataFrame) -> None:
    try:
        require_columns(categorized, REQUIRED_COLUMNS, "categorised table")
    except TableError as err:
        raise VariantError(str(err)) from None
    bad = sorted(set(categorized["category"]) - set(CATEGORIES))
    if bad:
        raise VariantError(f"unknown category value(s) {bad}; expected one of {CATEGORIES}")


def _round_half_up(x: Fraction) -> int:
    return int((x + Fraction(1, 2)).__floor__())


def _largest_remainder(weights: dict[str, Fraction], total: int) -> dict[str, int]:
    """Integers proportional to ``weights`` summing to ``total`` (largest remainder).

    Leftover units go to the largest remainders, ties broken by key order.
    """
    wsum = sum(weights.values())
    if wsum == 0:
        return {k: 0 for k in weights}
    exact = {k: Fraction(total) * w / wsum for k, w in weights.items()}
    out = {k: int(v.__floor__()) for k, v in exact.items()}
    left = total - sum(out.values())
    by_remainder = sorted(weights, key=lambda k: (-(exact[k] - out[k]), k))
    for k in by_remainder[:left]:
        out[k] += 1
    return out


def relation_quotas(categorized: pd.DataFrame, size: int | None = None) -> dict[str, int]:
    """Per-relation example counts of a variant of ``size`` examples.

    Args:
        categorized: categorised train table.
        size: variant size; ``None`` means |D| (:func:`dataset_size`).

    Returns:
        ``{relation: quota}`` in sorted relation order, summing exactly to
        ``size``. A relation's quota is its smallest category count (0 when it
        lacks a category); for another ``size`` the quotas are rescaled by
        largest-remainder rounding.
    """
    _check(categorized)
    counts = pd.crosstab(categorized["relation"], categorized["category"])
    counts = counts.reindex(columns=list(CATEGORIES), fill_value=0)
    base = {str(r): int(counts.loc[r].min()) for r in sorted(counts.index, key=str)}
    if size is None:
        return base
    if size < 0:
        raise VariantError(f"size must be >= 0, got {size}")
    if sum(base.values()) == 0 and size > 0:
        raise VariantError("every relation lacks some category, so |D| = 0")
    return _largest_remainder({r: Fraction(q) for r, q in base.items()}, int(size))


def section4_quotas(categorized: pd.DataFrame, size: int) -> dict[str, int]:
    """Per-relation counts of a section-4 variant (``unknown_X``) of ``size`` examples.

    Up to |D| (:func:`dataset_size`) these are :func:`relation_quotas`, the paper's
    mix (Sec. 4.1: one |D| and mix for sections 4 and 5). A larger section 4
    (``section4_size``) needs only the two groups it draws from, so its quota per
    relation is the smaller of the relation's Known and Unknown counts, rescaled:
    both D with 100% Unknown and D with 0% Unknown can then be built up to the sum
    of those minima (:func:`section4_max`).

    Raises:
        VariantError: ``size`` above :func:`section4_max`.
    """
    if size <= dataset_size(categorized):
        return relation_quotas(categorized, size)
    base = _two_group_minima(categorized)
    if size > sum(base.values()):
        raise VariantError(
            f"section4_size {size} exceeds what Known and Unknown examples can supply with one relation mix: "
            f"the sum over relations of min(Known, Unknown) is {sum(base.values())}. Lower section4_size "
            "(0 uses the paper's rule), or grow the world (n_train)."
        )
    return _largest_remainder({r: Fraction(q) for r, q in base.items()}, int(size))


def section4_max(categorized: pd.DataFrame) -> int:
    """The largest section-4 |D|: the sum over relations of min(Known, Unknown) (at least the rule's |D|)."""
    return max(dataset_size(categorized), sum(_two_group_minima(categorized).values()))


def _two_group_minima(categorized: pd.DataFrame) -> dict[str, int]:
    _check(categorized)
    unknown = categorized["category"].eq("Unknown")
    counts = pd.crosstab(categorized["relation"].astype(str), unknown).reindex(columns=[False, True], fill_value=0)
    return {str(r): int(counts.loc[r].min()) for r in sorted(counts.index, key=str)}


# Below this |D| the study's comparisons lose their meaning: a 50% Unknown variant would hold fewer
# than 50 Unknown examples, so fitted shares move in steps of more than 2 points.
MIN_SIZE = 100


def check_size(categorized: pd.DataFrame, requested: int = 0, minimum: int = MIN_SIZE) -> int:
    """|D| for the fine-tuning variants, or one clear error saying what the data allow (Sec. 4.1).

    Args:
        categorized: categorised train table.
        requested: ``dataset_size`` (0 = the paper's rule, :func:`dataset_size`).
        minimum: the smallest |D| the study accepts.

    Returns:
        |D|.

    Raises:
        VariantError: |D| by the rule is below ``minimum`` (one line per relation lacking a
            category, with its counts), or ``requested`` exceeds what the categories hold; the message
            names the fixes (``dataset_size``, dropping a relation, a model that knows more).
    """
    counts = summary(categorized).drop(index="total")
    rule = int(counts[list(CATEGORIES)].min(axis=1).sum())
    fixes = (
        "Fixes: set dataset_size to a size the categories hold (at most the rule's |D|), drop the "
        "relations that lack a category from the data (eq_dir) or use a model that knows more of "
        "them (a larger or better-trained model); the per-relation table is chapter 1's."
    )
    if requested == 0 and rule < minimum:
        lines = [
            f"  relation {r}: "
            + ", ".join(f"{c} {int(row[c])}" for c in CATEGORIES)
            + (
                f"  <- no {', '.join(c for c in CATEGORIES if row[c] == 0)}"
                if (row[list(CATEGORIES)] == 0).any()
                else ""
            )
            for r, row in counts.iterrows()
        ]
        raise VariantError(
            f"|D| by the paper's rule (the sum over relations of the smallest category) is {rule}, "
            f"below the {minimum} the study needs:\n" + "\n".join(lines) + "\n" + fixes
        )
    if requested > rule:
        raise VariantError(
            f"dataset_size {requested} exceeds what every category can supply: the rule gives "
            f"|D| = {rule}, so a single-category variant cannot hold {requested} examples with the "
            f"relation mix kept. " + fixes
        )
    return requested or rule


def dataset_size(categorized: pd.DataFrame) -> int:
    """|D|: the sum over relations of the relation's smallest category size.

    Args:
        categorized: categorised train table (columns ``relation``,
            ``question``, ``answer``, ``category``).

    Returns:
        |D|; a category absent from a relation counts as 0 for that relation.

    Raises:
        VariantError: a required column is missing or a category is unknown.
    """
    return sum(relation_quotas(categorized).values())


def _sample(categorized, plan, rng) -> pd.DataFrame:
    """Draw ``plan = [(relation, label, categories, n), ...]``; report all shortages."""
    chosen, short = [], []
    for rel, label, cats, n in plan:
        mask = (categorized["relation"].astype(str) == rel) & categorized["category"].isin(cats)
        pool = np.flatnonzero(mask.to_numpy())  # positions, in input order
        if len(pool) < n:
            short.append(f"relation {rel} needs {n} {label} examples but has {len(pool)} (short by {n - len(pool)})")
            continue
        chosen.append(rng.choice(pool, size=n, replace=False))
    if short:
        raise VariantError("; ".join(short))
    positions = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)
    return categorized.iloc[positions].reset_index(drop=True)


def _finish(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    frame = frame.reset_index(drop=True).copy()
    frame["variant"] = name
    return frame


def unknown_mix(categorized: pd.DataFrame, pct_unknown: float, size: int | None = None, seed: int = 0) -> pd.DataFrame:
    """D with ``pct_unknown`` % Unknown and the rest Known, relation mix kept (Sec. 4).

    Args:
        categorized: categorised train table.
        pct_unknown: X, the share of Unknown examples in percent (0-100).
        size: number of examples; ``None`` means |D|.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        Table of ``size`` rows (input columns plus ``variant``), in input
        order. Relation r holds its quota q_r; about X% of q_r are Unknown
        (largest-remainder rounding, so exactly round(X/100 * size) Unknown in
        all, halves rounded up) and the rest are drawn uniformly from r's
        Known examples, i.e. with their natural category mix.

    Raises:
        VariantError: X outside [0, 100], or a relation has too few Unknown or
            Known examples (the message names relation, category and shortfall).
    """
    if not 0 <= pct_unknown <= 100:
        raise VariantError(f"pct_unknown must lie in [0, 100], got {pct_unknown}")
    quotas = relation_quotas(categorized) if size is None else section4_quotas(categorized, size)
    total = sum(quotas.values())
    share = Fraction(pct_unknown) / 100
    n_unknown = _round_half_up(share * total)
    unk = _largest_remainder({r: Fraction(q) for r, q in quotas.items()}, n_unknown)
    plan = []
    for rel, q in quotas.items():
        plan.append((rel, "Unknown", ("Unknown",), unk[rel]))
        plan.append((rel, "Known", KNOWN, q - unk[rel]))
    rng = np.random.default_rng(seed)
    return _finish(_sample(categorized, plan, rng), f"unknown_{pct_unknown:g}")


def known_only(variant: pd.DataFrame) -> pd.DataFrame:
    """D_Known: ``variant`` with its Unknown rows removed (Sec. 4.2).

    Args:
        variant: a variant table, e.g. from :func:`unknown_mix`.

    Returns:
        The Known rows, order kept, index reset; ``unknown_X`` -> ``known_X``.
    """
    out = variant[variant["category"] != "Unknown"].reset_index(drop=True).copy()
    if "variant" in out.columns:
        out["variant"] = out["variant"].astype(str).str.replace(r"^unknown_", "known_", regex=True)
    return out


def single_category(categorized: pd.DataFrame, category: str, size: int | None = None, seed: int = 0) -> pd.DataFrame:
    """D_<category>: each relation's quota drawn from one category only (Sec. 5).

    Args:
        categorized: categorised train table.
        category: one of :data:`CATEGORIES`.
        size: number of examples; ``None`` means |D|.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        Table of ``size`` rows, all of ``category``, relation mix as in
        :func:`unknown_mix`; ``variant`` is the category name.

    Raises:
        VariantError: unknown category, or a relation has too few examples of it.
    """
    if category not in CATEGORIES:
        raise VariantError(f"category must be one of {CATEGORIES}, got {category!r}")
    plan = [(r, category, (category,), q) for r, q in relation_quotas(categorized, size).items()]
    return _finish(_sample(categorized, plan, np.random.default_rng(seed)), category)


def natural(categorized: pd.DataFrame, size: int | None = None, seed: int = 0) -> pd.DataFrame:
    """D_Natural: each relation's quota drawn from all its examples (Sec. 5).

    Args:
        categorized: categorised train table.
        size: number of examples; ``None`` means |D|.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        Table of ``size`` rows, natural category mix; ``variant`` is ``"natural"``.
    """
    plan = [(r, "any", CATEGORIES, q) for r, q in relation_quotas(categorized, size).items()]
    return _finish(_sample(categorized, plan, np.random.default_rng(seed)), "natural")


def relabel_idk(variant: pd.DataFrame, text: str = IDK) -> pd.DataFrame:
    """D_IDK: the Unknown rows' answers replaced by ``text`` (App. K).

    Args:
        variant: a variant table, e.g. from :func:`unknown_mix`.
        text: the abstention answer.

    Returns:
        A copy with column ``original_answer`` (the gold answer, every row) and
        ``answer`` set to ``text`` on Unknown rows only; a ``variant`` name
        ``unknown_X`` becomes ``idk_X``.
    """
    out = variant.reset_index(drop=True).copy()
    out["original_answer"] = out["answer"]
    out.loc[out["category"] == "Unknown", "answer"] = text
    if "variant" in out.columns:
        out["variant"] = out["variant"].astype(str).str.replace(r"^unknown_", "idk_", regex=True)
    return out


def is_section4(spec: str) -> bool:
    """Whether ``spec`` names a section-4 variant (``unknown_X``, ``known_X`` or ``idk_X``)."""
    return bool(_PCT_SPEC.match(spec)) if isinstance(spec, str) else False


def build(categorized: pd.DataFrame, spec: str, size: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Build a variant from its name.

    Args:
        categorized: categorised train table.
        spec: ``"unknown_<X>"``, ``"known_<X>"`` (the Known rows of
            ``unknown_<X>`` with the same seed), ``"idk_<X>"``, a category name,
            or ``"natural"``; X is a percentage such as ``50`` or ``12.5``.
        size: size of the full variant; ``None`` means |D|.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        The variant table, index reset, column ``variant`` equal to ``spec``.

    Raises:
        VariantError: ``spec`` is not a valid form, or the variant cannot be built.
    """
    m = _PCT_SPEC.match(spec) if isinstance(spec, str) else None
    if m:
        kind, pct = m.group(1), float(m.group(2))
        out = unknown_mix(categorized, pct, size=size, seed=seed)
        out = {"unknown": out, "known": known_only(out), "idk": relabel_idk(out)}[kind]
    elif spec in CATEGORIES:
        out = single_category(categorized, spec, size=size, seed=seed)
    elif spec == "natural":
        out = natural(categorized, size=size, seed=seed)
    else:
        raise VariantError(f"unknown variant spec {spec!r}; valid forms: {', '.join(VALID_SPECS)}")
    return _finish(out, spec)


def summary(variant: pd.DataFrame) -> pd.DataFrame:
    """Counts per relation x category, with totals (for display).

    Args:
        variant: a variant (or categorised) table.

    Returns:
        Rows: relations (sorted) and ``total``; columns: :data:`CATEGORIES`, ``total``.
    """
    counts = pd.crosstab(variant["relation"].astype(str), variant["category"])
    counts = counts.reindex(columns=list(CATEGORIES), fill_value=0).sort_index()
    counts.loc["total"] = counts.sum()
    counts["total"] = counts.sum(axis=1)
    counts.index.name, counts.columns.name = "relation", None
    return counts.astype(int)
