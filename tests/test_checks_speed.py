"""Chapter 3's checks (finding 3 and the fine-tuning preconditions) on hand-built records."""

from __future__ import annotations

import numpy as np
import pandas as pd
from records import TEST_CATS, N, lower, ones, records, run

from newknowledge.book.chapters import converged, speed

BASE = ones(0.5)


def _grid(**kw):
    mid = {k: v for k, v in kw.items() if k in ("known", "unknown", "dev_hk", "es", "test_conv", "test0")}
    mid.setdefault("test_conv", lower(BASE, 40))
    return records(
        run(
            "unknown_0",
            test_es=BASE,
            test_conv=BASE,
            unknown=lambda e: 0.0,
            n_unknown=0,
            es=mid.get("es", 2),
            dev_hk=mid.get("dev_hk", 1.0),
            test0=mid.get("test0"),
        ),
        run("unknown_50", test_es=BASE, **{"es": 2, **mid}),
        run("known_50", test_es=BASE, test_conv=BASE, unknown=lambda e: 0.0, n_unknown=0),
    )


def test_known_fitted_faster_holds_and_fails():
    assert speed.known_fitted_faster(_grid()).holds  # Known half-fitted at epoch 2, Unknown at 4
    same = _grid(unknown=lambda e: min(1.0, 0.4 * e))
    c = speed.known_fitted_faster(same)
    assert c.holds is False and "1.0x" in c.ours


def test_unknown_never_fitted_counts_as_after_the_last_epoch():
    c = speed.known_fitted_faster(_grid(unknown=lambda e: 0.1))
    assert c.holds and "(never)" in c.ours


def test_few_unknown_at_early_stop_holds_and_fails():
    assert speed.few_unknown_at_early_stop(_grid()).holds  # Known 80%, Unknown 16% at epoch 2
    c = speed.few_unknown_at_early_stop(_grid(unknown=lambda e: min(1.0, 0.2 * e)))  # Unknown 40% at ES
    assert c.holds is False and "unknown_50" in c.ours
    assert speed.few_unknown_at_early_stop(_grid(known=lambda e: 0.25 * e)).holds is False  # Known 50%: not most


def test_falls_after_peak_holds_and_fails():
    assert speed.falls_after_peak(_grid()).holds
    assert speed.falls_after_peak(_grid(test_conv=BASE)).holds is False


def test_format_learned_holds_and_fails():
    assert speed.format_learned(_grid()).holds
    c = speed.format_learned(_grid(dev_hk=0.6))
    assert c.holds is False and "unknown_50" in c.ours


def test_early_stop_after_first_epoch_holds_and_fails():
    assert speed.early_stop_after_first_epoch(_grid()).holds
    assert speed.early_stop_after_first_epoch(_grid(es=1)).holds is False


def _tables(p_greedy: float) -> pd.DataFrame:
    return pd.DataFrame(
        {"seed": 0, "example": 2000 + np.arange(N), "split": "test", "category": TEST_CATS, "p_greedy": p_greedy}
    )


def test_zero_shot_below_probe_holds_and_fails():
    rec = _grid(test0=ones(0.05))
    assert speed.zero_shot_below_probe(rec, _tables(0.5)).holds
    assert speed.zero_shot_below_probe(_grid(test0=ones(0.4)), _tables(0.5)).holds is False


def test_converged_holds_and_fails():
    assert converged(_grid()).holds
    slow = _grid(unknown=lambda e: min(0.9, 0.04 * e * e))
    c = converged(slow)
    assert c.holds is False and "unknown_50" in c.ours


def test_tradeoff_table_follows_the_middle_run_epoch_by_epoch():
    grid = _grid(unknown=lambda e: min(1.0, 0.2 * e))
    t = speed.tradeoff(grid, "unknown_50")
    assert list(t.columns) == ["HighlyKnown dev", "Known fitted", "Unknown fitted", "dev", "D - D_Known (test)"]
    assert t.index.min() == 0 and t["Unknown fitted"].loc[2] == 0.4  # 0.2 x epoch 2
    assert t["Unknown fitted"].is_monotonic_increasing
    # D_Known (known_50) keeps BASE; D falls to 40% below it at CONVERGENCE
    assert t["D - D_Known (test)"].iloc[-1] < 0 <= t["D - D_Known (test)"].loc[1] + 1e-9


def _known_only_qa(hk_by_epoch: dict[int, list[float]]) -> pd.DataFrame:
    """Hand-built records of Known-only runs in the pretraining format: per seed, the share of 20
    HighlyKnown dev questions answered at each epoch (plus one MaybeKnown dev question, never counted)."""
    rows = []
    for seed, curve in hk_by_epoch.items():
        for epoch, share in enumerate(curve):
            for q in range(20):
                rows.append(("unknown_0", seed, epoch, "dev", q, "HighlyKnown", q < round(20 * share)))
            rows.append(("unknown_0", seed, epoch, "dev", 20, "MaybeKnown", epoch == 0))
    return pd.DataFrame(rows, columns=["variant", "seed", "epoch", "split", "example", "category", "correct"])


def test_no_erosion_holds_when_every_world_keeps_nine_tenths_and_fails_otherwise():
    kept = speed.no_erosion(_known_only_qa({0: [1.0, 0.9, 0.95, 0.9], 1: [0.8, 0.8, 0.75, 0.75]}))
    assert kept.holds and kept.kind == "setup"  # 90% and 94% of epoch 0 kept at the last epoch
    eroded = speed.no_erosion(_known_only_qa({0: [1.0, 0.95, 0.9, 0.85], 1: [0.8, 0.8, 0.8, 0.8]}))
    assert eroded.holds is False and "85.0" in eroded.ours  # world 0 keeps 85%


def test_no_erosion_without_a_known_only_run_is_not_decidable():
    c = speed.no_erosion(_known_only_qa({0: [1.0, 1.0]}).iloc[:0])
    assert c.holds is None and "no Known-only run" in c.ours
