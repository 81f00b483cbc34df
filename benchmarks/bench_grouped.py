"""Grouped against per-run fine-tuning: runs x epochs per second, measured in the same run (issue 13).

The setting is the quick profile's: the default model (d_model 128, 4 layers,
vocabulary 2048), batch ``ft_batch`` (16), ``--runs`` runs of ``--size``
examples each (|D| about 300 in the book) on disjoint train facts, and after
every epoch an evaluation of every train example and of ``--eval-n`` dev /
test / OOD-test questions (by default all of the default world's, 1,620, as
the book's chapters evaluate them).  The fine-tuning config is the
profile's (format, learning rate, ``ft_dropout``), ``--dropout`` aside.

Both modes run in the same two worker processes, started once (``workers: 2,
ft_threads: 1``), each from an empty artifact folder, and the order of the
modes alternates over ``--repeats`` rounds so the load other jobs put on the
machine falls on both:

- ``per-run``: today's path, what ``finetune.run_all`` runs with
  ``ft_grouped: false``: two single-thread runs side by side;
- ``grouped``: ``run_all`` with ``ft_grouped: true``, the runs dealt into two groups
  (:func:`newknowledge.finetuning.grouped.plan`), each one stacked model in a
  single-thread process, side by side.

Throughput is runs x epochs over the seconds the two processes spend in
epochs 1..``--epochs`` (from each run's, or group's, epoch-0 record to its
last one, summed over runs or groups, halved for the two processes): the
steady state of the book's 20 epochs.  The ratio is also given in CPU
seconds, which other jobs on a busy machine disturb less; the total time
with loading the model and epoch 0's evaluation is printed beside it.  ``--split`` adds training and
evaluation timed apart in one process.

The model is ``--model``, else the pretrained default model when it is built,
else a stand-in of the default architecture (random weights, the world's
tokenizer): training and teacher-forced evaluation cost the same whatever the
weights, but the flags of a random model agree trivially.

    python benchmarks/bench_grouped.py [--runs 4] [--epochs 1] [--size 300] [--eval-n 0] [--dropout P] [--split]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pandas as pd
import torch
from _common import built_default_model, report
from transformers import AutoConfig

from newknowledge.core import config
from newknowledge.data import world
from newknowledge.finetuning import finetune, grouped, run_store
from newknowledge.model import pretrain


def stand_in(folder: str) -> str:
    """A default-architecture GPT-2 with random weights and the default world's tokenizer, saved in ``folder``."""
    study = config.from_params({})
    facts = world.generate(study.world)
    docs = pretrain.documents(facts, study.pretrain, np.random.default_rng(0))
    tok = pretrain.train_tokenizer(docs, study.pretrain.vocab_size)
    torch.manual_seed(0)
    pretrain.make_model(tok, study.pretrain).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_jobs(model_path: str, cfg, runs: int, size: int, eval_n: int) -> list[tuple]:
    """``runs`` jobs of ``size`` examples on disjoint train facts, all evaluated on the same questions."""
    facts = world.load(world.build(config.from_params({}).world))
    train = facts[facts["split"] == "train"].sample(frac=1.0, random_state=0).reset_index(drop=True)
    train["category"] = np.where(np.arange(len(train)) % 2, "Unknown", "HighlyKnown")
    evals = facts[facts["split"] != "train"].reset_index(drop=True)
    evals = evals.iloc[: eval_n or len(evals)].assign(example=lambda d: np.arange(len(d)), category="Unknown")
    return [
        (
            run_store.RunSpec(model_path, f"bench_{k}", k, cfg),
            train.iloc[size * k : size * (k + 1)].reset_index(drop=True),
            evals,
        )
        for k in range(runs)
    ]


def in_folder(fn) -> tuple[float, pd.DataFrame, object]:
    """Run ``fn()`` (which returns ``(run folders, anything)``) with a fresh, empty artifact folder.

    Returns:
        ``(seconds, records, anything)``.
    """
    folder = tempfile.mkdtemp(prefix="bench_grouped_")
    old = os.environ.get("NEWKNOWLEDGE_ARTIFACTS")
    os.environ["NEWKNOWLEDGE_ARTIFACTS"] = folder
    try:
        t = time.perf_counter()
        paths, extra = fn()
        return time.perf_counter() - t, run_store.load_records(paths), extra
    finally:
        if old is None:
            os.environ.pop("NEWKNOWLEDGE_ARTIFACTS")
        else:
            os.environ["NEWKNOWLEDGE_ARTIFACTS"] = old
        shutil.rmtree(folder, ignore_errors=True)


