"""Setup.records: one run per distinct data set, every requested name in the records."""

from __future__ import annotations

import pandas as pd
import pytest
from test_variants import TABLE

from newknowledge.book import pipeline
from newknowledge.core import config
from newknowledge.finetuning import finetune, run_store, variants


def test_records_train_an_aliased_variant_once_and_label_it_as_asked(monkeypatch):
    study = config.from_params({"min_dataset_size": 1})
    prep = pipeline.Prepared(study, "model", TABLE.assign(split="train"), pd.DataFrame(), None)
    trained = []

    def run_all(jobs, workers=1, executor="local"):
        trained.extend(spec.variant for spec, _, _ in jobs)
        return [spec.variant for spec, _, _ in jobs]

    monkeypatch.setattr(finetune, "run_all", run_all)
    monkeypatch.setattr(run_store, "load_records", lambda paths: pd.DataFrame({"variant": paths, "correct": True}))
    setup = pipeline.Setup(study, {0: prep, 1: prep})
    recs = setup.records(["unknown_100", "Unknown", "natural", "Unknown"])
    assert trained == ["unknown_100", "natural"] * 2  # per seed, each data set once
    assert sorted(recs["variant"]) == sorted(["Unknown", "natural", "unknown_100"] * 2)
    trained.clear()
    assert list(setup.records(["Unknown"], seeds=[1])["variant"]) == ["Unknown"] and trained == ["unknown_100"]


def test_section4_size_sizes_section_4s_variants_only_and_unaliases_d_unknown(monkeypatch):
    # section4_size gives unknown_X/known_X their own |D|; section 5's variants keep the rule's, and
    # D_Unknown then is a data set of its own (a different size from D with 100% Unknown).
    sizes = {}

    def run_all(jobs, workers=1, executor="local"):
        sizes.update({spec.variant: len(data) for spec, data, _ in jobs})
        return [spec.variant for spec, _, _ in jobs]

    monkeypatch.setattr(finetune, "run_all", run_all)
    monkeypatch.setattr(run_store, "load_records", lambda paths: pd.DataFrame({"variant": paths, "correct": True}))
    rule = pipeline.Prepared(
        config.from_params({"min_dataset_size": 1}), "model", TABLE.assign(split="train"), pd.DataFrame(), None
    ).size
    study = config.from_params({"min_dataset_size": 1, "section4_size": rule - 2})
    prep = pipeline.Prepared(study, "model", TABLE.assign(split="train"), pd.DataFrame(), None)
    assert (prep.size, prep.size4, prep.size_of("known_50"), prep.size_of("natural")) == (
        rule,
        rule - 2,
        rule - 2,
        rule,
    )
    setup = pipeline.Setup(study, {0: prep})
    assert setup.same_data() == {}
    setup.records(["unknown_100", "Unknown", "natural"])
    assert sizes == {"unknown_100": rule - 2, "Unknown": rule, "natural": rule}


def test_a_section4_size_below_the_minimum_is_named_with_the_fix():
    study = config.from_params({"min_dataset_size": 10, "section4_size": 5})
    prep = pipeline.Prepared(study, "model", TABLE.assign(split="train"), pd.DataFrame(), None)
    with pytest.raises(variants.VariantError, match="section4_size 5 is below the 10"):
        _ = prep.size4
