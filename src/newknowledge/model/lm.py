"""Any causal LM: loading, prompt encoding, teacher-forced scoring and decoding.

The same functions serve the controlled world's small model and a real Hugging
Face model, so every stage (SliCK, fine-tuning, evaluation) runs unchanged on
either.  Two primitives do all the work:

- :func:`score` (teacher forcing): one forward pass over prompt + gold answer
  decides whether greedy decoding would produce the gold answer and then stop
  (every gold token is the argmax, then a stop token is), and gives the exact
  probability that one tempered top-k sample equals it.
- :func:`decode`: prefill each prompt once, then decode the greedy answer and
  ``n_samples`` samples as a tree of distinct partial answers (samples that
  agree share a row), stopping each row at the end of its line.

Both take optional ``prefixes``: prompt beginnings shared by many prompts
(SliCK's exemplar lines), whose keys and values are computed once (see
:mod:`newknowledge.model.engine`).

A "stop token" is EOS or any token whose text contains a newline, so answers end
at the end of the line also with tokenizers that merge newlines into other tokens.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from newknowledge.core.prompts import answer as answer_text  # " " + gold + the stop
from newknowledge.model import engine


class ModelError(RuntimeError):
    """A model that cannot serve the study (it never produces an answer line, ...)."""


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        # bf16 where the GPU has it (Ampere and later), else fp16 (V100, T4).
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def auto_batch_size(model, seq_len: int, default: int) -> int:
    """Rows per forward pass that fit in the free accelerator memory (a batch parameter of 0).

    A deliberately simple, conservative estimate: a row of ``seq_len`` tokens
    holds its key/value cache for every layer plus one layer's transient
    activations, and up to 16 positions of float32 logits (three copies:
    logits, tempered, log-softmax).  Half of the free memory is budgeted, the
    rest is headroom for the allocator and for what the estimate misses.

    Args:
        model: a loaded causal LM (a ``peft`` wrapper too).
        seq_len: the longest sequence a row will hold (prompt + answer tokens).
        default: returned on CPU, where memory is rarely the limit and speed
            does not grow with the batch.

    Returns:
        A batch size in [1, 1024] on CUDA; ``default`` elsewhere.
    """
    device = next(model.parameters()).device
    if device.type != "cuda":
        return default
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config

    def get(*names, fallback=None):
        return next((getattr(cfg, n) for n in names if getattr(cfg, n, None)), fallback)

    hidden = get("hidden_size", "n_embd", "d_model")
    layers = get("num_hidden_layers", "n_layer", "num_layers")
    heads = get("num_attention_heads", "n_head")
    kv_dim = get("num_key_value_heads", fallback=heads) * get("head_dim", fallback=hidden // heads)
    inter = get("intermediate_size", "n_inner", fallback=4 * hidden)
    vocab = model.get_output_embeddings().weight.shape[0]
    elem = next(model.parameters()).element_size()
    per_row = seq_len * (2 * layers * kv_dim + 4 * hidden + 2 * inter) * elem + 16 * vocab * 4 * 3
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(1024, 0.5 * free // per_row)))


# A Hugging Face model id: "name" or "owner/name", letters, digits, "-", "_", "."
# (the Hub's rule: no leading or trailing "-" or ".", no "--" or "..", 96 characters at most).
_HF_ID = re.compile(r"(?!.*(--|\.\.))[A-Za-z0-9]([\w.-]*[A-Za-z0-9])?(/[A-Za-z0-9]([\w.-]*[A-Za-z0-9])?)?")


def check_model_name(path: str) -> None:
    """Fail with a clear message unless ``path`` is an existing folder or could be a Hugging Face id.

    Without this, a mistyped folder reaches ``from_pretrained``, which tries the
    Hub and fails with a long error about repository names or the network.

    Raises:
        ConfigError: naming the value and the fix.
    """
    from newknowledge.core.config import ConfigError

    fix = (
        "fix: pass -p model with the folder that save_pretrained wrote (config.json inside) "
        "or a Hugging Face id such as 'gpt2' or 'meta-llama/Llama-3.1-8B'"
    )
    if not str(path).strip():
        raise ConfigError(f"model {path!r} is empty; {fix}")
    local = Path(str(path)).expanduser()
    if local.is_dir():
        return
    if local.exists():
        raise ConfigError(f"model {path!r} is a file, not a folder; {fix}")
    if not (isinstance(path, str) and len(path) <= 96 and _HF_ID.fullmatch(path)):
        raise ConfigError(f"model {path!r} is neither an existing folder nor a Hugging Face id; {fix}")


def load(path: str, device: str = "auto", dtype: str = "auto"):
    """Load a causal LM and its tokenizer with the ``Auto*`` classes.

    Args:
        path: a local folder (``save_pretrained`` output) or a Hugging Face id.
        device, dtype: "auto" picks CUDA with bf16 when present, else CPU fp32.

    Returns:
        ``(model, tokenizer)``, the model in eval mode on its device.

    Raises:
        ConfigError: ``path`` is neither an existing folder nor a plausible
            Hugging Face id (:func:`check_model_name`).
    """
    check_model_name(path)
    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        # Many LMs (Llama, Mistral, ...) ship without a pad token.  We pad by hand
        # and mask every pad position, so any existing id will do: EOS, else UNK,
        # else id 0.  Adding a new token would change the vocabulary.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token or tokenizer.convert_ids_to_tokens(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, dev)).to(dev)
    model.eval()
    return model, tokenizer


# Per-tokenizer caches (a tokenizer is fixed once loaded; the vocabulary size is
# part of the key in case tokens are added).
_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LEAD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_texts(tokenizer) -> list[str]:
    """The text of every token id as it reads *inside* a sequence.

    ``convert_tokens_to_string([t])`` alone drops a SentencePiece token's leading
    space ("▁Paris" -> "Paris"), so each token is decoded after an anchor token
    and the anchor's text is cut off.  Computed once per tokenizer (128k ids take
    about a second).
    """
    n = len(tokenizer)
    hit = _TEXTS.get(tokenizer)
    if hit is not None and len(hit) == n:
        return hit
    anchor = (tokenizer("a", add_special_tokens=False)["input_ids"] or [0])[-1]
    lead = tokenizer.decode([anchor], clean_up_tokenization_spaces=False)
    pairs = tokenizer.batch_decode([[anchor, i] for i in range(n)], clean_up_tokenization_spaces=False)
    texts = [t[len(lead) :] if t.startswith(lead) else t for t in pairs]
    _TEXTS[tokenizer] = texts
    return texts


def _pad_mask(mask: torch.Tensor, vocab: int) -> torch.Tensor:
    # The output layer can be wider (padded) or narrower than the tokenizer.
    return torch.cat([mask, torch.zeros(max(0, vocab - len(mask)), dtype=torch.bool)])[:vocab]


def stop_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """Boolean tensor of shape (vocab,): True for EOS and every token whose text contains a newline.

    With tokenizers that merge the newline into other tokens ("s\n", ".\n",
    "\nQ:") these all end the answer line; the text before the newline still
    belongs to the answer (see :func:`line_end_mask`).
    """
    mask = _pad_mask(torch.tensor(["\n" in t for t in token_texts(tokenizer)], dtype=torch.bool), vocab_size)
    if tokenizer.eos_token_id is not None:
        mask[tokenizer.eos_token_id] = True
    return mask


def line_end_mask(tokenizer, vocab_size: int, rest: str) -> torch.Tensor:
    """Stop tokens that end a line whose last text is ``rest``: shape (vocab,), bool.

    ``rest`` is the part of the answer carried by the gold's line-end token
    ("s" when " Paris\n" is tokenized " Pari" + "s\n"; "" when the newline is
    a token of its own).  A stop token ends the gold answer exactly when its
    text before the newline is ``rest`` (EOS counts as text "").
    """
    texts = token_texts(tokenizer)
    mask = _pad_mask(
        torch.tensor(["\n" in t and t.split("\n", 1)[0] == rest for t in texts], dtype=torch.bool), vocab_size
    )
    if rest == "" and tokenizer.eos_token_id is not None:
        mask[tokenizer.eos_token_id] = True
    return mask


def _leading_ids(tokenizer) -> list[int]:
    """The special ids the tokenizer puts before the text (BOS), without any it appends (EOS)."""
    hit = _LEAD.get(tokenizer)
    if hit is None:
        probe = "any text"  # only the special tokens around it matter
        plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = tokenizer(probe)["input_ids"]
        starts = [k for k in range(len(full) - len(plain) + 1) if full[k : k + len(plain)] == plain]
        hit = _LEAD[tokenizer] = full[: starts[0]] if starts else []
    return hit


def encode(tokenizer, prompts: list[str], continuations: list[str] | None = None):
    """Token ids of prompts (with the tokenizer's BOS, if any) and of continuations.

    Only the *leading* special tokens are added (Llama's BOS): a tokenizer whose
    post-processor also appends EOS would otherwise end every prompt with it.
    A continuation's ids are taken from the tokenization of prompt + continuation,
    so they match what the model would see when it generates them; when the joint
    tokenization does not start with the prompt's ids (a merge across the
    boundary), the continuation is tokenized on its own.
    """
    lead = _leading_ids(tokenizer)
    p_ids = [lead + ids for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    if continuations is None:
        return p_ids, None
    joint = tokenizer([p + c for p, c in zip(prompts, continuations)], add_special_tokens=False)["input_ids"]
    alone = tokenizer(continuations, add_special_tokens=False)["input_ids"]
    n = len(lead)
    c_ids = [j[len(p) - n :] if j[: len(p) - n] == p[n:] else a for p, j, a in zip(p_ids, joint, alone)]
    return p_ids, c_ids


def answer_ids(tokenizer, prompts: list[str], golds: list[str]):
    """Teacher-forcing targets of gold answers: the tokens of ``" " + gold + "\n"`` up to the line end.

    The gold is tokenized *with* its closing newline, as the model meets it in
    few-shot exemplars and fine-tuning targets, because tokenizers that merge
    the newline into other tokens ("Paris\n" -> "Pari" + "s\n") tokenize the
    answer differently without it.

    Returns:
        ``(p_ids, c_ids, rests)``: prompt ids, the gold tokens before the first
        token containing the newline, and that token's text before the newline
        (for :func:`line_end_mask`; "" when the newline is a token of its own).
    """
    p_ids, full = encode(tokenizer, prompts, [answer_text(g) for g in golds])
    texts = token_texts(tokenizer)
    c_ids, rests = [], []
    for ids in full:
        end = next((k for k, i in enumerate(ids) if i < len(texts) and "\n" in texts[i]), None)
        if end is None:  # a tokenizer that cannot write "\n": only EOS can end the answer
            c_ids.append(ids)
            rests.append("")
        else:
            c_ids.append(ids[:end])
            rests.append(texts[ids[end]].split("\n", 1)[0])
    return p_ids, c_ids, rests


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
def score(
    model,
    tokenizer,
    prompts: list[str],
    golds: list[str],
    *,
    temperature: float = 0.5,
    top_k: int = 40,
    batch_size: int = 64,
    prefixes: list[str] | None = None,
    greedy_only: bool = False,
) -> Scores:
    """Teacher forcing: one forward pass per (prompt, " " + gold + newline) pair.

    Greedy correctness: every gold token is the argmax and then the argmax is
    a stop token that ends the line right after the gold (see :func:`answer_ids`).
    The exact sampling probability is the product over gold tokens of the
    tempered top-k probabilities, times the tempered top-k mass of the stop
    tokens at the next position.

    Args:
        prefixes: optional, ``prefixes[i]`` a leading part of ``prompts[i]`` shared
            with other prompts (SliCK's exemplar lines); the keys and values of
            each distinct prefix are computed once (see :mod:`newknowledge.model.engine`).
            Same results as without, up to float rounding.
        greedy_only: compute only ``greedy_correct`` (``p_sample`` and
            ``logprob`` are NaN), skipping the top-k and softmax work: what
            fine-tuning's fitted flags need.
    """
    device = next(model.parameters()).device
    # Gold tokens up to the line end; the line-end token may carry the gold's
    # last characters ("s\n"), so each gold has its own set of accepted stops.
    p_ids, c_ids, rests = answer_ids(tokenizer, prompts, golds)
    vocab = model.get_output_embeddings().weight.shape[0]
    ends = {r: line_end_mask(tokenizer, vocab, r).to(device) for r in set(rests)}
    pre, which, used = engine.plan(
        model, p_ids, prompts, prefixes, lambda t: encode(tokenizer, t)[0], tokenizer.pad_token_id, batch_size
    )
    n = len(prompts)
    greedy, p_samp, logp = np.zeros(n, bool), np.full(n, np.nan), np.full(n, np.nan)
    order = np.argsort([len(p) + len(c) for p, c in zip(p_ids, c_ids)], kind="stable")  # less padding
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        keep = max(len(c_ids[i]) for i in idx) + 1  # positions predicting gold tokens and the stop
        logits, *_ = engine.prefill(
            model,
            [p_ids[i][used[i] :] + c_ids[i] for i in idx],
            tokenizer.pad_token_id,
            prefixes=pre,
            which=which[idx],
            used=used[idx],
            keep=keep,
        )
        logits = logits.float()  # (batch, keep, vocab): position j predicts the token after it
        # Gold tokens right-aligned under the positions that predict them: (batch, keep - 1);
        # ``has`` marks where a row has a gold token (a gold may be empty: "Paris\n" is one token).
        lens = torch.tensor([len(c_ids[i]) for i in idx])
        has = torch.arange(keep - 1) >= keep - 1 - lens[:, None]
        gold = torch.zeros((len(idx), keep - 1), dtype=torch.long)
        gold[has] = torch.tensor([t for i in idx for t in c_ids[i]], dtype=torch.long)
        gold, has = gold.to(device), has.to(device)
        stops = torch.stack([ends[rests[i]] for i in idx])  # (batch, vocab)
        arg = logits.argmax(-1)  # (batch, keep)
        ok = ((arg[:, :-1] == gold) | ~has).all(1) & stops.gather(1, arg[:, -1:]).squeeze(1)
        greedy[idx] = ok.cpu().numpy()
        if greedy_only:
            continue
        lp = _top_k_logprobs(logits, temperature, top_k)
        p_gold = torch.where(has, lp[:, :-1].gather(2, gold[..., None]).squeeze(-1), 0.0).sum(1)
        p_stop = torch.logsumexp(lp[:, -1].masked_fill(~stops, float("-inf")), -1)
        full = torch.log_softmax(logits[:, :-1], -1).gather(2, gold[..., None]).squeeze(-1)
        p_samp[idx] = torch.exp(p_gold + p_stop).cpu().numpy()
        logp[idx] = torch.where(has, full, 0.0).sum(1).cpu().numpy()
    return Scores(greedy, p_samp, logp)


def _cut(text: str) -> str:
    """An answer ends at the end of its line."""
    return text.split("\n", 1)[0].strip()


@torch.no_grad()
def decode(
    model,
    tokenizer,
    prompts: list[str],
    *,
    n_samples: int = 0,
    temperature: float = 0.5,
    top_k: int = 40,
    max_new_tokens: int = 16,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
    prefixes: list[str] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Greedy answer and ``n_samples`` sampled answers per prompt, decoded as a tree.

    Each prompt is prefilled once (on top of its cached prefix, if given; see
    :func:`score`).  The greedy answer and the samples are then decoded as a
    tree of distinct partial answers: a batch row is one partial answer with the
    number of samples that follow it and whether the greedy answer does.  At
    each step a row's samples each draw a token at ``temperature`` from the
    ``top_k`` tokens, and the row becomes one row per distinct token drawn
    (plus the argmax, for the greedy row).  The answers have exactly the
    distribution of independent samples, but at T = 0.5 most samples agree, so
    a prompt needs about 3 rows instead of ``1 + n_samples``.  A row stops at
    its first stop token (or after ``max_new_tokens``).

    Args:
        batch_size: rows per forward pass at most; prompts per batch are
            ``batch_size // (1 + n_samples)``.

    Returns:
        ``(greedy, samples)``: a list of strings and a list of lists of strings.
    """
    device = next(model.parameters()).device
    p_ids, _ = encode(tokenizer, prompts)
    stops = stop_mask(tokenizer, model.get_output_embeddings().weight.shape[0]).to(device)
    pre, which, used = engine.plan(
        model, p_ids, prompts, prefixes, lambda t: encode(tokenizer, t)[0], tokenizer.pad_token_id, batch_size
    )
    greedy: list[str] = [""] * len(prompts)
    samples: list[list[str]] = [[] for _ in prompts]
    order = np.argsort([len(p) for p in p_ids], kind="stable")
    per_batch = max(1, batch_size // (1 + n_samples))
    for start in range(0, len(prompts), per_batch):
        idx = order[start : start + per_batch]
        logits, cache, mask, pos = engine.prefill(
            model,
            [p_ids[i][used[i] :] for i in idx],
            tokenizer.pad_token_id,
            prefixes=pre,
            which=which[idx],
            used=used[idx],
            reserve=max_new_tokens,
        )
        logits = logits[:, -1]  # (rows, vocab); one row per prompt to start with
        prompt = torch.arange(len(idx), device=device)  # each row's prompt (position in idx)
        count = torch.full((len(idx),), n_samples, device=device)
        follows = torch.ones(len(idx), dtype=torch.bool, device=device)  # the greedy answer follows the row
        answer = torch.zeros((len(idx), 0), dtype=torch.long, device=device)  # (rows, step) tokens so far
        done = []
        for step in range(max_new_tokens):
            parent, tok, count, follows = engine.branch(logits, count, follows, temperature, top_k, generator)
            prompt, answer = prompt[parent], torch.cat([answer[parent], tok[:, None]], 1)
            end = stops[tok] | (step == max_new_tokens - 1)
            done.append((prompt[end], answer[end], count[end], follows[end]))
            live = ~end
            if not bool(live.any()):
                break
            parent, prompt, answer, tok, count, follows = (
                t[live] for t in (parent, prompt, answer, tok, count, follows)
            )
            if len(parent) != len(mask) or not torch.equal(parent, torch.arange(len(parent), device=device)):
                cache.batch_select_indices(parent)  # rows split or finished: copy the surviving rows' cache
                mask, pos = mask[parent], pos[parent]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = model(
                input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None], **engine.with_cache(cache)
            )
            logits, pos = out.logits[:, -1], pos + 1
        for rows, toks, counts, greedy_flags in done:
            texts = tokenizer.batch_decode(toks.tolist(), skip_special_tokens=True)
            for r, text, c, g in zip(rows.tolist(), texts, counts.tolist(), greedy_flags.tolist()):
                if g:
                    greedy[idx[r]] = _cut(text)
                samples[idx[r]] += [_cut(text)] * c
    return greedy, samples
