"""Grouped fine-tuning against its arithmetic: how far each stage of an epoch is from this machine's peak
for matrix products, and a group on one thread against two (issue 22, item 2).

Issue 22 asks for run-epochs per second >= 2x today's grouped path at the quick size and >= 1.5x at
d_model 256 / |D| 600.  This benchmark measures what bounds that.  A group of ``--runs`` runs (the
book's groups hold two) is trained as one stacked model (``grouped.train_group``), each run on the
setting's |D| train examples with its own seed, and every epoch is split into

- **training**: every run's optimizer steps (forward, backward, AdamW; the profile's dropout);
- **fitted flags**: the train examples scored after the epoch (the fitting speed reads them);
- **evaluation**: the dev, test and OOD-test questions scored after the epoch (section 4's runs read
  all three every epoch);
- **rest**: saving the records and checkpoints, and everything else between two epochs' records.

For each stage: the wall seconds on one thread (the mean of ``--epochs`` epochs after epoch 0), the
floating-point operations of its matrix products (``torch.utils.flop_counter.FlopCounterMode`` over
one more epoch in a fresh folder: the linear layers, the output layer, attention; element-wise
work is not counted), and the seconds those operations take at this machine's peak for one
thread, measured in the same run (the better of a 2048-square product and the stack's own widest
product).  ``measured / bound`` is the largest speed-up any implementation of the same arithmetic
could reach on one core; where it is below the issue's target, the target needs less arithmetic
(fewer questions or epochs evaluated), which changes what the book measures.

The second table is the same group on one thread and on two: what :mod:`newknowledge.finetuning.cores`
gives a group (or a single run) left alone, whose other core would otherwise idle.  The settings are
``bench_epoch_profile.py``'s (the quick world and model; the default world at d_model 256, both
pretrained briefly, which changes no cost).

    python benchmarks/bench_grouped_bound.py [--settings quick default] [--sizes 176 600] [--runs 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import matmul_gflops, report
from bench_epoch_profile import SETTINGS, setting, setting_arguments
from bench_grouped import in_folder

from newknowledge.finetuning import grouped, run_store

STAGES = ("training", "fitted flags", "evaluation")


def stacked_gflops(runs: int, d: int, rows: int = 2048, repeats: int = 5) -> float:
    """One thread's best throughput on the stack's widest product: (runs, rows, d) x (runs, d, 4d)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    x, w, b = torch.randn(runs, rows, d), torch.randn(runs, d, 4 * d), torch.randn(runs, 1, 4 * d)
    torch.baddbmm(b, x, w)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.baddbmm(b, x, w)
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(old)
    return 2 * runs * rows * d * 4 * d / best / 1e9


def measure(jobs: list[tuple], threads: int, count: bool = False) -> tuple[dict, pd.DataFrame]:
    """Train ``jobs`` as one group in a fresh folder; per stage its seconds, or (``count``) its FLOPs.

    Epoch 0 (the base model's records, before any step) is left out: the stages are averaged over
    epochs 1..E, and ``epoch`` is the wall time from epoch 0's last record to the last one.  The
    fitted flags and the evaluation, one call in ``grouped``, are scored in two calls here.

    Returns:
        ``(per stage, records)``: the records as the group wrote them.
    """
    totals, marks, state = defaultdict(float), [], {"trained": False}
    step, flags, save = grouped.train_step, grouped.Scorer.flags, run_store.save_epoch

    def staged(stage: str, fn, *args, **kwargs):
        if count:
            with FlopCounterMode(display=False) as counter:
                out = fn(*args, **kwargs)
            totals[stage] += counter.get_total_flops()
            return out
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        totals[stage] += time.perf_counter() - t
        return out

    def train_step(*args, **kwargs):
        state["trained"] = True
        return staged("training", step, *args, **kwargs)

    def scored(self, stack, runs, sets=None):
        if not state["trained"] or tuple(sets or ()) != (0, 1):  # epoch 0, or another call: as it is
            return flags(self, stack, runs, sets)
        fitted = staged("fitted flags", flags, self, stack, runs, (0,))
        rest = staged("evaluation", flags, self, stack, runs, (1,))
        return [[a | b for a, b in zip(f, r)] for f, r in zip(fitted, rest)]

    def saved(path, epoch, *args, **kwargs):
        save(path, epoch, *args, **kwargs)
        marks.append((epoch, time.perf_counter()))

    grouped.train_step, grouped.Scorer.flags, run_store.save_epoch = train_step, scored, saved
    try:
        _, records, _ = in_folder(lambda: (grouped.train_group(jobs, threads=threads), None))
    finally:
        grouped.train_step, grouped.Scorer.flags, run_store.save_epoch = step, flags, save
    first = next(k for k, m in enumerate(marks) if m[0] > 0) - 1  # the last epoch-0 record
    epochs = max(m[0] for m in marks)
    out = {k: v / epochs for k, v in totals.items()}
    out["epoch"] = (marks[-1][1] - marks[first][1]) / epochs
    return out, records


