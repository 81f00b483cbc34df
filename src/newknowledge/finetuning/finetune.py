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
with identical results: batch order and dropout masks (``ft_dropout``) are
functions of (seed, epoch).  With ``ft_grouped`` (opt-in) runs of the
controlled world's small model train in groups, as one stacked model
(:mod:`newknowledge.finetuning.grouped`), into folders of the same format; everything
else runs here, one run at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from newknowledge.core import store
from newknowledge.core.config import FinetuneConfig
from newknowledge.core.metrics import exact_match
from newknowledge.core.progress import tqdm
from newknowledge.core.prompts import IDK, ft_prompt
from newknowledge.finetuning import cores, grouped, run_store
from newknowledge.model import lm, train_step


def correct_flags(model, tokenizer, questions: list[str], answers: list[str], cfg: FinetuneConfig) -> np.ndarray:
    """Does the model's greedy answer, zero-shot in the fine-tuning format, match the gold?

    By teacher forcing (default) or by generating (``ft_eval: generate``).
    """
    prompts = [ft_prompt(cfg.ft_format, q) for q in questions]
    batch = cfg.ft_eval_batch
    if batch == 0:  # auto: from the free accelerator memory (128 on CPU)
        # Characters bound the token count from above (a token holds at least one, BOS aside).
        longest = max((len(p) + len(a) for p, a in zip(prompts, answers)), default=0) + 4
        batch = lm.auto_batch_size(model, longest, default=128)
    if cfg.ft_eval == "teacher":
        # Greedy flags only: the sampling probabilities are not needed here (about a fifth of the cost).
        return lm.score(model, tokenizer, prompts, answers, batch_size=batch, greedy_only=True).greedy_correct
    return np.array([exact_match(g, a) for g, a in zip(greedy_answers(model, tokenizer, questions, cfg), answers)])


def greedy_answers(model, tokenizer, questions: list[str], cfg: FinetuneConfig) -> list[str]:
    """The model's greedy answers, zero-shot in the fine-tuning format (generated, cut at the line end)."""
    prompts = [ft_prompt(cfg.ft_format, q) for q in questions]
    batch = cfg.ft_eval_batch or lm.auto_batch_size(model, max((len(p) for p in prompts), default=0) + 32, 128)
    return lm.decode(model, tokenizer, prompts, batch_size=batch)[0]


def _evaluate(
    model, tokenizer, train: pd.DataFrame, evals: pd.DataFrame, cfg: FinetuneConfig, epoch: int, idk: bool, watch=None
) -> pd.DataFrame:
    """One epoch's tidy records: a row per train example and per evaluation question (``watch``: a
    :class:`~newknowledge.finetuning.run_store.Watch`, whose late splits only where it says)."""
    model.eval()
    fitted = correct_flags(model, tokenizer, train["question"].tolist(), train["answer"].tolist(), cfg)

    def flags(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        questions, golds = part["question"].tolist(), part["answer"].tolist()
        if not idk:
            return np.asarray(correct_flags(model, tokenizer, questions, golds, cfg), dtype=bool), None
        # D_IDK (App. K): three outcomes per question from the greedy answer itself, so an
        # abstention is recognised after the same normalisation as exact match ("i don't know.").
        greedy = greedy_answers(model, tokenizer, questions, cfg)
        return np.array([exact_match(g, a) for g, a in zip(greedy, golds)]), np.array(
            [exact_match(g, IDK) for g in greedy]
        )

    if watch is None:
        correct, abstained = flags(evals)
        return run_store.records(train, evals, epoch, fitted, correct, abstained)
    early = flags(evals[~watch.late])
    late = flags(evals[watch.late]) if watch.full(epoch, early[0]) else (None, None)
    shown, correct = watch.evaluated(evals, early[0], late[0])
    abstained = None if not idk else watch.evaluated(evals, early[1], late[1])[1]
    return run_store.records(train, shown, epoch, fitted, correct, abstained)


def train_run(
    spec: run_store.RunSpec,
    train: pd.DataFrame,
    evals: pd.DataFrame,
    *,
    position: int = 0,
    stop_after: int | None = None,
) -> Path:
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
    path = run_store.run_dir(spec, train, evals)
    with run_store.claimed([path]):  # another build training this run: wait, then re-read it
        _train_unfinished(spec, train, evals, path, position, stop_after)
    return path


def _train_unfinished(spec, train, evals, path, position, stop_after) -> None:
    """The body of :func:`train_run` under the run's lock: nothing if it is done, else from where it stopped."""
    cfg = spec.cfg
    if (path / "done.json").exists():
        return
    run_store.begin(spec, path)
    torch.set_num_threads(cores.threads(cfg.ft_threads))
    torch.manual_seed(spec.seed)
    # Mixed precision keeps float32 weights and optimizer state (the forward pass casts to bf16).
    dtype = "float32" if cfg.ft_precision == "bf16-mixed" else spec.dtype
    model, tokenizer = train_step.prepare(*lm.load(spec.model_path, device=spec.device, dtype=dtype), cfg)
    if cfg.lora_rank > 0:
        model = _with_lora(model, cfg)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.ft_lr, weight_decay=cfg.ft_weight_decay
    )
    idk = spec.variant.startswith("idk")
    start, state = run_store.resume_point(path)
    watch = run_store.Watch(spec, evals, path, start) if spec.at_stops else None
    if state is not None:  # resume after the last checkpointed epoch
        _load_trainable(model, state["model"])
        opt.load_state_dict(state["opt"])
    elif start == 0:
        run_store.save_epoch(path, 0, _evaluate(model, tokenizer, train, evals, cfg, 0, idk, watch))
        start = 1
    examples = train_step.encode_examples(
        tokenizer, train["question"].tolist(), train["answer"].tolist(), cfg.ft_format
    )
    bar = tqdm(
        range(start, cfg.ft_epochs + 1),
        desc=f"{spec.variant} s{spec.seed}",
        position=position,
        leave=False,
        unit="epoch",
    )
    set_dropout(model, cfg.ft_dropout)
    for n, epoch in enumerate(bar):
        if stop_after is not None and n >= stop_after:
            return
        torch.set_num_threads(cores.threads(cfg.ft_threads))  # more, once side-by-side runs have finished
        model.train()
        # Dropout masks from (seed, epoch), like the batch order: a resumed run replays its epochs exactly.
        torch.manual_seed(int(np.random.default_rng([spec.seed, epoch, 1]).integers(2**62)))
        order = np.random.default_rng([spec.seed, epoch]).permutation(len(examples))
        for i in range(0, len(order), cfg.ft_batch):  # micro-batches, precision: see train_step
            train_step.step(model, [examples[j] for j in order[i : i + cfg.ft_batch]], tokenizer.pad_token_id, opt, cfg)
        run_store.save_epoch(
            path,
            epoch,
            _evaluate(model, tokenizer, train, evals, cfg, epoch, idk, watch),
            {"model": _trainable_state(model), "opt": opt.state_dict()},
        )
    run_store.finish(path, cfg)