def _task(args) -> dict:
    """A worker's task, ``finetune._worker`` (a run) or ``grouped._worker`` (a group), into ``folder``.

    Returns:
        The seconds (wall and CPU) from the task's first epoch-0 record to its
        last record: its epochs 1..E, without loading the model and epoch 0.
    """
    folder, in_group, task = args
    os.environ["NEWKNOWLEDGE_ARTIFACTS"] = folder
    marks, save = [], run_store.save_epoch

    def logged(*a, **k):  # both paths write every epoch's records through run_store.save_epoch
        save(*a, **k)
        marks.append((a[1], time.perf_counter(), time.process_time()))

    run_store.save_epoch = logged
    try:
        (grouped._worker if in_group else finetune._worker)(task)
    finally:
        run_store.save_epoch = save
    first = next(k for k, m in enumerate(marks) if m[0] > 0) - 1  # the last epoch-0 record before training
    return {"wall": marks[-1][1] - marks[first][1], "cpu": marks[-1][2] - marks[first][2]}


def side_by_side(pool, jobs: list[tuple], groups: list[list[int]] | None) -> tuple[list, dict]:
    """What ``run_all`` does with two workers: each run a task (per-run), or each group (grouped).

    This pool does not share the cores (``finetuning/cores.py``): a task left alone keeps one thread
    here, where ``run_all`` gives it both, so with groups of unequal size this understates ``run_all``.

    Returns:
        The run folders and the seconds (wall, CPU) the workers spent in epochs 1..E, halved for two workers.
    """
    folder = os.environ["NEWKNOWLEDGE_ARTIFACTS"]
    if groups is None:
        tasks = [(folder, False, (*job, k % 2 + 1)) for k, job in enumerate(jobs)]
    else:
        tasks = [(folder, True, ([jobs[i] for i in g], k % 2 + 1)) for k, g in enumerate(groups)]
    spans = list(pool.map(_task, tasks))
    busy = {k: sum(s[k] for s in spans) / 2 for k in ("wall", "cpu")}
    return [run_store.run_dir(*job, in_group=groups is not None) for job in jobs], busy