def group(name: str, size: int, runs: int, passes: float, epochs: int) -> tuple:
    """The setting's study and ``runs`` jobs on its first ``size`` train examples, seeds 0..runs-1."""
    study, (spec, train, evals) = setting(name, size, passes, epochs)
    cfg = dataclasses.replace(spec.cfg, ft_grouped=True)
    return study, [(dataclasses.replace(spec, cfg=cfg, seed=k), train, evals) for k in range(runs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    setting_arguments(ap, epochs=2)
    ap.add_argument("--runs", type=int, default=2, help="runs in the group (the book's groups hold two)")
    args = ap.parse_args()
    square = matmul_gflops(1)
    bound_rows, thread_rows = [], []
    for name in args.settings:
        study, jobs = group(name, args.sizes[list(SETTINGS).index(name)], args.runs, args.passes, args.epochs)
        d = study.pretrain.d_model
        peak = max(square, stacked_gflops(args.runs, d))
        one, records = measure(jobs, threads=1)
        two, again = measure(jobs, threads=2)
        short = [(dataclasses.replace(s, cfg=dataclasses.replace(s.cfg, ft_epochs=1)), t, e) for s, t, e in jobs]
        flops, _ = measure(short, threads=1, count=True)
        head = {"setting": name, "d_model": d, "|D|": len(jobs[0][1]), "runs": args.runs}
        bound_head = {**head, "peak GFLOP/s": peak}
        rest = one["epoch"] - sum(one[s] for s in STAGES)
        for stage in (*STAGES, "rest", "epoch"):
            seconds = rest if stage == "rest" else one[stage]
            gflop = (sum(flops[s] for s in STAGES) if stage == "epoch" else flops.get(stage, 0.0)) / 1e9
            bound = gflop / peak
            bound_rows.append(
                {
                    **bound_head,
                    "stage": stage,
                    "s/epoch": seconds,
                    "GFLOP/epoch": gflop,
                    "GFLOP/s": gflop / seconds if seconds > 0 else float("nan"),
                    "s at peak": bound,
                    "measured / bound": seconds / bound if bound > 0 else float("nan"),
                }
            )
        thread_rows.append(
            {
                **head,
                "s/epoch, 1 thread": one["epoch"],
                "s/epoch, 2 threads": two["epoch"],
                "speed-up": one["epoch"] / two["epoch"],
                "same records": records.equals(again),
            }
        )
        print(f"{name}: peak {peak:.0f} GFLOP/s on one thread (2048-square {square:.0f})", flush=True)
    report(
        pd.DataFrame(bound_rows),
        "bench_grouped_bound",
        f"A grouped epoch against its arithmetic ({args.runs} runs stacked, one thread; the one-thread peak "
        "for matrix products measured in this run; `measured / bound` is the largest speed-up the same "
        "arithmetic allows on one core)",
    )
    report(
        pd.DataFrame(thread_rows),
        "bench_grouped_threads",
        f"A group left alone on one thread and on two ({args.runs} runs stacked; what `cores.py` gives "
        "a group whose neighbour has finished)",
    )


if __name__ == "__main__":
    main()