def set_dropout(model, p: float) -> int:
    """Set every dropout layer of ``model`` to probability ``p`` (paper App. E: 0.05).

    The controlled world's model is pretrained without dropout, but its GPT-2
    blocks keep their dropout layers (attention, residual, embedding), so
    fine-tuning can switch them on.  Evaluation runs in eval mode, without
    dropout.

    Returns:
        The number of dropout layers set (0: the model has none, ``p`` has no effect).
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for m in layers:
        m.p = p
    return len(layers)


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
        return get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,
                target_modules=targets,
                lora_dropout=0.0,
                task_type="CAUSAL_LM",
            ),
        )
    except ValueError as err:  # peft knows no default targets for this architecture, or a name matched nothing
        raise ValueError(
            f"LoRA could not wrap {type(model).__name__}: {err}; set lora_targets to its attention "
            "projections, e.g. 'q_proj,v_proj' (Llama, Mistral, Qwen) or 'c_attn' (GPT-2)"
        ) from None


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
    with cores.task():
        return str(train_run(spec, train, evals, position=position))


def run_all(
    jobs: list[tuple[run_store.RunSpec, pd.DataFrame, pd.DataFrame]], workers: int = 1, executor: str = "local"
) -> list[Path]:
    """Execute every run not yet finished: ``workers`` at a time (local process pool), or as Ray tasks.

    Args:
        jobs: ``(spec, train, evals)`` per run: the run, its variant's examples and
            the questions evaluated after each epoch (each seed's world has its own).

    Runs are independent: two single-threaded runs side by side use two cores
    better than one run with two threads, for models this small; when fewer runs
    than workers are left, they take the finished ones' cores
    (:mod:`newknowledge.finetuning.cores`).  With
    ``ft_grouped: true`` (opt-in) local CPU runs of the controlled world's
    GPT-2 model train in groups, each group as one stacked model, the groups
    side by side (:func:`newknowledge.finetuning.grouped.plan` says which runs can).  With
    ``executor="ray"`` each run is a Ray task (``ft_threads`` CPUs, one GPU if
    the run's device is CUDA) on the instance at ``RAY_ADDRESS`` (a cluster) or
    a local one; every task writes to ``NEWKNOWLEDGE_ARTIFACTS``, which on a
    cluster must be storage all machines share.  Either way finished runs are
    skipped and interrupted ones resume.
    """
    in_group = [executor == "local" and grouped.groupable(s) for s, _, _ in jobs]
    todo = [
        (s, t, e) for (s, t, e), g in zip(jobs, in_group) if not (run_store.read_dir(s, t, e, g) / "done.json").exists()
    ]
    if todo and executor == "local":  # the groupable runs first, as stacked models (grouped.py)
        groups, rest = grouped.plan([s for s, _, _ in todo], workers)
        grouped.run_groups([[todo[k] for k in g] for g in groups], workers)
        todo = [todo[k] for k in rest]
    bar = dict(total=len(todo), desc="fine-tuning runs", unit="run")
    if todo and executor == "ray":
        _run_ray([(s, t, e, 0) for s, t, e in todo], bar)
    elif todo and workers > 1 and len(todo) > 1:
        with cores.pool(workers, len(todo), max(s.cfg.ft_threads for s, _, _ in todo)) as pool:
            list(tqdm(pool.map(_worker, [(s, t, e, k % workers + 1) for k, (s, t, e) in enumerate(todo)]), **bar))
    elif todo:
        with cores.solo(max(1, workers) * max(s.cfg.ft_threads for s, _, _ in todo)):  # one run: every worker's cores
            for s, t, e in tqdm(todo, disable=len(todo) < 2, **{k: v for k, v in bar.items() if k != "total"}):
                train_run(s, t, e)
    return [run_store.read_dir(s, t, e, g) for (s, t, e), g in zip(jobs, in_group)]


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
