"""SliCK: Sampling-based Categorization of Knowledge (paper Sec. 3).

``P_correct(q, a; M, T)`` estimates how likely model M is to generate the gold
answer ``a`` to question ``q`` when prompted with random few-shot exemplars at
temperature T.  For each question, ``n_ex`` prompts of ``k_shot`` exemplars
(from dev, same relation); for each prompt one greedy answer and ``n_samples``
answers sampled at T = 0.5 from the top 40 tokens; exact match after
normalisation.  The four categories:

=============  ================================================
HighlyKnown    P_correct(T=0) = 1
MaybeKnown     0 < P_correct(T=0) < 1
WeaklyKnown    P_correct(T=0) = 0 and P_correct(T>0) > 0
Unknown        P_correct(T=0) = 0 and P_correct(T>0) = 0
=============  ================================================

Two estimators:

- ``sampling`` (the paper's): real greedy and sampled generations.
- ``exact``: greedy correctness by teacher forcing and, instead of counting
  correct samples, the exact probability that one sample is the gold answer
  (see :func:`newknowledge.model.lm.score`).  P_correct(T>0) is then that
  probability, and a question with P_correct(T=0) = 0 is WeaklyKnown when the
  paper's ``n_ex * n_samples`` samples would contain a correct one with
  probability at least one half.  It can differ from sampling where exact match
  accepts a string other than the gold's tokens (case, articles, punctuation),
  or where the gold string has other tokenizations the model could generate.

:func:`categorize` is the one core: the book's :func:`run` (cached by config
hash) and the practitioner's tool (any QA data set, resumable,
:func:`newknowledge.cli.slick_tool.categorize_dataset`) both call it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from newknowledge.core import store
from newknowledge.core.config import SlickConfig
from newknowledge.core.metrics import exact_match
from newknowledge.core.progress import tqdm
from newknowledge.core.prompts import PROBE, probe_prompt
from newknowledge.knowledge.categories import category, exact_category, p_any
from newknowledge.model import lm


def exemplar_sets(exemplars: pd.DataFrame, relations, cfg: SlickConfig) -> dict[str, list[list[int]]]:
    """``n_ex`` random sets of ``k_shot`` exemplar row positions per relation.

    The sets are shared by every question of a relation (so a prompt prefix is
    reused); a question that is itself in a set has that exemplar swapped out
    (see :func:`prompts`).
    """
    rng = np.random.default_rng(cfg.slick_seed)
    sets = {}
    for rel in sorted(set(relations)):
        pool = np.flatnonzero(exemplars["relation"].to_numpy() == rel)
        if len(pool) < cfg.k_shot + 1:
            raise ValueError(
                f"relation {rel} has {len(pool)} dev exemplars; SliCK needs at least k_shot + 1 = "
                f"{cfg.k_shot + 1} (lower k_shot or add dev examples)"
            )
        sets[rel] = [list(rng.choice(pool, cfg.k_shot + 1, replace=False)) for _ in range(cfg.n_ex)]
    return sets


def prompts(table: pd.DataFrame, exemplars: pd.DataFrame, cfg: SlickConfig, *, template: str = PROBE) -> pd.DataFrame:
    """All few-shot prompts: one row per (question, exemplar set).

    Args:
        table: questions to categorise (``relation``, ``question``, ``answer``).
        exemplars: dev rows (``relation``, ``question``, ``answer``).
        template: the question line, ``{q}`` standing for the question (the book's ``Q: {q} A:``).

    Returns:
        Columns ``example`` (row position in ``table``), ``ex_set``, ``prompt``
        and ``prefix`` (the prompt's exemplar lines, shared by the relation's
        other questions: the engine computes them once, see
        :mod:`newknowledge.model.engine`).
    """
    sets = exemplar_sets(exemplars, table["relation"], cfg)
    ex_q, ex_a = exemplars["question"].tolist(), exemplars["answer"].tolist()
    rows = []
    for i, (rel, q) in enumerate(zip(table["relation"], table["question"])):
        for j, chosen in enumerate(sets[rel]):
            # k_shot + 1 were drawn: drop the question itself if present, else the spare.
            use = [e for e in chosen if ex_q[e] != q][: cfg.k_shot]
            rows.append((i, j, *probe_prompt(q, [(ex_q[e], ex_a[e]) for e in use], template)))
    return pd.DataFrame(rows, columns=["example", "ex_set", "prompt", "prefix"])


def chunk_bounds(n: int, chunk_size: int = 0) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of ``chunk_size`` questions (one chunk of all ``n`` when ``chunk_size`` <= 0)."""
    step = chunk_size if chunk_size > 0 else max(n, 1)
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def chunk_seed(cfg: SlickConfig, chunk: int) -> int:
    """The sampling seed of chunk ``chunk``: ``slick_seed`` itself for the first (so a one-chunk run, the book's,
    draws what it always drew), an independent stream derived from both for the others."""
    return cfg.slick_seed if chunk == 0 else int(np.random.SeedSequence([cfg.slick_seed, chunk]).generate_state(1)[0])


def categorize(
    model,
    tokenizer,
    table: pd.DataFrame,
    exemplars: pd.DataFrame,
    cfg: SlickConfig,
    *,
    desc: str = "SliCK",
    backend=lm,
    template: str = PROBE,
    chunk_size: int = 0,
    parts=None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run SliCK on every row of ``table``, ``chunk_size`` questions at a time.

    The exemplar sets are drawn once for the whole table and each chunk samples
    from its own seeded stream (:func:`chunk_seed`), so a chunk's result does not
    depend on whether the chunks before it ran in this call or an earlier one.

    Args:
        backend: provides ``decode`` and ``score`` with the signatures of
            :func:`newknowledge.model.lm.decode` and :func:`newknowledge.model.lm.score` (the
            default); tests pass a scripted one whose answers they choose.
        template: the question line of every prompt (see :func:`prompts`).
        chunk_size: questions per chunk; 0 = one chunk (the book).
        parts: optional store of finished chunks, with ``start(batch) -> batch``
            (a resumed run keeps its first batch size), ``done() -> set`` of chunk
            numbers, ``save(chunk, table)`` and ``load(chunk)`` (see
            :class:`newknowledge.cli.slick_tool.Parts`); finished chunks are loaded, not run.
        progress: show a progress bar (questions, questions/s, time left).

    Returns:
        ``table``'s columns plus ``p_greedy`` (P_correct(T=0)), ``p_sample``
        (P_correct(T>0)), ``category`` and ``greedy_answers`` (the ``n_ex``
        greedy answers, sampling estimator only; the exact estimator leaves it
        empty) and, for the exact estimator, ``p_any`` (chance that the paper's
        samples include a correct one).
    """
    table = table.reset_index(drop=True)
    pr = prompts(table, exemplars, cfg, template=template)
    batch = cfg.slick_batch
    if backend is lm:
        longest = _check_length(model, tokenizer, pr["prompt"].tolist(), cfg.max_new_tokens)
        if batch == 0:  # auto: prompts per pass from the free accelerator memory (64 on CPU)
            rows = 1 if cfg.estimator == "exact" else 1 + cfg.n_samples  # decode keeps a cache per row
            batch = max(1, lm.auto_batch_size(model, longest + cfg.max_new_tokens, default=64 * rows) // rows)
    batch = batch or 64  # a scripted backend with slick_batch 0
    bounds = chunk_bounds(len(table), chunk_size)
    done = set()
    if parts is not None:
        batch, done = parts.start(batch), parts.done()
    bar = tqdm(
        total=len(table),
        initial=sum(e - s for c, (s, e) in enumerate(bounds) if c in done),
        desc=desc,
        unit="q",
        disable=not progress,
        smoothing=0.1,
    )
    out = []
    example = pr["example"].to_numpy()
    for c, (s, e) in enumerate(bounds):
        if c not in done:
            res = _chunk(
                model,
                tokenizer,
                table.iloc[s:e],
                pr[(example >= s) & (example < e)],
                cfg,
                backend,
                batch,
                chunk_seed(cfg, c),
                bar,
            )
            if parts is None:
                out.append(res)
                continue
            parts.save(c, res)
        out.append(parts.load(c))  # from disk also when just computed: a resumed run returns the same objects
    bar.close()
    return pd.concat(out, ignore_index=True) if len(out) != 1 else out[0]


def _chunk(
    model, tokenizer, table: pd.DataFrame, pr: pd.DataFrame, cfg: SlickConfig, backend, batch: int, seed: int, bar
) -> pd.DataFrame:
    """SliCK on one chunk of questions: ``table`` (its rows) and ``pr`` (their prompts, ``example`` = table index)."""
    # Prompts that share a prefix (relation, exemplar set) side by side, so each pass has one or two.
    rel = table["relation"].to_numpy()[pr["example"].to_numpy() - table.index[0]]
    pr = pr.iloc[np.lexsort((pr["example"], pr["ex_set"], rel))].reset_index(drop=True)
    golds = table.loc[pr["example"], "answer"].tolist()
    step = max(batch * 4, 256)  # prompts per call (progress granularity)
    greedy_ok = np.zeros(len(pr))
    p_samp = np.zeros(len(pr))
    greedy_ans: list[str] = []
    gen = torch.Generator(device=_device(model)).manual_seed(seed)
    shown = 0  # questions' worth of prompts reported to the bar
    for s in range(0, len(pr), step):
        ps, gs = pr["prompt"].iloc[s : s + step].tolist(), golds[s : s + step]
        pre = pr["prefix"].iloc[s : s + step].tolist()
        if cfg.estimator == "exact":
            sc = backend.score(
                model, tokenizer, ps, gs, temperature=cfg.temperature, top_k=cfg.top_k, batch_size=batch, prefixes=pre
            )
            greedy_ok[s : s + step], p_samp[s : s + step] = sc.greedy_correct, sc.p_sample
        else:
            g, samples = backend.decode(
                model,
                tokenizer,
                ps,
                n_samples=cfg.n_samples,
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                max_new_tokens=cfg.max_new_tokens,
                batch_size=batch * (1 + cfg.n_samples),
                generator=gen,
                prefixes=pre,
            )
            greedy_ok[s : s + step] = [exact_match(a, b) for a, b in zip(g, gs)]
            p_samp[s : s + step] = [np.mean([exact_match(x, b) for x in xs]) for xs, b in zip(samples, gs)]
            greedy_ans += g
        now = round(len(table) * min(s + step, len(pr)) / len(pr))
        bar.update(now - shown)
        shown = now
    pr = pr.assign(greedy_ok=greedy_ok, p_samp=p_samp)
    if greedy_ans:
        pr["greedy"] = greedy_ans
    out = table.copy()
    by = pr.groupby("example")
    out["p_greedy"] = by["greedy_ok"].mean().to_numpy()
    out["p_sample"] = by["p_samp"].mean().to_numpy()
    # Per-prompt outcomes, in exemplar-set order: categories for fewer sets (N_ex ablation) need no model.
    out["prompt_greedy"] = by["greedy_ok"].apply(list).to_numpy()
    out["prompt_sample"] = by["p_samp"].apply(list).to_numpy()
    if cfg.estimator == "exact":
        out["p_any"] = by["p_samp"].apply(lambda p: p_any(p.to_numpy(), cfg.n_samples)).to_numpy()
        out["category"] = [exact_category(g, a) for g, a in zip(out["p_greedy"], out["p_any"])]
        out["greedy_answers"] = None
    else:
        out["category"] = [category(g, s) for g, s in zip(out["p_greedy"], out["p_sample"])]
        out["greedy_answers"] = by["greedy"].apply(list).to_numpy()
    return out


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _check_length(model, tokenizer, prompts_: list[str], max_new_tokens: int = 16) -> int:
    """Fail when the longest prompt plus the answer budget exceeds the model's context; return its length.

    Only the 64 longest prompts by characters are tokenized: the real data has
    817,000 prompts at the paper's sizes.  The limit is ``max_position_embeddings``
    (Llama, Mistral, ...) or ``n_positions`` (GPT-2); models with neither pass.
    """
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    longest_text = sorted(prompts_, key=len)[-64:]
    longest = max(len(x) for x in lm.encode(tokenizer, longest_text)[0])
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if limit and longest + max_new_tokens > limit:
        raise lm.ModelError(
            f"SliCK prompts reach {longest} tokens (+{max_new_tokens} answer tokens) but the "
            f"model takes {limit}; lower k_shot"
        )
    return longest


def check_answers(
    model, tokenizer, exemplars: pd.DataFrame, cfg: SlickConfig, n: int = 8, *, backend=lm, template: str = PROBE
) -> None:
    """Fail early, with a clear message, when the model never produces an answer line.

    Greedy-decodes ``n`` few-shot prompts built from dev exemplars; if no answer
    is a non-empty line, SliCK would label everything Unknown for a reason that
    has nothing to do with knowledge.
    """
    probe = prompts(exemplars.head(n), exemplars, dataclasses.replace(cfg, n_ex=1), template=template)
    greedy, _ = backend.decode(model, tokenizer, probe["prompt"].tolist(), max_new_tokens=cfg.max_new_tokens)
    if not any(g for g in greedy):
        raise lm.ModelError(
            "the model produced no answer line on any of "
            f"{len(greedy)} few-shot prompts (every answer empty, e.g. {greedy[:3]}); check that it was "
            "pretrained on the Q:/A: line format (or pass a prompt template it answers), that lines end with a newline, and that max_new_tokens "
            f"({cfg.max_new_tokens}) is long enough"
        )


def load_checked(
    model_path: str | Path,
    exemplars: pd.DataFrame,
    cfg: SlickConfig,
    *,
    device: str = "auto",
    dtype: str = "auto",
    template: str = PROBE,
):
    """Load the model (:func:`newknowledge.model.lm.load`) and check that it answers few-shot prompts (:func:`check_answers`).

    Returns:
        ``(model, tokenizer)``.
    """
    model, tokenizer = lm.load(str(model_path), device=device, dtype=dtype)
    check_answers(model, tokenizer, exemplars, cfg, template=template)
    return model, tokenizer


def run(
    model_path: str | Path,
    table: pd.DataFrame,
    exemplars: pd.DataFrame,
    cfg: SlickConfig,
    *,
    device: str = "auto",
    dtype: str = "auto",
) -> pd.DataFrame:
    """Categorise ``table`` with the model at ``model_path``, cached by config hash.

    The cache key covers the SliCK config, the model folder and the questions,
    so the same call returns the stored table.
    """
    # compare_n only sizes chapter 6's side comparison: not part of what this run computes.
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "compare_n"}
    key = {
        "stage": "slick",
        "slick": settings,
        "model": str(model_path),
        "questions": pd.util.hash_pandas_object(table[["relation", "question", "answer"]]).sum().item(),
    }
    path = store.stage_dir("slick", key)
    if not store.is_done(path):
        model, tokenizer = load_checked(model_path, exemplars, cfg, device=device, dtype=dtype)
        with store.building(path, key) as tmp:
            categorize(model, tokenizer, table, exemplars, cfg).to_parquet(tmp / "slick.parquet")
    return pd.read_parquet(path / "slick.parquet")


def explain(
    model_path: str | Path,
    rows: pd.DataFrame,
    exemplars: pd.DataFrame,
    cfg: SlickConfig,
    *,
    n_prompts: int = 3,
    device: str = "auto",
) -> pd.DataFrame:
    """SliCK at work on a few questions (the paper's Figure 2b): prompts, greedy and sampled answers.

    Returns:
        One row per (question, prompt): ``question``, ``answer``, ``category``,
        ``ex_set``, ``greedy``, ``samples`` (the sampled answers, joined).
    """
    model, tokenizer = lm.load(str(model_path), device=device)
    pr = prompts(rows.reset_index(drop=True), exemplars, cfg)
    pr = pr[pr["ex_set"] < n_prompts].reset_index(drop=True)
    gen = torch.Generator(device=_device(model)).manual_seed(cfg.slick_seed)
    greedy, samples = lm.decode(
        model,
        tokenizer,
        pr["prompt"].tolist(),
        n_samples=cfg.n_samples,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        max_new_tokens=cfg.max_new_tokens,
        generator=gen,
    )
    r = rows.reset_index(drop=True).iloc[pr["example"]].reset_index(drop=True)
    return pd.DataFrame(
        {
            "question": r["question"],
            "answer": r["answer"],
            "category": r["category"],
            "ex_set": pr["ex_set"],
            "greedy": greedy,
            "samples": [", ".join(f"{a} x{s.count(a)}" for a in dict.fromkeys(s)) for s in samples],
        }
    )
