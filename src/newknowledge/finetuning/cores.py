"""The cores of fine-tuning tasks that run side by side: a task that finishes hands its cores to the others.

:func:`newknowledge.finetuning.finetune.run_all` trains ``workers`` tasks at a time (single runs, or
groups of runs as one stacked model), each on ``ft_threads`` torch threads: a budget of
``workers * ft_threads`` cores.  When fewer tasks than workers are left, the finished ones' cores
would idle: a chapter that trains one run (chapter 7's D_IDK, chapter 3's Known-only run in the
pretraining format, chapter 8's), or the last group of a chapter whose groups differ in size
(a group of three beside a group of two).  So each task asks :func:`threads` at the start of every
epoch and takes the budget divided among the tasks still running.

Threads split each matrix product among cores.  On this package's models they did not change the
records: the same bit for bit on one thread and on two
(``tests/test_cores.py``; measured on the book's runs in research-log E16: a lone run 1.55x (D_IDK,
per-run path) and 1.68x (a grouped run) faster on two threads than on one).  A BLAS that summed a
product in another order on two threads would change the records by float rounding, as another
machine does; ``tests/test_cores.py`` fails on such a machine.  The run's key keeps ``ft_threads``,
the profile's setting, not the threads a task happened to get.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import torch

# This process's share of a pool (set in each worker by the pool's initializer, or by solo()):
_left = None  # a shared integer: the pool's tasks not finished yet
_budget = 0  # the pool's cores: workers * ft_threads
_workers = 1


def threads(default: int) -> int:
    """Torch threads for this task now: the budget over the tasks still running (at least ``default``).

    Outside a pool of :func:`pool` or :func:`solo` (a test, a benchmark's own pool): ``default``.
    """
    return default if _left is None else max(default, split(_budget, _workers, _left.value))


def split(budget: int, workers: int, left: int) -> int:
    """The threads each of ``min(workers, left)`` running tasks gets of ``budget`` cores (at least one)."""
    return max(1, budget // min(workers, max(1, left)))


def _init(left, budget: int, workers: int) -> None:
    global _left, _budget, _workers
    _left, _budget, _workers = left, budget, workers


def pool(workers: int, tasks: int, threads_each: int) -> ProcessPoolExecutor:
    """A process pool for ``tasks`` tasks, ``workers`` at a time, whose tasks share ``workers * threads_each`` cores.

    Each task must run inside :func:`task`, which counts it finished.
    """
    ctx = multiprocessing.get_context("spawn")
    left = ctx.Value("i", tasks)
    return ProcessPoolExecutor(
        max_workers=min(workers, tasks),
        mp_context=ctx,
        initializer=_init,
        initargs=(left, workers * threads_each, workers),
    )


@contextlib.contextmanager
def task():
    """Run one task of a pool; when it ends (or fails) the tasks still running share its cores."""
    try:
        yield
    finally:
        if _left is not None:
            with _left.get_lock():
                _left.value -= 1


@contextlib.contextmanager
def solo(budget: int):
    """Tasks run one after another in this process, each on ``budget`` threads; torch's threads restored after."""
    before, saved = torch.get_num_threads(), (_left, _budget, _workers)
    _init(multiprocessing.Value("i", 1), budget, 1)  # one task at a time: each has the whole budget
    try:
        yield
    finally:
        _init(*saved)
        torch.set_num_threads(before)
