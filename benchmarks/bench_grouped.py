"""Grouped against per-run fine-tuning: runs x epochs per second, measured in the same run.

The quick profile's grid shape: ``--runs`` runs (default 4, as a section-4
chapter: three of |D| = 220 examples and one D_Known of 110), batch
``ft_batch`` (16), and after every epoch an evaluation of every train example
and of the dev / test / OOD-test questions (1,380 of them), on the default model.

1. Throughput.  Each mode trains the same runs for ``--epochs`` epochs from an
   empty artifact folder, so the time includes what the book pays too
   (starting worker processes, loading the model, epoch 0's evaluation):

   - ``per-run``: today's path, ``finetune.run_all`` with ``ft_grouped: false``
     and ``workers: 2``: two single-thread runs side by side;
   - ``grouped, 2 threads``: all runs as one group in one process with 2 threads;
   - ``grouped, 2 x 1 thread``: ``run_all``'s grouped path (the default): two
     groups side by side, one process and one thread each.

   The modes alternate over ``--repeats`` rounds (order reversed every other
   round), so the load other jobs put on the machine falls on all of them;
   the ratio to ``per-run`` is taken within each round.
2. Where the time goes: one process, one thread, one epoch; training (the
   optimizer steps) and evaluation timed apart, per run and epoch.
3. Agreement: the share of identical flags (fitted and correct) between the
   per-run and the grouped records of the same runs (float rounding may flip one).

    python benchmarks/bench_grouped.py [--runs 4] [--epochs 2] [--repeats 3] [--model PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from _common import load_default, report
from newknowledge import config, finetune, grouped, world


def _jobs(model_path: str, cfg, runs: int):
    """``runs`` runs on disjoint train facts: all of |D| = 220 but the last (110, a D_Known's size)."""
    study = config.from_params({})
    facts = world.load(world.build(study.world))
    train = facts[facts["split"] == "train"].sample(frac=1.0, random_state=0).reset_index(drop=True)
    train["category"] = np.where(np.arange(len(train)) % 2, "Unknown", "HighlyKnown")
    evals = facts[facts["split"] != "train"].reset_index(drop=True)
    evals = evals.assign(example=np.arange(len(evals)), category="Unknown")
    sizes = [220] * (runs - 1) + [110]
    jobs = [(finetune.RunSpec(model_path, f"bench_{k}", k, cfg), train.iloc[220 * k:220 * k + n].reset_index(drop=True))
            for k, n in enumerate(sizes)]
    return jobs, evals


def _in_folder(fn):
    """Run ``fn()`` with a fresh, empty artifact folder; return ``(seconds, records)``."""
    folder = tempfile.mkdtemp(prefix="bench_grouped_")
    old = os.environ.get("NEWKNOWLEDGE_ARTIFACTS")
    os.environ["NEWKNOWLEDGE_ARTIFACTS"] = folder  # spawned workers inherit it
    try:
        t = time.perf_counter()
        paths = fn()
        seconds = time.perf_counter() - t
        return seconds, finetune.load_records(paths)
    finally:
        if old is None:
            os.environ.pop("NEWKNOWLEDGE_ARTIFACTS")
        else:
            os.environ["NEWKNOWLEDGE_ARTIFACTS"] = old
        shutil.rmtree(folder, ignore_errors=True)


def _split(jobs, evals) -> pd.DataFrame:
    """Seconds per run and epoch in training and in evaluation, one process and one thread, epoch 1 only."""
    cfg = dataclasses.replace(jobs[0][0].cfg, ft_epochs=1)
    jobs = [(dataclasses.replace(s, cfg=cfg), t) for s, t in jobs]
    clock = {"train": 0.0, "eval": 0.0, "load": 0.0}

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            clock[key] += time.perf_counter() - t
            return out
        return wrapper

    rows = []
    saved = finetune._evaluate, grouped.train_step, grouped.Scorer.flags, finetune.lm.load
    try:
        torch.set_num_threads(1)
        finetune._evaluate, finetune.lm.load = timed(saved[0], "eval"), timed(saved[3], "load")
        total, _ = _in_folder(lambda: [finetune.train_run(*jobs[0], evals)])
        # Epoch 0 is evaluation only, epoch 1 training and evaluation: halve the evaluation.  Training
        # is the rest (the optimizer steps and the batches' collation), less loading the model.
        rows.append({"path": "per-run (train_run)", "runs": 1,
                     "train s/run-epoch": total - clock["eval"] - clock["load"], "eval s/run-epoch": clock["eval"] / 2})
        clock.update(train=0.0, eval=0.0)
        finetune._evaluate, finetune.lm.load = saved[0], saved[3]
        grouped.train_step, grouped.Scorer.flags = timed(saved[1], "train"), timed(saved[2], "eval")
        _in_folder(lambda: grouped.train_group([s for s, _ in jobs], [t for _, t in jobs], evals, threads=1))
        rows.append({"path": "grouped (train_group)", "runs": len(jobs),
                     "train s/run-epoch": clock["train"] / len(jobs), "eval s/run-epoch": clock["eval"] / 2 / len(jobs)})
    finally:
        finetune._evaluate, grouped.train_step, grouped.Scorer.flags, finetune.lm.load = saved
    df = pd.DataFrame(rows)
    df["eval share %"] = 100 * df["eval s/run-epoch"] / (df["eval s/run-epoch"] + df["train s/run-epoch"])
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=4, help="runs in the grid (the last one half size)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run")
    ap.add_argument("--repeats", type=int, default=3, help="rounds over the modes")
    ap.add_argument("--model", default="", help="model folder (default: the default model, benchmarks/_common.py)")
    args = ap.parse_args()
    model_path = args.model or load_default()[4]
    study = config.from_params({})
    cfg = dataclasses.replace(study.finetune, ft_epochs=args.epochs, workers=2, ft_threads=1)
    jobs, evals = _jobs(model_path, cfg, args.runs)
    off = [(dataclasses.replace(s, cfg=dataclasses.replace(cfg, ft_grouped=False)), t) for s, t in jobs]
    modes = {
        "per-run, 2 x 1 thread": lambda: finetune.run_all(off, evals, workers=2),
        "grouped, 2 threads": lambda: grouped.train_group([s for s, _ in jobs], [t for _, t in jobs], evals,
                                                         threads=2),
        "grouped, 2 x 1 thread": lambda: finetune.run_all(jobs, evals, workers=2),
    }
    seconds = {m: [] for m in modes}
    records = {}
    for r in range(args.repeats):
        for m in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
            s, records[m] = _in_folder(modes[m])
            seconds[m].append(s)
            print(f"round {r + 1}: {m}: {s:.1f} s", flush=True)
    work = args.runs * args.epochs
    base = np.array(seconds["per-run, 2 x 1 thread"])
    rows = []
    for m, s in seconds.items():
        ratio = base / np.array(s)  # within each round: the same load on both
        rows.append({"mode": m, "runs x epochs": work, "median s": float(np.median(s)),
                     "runs x epochs / s": work / float(np.median(s)), "x per-run (median)": float(np.median(ratio)),
                     "x per-run (min-max)": f"{ratio.min():.2f}-{ratio.max():.2f}",
                     "all rounds (s)": " ".join(f"{x:.1f}" for x in s)})
    report(pd.DataFrame(rows), "bench_grouped",
           f"Fine-tuning throughput: {args.runs} runs x {args.epochs} epochs, grouped vs per-run ({args.repeats} rounds)")
    cols = ["variant", "epoch", "split", "example"]
    a = records["per-run, 2 x 1 thread"].sort_values(cols).reset_index(drop=True)
    agree = {m: float((records[m].sort_values(cols).reset_index(drop=True)["correct"] == a["correct"]).mean())
             for m in modes}
    split = _split(jobs, evals)
    report(split, "bench_grouped_split", "Training and evaluation time per run and epoch (1 process, 1 thread)")
    print("\nIdentical flags, grouped vs per-run records: " + ", ".join(f"{m}: {100 * v:.2f}%" for m, v in agree.items()))
    print("Target: grouped >= 2x the per-run throughput (runs x epochs per second), measured in the same run.")


if __name__ == "__main__":
    main()
