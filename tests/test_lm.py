"""The model engine: save/reload parity, teacher forcing vs generation, stop handling."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from newknowledge.core import config
from newknowledge.core.metrics import exact_match
from newknowledge.data import world
from newknowledge.knowledge import slick
from newknowledge.model import lm, pretrain


def test_save_and_reload_gives_identical_logits_and_greedy_answers(tiny_model, tiny_model_path, tmp_path):
    model, tok = tiny_model
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model2, tok2 = lm.load(str(tmp_path / "m"), device="cpu")
    prompts = ["Q: Who owns Bar? A:", "Q: Where was Foo born? A: Zed\nQ: Who is X married to? A:"]
    ids = tok(prompts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, model2(input_ids=ids).logits)
    assert lm.decode(model, tok, prompts)[0] == lm.decode(model2, tok2, prompts)[0]


def _prompts(facts: pd.DataFrame, tiny_study, n=40):
    dev = facts[facts.split == "dev"]
    table = facts[facts.split.isin(["train", "test"])].head(n)
    return slick.prompts(table, dev, tiny_study.slick), table


def test_teacher_forced_greedy_check_agrees_with_real_greedy_decoding(tiny_model, tiny_world, tiny_study):
    model, tok = tiny_model
    pr, _ = _prompts(tiny_world[1], tiny_study)
    prompts = pr["prompt"].tolist()
    greedy, _ = lm.decode(model, tok, prompts, max_new_tokens=12)
    # Answers that ended with a stop token within the budget (not cut by max_new_tokens).
    stopped = np.array([0 < len(tok(" " + g, add_special_tokens=False)["input_ids"]) < 11 for g in greedy])
    assert stopped.sum() >= len(greedy) // 8, "the tiny model should answer a share of prompts"
    # Its own stopped greedy answers are, by teacher forcing, greedy-correct, except where decoding
    # reached the string through a non-canonical BPE split (teacher forcing scores the canonical one;
    # seen only on invented answers, e.g. " Cailnisalton" generated in other pieces than it tokenizes into) ...
    own = lm.score(model, tok, prompts, [g or "x" for g in greedy])
    assert own.greedy_correct[stopped].mean() >= 0.8
    # ... and a different answer is not.
    other = lm.score(model, tok, prompts, [g + " Zzq" for g in greedy])
    assert not other.greedy_correct.any()
    # Against the world's gold answers, both decide correctness the same way.
    golds = pr["example"].map(dict(enumerate(_prompts(tiny_world[1], tiny_study)[1]["answer"]))).tolist()
    tf = lm.score(model, tok, prompts, golds).greedy_correct
    assert tf.sum() >= 5, "the tiny model should know some facts, or this comparison is empty"
    assert tf.tolist() == [exact_match(g, a) for g, a in zip(greedy, golds)]


def test_exact_sampling_probability_matches_monte_carlo(tiny_model, tiny_world, tiny_study):
    model, tok = tiny_model
    pr, _ = _prompts(tiny_world[1], tiny_study, n=40)
    prompts = pr["prompt"].tolist()
    greedy, _ = lm.decode(model, tok, prompts, max_new_tokens=12)
    # Prompts whose greedy answer ended with a stop token (not cut by the token budget).
    keep = [i for i, g in enumerate(greedy) if 0 < len(tok(" " + g, add_special_tokens=False)["input_ids"]) < 11][:6]
    assert len(keep) == 6
    prompts, greedy = [prompts[i] for i in keep], [greedy[i] for i in keep]
    exact = lm.score(model, tok, prompts, greedy, temperature=1.0, top_k=40).p_sample
    gen = torch.Generator().manual_seed(0)
    _, samples = lm.decode(
        model, tok, prompts, n_samples=400, temperature=1.0, top_k=40, max_new_tokens=12, batch_size=800, generator=gen
    )
    mc = np.array([np.mean([s == g for s in ss]) for ss, g in zip(samples, greedy)])
    assert exact.max() > 0.1, "some greedy answers should be likely samples"
    assert np.all(np.abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / 400) + 0.01)


def test_batching_and_padding_do_not_change_answers(tiny_model, tiny_world, tiny_study):
    model, tok = tiny_model
    pr, _ = _prompts(tiny_world[1], tiny_study, n=10)
    prompts = pr["prompt"].tolist()
    batched, _ = lm.decode(model, tok, prompts, batch_size=64)
    single = [lm.decode(model, tok, [p], batch_size=1)[0][0] for p in prompts[:8]]
    assert batched[:8] == single
    s_batched = lm.score(model, tok, prompts[:8], batched[:8], batch_size=64).logprob
    s_single = [lm.score(model, tok, [p], [g], batch_size=1).logprob[0] for p, g in zip(prompts[:8], batched[:8])]
    assert np.allclose(s_batched, s_single, atol=1e-4)


def test_stop_tokens_are_eos_and_newline_tokens(tiny_model):
    _, tok = tiny_model
    mask = lm.stop_mask(tok, len(tok))
    assert mask[tok.eos_token_id]
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    assert all(mask[i] for i in nl)
    word = tok(" the", add_special_tokens=False)["input_ids"]
    assert not any(mask[i] for i in word)


def test_answers_are_cut_at_the_end_of_the_line():
    assert lm._cut(" Paris\nQ: next") == "Paris"
    assert lm._cut(" Paris") == "Paris"


def test_corpus_lines_all_end_with_newline(tiny_world, tiny_study):
    # Without a newline before EOS, few-shot answers end in EOS and greedy answers "fail".
    facts = tiny_world[1]
    docs = pretrain.documents(facts.assign(exposures=3), tiny_study.pretrain, np.random.default_rng(0))
    assert docs and all(d.endswith("\n") for d in docs)
    assert any(d.startswith("Q: ") for d in docs) and any(not d.startswith("Q: ") for d in docs)


@pytest.mark.parametrize("name", ["/no/such/folder", "./mine", "~/models/x", "a/b/c", "org/name-", ""])
def test_a_model_that_is_neither_a_folder_nor_a_hub_id_is_named_with_the_fix(name):
    with pytest.raises(config.ConfigError, match=re.escape(f"model {name!r} ") + r".*fix: pass -p model"):
        lm.load(name)  # fails before anything is read: no network, no Hub call


def test_a_file_given_as_the_model_says_it_is_a_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(config.ConfigError, match="is a file, not a folder"):
        lm.load(str(tmp_path / "model.safetensors"))


@pytest.mark.parametrize("name", ["gpt2", "meta-llama/Llama-3.1-8B", "EleutherAI/pythia-70m"])
def test_hub_ids_pass_the_name_check(name):
    assert lm.check_model_name(name) is None


def test_pretraining_cut_off_resumes_to_the_same_model(tiny_study, tiny_world, tmp_path):
    # A build killed halfway continues from its checkpoint and ends with the uncut build's weights.
    facts = world.generate(tiny_study.world)
    whole = pretrain.train(facts, tiny_study.pretrain, tmp_path / "whole")
    cut = tmp_path / "cut"
    cut.mkdir()
    assert pretrain.train(facts, tiny_study.pretrain, cut, resume=cut, stop_after=7) == {}
    assert (cut / "checkpoint.pt").exists() and not (cut / "model").exists()
    resumed = pretrain.train(facts, tiny_study.pretrain, cut, resume=cut)
    assert resumed["steps"] == whole["steps"] and resumed["final_loss"] == whole["final_loss"]
    a = lm.load(str(tmp_path / "whole" / "model"), device="cpu")[0].state_dict()
    b = lm.load(str(cut / "model"), device="cpu")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
