"""Fine-tuning variants (paper Sec. 4-5, App. K) on hand-made categorised tables."""

from __future__ import annotations

import pandas as pd
import pytest

from newknowledge.finetuning.variants import (
    CATEGORIES,
    KNOWN,
    VariantError,
    build,
    dataset_size,
    known_only,
    natural,
    relabel_idk,
    relation_quotas,
    section4_max,
    section4_quotas,
    single_category,
    summary,
    unknown_mix,
)


def make_table(counts: dict[str, tuple[int, int, int, int]]) -> pd.DataFrame:
    """One row per example; ``counts[rel]`` = (HK, MK, WK, Unknown) counts."""
    rows = []
    for rel, per_cat in counts.items():
        for cat, n in zip(CATEGORIES, per_cat):
            for i in range(n):
                rows.append(
                    {
                        "relation": rel,
                        "question": f"{rel} {cat} q{i}?",
                        "answer": f"{rel}-{cat}-a{i}",
                        "category": cat,
                    }
                )
    return pd.DataFrame(rows)


# Per-relation minima 4, 8, 8, 0 (P4 has no WeaklyKnown) -> |D| = 20.
TABLE = make_table({"P1": (6, 5, 4, 10), "P2": (8, 8, 8, 12), "P3": (10, 9, 8, 20), "P4": (3, 3, 0, 5)})
QUOTAS = {"P1": 4, "P2": 8, "P3": 8, "P4": 0}


def per_relation(frame: pd.DataFrame, mask=None) -> dict[str, int]:
    sub = frame if mask is None else frame[mask]
    counts = sub["relation"].value_counts()
    return {r: int(counts.get(r, 0)) for r in QUOTAS}


# --- dataset_size ---------------------------------------------------------


def test_dataset_size_hand_computed_with_missing_category():
    assert dataset_size(TABLE) == 4 + 8 + 8 + 0
    assert relation_quotas(TABLE) == QUOTAS


def test_dataset_size_small_table():
    table = make_table({"A": (3, 2, 2, 4), "B": (5, 4, 3, 6), "C": (2, 2, 0, 5)})
    assert dataset_size(table) == 2 + 3 + 0


def test_dataset_size_missing_columns_named():
    with pytest.raises(VariantError, match="category") as err:
        dataset_size(TABLE.drop(columns=["category", "answer"]))
    assert "answer" in str(err.value)


def test_bad_category_value_rejected():
    bad = TABLE.copy()
    bad.loc[0, "category"] = "Known"
    with pytest.raises(VariantError, match="Known"):
        dataset_size(bad)


def test_quotas_rescale_to_other_size():
    assert relation_quotas(TABLE, 10) == {"P1": 2, "P2": 4, "P3": 4, "P4": 0}
    assert sum(relation_quotas(TABLE, 7).values()) == 7


# --- section 4 beyond |D| (section4_size, research-log E13) ------------------


def test_section4_quotas_up_to_the_rule_are_the_papers_mix():
    assert section4_quotas(TABLE, 20) == QUOTAS
    assert section4_quotas(TABLE, 10) == relation_quotas(TABLE, 10)


def test_section4_quotas_beyond_the_rule_use_min_known_unknown():
    # min(Known, Unknown): P1 min(15, 10) = 10, P2 min(24, 12) = 12, P3 min(27, 20) = 20, P4 min(6, 5) = 5.
    assert section4_max(TABLE) == 47
    assert section4_quotas(TABLE, 47) == {"P1": 10, "P2": 12, "P3": 20, "P4": 5}
    for pct in (0, 50, 100):  # both ends build at the largest size (the four-category mix could not)
        v = unknown_mix(TABLE, pct, size=47, seed=1)
        assert len(v) == 47 and (v["category"] == "Unknown").sum() == round(pct * 47 / 100)
    with pytest.raises(VariantError, match="P2 needs 19 Unknown"):
        _four_category_mix_at(47)


def _four_category_mix_at(size: int) -> None:
    """The four-category rule's mix scaled to ``size``, all Unknown (what section 4 drew before E13)."""
    from newknowledge.finetuning.variants import _sample

    plan = [(r, "Unknown", ("Unknown",), q) for r, q in relation_quotas(TABLE, size).items()]
    _sample(TABLE, plan, __import__("numpy").random.default_rng(0))


def test_section4_quotas_refuse_sizes_beyond_the_two_groups():
    with pytest.raises(VariantError, match="section4_size 48 exceeds.*47"):
        section4_quotas(TABLE, 48)
    with pytest.raises(VariantError, match="exceeds"):
        build(TABLE, "unknown_100", size=48)