def per_epoch(jobs: list[tuple]) -> pd.DataFrame:
    """Seconds per run and epoch in training and in evaluation: one process, one thread, one epoch."""
    cfg = dataclasses.replace(jobs[0][0].cfg, ft_epochs=1)
    jobs = [(dataclasses.replace(s, cfg=cfg), t, e) for s, t, e in jobs]
    clock = {"eval": 0.0, "load": 0.0, "train": 0.0}

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            clock[key] += time.perf_counter() - t
            return out

        return wrapper

    saved = finetune._evaluate, finetune.lm.load, grouped.train_step, grouped.Scorer.flags
    rows = []
    torch.set_num_threads(1)
    try:
        finetune._evaluate, finetune.lm.load = timed(saved[0], "eval"), timed(saved[1], "load")
        total = in_folder(lambda: ([finetune.train_run(*jobs[0])], None))[0]
        # Epoch 0 is evaluation only, epoch 1 training and evaluation: halve the evaluation.  Training is
        # the rest (the optimizer steps and the batches' collation), less loading the model.
        rows.append(
            {
                "path": "per-run (train_run)",
                "runs": 1,
                "train s/run-epoch": total - clock["eval"] - clock["load"],
                "eval s/run-epoch": clock["eval"] / 2,
            }
        )
        finetune._evaluate, finetune.lm.load = saved[:2]
        clock.update(eval=0.0)
        grouped.train_step, grouped.Scorer.flags = timed(saved[2], "train"), timed(saved[3], "eval")
        in_folder(lambda: (grouped.train_group(jobs, threads=1), None))
        rows.append(
            {
                "path": "grouped (train_group)",
                "runs": len(jobs),
                "train s/run-epoch": clock["train"] / len(jobs),
                "eval s/run-epoch": clock["eval"] / 2 / len(jobs),
            }
        )
    finally:
        finetune._evaluate, finetune.lm.load, grouped.train_step, grouped.Scorer.flags = saved
    df = pd.DataFrame(rows)
    df["s/run-epoch"] = df["train s/run-epoch"] + df["eval s/run-epoch"]
    df["x per-run"] = df["s/run-epoch"].iloc[0] / df["s/run-epoch"]
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=4, help="runs in the grid")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per run (after epoch 0, the base model's)")
    ap.add_argument("--size", type=int, default=300, help="train examples per run (|D|)")
    ap.add_argument("--eval-n", type=int, default=0, help="evaluation questions per epoch (0: all)")
    ap.add_argument("--dropout", type=float, default=None, help="ft_dropout (default: the profile's)")
    ap.add_argument("--repeats", type=int, default=1, help="rounds over the modes")
    ap.add_argument("--split", action="store_true", help="also time training and evaluation apart (1 process)")
    ap.add_argument("--model", default="", help="model folder (default: the default model, else a stand-in)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_grouped_model_")
    model_path = args.model or built_default_model()
    if not model_path:
        print("note: the default model is not pretrained; timing a stand-in of its architecture (random weights)")
        model_path = stand_in(tmp)
    study = config.from_params({})
    drop = study.finetune.ft_dropout if args.dropout is None else args.dropout
    cfg = dataclasses.replace(
        study.finetune, ft_epochs=args.epochs, workers=2, ft_threads=1, ft_dropout=drop, ft_grouped=True
    )
    jobs = make_jobs(model_path, cfg, args.runs, args.size, args.eval_n)
    off = [(dataclasses.replace(s, cfg=dataclasses.replace(cfg, ft_grouped=False)), t, e) for s, t, e in jobs]
    assert all(grouped.groupable(s) for s, _, _ in jobs), "the benchmark's runs must be groupable"
    groups = grouped.plan([s for s, _, _ in jobs], workers=2)[0]
    modes = {"per-run, 2 x 1 thread": (off, None), "grouped, 2 x 1 thread": (jobs, groups)}
    seconds, busy, records = {m: [] for m in modes}, {m: [] for m in modes}, {}
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        list(pool.map(time.sleep, [0.5, 0.5]))  # both workers started (imports done) before timing
        for r in range(args.repeats):
            for m in list(modes) if r % 2 == 0 else list(modes)[::-1]:
                s, records[m], b = in_folder(lambda m=m: side_by_side(pool, *modes[m]))
                seconds[m].append(s)
                busy[m].append(b)
                print(
                    f"round {r + 1}: {m}: {s:.1f} s in all; epochs 1..{args.epochs}: {b['wall']:.1f} s, "
                    f"{b['cpu']:.1f} CPU s per worker",
                    flush=True,
                )
    work, base = args.runs * args.epochs, busy["per-run, 2 x 1 thread"]
    rows = []
    for m in modes:
        # Ratios per round (the same load on both modes), then the median over rounds.
        ratio = {k: np.median([a[k] / b[k] for a, b in zip(base, busy[m])]) for k in ("wall", "cpu")}
        wall = float(np.median([b["wall"] for b in busy[m]]))
        rows.append(
            {
                "mode": m,
                "runs x epochs": work,
                "s": wall,
                "runs x epochs / s": work / wall,
                "x per-run": ratio["wall"],
                "x per-run (CPU s)": ratio["cpu"],
                "s with start-up": float(np.median(seconds[m])),
            }
        )
    sizes = (
        f"{args.runs} runs x {args.epochs} epochs, |D| = {args.size}, {len(jobs[0][2])} evaluation questions, "
        f"ft_dropout {drop}, d_model {AutoConfig.from_pretrained(model_path).n_embd}, groups of "
        f"{'/'.join(str(len(g)) for g in groups)}"
    )
    report(
        pd.DataFrame(rows),
        "bench_grouped",
        f"Fine-tuning throughput in epochs 1..{args.epochs}, two worker processes: {sizes} ({args.repeats} rounds)",
    )
    if args.split:
        report(per_epoch(jobs), "bench_grouped_epoch", "Seconds per run and epoch (1 process, 1 thread)")
    cols = ["variant", "epoch", "split", "example"]
    a, b = (records[m].sort_values(cols).reset_index(drop=True)["correct"] for m in modes)
    print(
        f"\nIdentical flags, grouped vs per-run records: {100 * float((a == b).mean()):.2f}%"
        + (" (dropout masks differ between the paths)" if drop > 0 else "")
    )
    print(
        f"Grouped / per-run throughput: {rows[1]['x per-run']:.2f}x (CPU time: {rows[1]['x per-run (CPU s)']:.2f}x; "
        "on a busy machine the CPU-time ratio is the steadier one); target >= 2x"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
