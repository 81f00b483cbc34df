"""Fine-tuning with per-epoch records (paper Sec. 4).

Closed-book QA in a zero-shot format (question in, answer out), loss on the
answer tokens only, a constant learning rate.  After every epoch we record, as
tidy rows, whether each train example is *fitted* (its greedy answer is the
gold) and whether each dev / test / OOD-test question is answered correctly.
EARLY_STOP is the epoch with the best dev accuracy; CONVERGENCE the last one.

A run is a folder keyed by the hash of everything that determines it (model,
data, variant, seed, config).  It holds ``config.json`` from the start, one
``epoch_XXX.parquet`` per finished epoch, ``checkpoint.pt`` (weights and
optimizer after the last finished epoch) and ``done.json`` at the end.  A rerun
skips finished runs and resumes an interrupted one from its last finished epoch
with identical results: batch order is a function of (seed, epoch) and the
models have no dropout.
"""

from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import grouped, lm, store
from .config import FinetuneConfig, config_hash
from .metrics import exact_match

# Prompt formats: (prompt template, answer template).  "qa" is the probe's own
# line format, seen in pretraining; "unseen" is a format pretraining never used,
# so fine-tuning must teach the model to expose what it knows in it.
FORMATS = {
    "qa": ("Q: {q} A:", " {a}\n"),
    "unseen": ("Question: {q}\nAnswer:", " {a}\n"),
}
IDK = "I don't know"


def _format(fmt: str) -> tuple[str, str]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown ft_format {fmt!r}; choose one of {sorted(FORMATS)}")
    return FORMATS[fmt]


def encode_examples(tokenizer, questions: list[str], answers: list[str], fmt: str):
    """Token ids and labels for answer-only loss.

    Returns:
        A list of ``(input_ids, labels)`` pairs; labels are -100 on the prompt
        tokens, so only the answer (and its closing newline) is learned.
    """
    p_tpl, a_tpl = _format(fmt)
    prompts = [p_tpl.format(q=q) for q in questions]
    p_ids, a_ids = lm.encode(tokenizer, prompts, [a_tpl.format(a=a) for a in answers])
    return [(p + a, [-100] * len(p) + a) for p, a in zip(p_ids, a_ids)]


