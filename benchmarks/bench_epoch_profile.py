"""A profile of one fine-tuning epoch on the per-run path: where its seconds go (issue 22, item 1).

One run of :func:`newknowledge.finetuning.finetune.train_run` (the path of every run that is not
grouped: D_IDK, generated evaluation, LoRA, bf16, GPUs, other models), timed from the end of epoch
0's records to the end of the last epoch's, in one process on one thread.  Nothing is re-implemented:
the package's own calls are wrapped with timers while the run goes, and each epoch is split into

- **forward**, **backward**, **optimizer step**: inside :func:`newknowledge.model.train_step.step`,
  the model's forward pass (hooks on the model), ``loss.backward()`` and ``opt.step()`` (the
  optimizer's step hooks);
- **evaluation** per split: the forward passes of :func:`newknowledge.model.lm.score`
  (:func:`newknowledge.model.engine.prefill`) in the two ``correct_flags`` calls of ``_evaluate``:
  the train examples' fitted flags, then the dev, test and OOD-test questions together.  Their
  batches mix the splits (``score`` sorts every question by length), so each batch's time is shared
  among its rows, which are padded to one width and cost the same;
- **saving**: :func:`newknowledge.finetuning.run_store.save_epoch` (the records and the checkpoint);
- **Python overhead**, the rest of the wall time: in the training loop (collating, ``zero_grad``),
  in evaluation (tokenizing, the flags from the logits) and elsewhere (the records' table, the
  batch order, the once-per-run encoding of the examples).  The profile's own matching of evaluated
  rows to splits is timed and left out of the epoch.

Padding waste is the share of pad positions among the positions the model runs: in the training
batches (random order, right-padded) and in the evaluation batches (sorted by length, left-padded).

Two settings, each a world, a model and |D|: the quick profile's world and model (d_model 128) at
|D| ``--sizes[0]`` (the quick book's |D| by the paper's rule is about 176), and the default world
(the World v3 study's size) at d_model 256 with |D| ``--sizes[1]``.  Each model is pretrained for only
``--passes`` passes over its corpus (cached in the artifacts folder), and the train examples' categories are
set by hand, as in ``bench_grouped.py``: an epoch's cost per row and per token depends on the
architecture, the tokenizer and the data, not on what the model knows.  Every dev, test and OOD-test
question of the world is evaluated, as the book's chapters do.

    python benchmarks/bench_epoch_profile.py [--settings quick default] [--passes 1] [--epochs 3]

The table gives seconds per epoch and each part's share (the three overheads summed); the detail
printed above it gives each part's seconds, rows, real tokens, padding and milliseconds per row.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from newknowledge.core import config
from newknowledge.data import world
from newknowledge.finetuning import finetune, run_store
from newknowledge.model import engine, lm, pretrain, train_step

# Each setting's study parameters (a profile's, or overrides of the defaults); pretraining is shortened on top.
SETTINGS = {
    "quick": lambda: config.load_profile("quick"),
    "default": lambda: {"d_model": 256},
}
TRAIN_PARTS = ("forward", "backward", "optimizer step")
OVERHEAD = ("overhead: training loop", "overhead: evaluation", "overhead: other")


@contextlib.contextmanager
def _patched(targets: list[tuple[object, str, object]]):
    """Set each ``(owner, name, value)``; restore every attribute on exit."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
    try:
        for owner, name, value in targets:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


@contextlib.contextmanager
def _artifacts(folder: str):
    old = os.environ.get("NEWKNOWLEDGE_ARTIFACTS")
    os.environ["NEWKNOWLEDGE_ARTIFACTS"] = folder
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NEWKNOWLEDGE_ARTIFACTS")
        else:
            os.environ["NEWKNOWLEDGE_ARTIFACTS"] = old


