"""The run store of fine-tuning (paper Sec. 4): one folder per run, its records and checkpoint.

A run is a folder keyed by the hash of everything that determines it (model,
data, variant, seed, config).  It holds ``config.json`` from the start, one
``epoch_XXX.parquet`` per finished epoch (tidy records: a row per train
example, *fitted* or not, and per dev / test / OOD-test question, answered
correctly or not), ``checkpoint.pt`` (weights and optimizer after the last
finished epoch) and ``done.json`` at the end.  Both training paths write here:
one run at a time (:mod:`newknowledge.finetuning.finetune`) and runs trained
together (:mod:`newknowledge.finetuning.grouped`), each holding the run's lock
(:func:`claimed`) while it trains, so two builds on one artifacts folder never
train one run at once: the second waits, then finds it done or resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from newknowledge.core import store
from newknowledge.core.config import FinetuneConfig, config_hash

try:  # POSIX; elsewhere runs are not locked (one build at a time)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


def records(train: pd.DataFrame, evals: pd.DataFrame, epoch: int, fitted, correct, idk=None) -> pd.DataFrame:
    """One epoch's tidy records from the flags: a row per train example and per evaluation question.

    Args:
        fitted: bools of shape (len(train),); correct: shape (len(evals),);
            idk: shape (len(evals),), D_IDK runs only (an ``idk`` column).
    """
    rows = [
        pd.DataFrame(
            {
                "epoch": epoch,
                "split": "train",
                "example": np.arange(len(train)),
                "category": train["category"].to_numpy(),
                "correct": fitted,
            }
        )
    ]
    ev = pd.DataFrame(
        {
            "epoch": epoch,
            "split": evals["split"].to_numpy(),
            "example": evals["example"].to_numpy(),
            "category": evals["category"].to_numpy(),
        }
    )
    ev["correct"] = correct
    if idk is not None:
        ev["idk"] = idk
    rows.append(ev)
    return pd.concat(rows, ignore_index=True)


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run: which data, which seed, where the model is."""

    model_path: str
    variant: str  # e.g. "unknown_50", "MaybeKnown", "idk_50"
    seed: int
    cfg: FinetuneConfig
    device: str = "cpu"
    dtype: str = "auto"  # bf16 on CUDA: with full fine-tuning prefer "float32" or LoRA (adapters stay fp32)
    at_stops: tuple[str, ...] = ()  # evaluation splits recorded only where EARLY_STOP or CONVERGENCE can fall (Watch)


# Bumped when what a run records changes (2: D_IDK abstentions read from generated answers).
RECORDS_VERSION = 2

# Fields that do not change what one run computes (the grid, parallelism, evaluation batching).
# ``ft_threads`` stays in the key; the threads a task is given beyond it when its neighbours have
# finished (finetuning/cores.py) did not change the records (tests/test_cores.py).
# Without dropout grouped training (grouped.py) writes the same records, up to float rounding.
_NOT_IN_KEY = (
    "pct_unknown",
    "dataset_size",
    "section4_size",
    "min_dataset_size",
    "alt_format",
    "workers",
    "executor",
    "ft_eval_batch",
    "ft_grouped",
    "ft_group_size",
)


def run_dir(spec: RunSpec, train: pd.DataFrame, evals: pd.DataFrame, in_group: bool = False) -> Path:
    """The run's folder, keyed by the hash of everything that determines its records.

    Args:
        in_group: the run trains grouped (:mod:`newknowledge.finetuning.grouped`).  Without
            dropout both paths share a folder (and resume each other's runs);
            with dropout they draw different masks, so a grouped run gets its own.
    """
    data = pd.util.hash_pandas_object(train[["question", "answer"]]).sum().item()
    data_ev = pd.util.hash_pandas_object(evals[["question", "answer", "split"]]).sum().item()
    cfg = {k: v for k, v in dataclasses.asdict(spec.cfg).items() if k not in _NOT_IN_KEY}
    key = {
        "stage": "finetune",
        "model": spec.model_path,
        "variant": spec.variant,
        "seed": spec.seed,
        "cfg": cfg,
        "train": data,
        "evals": data_ev,
        "records": RECORDS_VERSION,
    }
    if in_group and spec.cfg.ft_dropout > 0:
        key["dropout_masks"] = "grouped"
    if spec.at_stops:  # fewer records than a run evaluated every epoch: its own folder
        key["at_stops"] = sorted(spec.at_stops)
    return store.artifacts_root() / "finetune" / config_hash(key)


def read_dir(spec: RunSpec, train: pd.DataFrame, evals: pd.DataFrame, in_group: bool = False) -> Path:
    """Where the run's records are read from: :func:`run_dir`, or, for a run whose late splits are
    recorded at the stops only (``spec.at_stops``), the same run recorded at every epoch when that one
    is finished: it holds every record this one would, and more, so it is not trained again."""
    if spec.at_stops:
        every = run_dir(dataclasses.replace(spec, at_stops=()), train, evals, in_group)
        if (every / "done.json").exists():
            return every
    return run_dir(spec, train, evals, in_group)


