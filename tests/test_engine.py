"""The inference engine: shared-prefix prefill, the in-place cache and the answer tree give the plain results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicLayer

from newknowledge.knowledge import slick
from newknowledge.model import engine, lm


def _prompts(tiny_world, tiny_study, n=40):
    facts = tiny_world[1]
    table = facts[facts.split.isin(["train", "test"])].head(n).reset_index(drop=True)
    pr = slick.prompts(table, facts[facts.split == "dev"], tiny_study.slick)
    golds = table["answer"].to_numpy()[pr["example"].to_numpy()].tolist()
    return pr["prompt"].tolist(), pr["prefix"].tolist(), golds


def test_prefix_cache_gives_the_plain_greedy_answers_and_scores(tiny_model, tiny_world, tiny_study):
    model, tok = tiny_model
    prompts, prefixes, golds = _prompts(tiny_world, tiny_study)
    assert len(set(prefixes)) < len(prefixes) / 2, "the exemplar lines should be shared"
    plain, _ = lm.decode(model, tok, prompts, max_new_tokens=16)
    shared, _ = lm.decode(model, tok, prompts, max_new_tokens=16, prefixes=prefixes)
    assert shared == plain
    for gold in (golds, plain):  # the world's answers, and the model's own greedy answers
        a = lm.score(model, tok, prompts, gold)
        b = lm.score(model, tok, prompts, gold, prefixes=prefixes, batch_size=7)
        assert a.greedy_correct.tolist() == b.greedy_correct.tolist()
        assert np.allclose(a.p_sample, b.p_sample, atol=1e-5) and np.allclose(a.logprob, b.logprob, atol=1e-4)
        assert b.greedy_correct.any(), "some answers should be greedy-correct, or the comparison is empty"


def test_prefix_that_splits_a_token_or_is_the_whole_prompt_still_gives_the_plain_results(
    tiny_model, tiny_world, tiny_study
):
    model, tok = tiny_model
    prompts, prefixes, golds = _prompts(tiny_world, tiny_study, n=4)
    odd = [
        p[: len(q) + 5] if k % 3 == 0 else p if k % 3 == 1 else q[:-7]
        for k, (p, q) in enumerate(zip(prompts, prefixes))
    ]  # mid-token cuts and whole prompts
    plain, _ = lm.decode(model, tok, prompts, max_new_tokens=8)
    assert lm.decode(model, tok, prompts, max_new_tokens=8, prefixes=odd)[0] == plain
    a = lm.score(model, tok, prompts, golds)
    b = lm.score(model, tok, prompts, golds, prefixes=odd)
    assert a.greedy_correct.tolist() == b.greedy_correct.tolist()
    assert np.allclose(a.logprob, b.logprob, atol=1e-4)


def test_greedy_only_scoring_gives_the_same_greedy_flags(tiny_model, tiny_world, tiny_study):
    model, tok = tiny_model
    prompts, prefixes, golds = _prompts(tiny_world, tiny_study, n=10)
    full = lm.score(model, tok, prompts, golds, prefixes=prefixes)
    fast = lm.score(model, tok, prompts, golds, prefixes=prefixes, greedy_only=True)
    assert fast.greedy_correct.tolist() == full.greedy_correct.tolist()
    assert np.isnan(fast.p_sample).all() and np.isnan(fast.logprob).all() and not np.isnan(full.p_sample).any()


def test_prefixes_must_begin_their_prompts(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="leading part"):
        lm.score(model, tok, ["Q: a A:"], ["b"], prefixes=["Q: b"])


def test_reserved_layer_holds_what_a_dynamic_layer_holds():
    torch.manual_seed(0)
    ours, ref = engine.ReservedLayer(reserve=1), DynamicLayer()  # reserve 1: the buffer must grow
    for length in (3, 1, 1, 2):
        k, v = torch.randn(4, 2, length, 5), torch.randn(4, 2, length, 5)
        for a, b in zip(ours.update(k, v), ref.update(k, v)):
            assert torch.equal(a, b)
    pick = torch.tensor([3, 1, 1])
    ours.batch_select_indices(pick)
    ref.batch_select_indices(pick)
    ours.batch_repeat_interleave(2)
    ref.batch_repeat_interleave(2)
    assert ours.get_seq_length() == ref.get_seq_length() == 7
    assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)


def test_answer_tree_step_draws_the_tempered_top_k_distribution():
    torch.manual_seed(0)
    logits = torch.randn(2, 50) * 2
    count, greedy = torch.tensor([200_000, 0]), torch.tensor([False, True])
    gen = torch.Generator().manual_seed(1)
    parent, token, n, follows = engine.branch(logits, count, greedy, temperature=0.5, top_k=5, generator=gen)
    # Row 1 has no samples: its one child is the argmax, carrying the greedy answer.
    assert parent[parent == 1].tolist() == [1] and token[parent == 1].item() == logits[1].argmax().item()
    assert follows.tolist() == (parent == 1).tolist()
    # Row 0: its samples split among its top-5 tokens as the tempered softmax says.
    assert n[parent == 0].sum().item() == 200_000
    probs = torch.exp(lm._top_k_logprobs(logits[0], 0.5, 5))
    freq = torch.zeros(50)
    freq[token[parent == 0]] = n[parent == 0].float() / 200_000
    assert torch.allclose(freq, probs, atol=0.005)


def test_decode_returns_every_sample_and_the_plain_greedy_answer_deterministically(tiny_model, tiny_world, tiny_study):
    model, tok = tiny_model
    prompts, prefixes, _ = _prompts(tiny_world, tiny_study, n=6)
    plain, none = lm.decode(model, tok, prompts, max_new_tokens=8)
    assert none == [[] for _ in prompts]
    runs = [
        lm.decode(
            model,
            tok,
            prompts,
            n_samples=16,
            max_new_tokens=8,
            prefixes=prefixes,
            generator=torch.Generator().manual_seed(3),
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    greedy, samples = runs[0]
    assert greedy == plain and all(len(s) == 16 for s in samples)
