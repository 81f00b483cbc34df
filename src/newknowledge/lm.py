"""Any causal LM: loading, prompt encoding, teacher-forced scoring and decoding.

The same functions serve the controlled world's small model and a real Hugging
Face model, so every stage (SliCK, fine-tuning, evaluation) runs unchanged on
either.  Two primitives do all the work:

- :func:`score` (teacher forcing): one forward pass over prompt + gold answer
  decides whether greedy decoding would produce the gold answer and then stop
  (every gold token is the argmax, then a stop token is), and gives the exact
  probability that one tempered top-k sample equals it.
- :func:`decode`: prefill each prompt once, then decode one greedy row and
  ``n_samples`` sampled rows from copies of that one cache, stopping each row at
  the end of its line.

A "stop token" is EOS or any token whose text contains a newline, so answers end
at the end of the line also with tokenizers that merge newlines into other tokens.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache


class ModelError(RuntimeError):
    """A model that cannot serve the study (it never produces an answer line, ...)."""


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load(path: str, device: str = "auto", dtype: str = "auto"):
    """Load a causal LM and its tokenizer with the ``Auto*`` classes.

    Args:
        path: a local folder (``save_pretrained`` output) or a Hugging Face id.
        device, dtype: "auto" picks CUDA with bf16 when present, else CPU fp32.

    Returns:
        ``(model, tokenizer)``, the model in eval mode on its device.
    """
    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:  # many LMs ship without one; we pad by hand anyway
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, dev)).to(dev)
    model.eval()
    return model, tokenizer


@functools.lru_cache(maxsize=8)
def _stop_mask_cached(tokenizer_id: int, vocab: int, texts: tuple, eos: int | None) -> torch.Tensor:
    mask = torch.tensor(["\n" in t for t in texts], dtype=torch.bool)
    mask = torch.cat([mask, torch.zeros(max(0, vocab - len(mask)), dtype=torch.bool)])[:vocab]
    if eos is not None:
        mask[eos] = True
    return mask


def stop_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """Boolean tensor of shape (vocab,): True for EOS and every token containing a newline."""
    texts = tuple(tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(range(len(tokenizer))))
    return _stop_mask_cached(id(tokenizer), vocab_size, texts, tokenizer.eos_token_id)


def encode(tokenizer, prompts: list[str], continuations: list[str] | None = None):
    """Token ids of prompts (with the tokenizer's BOS, if any) and of continuations.

    A continuation's ids are taken from the tokenization of prompt + continuation,
    so they match what the model would see when it generates them; when the joint
    tokenization does not start with the prompt's ids (a merge across the
    boundary), the continuation is tokenized on its own.
    """
    p_ids = tokenizer(prompts)["input_ids"]
    if continuations is None:
        return p_ids, None
    joint = tokenizer([p + c for p, c in zip(prompts, continuations)])["input_ids"]
    alone = tokenizer(continuations, add_special_tokens=False)["input_ids"]
    c_ids = [j[len(p):] if j[: len(p)] == p else a for p, j, a in zip(p_ids, joint, alone)]
    return p_ids, c_ids


def _left_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad to shape (batch, max_len); returns ids, attention mask and position ids."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def _top_k_logprobs(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """Log-probabilities of one tempered, top-k-truncated, renormalised sampling step."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


@dataclass
class Scores:
    """Teacher-forced scores of (prompt, gold) pairs, arrays of shape (n_pairs,)."""

    greedy_correct: np.ndarray  # bool: greedy decoding yields exactly the gold, then stops
    p_sample: np.ndarray  # probability that one T/top-k sample is the gold, then stops
    logprob: np.ndarray  # log P(gold tokens | prompt) at T = 1


