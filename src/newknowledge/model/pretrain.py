"""Pretraining a small causal LM from scratch on the controlled world.

The paper's model (PaLM 2-M) learned its facts during pretraining; ours learns
them here, from a corpus in which every fact appears exactly its exposure count
times (see :mod:`newknowledge.data.world`).  Surface forms vary: statement
paraphrases inside documents with filler lines, and ``Q: ... A: ...`` lines
grouped into same-relation documents, like the probes of SliCK (paper Sec. 3).

Every line ends with a newline, also the last line before EOS: otherwise a
few-shot prompt teaches the model to stop an answer with EOS where the probe
expects a newline, and greedy answers "fail" for that reason alone.

The result is saved with ``save_pretrained`` and loaded downstream with
``AutoModelForCausalLM.from_pretrained``, the call a real model uses.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from newknowledge.core import prompts, store
from newknowledge.core.config import PretrainConfig, WorldConfig
from newknowledge.core.progress import tqdm
from newknowledge.data.world import RELATIONS

EOS = "<|endoftext|>"
PAD = "<pad>"
_FILLER = (
    "This entry was added to the records.",
    "More details are given below.",
    "Sources agree on this.",
    "The archive lists several such facts.",
    "See also the related entries.",
    "This was noted long ago.",
)


def documents(facts: pd.DataFrame, cfg: PretrainConfig, rng: np.random.Generator) -> list[str]:
    """The pretraining corpus as a list of documents.

    Each exposure of a fact becomes a statement (probability
    ``statement_share``; statement documents hold 3-8 lines with filler) or a
    Q/A line (same-relation documents of 2-6 lines) in one of the first
    ``qa_templates`` of :data:`QA_TEMPLATES`, chosen at random per line.  In addition, with
    probability ``verify_share`` an exposure yields a verification line, true
    (the gold answer) or false (another answer of the relation) with equal odds,
    so the model can judge a proposed answer, which P(True) (Kadavath et al.,
    2022; paper Sec. 6) needs.  Every line ends with ``\n``.
    """
    statements: list[str] = []
    qa: dict[str, list[str]] = {}
    verify: dict[str, list[str]] = {}
    pools = {rel: sorted(g.unique()) for rel, g in facts.groupby("relation")["answer"]}
    for rel, subj, ans, q, n in facts[["relation", "subject", "answer", "question", "exposures"]].itertuples(
        index=False
    ):
        forms = RELATIONS[rel][2]
        for is_statement, verifies, true in zip(
            rng.random(int(n)) < cfg.statement_share, rng.random(int(n)) < cfg.verify_share, rng.random(int(n)) < 0.5
        ):
            if is_statement:
                statements.append(forms[rng.integers(len(forms))].format(X=subj, Y=ans) + "\n")
            else:
                template = int(rng.integers(cfg.qa_templates)) if cfg.qa_templates > 1 else 0
                qa.setdefault(rel, []).append(prompts.probe_line(q, ans, prompts.QA_TEMPLATES[template]))
            if verifies:
                other = [a for a in pools[rel] if a != ans]
                shown = ans if true or not other else other[rng.integers(len(other))]
                verify.setdefault(rel, []).append(prompts.check_line(q, shown, shown == ans))
    docs: list[str] = []
    rng.shuffle(statements)
    i = 0
    while i < len(statements):
        k = int(rng.integers(3, 9))
        lines = statements[i : i + k]
        i += k
        if rng.random() < 0.5:  # filler keeps statements from always being adjacent
            lines.insert(int(rng.integers(len(lines) + 1)), _FILLER[rng.integers(len(_FILLER))] + "\n")
        docs.append("".join(lines))
    for _rel, lines in [(r, qa[r]) for r in sorted(qa)] + [(r, verify[r]) for r in sorted(verify)]:
        rng.shuffle(lines)
        i = 0
        while i < len(lines):
            k = int(rng.integers(2, 7))
            docs.append("".join(lines[i : i + k]))
            i += k
    order = rng.permutation(len(docs))
    return [docs[j] for j in order]


def train_tokenizer(docs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 style): unseen names still split into known pieces."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD)


def make_model(tokenizer: PreTrainedTokenizerFast, cfg: PretrainConfig) -> GPT2LMHeadModel:
    """A GPT-2 style model from a ``transformers`` config, randomly initialised."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=max(512, cfg.block_size),
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        tie_word_embeddings=True,
        # No dropout: we want facts memorised, and fine-tuning runs reproducible epoch by epoch.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def _blocks(doc_ids: list[list[int]], eos: int, block: int, rng: np.random.Generator) -> torch.Tensor:
    """Shuffle documents, join them with EOS and cut into blocks of shape (n, block)."""
    stream = np.concatenate([np.asarray(doc_ids[j] + [eos]) for j in rng.permutation(len(doc_ids))])
    n = len(stream) // block
    return torch.from_numpy(stream[: n * block].reshape(n, block).astype(np.int64))


def lr_at(step: int, total: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    warm = max(1, int(cfg.pretrain_warmup * total))
    if step < warm:
        return cfg.pretrain_lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return cfg.pretrain_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# A pretraining checkpoint is written at most this often (wall seconds): a cut-off build loses minutes.
CHECKPOINT_SECONDS = 120.0


def _save_checkpoint(
    ckpt: Path, model, opt, step: int, pass_state: dict, offset: int, log: list, seconds: float
) -> None:
    """Model, optimizer, step and data position, written atomically (temporary file, then rename)."""
    tmp = ckpt.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "pass_state": pass_state,
            "offset": offset,
            "log": log,
            "seconds": seconds,
        },
        tmp,
    )
    tmp.replace(ckpt)