class Watch:
    """Which epochs of a run record the splits of ``spec.at_stops`` (e.g. test and OOD test).

    A chapter that reads a run's test questions only at EARLY_STOP and CONVERGENCE (Sec. 5's Table 2,
    App. K's Table 8) needs them only where those can fall: epoch 0 (the base model), the last epoch
    (CONVERGENCE), and every epoch whose dev accuracy beats every earlier one (from epoch 1), since
    EARLY_STOP is the earliest epoch of the best dev accuracy (``analysis.early_stop``) and that epoch
    beats all before it.  The other splits (dev, and the train examples' fitted flags) are recorded at
    every epoch.  A run resumed at epoch ``start`` reads its best dev accuracy so far from the records
    of the epochs before it (later ones a kill left are recomputed).
    """

    def __init__(self, spec: RunSpec, evals: pd.DataFrame, path: Path, start: int = 0):
        if "dev" in spec.at_stops:
            raise ValueError("at_stops cannot hold 'dev': EARLY_STOP is chosen on the dev questions of every epoch")
        self.late = evals["split"].isin(spec.at_stops).to_numpy()  # questions evaluated at candidate epochs only
        self.dev = (evals["split"] == "dev").to_numpy()[~self.late]  # among the others
        self.last = spec.cfg.ft_epochs
        self.best = -1.0
        for f in sorted(Path(path).glob("epoch_*.parquet")):
            if int(f.stem.split("_")[1]) >= start:
                continue
            r = pd.read_parquet(f, columns=["epoch", "split", "correct"])
            dev = r[(r["split"] == "dev") & (r["epoch"] >= 1)]["correct"]
            if len(dev):
                self.best = max(self.best, dev.mean())

    def full(self, epoch: int, early: np.ndarray) -> bool:
        """Whether ``epoch`` records the late splits too, given the flags of the other questions ``early``
        (in ``evals`` order, the late ones left out); call once per epoch, in order."""
        dev = float(np.asarray(early, dtype=bool)[self.dev].mean()) if self.dev.any() else -1.0
        new_best = epoch >= 1 and dev > self.best
        if epoch >= 1:
            self.best = max(self.best, dev)
        return epoch == 0 or epoch >= self.last or new_best

    def evaluated(self, evals: pd.DataFrame, early, late=None) -> tuple[pd.DataFrame, np.ndarray]:
        """The evaluated questions in ``evals`` order, and their flags (``late`` None: the late splits skipped)."""
        if late is None:
            return evals[~self.late], np.asarray(early)
        flags = np.zeros(len(evals), dtype=np.asarray(early).dtype)
        flags[~self.late], flags[self.late] = early, late
        return evals, flags


@contextlib.contextmanager
def claimed(paths: list[Path]):
    """Hold the lock of each run folder (``.lock``, taken in sorted order) for the ``with`` block.

    Another process training one of these runs (a second build on the same artifacts folder) waits
    here until the holder finishes; the caller then re-reads ``done.json`` and the checkpoint, so the
    run is trained once and never by two writers.
    """
    files = []
    try:
        for path in sorted({Path(p) for p in paths}):
            path.mkdir(parents=True, exist_ok=True)
            f = open(path / ".lock", "a")  # noqa: SIM115 (held until the block ends)
            files.append(f)
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        for f in files:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


def begin(spec: RunSpec, path: Path) -> None:
    """Create the run folder with the config it is made with."""
    path.mkdir(parents=True, exist_ok=True)
    store.write_json(
        path / "config.json",
        {"model": spec.model_path, "variant": spec.variant, "seed": spec.seed, **dataclasses.asdict(spec.cfg)},
    )


def resume_point(path: Path) -> tuple[int, dict | None]:
    """Where an unfinished run continues: ``(first epoch to compute, checkpoint or None)``.

    The epoch after the checkpoint's; without one, 1 if epoch 0 (the base
    model) is recorded, else 0.  Later records a kill left are recomputed.
    """
    if (path / "checkpoint.pt").exists():
        state = torch.load(path / "checkpoint.pt", weights_only=True)
        return state["epoch"] + 1, state
    return (1 if (path / "epoch_000.parquet").exists() else 0), None


def save_epoch(path: Path, epoch: int, recs: pd.DataFrame, state: dict | None = None) -> None:
    """Write an epoch's records, then the checkpoint after it (``model`` and ``opt`` states), each atomically.

    In this order a kill between the two leaves the records of an epoch the
    resume recomputes, never a checkpoint past missing records.
    """
    tmp = path / f"epoch_{epoch:03d}.tmp"
    recs.to_parquet(tmp)
    os.replace(tmp, path / f"epoch_{epoch:03d}.parquet")
    if state is not None:
        torch.save({**state, "epoch": epoch}, path / "checkpoint.tmp")
        os.replace(path / "checkpoint.tmp", path / "checkpoint.pt")


def finish(path: Path, cfg: FinetuneConfig) -> None:
    """Mark the run done; the records are the result, so the weights are not kept."""
    store.write_json(path / "done.json", {"epochs": cfg.ft_epochs})
    (path / "checkpoint.pt").unlink(missing_ok=True)


def load_records(paths: list[Path]) -> pd.DataFrame:
    """All epoch records of the given runs, with ``variant`` and ``seed`` columns."""
    frames = []
    for path in paths:
        meta = json.loads((Path(path) / "config.json").read_text())
        for f in sorted(Path(path).glob("epoch_*.parquet")):
            frames.append(pd.read_parquet(f).assign(variant=meta["variant"], seed=meta["seed"]))
    return pd.concat(frames, ignore_index=True)
