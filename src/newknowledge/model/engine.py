"""The batched inference engine under :func:`newknowledge.model.lm.score` and :func:`newknowledge.model.lm.decode`.

Three pieces make SliCK fast (paper Sec. 3: 10 prompts x (1 greedy + 16
sampled answers) per question): prefill over shared prompt prefixes, a
key/value cache that grows in place, and an answer tree that decodes a
prompt's greedy answer and all its samples together.

**Shared prefixes.**
SliCK (paper Sec. 3) asks every question of a relation with the same ``n_ex``
exemplar blocks, so a prompt is one of a few shared *prefixes* (the exemplar
lines) followed by its own question line.  :class:`Prefixes` runs the model once
over each distinct prefix and keeps its keys and values; :func:`prefill` then
runs only the rest of each prompt (the question line, plus the gold answer when
scoring) on top of the cached prefix.  The logits equal those of one forward
pass over the whole prompt, up to float rounding.

One batch row, with the prefix part and the rest each left-padded (the
attention mask hides both paddings; position ids continue the prefix)::

    cache columns:  [pad pad p0 p1 p2 p3 | pad q0 q1 q2]   q positions 4, 5, 6
                    [pad p0 p1 p2 p3 p4  | q0  q1 q2 q3]   q positions 5, 6, 7, 8

**Cache growth.**  The cache handed back holds its keys and values in buffers
with room for ``reserve`` more tokens, so decoding writes each new token in
place; ``DynamicCache`` concatenates, copying the whole cache at every step.

**Answer tree.**  Samples that agree so far have the same keys, values and
next-token distribution, so :func:`branch` keeps one row per distinct partial
answer with the number of samples on it, and splits a row only where its
samples draw different tokens.  The samples keep exactly the distribution of
independent draws; at T = 0.5 a prompt needs about 3 rows instead of 17.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import version

import numpy as np
import torch
from packaging.version import Version
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

# The models' forward argument that takes the cache: transformers 5.24 renamed
# ``past_key_values`` to ``cache`` (the old name warns, and goes in 5.40), and
# releases before 5.24 know only the old name.
CACHE_ARG = "cache" if Version(version("transformers")) >= Version("5.24.0.dev0") else "past_key_values"


def with_cache(cache: Cache) -> dict:
    """Keyword arguments that hand ``cache`` to a model's forward, under this transformers' name."""
    return {CACHE_ARG: cache}


def left_pad(seqs: list[list[int]], pad: int, device, width: int = 0):
    """Left-pad to shape (batch, max(width, longest)).

    Returns:
        ``(ids, mask, pos)``: token ids, attention mask (1 = token) and position
        ids, each a long tensor of shape (batch, width).
    """
    width = max(width, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def shared_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    if b[: len(a)] == a:
        return len(a)
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


class ReservedLayer(DynamicLayer):
    """A cache layer whose buffers keep room for ``reserve`` more tokens after each growth.

    ``keys`` and ``values`` are views of shape (batch, heads, seq, head_dim) into
    buffers of shape (batch, heads, seq + room, head_dim): appending writes into
    the room, and only a full buffer is reallocated (with ``reserve`` new room).
    Like ``DynamicLayer`` it attends over every cached token (no sliding window:
    our prompts are far shorter than any model's window).
    """

    def __init__(self, reserve: int = 0):
        super().__init__()
        self.reserve = reserve
        self._k = self._v = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = self.get_seq_length()
        end = n + key_states.shape[-2]
        if self._k is None or end > self._k.shape[-2]:
            k = key_states.new_empty((*key_states.shape[:2], end + self.reserve, key_states.shape[-1]))
            v = value_states.new_empty((*value_states.shape[:2], end + self.reserve, value_states.shape[-1]))
            if n:
                k[:, :, :n], v[:, :, :n] = self.keys, self.values
            self._k, self._v = k, v
            self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
        self._k[:, :, n:end] = key_states
        self._v[:, :, n:end] = value_states
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def _reindex(self, pick) -> None:
        n = self.get_seq_length()
        self._k, self._v = pick(self._k), pick(self._v)
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._reindex(lambda t: t.index_select(0, indices))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._reindex(lambda t: t.repeat_interleave(repeats, 0))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)


def reserved_cache(reserve: int) -> Cache:
    """An empty cache of :class:`ReservedLayer` (one is added per model layer on first use)."""
    return Cache(layer_class_to_replicate=functools.partial(ReservedLayer, reserve))


class Prefixes:
    """Keys and values of distinct prompt prefixes, computed once and shared by every prompt that starts with one.

    Attributes:
        kv: per model layer ``(keys, values)``, each of shape
            (n_prefixes, heads, width, head_dim), left-padded to the longest prefix
            (``width`` tokens); pad positions hold zeros.
        lengths: tensor of shape (n_prefixes,): tokens of each prefix.
    """

    @torch.no_grad()
    def __init__(self, model, ids: list[list[int]], pad: int, batch_size: int = 64):
        device = next(model.parameters()).device
        width = max(len(x) for x in ids)
        parts = []
        for s in range(0, len(ids), batch_size):
            x, mask, pos = left_pad(ids[s : s + batch_size], pad, device, width)
            cache = DynamicCache()
            model(input_ids=x, attention_mask=mask, position_ids=pos, logits_to_keep=1, **with_cache(cache))
            real = mask.bool()[:, None, :, None]  # zero the pads: a fully masked pad row may hold NaN
            parts.append(
                [(torch.where(real, lay.keys, 0.0), torch.where(real, lay.values, 0.0)) for lay in cache.layers]
            )
        self.kv = [
            (torch.cat([p[i][0] for p in parts]), torch.cat([p[i][1] for p in parts])) for i in range(len(parts[0]))
        ]
        self.lengths = torch.tensor([len(x) for x in ids], device=device)


@torch.no_grad()
def prefill(
    model,
    seqs: list[list[int]],
    pad: int,
    *,
    prefixes: Prefixes | None = None,
    which: np.ndarray | None = None,
    used: np.ndarray | None = None,
    keep: int = 1,
    reserve: int = 0,
):
    """One forward pass over ``seqs``, row ``r`` continuing the first ``used[r]`` tokens of prefix ``which[r]``.

    Args:
        seqs: token ids still to run, one non-empty list per row.
        pad: the pad id (any id: pads are masked).
        prefixes, which, used: the cached prefixes, each row's prefix index and
            how many of that prefix's tokens the row continues (0 = none, and
            ``prefixes=None`` means none for every row).
        keep: positions at the end of each row whose logits are returned.
        reserve: cache room per row for tokens appended later (decoding).

    Returns:
        ``(logits, cache, mask, next_pos)``: logits of shape (batch, keep, vocab);
        the cache; the attention mask, shape (batch, cached tokens); the position
        id of each row's next token, shape (batch,).
    """
    device = next(model.parameters()).device
    ids, mask, pos = left_pad(seqs, pad, device)
    if prefixes is None or used is None or not np.any(used):
        cache = reserved_cache(reserve)
    else:
        which_t, used_t = torch.as_tensor(which, device=device), torch.as_tensor(used, device=device)
        lengths = prefixes.lengths[which_t]
        width = int(lengths.max())  # prefix columns this batch needs (the cached ones are right-aligned)
        first = width - lengths  # column of each row's first prefix token
        cols = torch.arange(width, device=device)
        pmask = (cols >= first[:, None]) & (cols < (first + used_t)[:, None])  # (batch, width)
        cache = reserved_cache(reserve + ids.shape[1])  # room for the rest of the prompt too
        for layer, (k, v) in enumerate(prefixes.kv):
            cache.update(k[which_t, :, k.shape[2] - width :], v[which_t, :, v.shape[2] - width :], layer)
        mask = torch.cat([pmask.long(), mask], 1)
        pos = pos + used_t[:, None]
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep, **with_cache(cache))
    return out.logits[:, -keep:], cache, mask, pos[:, -1] + 1


def plan(
    model,
    p_ids: list[list[int]],
    prompts: list[str],
    prefixes: list[str] | None,
    tokenize: Callable[[list[str]], list[list[int]]],
    pad: int,
    batch_size: int = 64,
) -> tuple[Prefixes | None, np.ndarray, np.ndarray]:
    """Compute the distinct prefixes once; per prompt, its prefix index and the prefix tokens it reuses.

    Args:
        p_ids: the prompts' token ids; ``prompts`` their text.
        prefixes: ``prefixes[i]`` a leading part of ``prompts[i]``, or None (no reuse).
        tokenize: texts -> token ids, as the prompts were tokenized (with BOS).

    Returns:
        ``(prefixes, which, used)``: the :class:`Prefixes` (None when nothing is
        reused) and two int arrays of shape (n_prompts,) for :func:`prefill`.
    """
    n = len(p_ids)
    none = (None, np.zeros(n, dtype=int), np.zeros(n, dtype=int))
    if prefixes is None:
        return none
    if len(prefixes) != n or any(not p.startswith(q) for p, q in zip(prompts, prefixes)):
        raise ValueError("prefixes[i] must be a leading part (str.startswith) of prompts[i], one per prompt")
    distinct = list(dict.fromkeys(prefixes))
    pre_ids = tokenize(distinct)
    if max(len(x) for x in pre_ids) == 0:
        return none
    index = {q: j for j, q in enumerate(distinct)}
    which = np.array([index[q] for q in prefixes])
    # Reuse the tokens a prompt shares with its prefix (all, unless a token merges across the
    # boundary), but always run the prompt's last token: its logits predict the answer.
    used = np.array([min(shared_length(pre_ids[w], ids), len(ids) - 1) for w, ids in zip(which, p_ids)])
    return Prefixes(model, pre_ids, pad, batch_size), which, used


def branch(
    logits: torch.Tensor,
    count: torch.Tensor,
    greedy: torch.Tensor,
    temperature: float,
    top_k: int,
    generator: torch.Generator | None,
):
    """One step of the answer tree: split each row's samples among the tokens they draw.

    Args:
        logits: (rows, vocab) next-token logits of each distinct partial answer.
        count: (rows,) samples that follow each row; greedy: (rows,) bool, the
            greedy answer follows the row.

    Returns:
        ``(parent, token, count, greedy)`` of the children, each of shape
        (children,): one child per distinct token drawn, plus the argmax token
        for the greedy row.
    """
    best = logits.argmax(-1)  # the greedy choice, as in ``generate``
    rows = torch.arange(len(best), device=best.device)
    if int(count.max()) == 0:  # greedy rows only
        return rows, best, count, greedy
    k = top_k if 0 < top_k < logits.shape[-1] else logits.shape[-1]
    vals, tok = torch.topk(logits.float() / temperature, k)  # (rows, k), best first
    tok[:, 0] = best  # the same logit; keeps argmax's choice among ties
    cdf = torch.softmax(vals, -1).cumsum(-1)
    u = torch.rand((len(best), int(count.max())), generator=generator, device=best.device) * cdf[:, -1:]
    slot = torch.searchsorted(cdf, u).clamp_(max=k - 1)  # (rows, max count): one draw per sample
    drawn = torch.arange(u.shape[1], device=best.device) < count[:, None]
    n = torch.zeros_like(tok).scatter_add_(1, slot, drawn.long())  # (rows, k): samples per token
    is_greedy = torch.zeros_like(n, dtype=torch.bool)
    is_greedy[:, 0] = greedy
    parent, s = ((n > 0) | is_greedy).nonzero(as_tuple=True)
    return parent, tok[parent, s], n[parent, s], is_greedy[parent, s]
