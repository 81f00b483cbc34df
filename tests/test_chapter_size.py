"""Chapter 8 (beyond the paper): D - D_Known against Unknown fitted, and its check, on hand-built records."""

from __future__ import annotations

import numpy as np
import pandas as pd
from records import N, lower, ones, records, run

from newknowledge.book.chapters import size

BASE = ones(0.5)


def _pair(d_test_es, d_test_conv, unknown=lambda e: min(1.0, 0.04 * e * e), seed: int = 0):
    """D with 50% Unknown and its D_Known; D_Known's test accuracy stays BASE at every epoch."""
    return records(
        run("unknown_50", seed, test_es=d_test_es, test_conv=d_test_conv, unknown=unknown, es=2),
        run("known_50", seed, test_es=BASE, test_conv=BASE, unknown=lambda e: 0.0, n_unknown=0, es=2),
    )


def test_curves_pair_the_gap_with_the_share_of_unknown_fitted():
    cv = size.curves(_pair(BASE, lower(BASE, N // 10)))
    assert list(cv["epoch"]) == [1, 2, 3, 4, 5]  # epoch 0 (the pretrained model) is left out
    assert cv.loc[cv["epoch"] == 1, "unknown_fitted"].item() == 0.05  # 0.04 of 20 examples rounds to 1
    assert cv.loc[cv["epoch"] <= 2, "gap"].eq(0).all() and cv.loc[cv["epoch"] > 2, "gap"].lt(0).all()


def test_harm_follows_fitting_holds_when_d_equals_d_known_before_fitting():
    c = size.harm_follows_fitting(_pair(BASE, lower(BASE, N // 10)), "d_model 64")
    assert size.window(_pair(BASE, BASE)) == [2]  # from D_Known's EARLY_STOP (2) while < 25% are fitted (16%)
    assert c.holds and c.kind == "beyond" and "over epoch 2" in c.ours and c.se is None  # no difference at all


def test_harm_follows_fitting_fails_when_d_falls_before_its_unknown_examples_are_fitted():
    early_harm = lower(BASE, N // 10)  # D 10 points below D_Known from epoch 1, while 5-16% are fitted
    c = size.harm_follows_fitting(_pair(early_harm, early_harm), "d_model 64")
    assert c.holds is False and "-10.0" in c.ours and c.se > 0


def test_harm_follows_fitting_is_not_decidable_when_unknown_examples_are_fitted_at_once():
    c = size.harm_follows_fitting(_pair(BASE, BASE, unknown=lambda e: 1.0), "d_model 64")
    assert c.holds is None and "no epoch in the window" in c.ours


class _FakeSetup:
    """A setup whose runs are hand-built: the model of width ``d`` fits Unknown examples at ``rate(d)``,
    and a width listed in ``unbuildable`` knows too little to supply D."""

    def __init__(self, study, d, tmp_path, unbuildable=()):
        import json
        from types import SimpleNamespace

        self.study, self.seeds, self.d, self.unbuildable = study, [0], d, unbuildable
        folder = tmp_path / f"d{d}" / "model"
        folder.mkdir(parents=True)
        (folder.parent / "stats.json").write_text(json.dumps({"parameters": 1000 * d}))
        self.preps = {0: SimpleNamespace(model_path=str(folder), size4=40)}
        self.prep = self.preps[0]

    def records(self, names, seeds=None, **overrides):
        from newknowledge.finetuning.variants import VariantError

        if self.d in self.unbuildable:
            raise VariantError("relation P17 needs 4 Known examples but has 1 (short by 3)")
        if overrides.get("ft_format") == "qa":
            return run("unknown_0", test_es=BASE, test_conv=BASE, unknown=lambda e: 0.0, n_unknown=0, es=2)
        return _pair(BASE, lower(BASE, N // 10), unknown=lambda e: min(1.0, e * self.d / 1280))

    def tables(self):
        import pandas as pd

        return pd.DataFrame({"split": "test", "p_greedy": 0.5, "seed": 0, "example": 2000 + np.arange(N)})


def test_the_chapter_runs_each_size_on_one_world_with_one_d_and_names_a_size_it_cannot_build(tmp_path, monkeypatch):
    import dataclasses

    from newknowledge.book import pipeline
    from newknowledge.core import config

    study = config.from_params({"size_models": [32, 64, 128]})
    made = {}

    def fake_setup(sized):
        made[sized.pretrain.d_model] = sized
        return _FakeSetup(sized, sized.pretrain.d_model, tmp_path, unbuildable=(32,))

    monkeypatch.setattr(pipeline, "setup", fake_setup)
    ch = size.results(_FakeSetup(study, 128, tmp_path))
    assert sorted(made) == [32, 64]  # the book's own width (128) is its setup's, not pretrained again
    assert all(s.finetune.section4_size == 40 and s.study.seeds == [0] for s in made.values())
    table = ch.tables["sizes"]
    assert list(table.index) == [32, 64, 128] and set(table["|D|"]) == {40}
    assert "short by 3" in table.loc[32, "not built"] and table.loc[64, "EARLY_STOP epoch"] == 2
    assert set(ch.data["curves"]["d_model"]) == {64, 128}
    by_key = {c.key: c for c in ch.checks}
    assert by_key["size.follows_fitting.d_model_32"].holds is None
    assert by_key["size.follows_fitting.d_model_128"].holds and "speed.erosion.64" in by_key
    assert dataclasses.asdict(by_key["speed.erosion.64"])["claim"].startswith("d_model 64: ")


def test_size_curves_draws_one_line_per_size_in_both_panels():
    from newknowledge.book import plots_later

    cv = size.curves(_pair(BASE, lower(BASE, N // 10)))
    both = pd.concat([cv.assign(d_model=64), cv.assign(d_model=128)])
    fig, axes = plots_later.size_curves(both, margin=0.02)
    assert [len(ax.get_lines()) for ax in axes] == [3, 3]  # two sizes and the zero line per panel
    assert axes[0].get_ylabel().startswith("D - D_Known") and "fitted" in axes[1].get_xlabel()
