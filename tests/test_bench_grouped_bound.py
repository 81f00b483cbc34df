"""A grouped epoch against its arithmetic (benchmarks/bench_grouped_bound.py) on the tiny model."""

import dataclasses

import pandas as pd
import pytest
from conftest import load_script, tiny_finetune_data

from newknowledge.core.config import FinetuneConfig
from newknowledge.finetuning import grouped, run_store

CFG = FinetuneConfig(ft_format="qa", ft_epochs=2, ft_batch=4, ft_eval_batch=8, ft_grouped=True)


def _bench():
    return load_script("benchmarks/bench_grouped_bound.py")


@pytest.fixture(scope="module")
def measured(tiny_model_path, tiny_world):
    train, ev = tiny_finetune_data(tiny_world)
    jobs = [(run_store.RunSpec(str(tiny_model_path), "bound", k, CFG), train, ev) for k in range(2)]
    bench = _bench()
    short = [(dataclasses.replace(s, cfg=dataclasses.replace(CFG, ft_epochs=1)), t, e) for s, t, e in jobs]
    return bench, jobs, bench.measure(jobs, threads=1), bench.measure(short, threads=1, count=True)


def test_every_stage_is_timed_and_counted_and_the_stages_fit_in_the_epoch(measured):
    bench, _, (seconds, _), (flops, _) = measured
    assert set(seconds) == {*bench.STAGES, "epoch"} and set(flops) == {*bench.STAGES, "epoch"}
    assert all(seconds[s] > 0 and flops[s] > 0 for s in bench.STAGES), (seconds, flops)
    assert sum(seconds[s] for s in bench.STAGES) < seconds["epoch"]
    # Training runs forward and backward over the train examples; scoring them runs forward only.
    assert flops["training"] > 2 * flops["fitted flags"]


def test_the_benchmark_records_what_the_group_records(measured, tmp_path, monkeypatch):
    bench, jobs, (_, records), _ = measured
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path))
    pd.testing.assert_frame_equal(records, run_store.load_records(grouped.train_group(jobs)))
    assert "<locals>" not in grouped.train_step.__qualname__ + grouped.Scorer.flags.__qualname__
    assert "<locals>" not in run_store.save_epoch.__qualname__