def _collate(pairs, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to shape (batch, max_len): ids, attention mask, labels."""
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return ids, mask, labels


def correct_flags(model, tokenizer, questions: list[str], answers: list[str], cfg: FinetuneConfig) -> np.ndarray:
    """Does the model's greedy answer, zero-shot in the fine-tuning format, match the gold?

    By teacher forcing (default) or by generating (``ft_eval: generate``).
    """
    prompts = [_format(cfg.ft_format)[0].format(q=q) for q in questions]
    batch = cfg.ft_eval_batch
    if batch == 0:  # auto: from the free accelerator memory (128 on CPU)
        # Characters bound the token count from above (a token holds at least one, BOS aside).
        longest = max((len(p) + len(a) for p, a in zip(prompts, answers)), default=0) + 4
        batch = lm.auto_batch_size(model, longest, default=128)
    if cfg.ft_eval == "teacher":
        # Greedy flags only: the sampling probabilities are not needed here (about a fifth of the cost).
        return lm.score(model, tokenizer, prompts, answers, batch_size=batch, greedy_only=True).greedy_correct
    greedy, _ = lm.decode(model, tokenizer, prompts, batch_size=batch)
    return np.array([exact_match(g, a) for g, a in zip(greedy, answers)])


def _evaluate(model, tokenizer, train: pd.DataFrame, evals: pd.DataFrame, cfg: FinetuneConfig,
              epoch: int, idk: bool) -> pd.DataFrame:
    """One epoch's tidy records: a row per train example and per evaluation question."""
    model.eval()
    fitted = correct_flags(model, tokenizer, train["question"].tolist(), train["answer"].tolist(), cfg)
    correct = correct_flags(model, tokenizer, evals["question"].tolist(), evals["answer"].tolist(), cfg)
    # D_IDK: did the model abstain?
    abstained = correct_flags(model, tokenizer, evals["question"].tolist(), [IDK] * len(evals), cfg) if idk else None
    return records(train, evals, epoch, fitted, correct, abstained)


def records(train: pd.DataFrame, evals: pd.DataFrame, epoch: int, fitted: np.ndarray, correct: np.ndarray,
            idk: np.ndarray | None = None) -> pd.DataFrame:
    """One epoch's tidy records from the flags: a row per train example and per evaluation question.

    Args:
        fitted: bool array of shape (len(train),); correct: shape (len(evals),);
            idk: shape (len(evals),), for D_IDK runs only (an ``idk`` column).
    """
    rows = [pd.DataFrame({"epoch": epoch, "split": "train", "example": np.arange(len(train)),
                          "category": train["category"].to_numpy(), "correct": fitted})]
    ev = pd.DataFrame({"epoch": epoch, "split": evals["split"].to_numpy(), "example": evals["example"].to_numpy(),
                       "category": evals["category"].to_numpy(), "correct": correct})
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


# Fields that do not change what one run computes (the grid, parallelism, evaluation batching).
# Grouped training (grouped.py) writes the same records, up to float rounding, to the same folders.
_NOT_IN_KEY = ("pct_unknown", "dataset_size", "alt_format", "workers", "executor",
               "ft_eval_batch", "ft_grouped", "ft_group_size")


def run_dir(spec: RunSpec, train: pd.DataFrame, evals: pd.DataFrame) -> Path:
    """The run's folder, keyed by the hash of everything that determines its records."""
    data = pd.util.hash_pandas_object(train[["question", "answer"]]).sum().item()
    data_ev = pd.util.hash_pandas_object(evals[["question", "answer", "split"]]).sum().item()
    cfg = {k: v for k, v in dataclasses.asdict(spec.cfg).items() if k not in _NOT_IN_KEY}
    key = {"stage": "finetune", "model": spec.model_path, "variant": spec.variant, "seed": spec.seed,
           "cfg": cfg, "train": data, "evals": data_ev}
    return store.artifacts_root() / "finetune" / config_hash(key)


def train_run(spec: RunSpec, train: pd.DataFrame, evals: pd.DataFrame, *, position: int = 0,
              stop_after: int | None = None) -> Path:
    """Fine-tune on ``train`` and record every epoch (resumable).

    Args:
        spec: the run.
        train: the variant (``question``, ``answer``, ``category``, ``relation``).
        evals: questions to evaluate after each epoch (``split`` in dev/test/
            ood_test, ``example`` id, ``question``, ``answer``, ``category``).
        stop_after: stop after this many epochs in this call (tests simulate a kill).

    Returns:
        The run folder.
    """
    cfg = spec.cfg
    path = run_dir(spec, train, evals)
    if (path / "done.json").exists():
        return path
    begin(spec, path)
    torch.set_num_threads(cfg.ft_threads)
    torch.manual_seed(spec.seed)
    model, tokenizer = lm.load(spec.model_path, device=spec.device, dtype=spec.dtype)
    if cfg.lora_rank > 0:
        model = _with_lora(model, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.ft_lr,
                            weight_decay=cfg.ft_weight_decay)
    idk = spec.variant.startswith("idk")
    start, state = resume_point(path)
    if state is not None:  # resume after the last checkpointed epoch
        _load_trainable(model, state["model"])
        opt.load_state_dict(state["opt"])
    elif start == 0:
        save_epoch(path, 0, _evaluate(model, tokenizer, train, evals, cfg, 0, idk))
        start = 1
    examples = encode_examples(tokenizer, train["question"].tolist(), train["answer"].tolist(), cfg.ft_format)
    device = next(model.parameters()).device
    bar = tqdm(range(start, cfg.ft_epochs + 1), desc=f"{spec.variant} s{spec.seed}", position=position,
               leave=False, unit="epoch")
    for n, epoch in enumerate(bar):
        if stop_after is not None and n >= stop_after:
            return path
        model.train()
        order = np.random.default_rng([spec.seed, epoch]).permutation(len(examples))
        for i in range(0, len(order), cfg.ft_batch):
            ids, mask, labels = _collate([examples[j] for j in order[i:i + cfg.ft_batch]], tokenizer.pad_token_id)
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        save_epoch(path, epoch, _evaluate(model, tokenizer, train, evals, cfg, epoch, idk),
                   {"model": _trainable_state(model), "opt": opt.state_dict()})
    finish(path, cfg)
    return path


def begin(spec: RunSpec, path: Path) -> None:
    """Create the run folder with the config it is made with."""
    path.mkdir(parents=True, exist_ok=True)
    store.write_json(path / "config.json", {"model": spec.model_path, "variant": spec.variant, "seed": spec.seed,
                                            **dataclasses.asdict(spec.cfg)})


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


def _with_lora(model, cfg: FinetuneConfig):
    """Wrap the model with LoRA adapters (``peft``), for models too big to fine-tune fully.

    Only the adapters are trainable: the base weights stay frozen (peft sets
    ``requires_grad=False`` on them), so the optimizer and the checkpoint hold
    the adapters only.  The adapters are initialised from torch's global RNG,
    seeded by the run's seed, so a run is reproducible; LoRA dropout is 0, as
    the models have none either and an epoch must be replayable on resume.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("lora_rank > 0 needs peft: pip install 'newknowledge[lora]'") from None
    targets = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()] or None
    try:
        return get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets,
                                                lora_dropout=0.0, task_type="CAUSAL_LM"))
    except ValueError as err:  # peft knows no default targets for this architecture, or a name matched nothing
        raise ValueError(f"LoRA could not wrap {type(model).__name__}: {err}; set lora_targets to its attention "
                         "projections, e.g. 'q_proj,v_proj' (Llama, Mistral, Qwen) or 'c_attn' (GPT-2)") from None


def _trainable_state(model) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates, by name: all of them, or only LoRA's adapters.

    A checkpoint of a LoRA run then holds megabytes, not the frozen base model.
    """
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, state: dict[str, torch.Tensor]) -> None:
    """Restore :func:`_trainable_state`; every trainable parameter must be in it."""
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    lost = sorted({n for n, p in model.named_parameters() if p.requires_grad} - set(state))
    if unexpected or lost:
        raise RuntimeError(f"checkpoint does not match the model: missing {lost[:5]}, unexpected {unexpected[:5]}")


