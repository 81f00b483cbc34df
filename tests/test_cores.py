"""Side-by-side fine-tuning tasks share the workers' cores (cores.py): a lone task takes them all, same records."""

from __future__ import annotations

import multiprocessing
import time

import pandas as pd
import pytest
import torch
from conftest import tiny_finetune_data

from newknowledge.core.config import FinetuneConfig
from newknowledge.finetuning import cores, finetune, run_store

CFG = FinetuneConfig(ft_format="qa", ft_epochs=2, ft_batch=4, ft_lr=1e-3, ft_eval_batch=32, ft_dropout=0.05)


def test_split_shares_the_budget_among_the_running_tasks():
    assert cores.split(2, 2, 5) == 1  # more tasks than workers: each its own core
    assert cores.split(2, 2, 2) == 1
    assert cores.split(2, 2, 1) == 2  # the last task: both cores
    assert cores.split(4, 4, 3) == 1  # three tasks cannot share four cores evenly: one each
    assert cores.split(4, 4, 2) == 2
    assert cores.split(2, 2, 0) == 2  # guard: never a division by zero
    assert cores.split(1, 1, 3) == 1


def test_a_finished_task_hands_its_cores_to_the_others(monkeypatch):
    assert cores.threads(1) == 1  # outside a pool: the profile's ft_threads
    left = multiprocessing.get_context("spawn").Value("i", 2)
    monkeypatch.setattr(cores, "_left", left)
    monkeypatch.setattr(cores, "_budget", 2)
    monkeypatch.setattr(cores, "_workers", 2)
    assert cores.threads(1) == 1
    with cores.task():
        pass
    assert left.value == 1 and cores.threads(1) == 2
    with pytest.raises(RuntimeError), cores.task():  # a failed task frees its cores too
        raise RuntimeError("boom")
    assert left.value == 0


def test_tasks_one_after_another_in_this_process_each_get_the_whole_budget():
    before = torch.get_num_threads()
    with cores.solo(2):
        assert cores.threads(1) == 2
        with cores.task():  # a pool's task wrapper is harmless here
            assert cores.threads(1) == 2
        torch.set_num_threads(2)
    assert cores.threads(1) == 1 and torch.get_num_threads() == before


def _probe(first: bool) -> int:
    """A pool task: the first returns at once; the other waits until it is alone, then reports its threads."""
    with cores.task():
        if first:
            return cores.threads(1)
        deadline = time.time() + 60
        while cores._left.value > 1 and time.time() < deadline:
            time.sleep(0.05)
        return cores.threads(1)


def test_a_pool_task_left_alone_gets_every_core():
    with cores.pool(workers=2, tasks=2, threads_each=1) as pool:
        first, last = pool.map(_probe, [True, False])
    assert first in (1, 2) and last == 2


@pytest.mark.parametrize("grouped", [False, True], ids=["per-run", "grouped"])
def test_a_lone_run_trains_on_every_workers_cores_with_the_same_records(
    grouped, tiny_model_path, tiny_world, tmp_path, monkeypatch
):
    train, ev = tiny_finetune_data(tiny_world)
    cfg = FinetuneConfig(**{**CFG.__dict__, "ft_grouped": grouped})
    job = (run_store.RunSpec(str(tiny_model_path), "unknown_50", 0, cfg), train, ev)
    asked, real = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (asked.append(n), real(n))[1])

    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "one"))
    one = run_store.load_records(finetune.run_all([job], workers=1))
    assert set(asked) == {1}
    asked.clear()
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "two"))
    two = run_store.load_records(finetune.run_all([job], workers=2))
    assert 2 in asked and torch.get_num_threads() == 1  # the notebook's threads restored after
    pd.testing.assert_frame_equal(one, two)
