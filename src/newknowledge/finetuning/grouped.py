"""Fine-tuning many runs of one base model together (paper Sec. 4's grid).

The grid of Sec. 4 (D with X% Unknown, D_Known, seeds) is many small runs of
the same model.  :func:`train_group` trains them as one stacked model
(:class:`newknowledge.finetuning.stacked.Stack`) and evaluates them together, writing each
run's folder exactly as :func:`newknowledge.finetuning.finetune.train_run` does (same key,
records, checkpoint format), so either path resumes the other's runs and the
rest of the package cannot tell them apart.

Each run keeps what it has alone: its data, its batch order (a function of
(seed, epoch)), its AdamW state and step count, its loss (the mean over its
answer tokens; the group's loss is the sum over runs, so each run's gradient
is its own).  Runs of different sizes share a group: at a step where a run has
no batch left it does not move.  Evaluation decides greedy correctness by
teacher forcing as :func:`newknowledge.model.lm.score` does, with each run's weights.
Without dropout, records equal the per-run path's up to float rounding
(``tests/test_grouped.py``).

With dropout (``ft_dropout`` > 0, App. E's 0.05) each run draws its own masks
from a generator seeded by (seed, epoch) (:class:`newknowledge.finetuning.stacked.Dropout`):
the same seed gives the same records, a resumed run replays its epochs
exactly, and a run's masks do not depend on its companions.  They are not the
masks the per-run path draws from torch's global generator, so records differ
from that path's as two dropout seeds do; such runs get their own folder
(:func:`newknowledge.finetuning.run_store.run_dir`, ``in_group``).

What the stacked model does not compute stays on the per-run path, chosen by
:func:`groupable`: D_IDK runs (abstentions are read from generated answers),
``ft_eval: generate``, LoRA, models other than the controlled world's GPT-2,
GPUs, bfloat16 weights or ``ft_precision: bf16-mixed``, micro-batches smaller
than ``ft_batch``, activation checkpointing, the Ray executor, and
``ft_grouped: false``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from newknowledge.core.progress import tqdm
from newknowledge.core.prompts import ft_prompt
from newknowledge.finetuning import cores, run_store
from newknowledge.finetuning.stacked import Dropout, Stack, supports
from newknowledge.model import lm
from newknowledge.model.train_step import encode_examples


# -- training steps and evaluation of a group --------------------------------------------------------------------------
def train_step(
    stack: Stack,
    runs: list[int],
    batches: list[list[tuple[list[int], list[int]]]],
    pad: int,
    drop: Dropout | None = None,
) -> None:
    """One optimizer step of each run in ``runs`` on its own batch; the other runs do not move.

    Args:
        batches: per run, its batch of ``(input_ids, labels)`` pairs
            (:func:`newknowledge.model.train_step.encode_examples`); labels are -100 off the answer.
    """
    A, B, T = len(runs), max(map(len, batches)), max(len(x) for b in batches for x, _ in b)
    ids = torch.full((A, B, T), pad, dtype=torch.long)
    labels = torch.full((A, B, T), -100, dtype=torch.long)
    for a, batch in enumerate(batches):
        for b, (x, y) in enumerate(batch):
            ids[a, b, : len(x)], labels[a, b, : len(y)] = torch.tensor(x), torch.tensor(y)
    masks = None
    if drop is not None:
        shapes = [(len(b), max(len(x) for x, _ in b)) for b in batches]
        d = stack.params["transformer.wte.weight"].shape[-1]
        masks = drop.masks(runs, shapes, (B, T), d, stack.heads, stack.layers)
    which = torch.tensor(runs)
    h = stack.hidden(ids, which, masks)  # (A, B, T, d)
    # Position t predicts token t + 1: the answer tokens' predecessors, each run's first, padded to the
    # longest count (A, N); a stable sort puts each run's selected positions first, in order.
    target = labels[:, :, 1:].reshape(A, -1)  # (A, B * (T - 1))
    chosen = target != -100
    count = chosen.sum(1)
    idx = torch.argsort((~chosen).byte(), dim=1, stable=True)[:, : int(count.max())]
    valid = torch.arange(idx.shape[1]) < count[:, None]
    pos = idx // (T - 1) * T + idx % (T - 1)
    logits = stack.logits_at(h, pos, which)  # (A, N, vocab)
    ce = F.cross_entropy(logits.flatten(0, 1), target.gather(1, idx).clamp(min=0).flatten(), reduction="none")
    # Sum over runs of each run's mean answer-token loss: run a's gradient is its own loss's.
    loss = (ce.view(A, -1) * valid / count[:, None]).sum()
    loss.backward()
    stack.adamw_step(which)


class Scorer:
    """Greedy correctness by teacher forcing (:func:`newknowledge.model.lm.score`, ``greedy_only``) for R runs at once.

    Each run has its own sets of questions (its train examples, the shared
    evaluation questions, ...); they are tokenized and batched once, and every
    call scores them with the runs' current weights.  A batch holds questions
    of one group (a relation, whose questions open alike: "Q: Where is"); the
    tokens its rows share are run once per run and batch, not once per row
    (28% of the evaluation's tokens in the controlled world).
    """

    def __init__(self, tokenizer, vocab: int, sets: list[list[tuple[list[str], list[str], list]]], batch: int = 128):
        """Args:
        sets: per run, a list of ``(prompts, golds, groups)`` sets (``groups``
            a key per question, e.g. its relation); sets of the same list
            objects are tokenized and batched alike for every run.
        """
        enc, self.sizes = {}, [[len(p) for p, _, _ in run] for run in sets]
        for run in sets:
            for prompts, golds, _ in run:
                if (id(prompts), id(golds)) not in enc:
                    enc[id(prompts), id(golds)] = lm.answer_ids(tokenizer, prompts, golds)
        rests = sorted({r for _, _, rs in enc.values() for r in rs})
        # Accepted stop tokens per distinct line-end text, as lm.score decides them: (n_rests, vocab).
        self.ends = torch.stack([lm.line_end_mask(tokenizer, vocab, r) for r in rests])
        rest_id = {r: k for k, r in enumerate(rests)}
        self.batches = []
        for s in range(max(map(len, sets))):
            runs = [r for r, run in enumerate(sets) if len(run) > s]  # runs may have different numbers of sets
            chunks = []
            for r in runs:
                prompts, golds, groups = sets[r][s]
                order = sorted(range(len(prompts)), key=lambda i: (groups[i], len(prompts[i]) + len(golds[i])))
                by_group = [[i for i in order if groups[i] == g] for g in dict.fromkeys(groups[i] for i in order)]
                chunks.append([c[k : k + batch] for c in by_group for k in range(0, len(c), batch)])
            offset = [sum(self.sizes[r][:s]) for r in runs]  # the set's first row among the run's flags
            for k in range(max(map(len, chunks))):
                part = [(r, o, sets[r][s], c[k]) for r, o, c in zip(runs, offset, chunks) if k < len(c)]
                self.batches.append((s, self._batch(part, enc, rest_id, tokenizer.pad_token_id)))

    @staticmethod
    def _batch(part, enc, rest_id, pad) -> tuple:
        """Tensors of one batch: per participating run its rows, after the prefix they all share."""
        rows = []
        for _run, offset, (prompts, golds, _), idx in part:
            p_ids, c_ids, rests = enc[id(prompts), id(golds)]
            rows.append([(p_ids[i], c_ids[i], rest_id[rests[i]], offset + i) for i in idx])
        # Shared prefix: common to every row of every run here, and at least one prompt token left per row
        # (the last prompt token's logits predict the first gold token).
        first = rows[0][0][0]
        L = min(len(p) - 1 for rs in rows for p, *_ in rs)
        L = min([L] + [next((j for j in range(L) if p[j] != first[j]), L) for rs in rows for p, *_ in rs])
        A, B = len(rows), max(map(len, rows))
        T = max(len(p) + len(c) for rs in rows for p, c, *_ in rs) - L
        K = max(len(c) for rs in rows for _, c, *_ in rs) + 1  # gold tokens, then the stop
        ids = torch.full((A, B, T), pad, dtype=torch.long)
        pos = torch.zeros((A, B, K), dtype=torch.long)  # flat b * T + t: slot j predicts gold token j
        gold = torch.full((A, B, K - 1), -1, dtype=torch.long)  # -1: no gold token in this slot
        last = torch.zeros((A, B), dtype=torch.long)  # the slot that must predict a stop
        rest = torch.zeros((A, B), dtype=torch.long)
        row = torch.full((A, B), -1, dtype=torch.long)  # the question's index among the run's flags (-1: padding)
        for a, rs in enumerate(rows):
            for b, (p, c, rid, i) in enumerate(rs):
                ids[a, b, : len(p) + len(c) - L] = torch.tensor(p[L:] + c)
                pos[a, b] = b * T + len(p) - L - 1 + torch.arange(K).clamp(max=len(c))
                gold[a, b, : len(c)] = torch.tensor(c, dtype=torch.long)
                last[a, b], rest[a, b], row[a, b] = len(c), rid, i
        prefix = torch.tensor([first[:L]] * A, dtype=torch.long) if L else None
        return torch.tensor([r for r, *_ in part]), prefix, ids, pos.view(A, -1), gold, last, rest, row

    @torch.no_grad()
    def flags(self, stack: Stack, runs: list[int], sets: tuple[int, ...] | None = None) -> list[list[np.ndarray]]:
        """Per run in ``runs``, per set: bool array, the greedy answer is the gold and then stops
        (``sets``: score only the sets of these indices; the others' flags stay False)."""
        slot = {r: a for a, r in enumerate(runs)}
        out = [np.zeros(sum(self.sizes[r]), bool) for r in runs]
        for s, (members, prefix, ids, pos, gold, last, rest, row) in self.batches:
            if sets is not None and s not in sets:
                continue
            sel = torch.tensor([j for j, r in enumerate(members.tolist()) if r in slot], dtype=torch.long)
            if not len(sel):
                continue
            which = members[sel]
            h = stack.hidden(ids[sel], which, prefix=None if prefix is None else prefix[sel])
            arg = stack.logits_at(h, pos[sel], which).argmax(-1).view(len(sel), ids.shape[1], -1)  # (A, B, K)
            ok = ((arg[..., :-1] == gold[sel]) | (gold[sel] < 0)).all(-1)
            ok &= self.ends[rest[sel], arg.gather(2, last[sel][..., None]).squeeze(-1)]
            for j, (a, r) in enumerate(zip(sel.tolist(), which.tolist())):
                real = row[a] >= 0
                out[slot[r]][row[a][real].numpy()] = ok[j][real].numpy()
        return [np.split(o, np.cumsum(self.sizes[r])[:-1]) for o, r in zip(out, runs)]


# -- runs ----------------------------------------------------------------------------------------------------------
def train_group(
    jobs: list[tuple], *, threads: int | None = None, stop_after: int | None = None, position: int = 0
) -> list[Path]:
    """Fine-tune several runs of one base model together; each run's folder as :func:`finetune.train_run` writes it.

    Args:
        jobs: ``(spec, train, evals)`` per run, as :func:`newknowledge.finetuning.finetune.run_all`
            takes them: the :class:`~newknowledge.finetuning.run_store.RunSpec` (the same
            model and config for all, apart from variant and seed), the run's
            train set and the questions it is evaluated on after each epoch.
        threads: torch threads (default ``ft_threads``, and more when side-by-side tasks have finished,
            :mod:`newknowledge.finetuning.cores`).
        stop_after: stop after this many epochs in this call (tests simulate a kill).

    Returns:
        The run folders, in the order of ``jobs``.
    """
    specs = [s for s, _, _ in jobs]
    cfg = specs[0].cfg
    if any((s.model_path, s.dtype, s.cfg) != (specs[0].model_path, specs[0].dtype, cfg) for s in specs):
        raise ValueError("a group's runs need the same model and config (they differ in data, variant and seed)")
    paths = [run_store.run_dir(s, t, e, in_group=True) for s, t, e in jobs]
    with run_store.claimed(paths):  # another build training one of these runs: wait, then re-read it
        _train_unfinished(jobs, paths, threads, stop_after, position)
    return paths


def _train_unfinished(jobs, paths, threads, stop_after, position) -> None:
    """The body of :func:`train_group` under the runs' locks: each unfinished run from where it stopped."""
    specs = [s for s, _, _ in jobs]
    cfg = specs[0].cfg
    todo, starts, states = [], [], []
    for i, path in enumerate(paths):
        if (path / "done.json").exists():
            continue
        run_store.begin(specs[i], path)
        start, state = run_store.resume_point(path)  # each run from where it stopped
        if start > cfg.ft_epochs:  # killed after its last epoch was saved
            run_store.finish(path, cfg)
            continue
        todo.append(i), starts.append(start), states.append(state)
    if not todo:
        return
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads or cores.threads(cfg.ft_threads))
    try:
        _train([jobs[i] for i in todo], [paths[i] for i in todo], starts, states, stop_after, position, threads)
    finally:
        torch.set_num_threads(old_threads)


def _train(jobs, paths, starts, states, stop_after, position, threads=None) -> None:
    """The body of :func:`train_group` for its unfinished runs ``jobs``, each from epoch ``starts[a]``."""
    specs, trains, evals = zip(*jobs)
    cfg = specs[0].cfg
    model, tok = lm.load(specs[0].model_path, device="cpu", dtype=specs[0].dtype)
    stack = Stack(model, len(jobs), cfg.ft_lr, cfg.ft_weight_decay)
    template = torch.optim.AdamW(model.parameters(), lr=cfg.ft_lr, weight_decay=cfg.ft_weight_decay).state_dict()
    for a, state in enumerate(states):
        if state is not None:
            stack.load_run_state(a, state["model"], state["opt"])

    def questions(df: pd.DataFrame) -> tuple[list, list, list]:
        # Grouped by relation when the data says it (its questions share their opening tokens).
        groups = df["relation"].tolist() if "relation" in df else [""] * len(df)
        return [ft_prompt(cfg.ft_format, q) for q in df["question"]], df["answer"].tolist(), groups

    # Runs evaluated on the same questions (one world) share one tokenized set; a run whose late splits
    # are evaluated only where EARLY_STOP or CONVERGENCE can fall (run_store.Watch) has them as a third set.
    watches = [run_store.Watch(s, e, p, b) if s.at_stops else None for s, e, p, b in zip(specs, evals, paths, starts)]
    shared = {}
    for s, e, w in zip(specs, evals, watches):
        if (id(e), s.at_stops) not in shared:
            shared[id(e), s.at_stops] = [questions(e)] if w is None else [questions(e[~w.late]), questions(e[w.late])]
    sets = [[questions(t), *shared[id(e), s.at_stops]] for s, t, e in zip(specs, trains, evals)]
    scorer = Scorer(tok, model.get_output_embeddings().weight.shape[0], sets, cfg.ft_eval_batch or 128)
    examples = [encode_examples(tok, t["question"].tolist(), t["answer"].tolist(), cfg.ft_format) for t in trains]

    def record(runs: list[int], epoch_of: list[int]) -> None:
        first = scorer.flags(stack, runs, sets=(0, 1))  # fitted flags, then every question but the late ones
        late = [a for a, f, e in zip(runs, first, epoch_of) if watches[a] is not None and watches[a].full(e, f[1])]
        more = dict(zip(late, scorer.flags(stack, late, sets=(2,)))) if late else {}
        for a, (fitted, correct, *_), epoch in zip(runs, first, epoch_of):
            shown = evals[a]
            if watches[a] is not None:
                shown, correct = watches[a].evaluated(evals[a], correct, more[a][2] if a in more else None)
            state = None
            if epoch > 0:
                model_state, opt_state = stack.run_state(a, template)
                state = {"model": model_state, "opt": opt_state}
            run_store.save_epoch(paths[a], epoch, run_store.records(trains[a], shown, epoch, fitted, correct), state)
            if epoch == cfg.ft_epochs:
                run_store.finish(paths[a], cfg)

    fresh = [a for a, s in enumerate(starts) if s == 0]
    if fresh:  # epoch 0: the base model, before any training
        record(fresh, [0] * len(fresh))
    starts = [max(s, 1) for s in starts]
    rounds = range(cfg.ft_epochs + 1 - min(starts))
    for n in tqdm(rounds, desc=f"{len(jobs)} runs grouped", position=position, leave=False, unit="epoch"):
        if stop_after is not None and n >= stop_after:
            break
        torch.set_num_threads(threads or cores.threads(cfg.ft_threads))  # more, once side-by-side groups finished
        active = [a for a, s in enumerate(starts) if s + n <= cfg.ft_epochs]
        epochs = [starts[a] + n for a in active]
        seeds = [specs[a].seed for a in active]
        # Each run's own batch order, as in train_run: a function of (seed, epoch) alone.
        orders = [np.random.default_rng([s, e]).permutation(len(examples[a])) for a, s, e in zip(active, seeds, epochs)]
        drop = Dropout(cfg.ft_dropout, active, seeds, epochs) if cfg.ft_dropout > 0 else None
        for k in range(0, max(map(len, orders)), cfg.ft_batch):
            live = [j for j, o in enumerate(orders) if k < len(o)]  # runs with a batch at this step
            batches = [[examples[active[j]][i] for i in orders[j][k : k + cfg.ft_batch]] for j in live]
            train_step(stack, [active[j] for j in live], batches, tok.pad_token_id, drop)
        record(active, epochs)


def groupable(spec) -> bool:
    """Whether a run can be trained in a group: what :class:`Stack` computes as the per-run path does.

    Full fine-tuning of a local GPT-2 model on the CPU in float32, one forward
    pass per batch, teacher-forced evaluation, not a D_IDK run.  Everything
    else keeps the per-run path (:func:`newknowledge.finetuning.finetune.train_run`): D_IDK
    (its abstentions come from generated answers), ``ft_eval: generate``, LoRA,
    other architectures, GPUs, bfloat16, ``ft_precision: bf16-mixed``,
    micro-batches, activation checkpointing and ``ft_grouped: false``.
    """
    cfg = spec.cfg
    one_pass = cfg.ft_micro_batch == 0 or cfg.ft_micro_batch >= cfg.ft_batch
    return (
        cfg.ft_grouped
        and cfg.lora_rank == 0
        and cfg.ft_eval == "teacher"
        and cfg.ft_precision == "model"
        and one_pass
        and not cfg.ft_checkpointing
        and not spec.variant.startswith("idk")
        and str(spec.device) == "cpu"
        and spec.dtype in ("auto", "float32")
        and _gpt2(spec.model_path)
    )


@cache
def _gpt2(model_path: str) -> bool:
    """Whether the local model folder holds a GPT-2 model :class:`Stack` supports (a hub id: never download)."""
    if not (Path(model_path) / "config.json").exists():
        return False
    from transformers import AutoConfig

    return supports(AutoConfig.from_pretrained(model_path))


def plan(specs: list, workers: int) -> tuple[list[list[int]], list[int]]:
    """Which runs train together: groups of runs with the same model and config, the rest per run.

    The groupable runs of one (model, config) are dealt round-robin into
    ``workers`` groups (side by side, one process each, as the per-run path
    runs single runs), or more when ``ft_group_size`` caps a group's size.

    Returns:
        ``(groups, rest)``: lists of indices into ``specs``.
    """
    from newknowledge.core.config import config_hash

    by_key: dict[tuple, list[int]] = {}
    rest = []
    for i, s in enumerate(specs):
        if groupable(s):
            by_key.setdefault((s.model_path, s.dtype, config_hash(s.cfg)), []).append(i)
        else:
            rest.append(i)
    groups = []
    for idx in by_key.values():
        size = specs[idx[0]].cfg.ft_group_size
        n = max(min(max(1, workers), len(idx)), -(-len(idx) // size) if size else 1)
        groups += [idx[k::n] for k in range(n)]
    return groups, rest


def _worker(args) -> None:
    jobs, position = args
    with cores.task():
        train_group(jobs, position=position)


def run_groups(groups: list[list[tuple]], workers: int = 1) -> None:
    """Train each group (a list of ``(spec, train, evals)`` jobs), ``workers`` groups at a time in their own processes;
    a group left alone takes the cores of those that finished (:mod:`newknowledge.finetuning.cores`)."""
    if not groups:
        return
    threads_each = max(s.cfg.ft_threads for jobs in groups for s, _, _ in jobs)
    if workers > 1 and len(groups) > 1:
        with cores.pool(workers, len(groups), threads_each) as pool:
            list(pool.map(_worker, [(g, k % workers + 1) for k, g in enumerate(groups)]))
    else:
        with cores.solo(max(1, workers) * threads_each):
            for jobs in groups:
                train_group(jobs)