@torch.no_grad()
def score(model, tokenizer, prompts: list[str], golds: list[str], *, temperature: float = 0.5,
          top_k: int = 40, batch_size: int = 64) -> Scores:
    """Teacher forcing: one forward pass per (prompt, " " + gold) pair.

    Greedy correctness: every gold token is the argmax and then the argmax is
    a stop token.  The exact sampling probability is the product over gold
    tokens of the tempered top-k probabilities, times the tempered top-k mass
    of the stop tokens at the next position.
    """
    device = next(model.parameters()).device
    p_ids, c_ids = encode(tokenizer, prompts, [" " + g for g in golds])
    stops = stop_mask(tokenizer, model.get_output_embeddings().weight.shape[0]).to(device)
    n = len(prompts)
    greedy, p_samp, logp = np.zeros(n, bool), np.zeros(n), np.zeros(n)
    order = np.argsort([len(p) + len(c) for p, c in zip(p_ids, c_ids)])  # less padding
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        seqs = [p_ids[i] + c_ids[i] for i in idx]
        ids, mask, pos = _left_pad(seqs, tokenizer.pad_token_id, device)
        keep = max(len(c_ids[i]) for i in idx) + 1  # positions predicting gold tokens and the stop
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep).logits
        logits = logits[:, -keep:].float()  # (batch, keep, vocab)
        for row, i in enumerate(idx):
            c = torch.tensor(c_ids[i], device=device)
            steps = logits[row, keep - len(c) - 1:]  # (len(c) + 1, vocab): last one predicts the stop
            arg = steps.argmax(-1)
            greedy[i] = bool((arg[:-1] == c).all()) and bool(stops[arg[-1]])
            lp = _top_k_logprobs(steps, temperature, top_k)
            p_gold = lp[:-1].gather(1, c[:, None]).sum()
            p_stop = torch.logsumexp(lp[-1][stops], 0)
            p_samp[i] = float(torch.exp(p_gold + p_stop))
            logp[i] = float(torch.log_softmax(steps[:-1], -1).gather(1, c[:, None]).sum())
    return Scores(greedy, p_samp, logp)


def _cut(text: str) -> str:
    """An answer ends at the end of its line."""
    return text.split("\n", 1)[0].strip()


@torch.no_grad()
def decode(model, tokenizer, prompts: list[str], *, n_samples: int = 0, temperature: float = 0.5,
           top_k: int = 40, max_new_tokens: int = 16, batch_size: int = 64,
           generator: torch.Generator | None = None) -> tuple[list[str], list[list[str]]]:
    """Greedy answer and ``n_samples`` sampled answers per prompt, from one prefill.

    Each prompt is prefilled once; its key/value cache is then repeated
    ``1 + n_samples`` times (row 0 greedy, the others sampled at
    ``temperature`` from the ``top_k`` tokens) and decoding stops each row at
    its first stop token.

    Returns:
        ``(greedy, samples)``: a list of strings and a list of lists of strings.
    """
    device = next(model.parameters()).device
    p_ids, _ = encode(tokenizer, prompts)
    stops = stop_mask(tokenizer, model.get_output_embeddings().weight.shape[0]).to(device)
    rows = 1 + n_samples
    greedy: list[str] = [""] * len(prompts)
    samples: list[list[str]] = [[] for _ in prompts]
    order = np.argsort([len(p) for p in p_ids])
    per_batch = max(1, batch_size // rows) if n_samples else batch_size
    for start in range(0, len(prompts), per_batch):
        idx = order[start:start + per_batch]
        ids, mask, pos = _left_pad([p_ids[i] for i in idx], tokenizer.pad_token_id, device)
        cache = DynamicCache()
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, logits_to_keep=1)
        cache = out.past_key_values
        if rows > 1:  # one prefill serves the greedy row and every sample
            cache.batch_repeat_interleave(rows)
            mask = mask.repeat_interleave(rows, 0)
            pos = pos.repeat_interleave(rows, 0)
        logits = out.logits[:, -1].repeat_interleave(rows, 0)  # (batch * rows, vocab)
        n_rows = len(logits)
        alive = torch.arange(n_rows, device=device)  # original row of each row still in the batch
        is_greedy = (alive % rows) == 0
        finished = torch.zeros(n_rows, dtype=torch.bool, device=device)
        gen = torch.full((n_rows, max_new_tokens), tokenizer.pad_token_id, dtype=torch.long, device=device)
        next_pos = pos[:, -1:] + 1
        for step in range(max_new_tokens):
            choice = logits.argmax(-1)
            if n_samples:
                probs = torch.exp(_top_k_logprobs(logits, temperature, top_k))
                drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                choice = torch.where(is_greedy, choice, drawn)
            choice = choice.masked_fill(finished, tokenizer.pad_token_id)
            gen[alive, step] = choice
            finished = finished | stops[choice]
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            if finished.float().mean() > 0.25:  # drop finished rows from the batch and the cache
                keep = (~finished).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                alive, is_greedy, choice, finished = alive[keep], is_greedy[keep], choice[keep], finished[keep]
                mask, next_pos = mask[keep], next_pos[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = model(input_ids=choice[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache)
            cache, logits, next_pos = out.past_key_values, out.logits[:, -1], next_pos + 1
        texts = tokenizer.batch_decode(gen.tolist(), skip_special_tokens=True)
        for r, text in enumerate(texts):
            i = idx[r // rows]
            if r % rows == 0:
                greedy[i] = _cut(text)
            else:
                samples[i].append(_cut(text))
    return greedy, samples