# --- unknown_mix ------------------------------------------------------------


@pytest.mark.parametrize("pct", [0, 25, 50, 75, 100])
def test_unknown_mix_relation_mix_and_exact_share(pct):
    v = unknown_mix(TABLE, pct, seed=3)
    assert len(v) == 20
    assert per_relation(v) == QUOTAS
    is_unk = v["category"] == "Unknown"
    assert is_unk.sum() == round(pct / 100 * 20)
    # X% of every relation's quota is Unknown (all exact here).
    assert per_relation(v, is_unk) == {r: q * pct // 100 for r, q in QUOTAS.items()}
    assert set(v.loc[~is_unk, "category"]) <= set(KNOWN)
    assert not v["question"].duplicated().any()
    assert list(v.index) == list(range(20))


def test_unknown_mix_largest_remainder_total():
    table = make_table({"A": (3, 2, 2, 4), "B": (5, 4, 3, 6)})  # quotas 2, 3
    v = unknown_mix(table, 50, seed=0)  # 2.5 -> 3 Unknown: A 1.0 -> 1, B 1.5 -> 2
    unk = v[v["category"] == "Unknown"]["relation"].value_counts().to_dict()
    assert unk == {"A": 1, "B": 2}
    assert len(v) == 5


def test_unknown_mix_custom_size():
    v = unknown_mix(TABLE, 50, size=10, seed=1)
    assert per_relation(v) == {"P1": 2, "P2": 4, "P3": 4, "P4": 0}
    assert (v["category"] == "Unknown").sum() == 5


def test_known_part_has_natural_known_mix():
    # Known pool of R: 30 HK, 10 MK, 10 WK -> HK share 0.6 on average.
    table = make_table({"R": (30, 10, 10, 50), "S": (10, 10, 10, 10)})
    shares = []
    for seed in range(200):
        known = known_only(unknown_mix(table, 50, seed=seed))
        r = known[known["relation"] == "R"]
        shares.append((r["category"] == "HighlyKnown").mean())
    assert abs(sum(shares) / len(shares) - 0.6) < 0.03


def test_unknown_mix_bad_pct():
    with pytest.raises(VariantError, match="pct_unknown"):
        unknown_mix(TABLE, 101)


# --- shortages --------------------------------------------------------------


def test_shortage_unknown_message():
    table = make_table({"P17": (2, 2, 2, 2)})  # min(Known 6, Unknown 2) = 2
    with pytest.raises(VariantError) as err:
        unknown_mix(table, 50, size=8)
    assert str(err.value).startswith("section4_size 8 exceeds")
    assert "min(Known, Unknown) is 2" in str(err.value) and "Lower section4_size" in str(err.value)


def test_shortage_known_side_also_bounds_section4():
    table = make_table({"P17": (1, 0, 0, 9), "P19": (1, 1, 1, 1)})  # min(K, U): P17 1, P19 1; rule |D| 1
    assert section4_max(table) == 2
    assert len(unknown_mix(table, 0, size=2)) == 2
    with pytest.raises(VariantError, match="is 2"):
        unknown_mix(table, 0, size=3)


def test_shortage_single_category():
    with pytest.raises(VariantError, match=r"relation P1 needs 8 WeaklyKnown examples but has 4 \(short by 4\)"):
        single_category(TABLE, "WeaklyKnown", size=40)


# --- known_only / single_category / natural ---------------------------------


def test_known_only_is_known_rows_of_same_variant():
    v = unknown_mix(TABLE, 50, seed=7)
    k = known_only(v)
    expected = v[v["category"] != "Unknown"]
    assert list(k["question"]) == list(expected["question"])
    assert len(k) == 10
    assert set(k["variant"]) == {"known_50"}
    assert list(k.index) == list(range(10))


@pytest.mark.parametrize("category", CATEGORIES)
def test_single_category(category):
    v = single_category(TABLE, category, seed=2)
    assert len(v) == dataset_size(TABLE)
    assert set(v["category"]) == {category}
    assert per_relation(v) == QUOTAS


def test_single_category_bad_name():
    with pytest.raises(VariantError, match="category"):
        single_category(TABLE, "Known")


def test_natural_keeps_quotas_and_mixes_categories():
    v = natural(TABLE, seed=0)
    assert per_relation(v) == QUOTAS
    assert v["category"].nunique() > 1
    assert set(v["variant"]) == {"natural"}


# --- determinism ----------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda seed: unknown_mix(TABLE, 50, seed=seed),
        lambda seed: single_category(TABLE, "Unknown", seed=seed),
        lambda seed: natural(TABLE, seed=seed),
    ],
)
def test_same_seed_same_rows_other_seed_other_rows(fn):
    assert list(fn(0)["question"]) == list(fn(0)["question"])
    assert list(fn(0)["question"]) != list(fn(1)["question"])


