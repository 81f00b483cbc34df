"""The Ray executor: the same runs as the local process pool, identical records, same run store."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import tiny_finetune_data

from newknowledge.core.config import FinetuneConfig
from newknowledge.finetuning import finetune, run_store

ray = pytest.importorskip("ray", reason="executor 'ray' is optional: pip install '.[ray]'")

CFG = FinetuneConfig(ft_epochs=2, ft_batch=4, ft_lr=1e-3, ft_eval_batch=32)


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _jobs(tiny_model_path, tiny_world):
    train, ev = tiny_finetune_data(tiny_world)
    specs = [run_store.RunSpec(str(tiny_model_path), "unknown_50", seed, CFG) for seed in (0, 1)]
    return [(s, train, ev) for s in specs], ev


def test_ray_executor_matches_local_resumes_and_skips_finished_runs(
    tiny_model_path, tiny_world, tmp_path, monkeypatch, local_ray
):
    jobs, ev = _jobs(tiny_model_path, tiny_world)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "local"))
    local = run_store.load_records(finetune.run_all(jobs, workers=1, executor="local"))
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "ray"))
    finetune.train_run(*jobs[0], stop_after=1)  # an interrupted run: Ray resumes it, runs the other afresh
    paths = finetune.run_all(jobs, executor="ray")
    assert all(str(p).startswith(str(tmp_path / "ray")) and (p / "done.json").exists() for p in paths)
    pd.testing.assert_frame_equal(run_store.load_records(paths), local)
    # A second call finds every run finished and trains nothing.
    mtimes = {f: f.stat().st_mtime_ns for p in paths for f in p.glob("epoch_*.parquet")}
    assert finetune.run_all(jobs, executor="ray") == paths
    assert {f: f.stat().st_mtime_ns for f in mtimes} == mtimes