def train(
    facts: pd.DataFrame, cfg: PretrainConfig, out: Path, resume: Path | None = None, stop_after: int | None = None
) -> dict:
    """Build the corpus, train tokenizer and model, save both to ``out``.

    Args:
        facts: every fact of the world with its ``exposures``.
        cfg: the pretraining config.
        out: folder to write the model, tokenizer, loss curve and corpus sample into.
        resume: folder for the checkpoint (``checkpoint.pt``, every
            :data:`CHECKPOINT_SECONDS`); a checkpoint found there is continued
            from, so a cut-off build resumes with the same batches and gives the
            same model as an uncut one.
        stop_after: stop after this many steps in this call, leaving the
            checkpoint (tests simulate a kill); returns ``{}``.

    Returns:
        Training statistics (tokens, parameters, seconds, final loss).
    """
    torch.manual_seed(cfg.pretrain_seed)
    rng = np.random.default_rng(cfg.pretrain_seed)
    torch.set_num_threads(cfg.pretrain_threads)
    docs = documents(facts, cfg, rng)
    tokenizer = train_tokenizer(docs, cfg.vocab_size)
    doc_ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    n_tokens = sum(len(d) + 1 for d in doc_ids)
    model = make_model(tokenizer, cfg)
    per_step = cfg.block_size * cfg.pretrain_batch
    total = max(1, int(cfg.pretrain_passes * n_tokens / per_step))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, betas=(0.9, 0.98), weight_decay=0.01)
    log, step, offset, before = [], 0, 0, 0.0  # before: seconds spent in earlier calls
    ckpt = resume / "checkpoint.pt" if resume is not None else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, offset, log, before = state["step"], state["offset"], state["log"], state["seconds"]
        rng.bit_generator.state = state["pass_state"]  # the data order of the pass it was cut in
    model.train()
    t0, saved, run_steps = time.time(), time.time(), 0
    bar = tqdm(total=total, initial=step, desc="pretraining", unit="step")
    while step < total:
        pass_state = rng.bit_generator.state  # each pass shuffles with the rng as it stands here
        blocks = _blocks(doc_ids, tokenizer.eos_token_id, cfg.block_size, rng)
        for i in range(offset, len(blocks) - cfg.pretrain_batch + 1, cfg.pretrain_batch):
            if step >= total:
                break
            if stop_after is not None and run_steps >= stop_after:
                if ckpt is not None:
                    _save_checkpoint(ckpt, model, opt, step, pass_state, i, log, before + time.time() - t0)
                bar.close()
                return {}
            batch = blocks[i : i + cfg.pretrain_batch]  # (batch, block)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, cfg)
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            log.append((step, loss.item()))
            step += 1
            run_steps += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(
                    loss=f"{np.mean([x for _, x in log[-20:]]):.3f}",
                    tok_s=f"{run_steps * per_step / (time.time() - t0):.0f}",
                )
            if ckpt is not None and time.time() - saved > CHECKPOINT_SECONDS:
                _save_checkpoint(
                    ckpt, model, opt, step, pass_state, i + cfg.pretrain_batch, log, before + time.time() - t0
                )
                saved = time.time()
        offset = 0
    bar.close()
    model.eval()
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    pd.DataFrame(log, columns=["step", "loss"]).to_csv(out / "loss.csv", index=False)
    (out / "corpus_sample.txt").write_text("".join(docs[:20]))
    return {
        "corpus_tokens": n_tokens,
        "documents": len(docs),
        "steps": total,
        "train_tokens": total * per_step,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(before + time.time() - t0, 1),
        "final_loss": float(np.mean([x for _, x in log[-50:]])),
    }


def artifact(world_cfg: WorldConfig, cfg: PretrainConfig) -> tuple[Path, dict]:
    """Where the model of these configs is cached (it may not exist yet), and the config keying it."""
    # The thread count stays in the key: it changes float rounding in the last bits, and that is
    # enough to move one-seed results by a point or two downstream.
    config = {"stage": "pretrain", "world": dataclasses.asdict(world_cfg), "pretrain": dataclasses.asdict(cfg)}
    return store.stage_dir("pretrain", config), config


def build(world_cfg: WorldConfig, cfg: PretrainConfig, facts: pd.DataFrame) -> Path:
    """Pretrain (cached by the hash of both configs); return the model folder.

    ``facts`` holds every fact of the world with its ``exposures`` (facts with
    0 exposures never enter the corpus).  A build cut off halfway continues from
    its checkpoint (``<hash>.partial/``) when called again.
    """
    path, config = artifact(world_cfg, cfg)
    if not store.is_done(path):
        partial = path.with_name(path.name + ".partial")  # the checkpoint outlives a cut-off build
        partial.mkdir(parents=True, exist_ok=True)
        with store.building(path, config) as tmp:
            stats = train(facts, cfg, tmp, resume=partial)
            store.write_json(tmp / "stats.json", stats)
        shutil.rmtree(partial, ignore_errors=True)
    return path / "model"