def test_rows_keep_input_order():
    v = unknown_mix(TABLE, 50, seed=5)
    position = {q: i for i, q in enumerate(TABLE["question"])}
    order = [position[q] for q in v["question"]]
    assert order == sorted(order)


# --- relabel_idk ------------------------------------------------------------


def test_relabel_idk_changes_only_unknown_answers():
    v = unknown_mix(TABLE, 50, seed=0)
    idk = relabel_idk(v)
    unk = idk["category"] == "Unknown"
    assert (idk.loc[unk, "answer"] == "I don't know").all()
    assert list(idk.loc[unk, "original_answer"]) == list(v.loc[unk, "answer"])
    assert list(idk.loc[~unk, "answer"]) == list(v.loc[~unk, "answer"])
    assert list(idk["question"]) == list(v["question"])
    assert set(idk["variant"]) == {"idk_50"}
    # The input is not modified.
    assert not (v["answer"] == "I don't know").any()


def test_relabel_idk_custom_text():
    idk = relabel_idk(unknown_mix(TABLE, 25, seed=0), text="IDK")
    assert (idk["answer"] == "IDK").sum() == 5


# --- build ----------------------------------------------------------------


def test_build_dispatch():
    unk = build(TABLE, "unknown_50", seed=4)
    assert list(unk["question"]) == list(unknown_mix(TABLE, 50, seed=4)["question"])
    known = build(TABLE, "known_50", seed=4)
    assert list(known["question"]) == list(unk.loc[unk["category"] != "Unknown", "question"])
    idk = build(TABLE, "idk_50", seed=4)
    assert (idk["answer"] == "I don't know").sum() == 10
    hk = build(TABLE, "HighlyKnown", seed=4)
    assert set(hk["category"]) == {"HighlyKnown"}
    nat = build(TABLE, "natural", seed=4)
    assert list(nat["question"]) == list(natural(TABLE, seed=4)["question"])
    for spec, frame in [
        ("unknown_50", unk),
        ("known_50", known),
        ("idk_50", idk),
        ("HighlyKnown", hk),
        ("natural", nat),
    ]:
        assert set(frame["variant"]) == {spec}
        assert list(frame.index) == list(range(len(frame)))


def test_build_fractional_pct_and_size():
    v = build(TABLE, "unknown_12.5", size=16, seed=0)
    assert len(v) == 16 and (v["category"] == "Unknown").sum() == 2
    assert set(v["variant"]) == {"unknown_12.5"}


@pytest.mark.parametrize("spec", ["foo", "unknown_", "unknown_x", "Known", "idk50"])
def test_build_bad_spec(spec):
    with pytest.raises(VariantError, match="valid forms") as err:
        build(TABLE, spec)
    assert "unknown_<X>" in str(err.value) and "natural" in str(err.value)


def test_build_pct_out_of_range():
    with pytest.raises(VariantError):
        build(TABLE, "unknown_150")


# --- summary ----------------------------------------------------------------


def test_summary_counts():
    s = summary(unknown_mix(TABLE, 50, seed=0))
    assert list(s.columns) == [*CATEGORIES, "total"]
    assert s.loc["P2", "Unknown"] == 4
    assert s.loc["P2", "total"] == 8
    assert s.loc["total", "Unknown"] == 10
    assert s.loc["total", "total"] == 20
    assert "P4" not in s.index  # quota 0 -> no rows


def test_the_aliased_variants_are_one_data_set_by_definition():
    """pipeline.SAME_DATA lets chapter 5's D_Unknown read the run of D with 100% Unknown: both are each
    relation's quota drawn from its Unknown examples (same size, relation mix and category)."""
    from newknowledge.finetuning.variants import SAME_DATA

    for name, run in SAME_DATA.items():
        for seed in (3, 4):
            a, b = build(TABLE, name, seed=seed), build(TABLE, run, seed=seed)
            assert len(a) == len(b) == dataset_size(TABLE)
            assert per_relation(a) == per_relation(b) == QUOTAS
            assert set(a["category"]) == set(b["category"]) == {"Unknown"}
            assert a.drop(columns="variant").equals(b.drop(columns="variant"))  # the very same rows
