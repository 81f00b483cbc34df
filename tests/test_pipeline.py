"""Setup.records: one run per distinct data set, every requested name in the records."""

from __future__ import annotations

import pandas as pd

from newknowledge import config, finetune, pipeline
from test_variants import TABLE


def test_records_train_an_aliased_variant_once_and_label_it_as_asked(monkeypatch):
    study = config.from_params({"min_dataset_size": 1})
    prep = pipeline.Prepared(study, "model", TABLE.assign(split="train"), pd.DataFrame(), None)
    trained = []

    def run_all(jobs, workers=1, executor="local"):
        trained.extend(spec.variant for spec, _, _ in jobs)
        return [spec.variant for spec, _, _ in jobs]

    monkeypatch.setattr(finetune, "run_all", run_all)
    monkeypatch.setattr(finetune, "load_records", lambda paths: pd.DataFrame({"variant": paths, "correct": True}))
    setup = pipeline.Setup(study, {0: prep, 1: prep})
    recs = setup.records(["unknown_100", "Unknown", "natural", "Unknown"])
    assert trained == ["unknown_100", "natural"] * 2  # per seed, each data set once
    assert sorted(recs["variant"]) == sorted(["Unknown", "natural", "unknown_100"] * 2)
    trained.clear()
    assert list(setup.records(["Unknown"], seeds=[1])["variant"]) == ["Unknown"] and trained == ["unknown_100"]
