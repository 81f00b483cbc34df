"""One optimizer step of fine-tuning, for a small model on a CPU or a 7-8B model on one GPU.

The paper fine-tunes with a batch of 128 examples (App. E).  A large model
cannot hold 128 sequences' activations at once, so the batch is split into
*micro-batches* whose gradients add up to the big batch's: each micro-batch's
loss is its summed answer-token loss divided by the number of answer tokens in
the **whole** batch, so the accumulated gradient is the gradient of the big
batch's mean loss (up to float rounding).  Two further options make full
fine-tuning of a 7-8B model fit:

- ``ft_precision: bf16-mixed``: weights and AdamW state stay in float32, the
  forward and backward passes run in bfloat16 (``torch.autocast``); pure
  bfloat16 weights would lose most updates of a 1e-5 learning rate to rounding.
- ``ft_checkpointing``: activation checkpointing (recompute each layer's
  activations in the backward pass instead of storing them).

With ``ft_micro_batch: 0`` the micro-batch is the whole batch on a CPU and is
chosen from the free accelerator memory on a GPU.
"""

from __future__ import annotations

import contextlib

import torch

from newknowledge.core.prompts import answer, check_format, ft_prompt
from newknowledge.model import lm


def collate(pairs, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad ``(input_ids, labels)`` pairs to tensors of shape (batch, max_len): ids, attention mask, labels."""
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return ids, mask, labels


def micro_batch_size(model, pairs, cfg) -> int:
    """Rows per forward pass: ``ft_micro_batch``, or the whole batch on a CPU, or what fits on a GPU.

    On a GPU the inference estimate of :func:`newknowledge.model.lm.auto_batch_size` is divided by 8
    (training keeps every layer's activations and their gradients) or by 2 with activation
    checkpointing.
    """
    if cfg.ft_micro_batch > 0:
        return cfg.ft_micro_batch
    if next(model.parameters()).device.type != "cuda":
        return cfg.ft_batch  # on a CPU memory is not the limit: one pass per batch
    longest = max(len(ids) for ids, _ in pairs)
    rows = lm.auto_batch_size(model, longest, default=cfg.ft_batch)
    return max(1, min(cfg.ft_batch, rows // (2 if cfg.ft_checkpointing else 8)))


def prepare(model, tokenizer, cfg):
    """Apply the memory options to a freshly loaded model (activation checkpointing); return both."""
    if cfg.ft_checkpointing:
        model.config.use_cache = False
        # transformers renamed the method (the old name warns from 5.x on and goes in 6).
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    return model, tokenizer


def step(model, pairs, pad: int, opt: torch.optim.Optimizer, cfg, micro: int | None = None) -> float:
    """One optimizer step on ``pairs`` (one batch of ``(input_ids, labels)``), in micro-batches.

    Args:
        micro: rows per forward pass (default :func:`micro_batch_size`).  ``micro >=
            len(pairs)`` is one forward pass over the batch with the model's own loss.

    Returns:
        The batch's mean answer-token loss.
    """
    device = next(model.parameters()).device
    micro = micro or micro_batch_size(model, pairs, cfg)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if cfg.ft_precision == "bf16-mixed"
        else contextlib.nullcontext()
    )
    opt.zero_grad(set_to_none=True)
    if micro >= len(pairs):  # the whole batch at once: the model's mean loss, as without these options
        ids, mask, labels = collate(pairs, pad)
        with autocast:
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        loss.backward()
        opt.step()
        return float(loss.detach())
    # Answer tokens the model predicts in the whole batch (labels shifted by one, as the loss does).
    n_tokens = sum(sum(t != -100 for t in y[1:]) for _, y in pairs)
    total = 0.0
    for s in range(0, len(pairs), micro):
        ids, mask, labels = collate(pairs[s : s + micro], pad)
        with autocast:
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        # Sum over this micro-batch's answer tokens, divided by the whole batch's count.
        loss = (
            torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1).to(device),
                ignore_index=-100,
                reduction="sum",
            )
            / n_tokens
        )
        loss.backward()
        total += float(loss.detach())
    opt.step()
    return total


def encode_examples(tokenizer, questions: list[str], answers: list[str], fmt: str):
    """Token ids and labels for answer-only loss.

    Returns:
        A list of ``(input_ids, labels)`` pairs; labels are -100 on the prompt
        tokens, so only the answer (and its closing newline) is learned.
    """
    check_format(fmt)
    prompts = [ft_prompt(fmt, q) for q in questions]
    p_ids, a_ids = lm.encode(tokenizer, prompts, [answer(a) for a in answers])
    return [(p + a, [-100] * len(p) + a) for p, a in zip(p_ids, a_ids)]