def profile_epoch(spec: run_store.RunSpec, train: pd.DataFrame, evals: pd.DataFrame) -> dict:
    """Run ``spec`` (``spec.cfg.ft_epochs`` epochs after epoch 0) with ``train_run``; time its epochs' parts.

    The run writes into a temporary artifacts folder, deleted afterwards.

    Args:
        spec: the run (CPU, ``ft_eval: teacher``).
        train: its examples (``question``, ``answer``, ``category``, ``relation``).
        evals: the questions evaluated after each epoch (``split``, ``example``, ``question``, ...).

    Returns:
        ``{"total": s, "seconds": {part: s}, "padding": {batches: share}, "rows": {...}, "tokens": {...}}``,
        seconds per epoch (the mean over the epochs after epoch 0).  The parts (:data:`TRAIN_PARTS`,
        ``"eval: <split>"`` for the train flags and every split of ``evals``, ``"saving"``,
        :data:`OVERHEAD`) are disjoint and add up to ``total``.  ``padding`` is the share of pad
        positions in ``"training"`` and ``"evaluation"`` batches and in each ``"eval: <split>"``'s rows;
        ``rows`` and ``tokens`` count rows and real tokens per epoch in the same keys.
    """
    if spec.cfg.ft_eval != "teacher" or spec.variant.startswith("idk"):
        raise ValueError("the profile times teacher-forced evaluation (ft_eval: teacher, no D_IDK run)")
    now = time.perf_counter
    clock: dict[str, float] = defaultdict(float)
    real: dict[str, int] = defaultdict(int)  # real tokens per part
    cells: dict[str, int] = defaultdict(int)  # positions the model runs (real and pad)
    rows: dict[str, int] = defaultdict(int)
    state = {"active": False, "phase": "", "start": 0.0, "end": 0.0, "labels": []}
    labels: dict[tuple, list[str]] = {}  # an evaluated sequence's tokens -> the part(s) it belongs to
    questions = {"train flags": train["question"].tolist(), "evals": evals["question"].tolist()}

    def timed(fn, key: str, phase: str):
        def wrapper(*args, **kwargs):  # one whole call, in ``phase`` ("train" or "eval")
            if not state["active"]:
                return fn(*args, **kwargs)
            state["phase"], t = phase, now()
            try:
                return fn(*args, **kwargs)
            finally:
                clock[key] += now() - t
                state["phase"] = ""

        return wrapper

    def in_training(key: str):
        t = {}

        def pre(*_):
            t["start"] = now()

        def post(*_):
            if state["active"] and state["phase"] == "train":
                clock[key] += now() - t["start"]

        return pre, post

    def load(*args, **kwargs):
        model, tok = saved_load(*args, **kwargs)
        pre, post = in_training("forward")
        model.register_forward_pre_hook(pre)
        model.register_forward_hook(post)
        return model, tok

    def backward(tensor, *args, **kwargs):
        t = now()
        try:
            return saved_backward(tensor, *args, **kwargs)
        finally:
            if state["active"] and state["phase"] == "train":
                clock["backward"] += now() - t

    def collate(pairs, pad):
        out = saved_collate(pairs, pad)
        if state["active"]:
            mask = out[1]
            real["training"], cells["training"] = real["training"] + int(mask.sum()), cells["training"] + mask.numel()
            rows["training"] += len(pairs)
        return out

    def correct_flags(model, tokenizer, qs, answers, cfg):
        if state["active"]:
            t = now()
            if qs == questions["train flags"]:
                state["labels"] = ["eval: train flags"] * len(qs)
            elif qs == questions["evals"]:
                state["labels"] = [f"eval: {s}" for s in evals["split"]]
            else:
                raise RuntimeError("correct_flags was called on questions that are neither the train set nor evals")
            clock["bookkeeping"] += now() - t
        return saved_flags(model, tokenizer, qs, answers, cfg)

    def answer_ids(tokenizer, prompts, golds):
        out = saved_answer_ids(tokenizer, prompts, golds)
        if state["active"]:
            t = now()
            labels.clear()
            for p, c, part in zip(out[0], out[1], state["labels"]):
                labels.setdefault(tuple(p + c), []).append(part)
            clock["bookkeeping"] += now() - t
        return out

    def prefill(model, seqs, pad, **kwargs):
        if not state["active"]:
            return saved_prefill(model, seqs, pad, **kwargs)
        t = now()
        out = saved_prefill(model, seqs, pad, **kwargs)
        t2 = now()
        seconds, width = t2 - t, max(len(s) for s in seqs)  # left-padded to the longest row
        for s in seqs:
            try:
                part = labels[tuple(s)].pop()
            except (KeyError, IndexError):
                raise RuntimeError("an evaluated row matches no question (did lm.score change?)") from None
            clock[part] += seconds / len(seqs)
            for key in (part, "evaluation"):
                real[key], cells[key], rows[key] = real[key] + len(s), cells[key] + width, rows[key] + 1
        clock["eval forward"] += seconds
        clock["bookkeeping"] += now() - t2
        return out

    def save_epoch(path, epoch, *args, **kwargs):
        t = now()
        saved_save(path, epoch, *args, **kwargs)
        if state["active"]:
            clock["saving"] += now() - t
            state["end"] = now()
        elif epoch == 0:  # epoch 0 is the base model's evaluation: the profile starts after it
            state["active"], state["start"] = True, now()

    saved_load, saved_backward, saved_collate = lm.load, torch.Tensor.backward, train_step.collate
    saved_flags, saved_answer_ids, saved_prefill = finetune.correct_flags, lm.answer_ids, engine.prefill
    saved_save = run_store.save_epoch
    opt_pre, opt_post = in_training("optimizer step")
    hooks = [register_optimizer_step_pre_hook(opt_pre), register_optimizer_step_post_hook(opt_post)]
    folder = tempfile.mkdtemp(prefix="bench_epoch_profile_")
    try:
        with (
            _artifacts(folder),
            _patched(
                [
                    (lm, "load", load),
                    (torch.Tensor, "backward", backward),
                    (train_step, "collate", collate),
                    (train_step, "step", timed(train_step.step, "training loop", "train")),
                    (finetune, "correct_flags", timed(correct_flags, "evaluation", "eval")),
                    (lm, "answer_ids", answer_ids),
                    (engine, "prefill", prefill),
                    (run_store, "save_epoch", save_epoch),
                ]
            ),
        ):
            finetune.train_run(spec, train, evals)
    finally:
        for h in hooks:
            h.remove()
        shutil.rmtree(folder, ignore_errors=True)

    epochs = spec.cfg.ft_epochs
    # The profile's own matching of rows to splits is taken out of the epoch (and of evaluation's overhead).
    total = state["end"] - state["start"] - clock["bookkeeping"]
    evals_parts = ["eval: train flags", *(f"eval: {s}" for s in dict.fromkeys(evals["split"]))]
    seconds = {k: clock[k] for k in (*TRAIN_PARTS, *evals_parts, "saving")}
    seconds["overhead: training loop"] = clock["training loop"] - sum(clock[k] for k in TRAIN_PARTS)
    seconds["overhead: evaluation"] = clock["evaluation"] - clock["eval forward"] - clock["bookkeeping"]
    seconds["overhead: other"] = total - sum(seconds.values())
    keys = ("training", "evaluation", *evals_parts)
    return {
        "total": total / epochs,
        "seconds": {k: v / epochs for k, v in seconds.items()},
        "padding": {k: 1 - real[k] / cells[k] for k in keys if cells[k]},
        "rows": {k: rows[k] / epochs for k in keys},
        "tokens": {k: real[k] / epochs for k in keys},
    }


