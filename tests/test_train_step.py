"""Micro-batches with gradient accumulation give one big batch's step; mixed precision and checkpointing run."""

from __future__ import annotations

import copy
import dataclasses

import torch
from conftest import tiny_finetune_data

from newknowledge.core import config
from newknowledge.model import train_step


def _setup(tiny_model, tiny_world, **over):
    model, tok = tiny_model
    train, _ = tiny_finetune_data(tiny_world)
    cfg = dataclasses.replace(config.from_params({}).finetune, ft_batch=16, **over)
    pairs = train_step.encode_examples(tok, train["question"].tolist(), train["answer"].tolist(), "qa")
    return copy.deepcopy(model), tok, cfg, pairs


def _one_step(model, tok, cfg, pairs, micro):
    # Plain SGD with lr 1: the change of each weight is minus its gradient (Adam's first step,
    # about lr * sign(g), would magnify float noise of near-zero gradients).
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss = train_step.step(model, pairs, tok.pad_token_id, opt, cfg, micro=micro)
    return loss, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_micro_batches_give_the_big_batch_step(tiny_model, tiny_world):
    model, tok, cfg, pairs = _setup(tiny_model, tiny_world)
    big_loss, big = _one_step(copy.deepcopy(model), tok, cfg, pairs, micro=len(pairs))
    for micro in (1, 3, 5):
        loss, small = _one_step(copy.deepcopy(model), tok, cfg, pairs, micro=micro)
        assert abs(loss - big_loss) < 1e-5
        for name in big:
            torch.testing.assert_close(small[name], big[name], rtol=1e-4, atol=1e-6)


def test_mixed_precision_keeps_fp32_weights_and_moves_them(tiny_model, tiny_world):
    model, tok, cfg, pairs = _setup(tiny_model, tiny_world, ft_precision="bf16-mixed")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, after = _one_step(model, tok, cfg, pairs, micro=4)
    assert all(p.dtype == torch.float32 for p in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_checkpointing_gives_the_same_step(tiny_model, tiny_world):
    model, tok, cfg, pairs = _setup(tiny_model, tiny_world)
    _, plain = _one_step(copy.deepcopy(model), tok, cfg, pairs, micro=8)
    ck_model, _ = train_step.prepare(copy.deepcopy(model), tok, dataclasses.replace(cfg, ft_checkpointing=True))
    _, ck = _one_step(ck_model, tok, cfg, pairs, micro=8)
    for name in plain:
        torch.testing.assert_close(ck[name], plain[name], rtol=1e-4, atol=1e-6)


def test_cpu_uses_the_whole_batch(tiny_model, tiny_world):
    model, tok, cfg, pairs = _setup(tiny_model, tiny_world)
    assert train_step.micro_batch_size(model, pairs, cfg) == cfg.ft_batch
    assert train_step.micro_batch_size(model, pairs, dataclasses.replace(cfg, ft_micro_batch=4)) == 4