def _worker(args) -> str:
    spec, train, evals, position = args
    return str(train_run(spec, train, evals, position=position))


def run_all(jobs: list[tuple[RunSpec, pd.DataFrame]], evals: pd.DataFrame, workers: int = 1,
            executor: str = "local") -> list[Path]:
    """Execute every run not yet finished: ``workers`` at a time (local process pool), or as Ray tasks.

    Runs are independent: two single-threaded runs side by side use two cores
    better than one run with two threads, for models this small.  Local CPU
    runs of a GPT-2 model train in groups, each as one stacked model, the
    groups side by side (:mod:`newknowledge.grouped`, ``ft_grouped``).  With
    ``executor="ray"`` each run is a Ray task (``ft_threads`` CPUs, one GPU if
    the run's device is CUDA) on the instance at ``RAY_ADDRESS`` (a cluster) or
    a local one; every task writes to ``NEWKNOWLEDGE_ARTIFACTS``, which on a
    cluster must be storage all machines share.  Either way finished runs are
    skipped and interrupted ones resume.
    """
    todo = [(i, s, t) for i, (s, t) in enumerate(jobs) if not (run_dir(s, t, evals) / "done.json").exists()]
    if todo and executor == "local":  # runs that can be trained together as one stacked model are (grouped.py)
        groups, rest = grouped.plan([s for _, s, _ in todo], workers)
        grouped.run_groups([([todo[k][1] for k in g], [todo[k][2] for k in g]) for g in groups], evals, workers)
        todo = [todo[k] for k in rest]
    bar = dict(total=len(todo), desc="fine-tuning runs", unit="run")
    if todo and executor == "ray":
        _run_ray([(s, t, evals, 0) for _, s, t in todo], bar)
    elif todo and workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
            list(tqdm(pool.map(_worker, [(s, t, evals, k % workers + 1) for k, (_, s, t) in enumerate(todo)]), **bar))
    else:
        for _, s, t in tqdm(todo, disable=len(todo) < 2, **{k: v for k, v in bar.items() if k != "total"}):
            train_run(s, t, evals)
    return [run_dir(s, t, evals) for s, t in jobs]


def _run_ray(tasks: list[tuple], bar: dict) -> None:
    """Run ``_worker`` on each task as a Ray task; raise the first task's error."""
    try:
        import ray
    except ImportError:
        raise ImportError("executor 'ray' needs ray: pip install 'newknowledge[ray]'") from None
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True)  # RAY_ADDRESS, if set, names the cluster to join
    env = {"env_vars": {"NEWKNOWLEDGE_ARTIFACTS": str(store.artifacts_root())}}
    pending = []
    for task in tasks:
        spec = task[0]
        gpus = 1 if str(spec.device).startswith("cuda") else 0
        remote = ray.remote(num_cpus=spec.cfg.ft_threads, num_gpus=gpus, runtime_env=env)(_worker)
        pending.append(remote.remote(task))
    with tqdm(**bar) as progress:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            ray.get(finished)
            progress.update(len(finished))


def load_records(paths: list[Path]) -> pd.DataFrame:
    """All epoch records of the given runs, with ``variant`` and ``seed`` columns."""
    frames = []
    for path in paths:
        meta = json.loads((Path(path) / "config.json").read_text())
        for f in sorted(Path(path).glob("epoch_*.parquet")):
            frames.append(pd.read_parquet(f).assign(variant=meta["variant"], seed=meta["seed"]))
    return pd.concat(frames, ignore_index=True)