def setting(name: str, size: int, passes: float, epochs: int):
    """The run to profile in setting ``name``: its study, ``(spec, train, evals)``, the model pretrained briefly.

    Every dev, test and OOD-test question of the world is evaluated; the train examples are the first
    ``size`` of the shuffled train facts, every other one labelled Unknown (the labels change no cost).
    """
    params = {**SETTINGS[name](), "pretrain_passes": passes, "pretrain_threads": 1}
    study = config.from_params(params)
    facts = world.load(world.build(study.world))
    model_path = pretrain.build(study.world, study.pretrain, world.generate(study.world))
    train = facts[facts["split"] == "train"].sample(frac=1.0, random_state=0).reset_index(drop=True)
    if size > len(train):
        raise ValueError(f"|D| {size} is more than the {len(train)} train facts of the {name} world")
    train = train.head(size).assign(category=np.where(np.arange(size) % 2, "Unknown", "HighlyKnown"))
    evals = facts[facts["split"] != "train"].reset_index(drop=True)
    evals = evals.assign(example=np.arange(len(evals)), category="Unknown")
    cfg = dataclasses.replace(study.finetune, ft_epochs=epochs, ft_threads=1, ft_eval="teacher")
    return study, (run_store.RunSpec(str(model_path), "profile", 0, cfg, device="cpu"), train, evals)


def summary(name: str, study, result: dict) -> dict:
    """One table row: the setting, seconds per epoch and each part's share (overheads summed), padding."""
    total, sec = result["total"], result["seconds"]
    row = {
        "setting": name,
        "d_model": study.pretrain.d_model,
        "|D|": int(result["rows"]["training"]),
        "eval questions": int(result["rows"]["evaluation"] - result["rows"]["eval: train flags"]),
        "s/epoch": total,
    }
    shown = {k: k.replace("eval: ", "eval ").replace("train flags", "train") for k in sec if k.startswith("eval: ")}
    for k in (*TRAIN_PARTS, *shown, "saving"):
        row[f"{shown.get(k, k)} %"] = 100 * sec[k] / total
    row["Python overhead %"] = 100 * sum(sec[k] for k in OVERHEAD) / total
    row["padding, training %"] = 100 * result["padding"]["training"]
    row["padding, evaluation %"] = 100 * result["padding"]["evaluation"]
    return row


def detail(result: dict) -> pd.DataFrame:
    """Every part with its seconds, share, rows, real tokens, padding and milliseconds per row."""
    out = pd.DataFrame({"s/epoch": result["seconds"]})
    out["share %"] = 100 * out["s/epoch"] / result["total"]
    for what in ("rows", "tokens", "padding"):  # the forward and backward passes run the training batches
        per = {**result[what], **{k: result[what]["training"] for k in TRAIN_PARTS[:2]}}
        out[what] = pd.Series(per)
    out["padding"] *= 100
    out = out.rename(columns={"padding": "padding %"})
    out["ms/row"] = 1000 * out["s/epoch"] / out["rows"]
    return out


def setting_arguments(ap: argparse.ArgumentParser, epochs: int) -> None:
    """The command-line arguments that choose the settings (``bench_grouped_bound.py`` shares them)."""
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--sizes", nargs=2, type=int, default=[176, 600], help="|D| of the quick and default settings")
    ap.add_argument("--passes", type=float, default=1.0, help="pretraining passes over the corpus (briefly)")
    ap.add_argument("--epochs", type=int, default=epochs, help="epochs timed after epoch 0 (their mean is shown)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    setting_arguments(ap, epochs=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.settings:
        study, run = setting(name, args.sizes[list(SETTINGS).index(name)], args.passes, args.epochs)
        result = profile_epoch(*run)
        rows.append(summary(f"{name} world", study, result))
        print(f"\n{name}: d_model {study.pretrain.d_model}, {result['total']:.2f} s per epoch", flush=True)
        print(detail(result).to_string(float_format=lambda x: f"{x:.3g}"), flush=True)
    report(
        pd.DataFrame(rows),
        "bench_epoch_profile",
        f"One fine-tuning epoch on the per-run path (finetune.train_run, 1 thread, mean of {args.epochs} "
        f"epoch(s) after epoch 0): seconds and the share of each part; models pretrained only {args.passes:g} "
        "pass(es), train categories set by hand (the cost does not depend on them)",
    )


if __name__ == "__main__":
    main()
