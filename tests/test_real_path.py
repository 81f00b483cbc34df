"""The real path: a Hugging Face Llama and an ENTITYQUESTIONS folder through the book's code.

A tiny ENTITYQUESTIONS folder in the real layout and a tiny Llama whose
tokenizer has the quirks of real ones (no pad token, a BOS added by the
post-processor, newlines merged into other tokens) are built on the fly, saved
with ``save_pretrained`` and loaded back with the ``Auto*`` classes, then run
through the code the book runs: ``config.from_params`` -> ``pipeline.prepare``
(SliCK, both estimators) -> ``finetune.train_run``, full and LoRA.

Two tokenizers, two ways real ones merge the newline:

- ``bytelevel`` (like Llama 3): the newline sticks to the word before it, so
  "Paris\\n" can be one token or "Pari" + "s\\n".
- ``metaspace`` (SentencePiece-like): only spaces split words, so the newline
  also merges with the next line's text ("s\\nQ:").
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from newknowledge.book import page, pipeline
from newknowledge.core import config
from newknowledge.core.config import ConfigError
from newknowledge.core.metrics import exact_match
from newknowledge.data import entityquestions as eq
from newknowledge.finetuning import finetune, run_store
from newknowledge.knowledge import categories, slick
from newknowledge.model import lm

TRAIN_RELS = ("P17", "P19")
OOD_REL = "P50"
# Small answer pools, so a popular answer can be guessed (MaybeKnown/WeaklyKnown exist).
POOLS = {
    "P17": ["Vokara", "Zimeland", "Pelosa", "Runeta"],
    "P19": ["Tafu", "Dosami", "Kelo Bay", "Nerupa", "Sazi"],
    "P50": ["Mira Voss", "Kai Lund", "Teo Ramm."],
    "P20": ["Tafu", "Kelo Bay"],
}
SIZES = {"train": 14, "dev": 8, "test": 6}
SHARED_SUBJECT = "Lomi Ketaru"  # a train subject that is also a test subject: dropped from train
# Tiny SliCK and fine-tuning settings; every other parameter keeps its default.
PARAMS = {
    "n_ex": 2,
    "n_samples": 2,
    "max_new_tokens": 8,
    "slick_batch": 0,
    "ft_epochs": 2,
    "ft_batch": 8,
    "ft_lr": 3e-3,
    "ft_eval_batch": 0,
    "workers": 1,
    "device": "cpu",
}


def _subjects(rng: np.random.Generator, n: int, used: set) -> list[str]:
    syl = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "sa", "do", "fu", "be", "gi"]
    out = []
    while len(out) < n:
        name = " ".join("".join(rng.choice(syl, 2)).capitalize() for _ in range(2))
        if name not in used:
            used.add(name)
            out.append(name)
    return out


def _write_folder(root) -> dict:
    """An ENTITYQUESTIONS folder: {split}/{Pid}.{split}.json; returns every (relation, split) list."""
    rng = np.random.default_rng(0)
    used: set = {SHARED_SUBJECT}
    data = {}
    for rel in (*TRAIN_RELS, OOD_REL, "P20"):  # P20 is one of the relations the paper drops
        for split, n in SIZES.items():
            pool = POOLS[rel]
            items = [
                {
                    "question": eq.TEMPLATES[rel].replace("[X]", s),
                    "answers": [pool[min(int(rng.zipf(1.6)) - 1, len(pool) - 1)]],
                }
                for s in _subjects(rng, n, used)
            ]
            data[rel, split] = items
    data["P17", "train"][3]["answers"].append("Pelosa Minor")  # multi-answer: dropped
    data["P19", "test"][2]["answers"] = ["Tafu", "Sazi"]  # multi-answer test question: dropped, subject held out
    data["P19", "train"][0]["question"] = eq.TEMPLATES["P19"].replace("[X]", SHARED_SUBJECT)
    data["P17", "test"][0]["question"] = eq.TEMPLATES["P17"].replace("[X]", SHARED_SUBJECT)
    for (rel, split), items in data.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / f"{rel}.{split}.json").write_text(json.dumps(items, indent=1))
    return data


def _lines(data: dict) -> dict[str, list[str]]:
    """Q/A lines per relation: every dev fact, and two thirds of the other facts (the rest stay unseen)."""
    out: dict[str, list[str]] = {}
    for (rel, split), items in sorted(data.items()):
        for k, it in enumerate(items):
            if split == "dev" or k % 3:
                out.setdefault(rel, []).append(f"Q: {it['question']} A: {it['answers'][0]}\n")
    return out


def _tokenizer(kind: str, texts: list[str]) -> PreTrainedTokenizerFast:
    """A BPE tokenizer with a BOS post-processor, an EOS and NO pad token."""
    tok = Tokenizer(models.BPE())
    if kind == "bytelevel":  # Llama 3 style: a word keeps the newlines after it ("Paris\n")
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r" ?[^\s]+\n*|\s+"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece style: only spaces split, "s\nQ:" is one word
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted(set("".join(texts)))
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=500, special_tokens=["<s>", "</s>"], initial_alphabet=alphabet, show_progress=False
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def _pretrain(model, tok, lines: dict[str, list[str]], steps: int = 150) -> None:
    """A few seconds of training on same-relation documents of Q/A lines, so the model answers in format."""
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        docs = []
        for _ in range(8):
            rel = sorted(lines)[rng.integers(len(lines))]
            docs.append("".join(rng.choice(lines[rel], 5, replace=False)))
        enc = [ids + [tok.eos_token_id] for ids in tok(docs)["input_ids"]]
        width = max(map(len, enc))
        ids = torch.tensor([e + [0] * (width - len(e)) for e in enc])
        labels = torch.tensor([e + [-100] * (width - len(e)) for e in enc])
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def eq_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("entityquestions")
    return root, _write_folder(root)


@pytest.fixture(scope="module", params=["bytelevel", "metaspace"])
def llama(request, eq_folder, tmp_path_factory):
    """(kind, folder) of a tiny Llama + tokenizer saved with save_pretrained."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = eq_folder[1]
    lines = _lines(data)
    every = [f"Q: {it['question']} A: {a}\n" for items in data.values() for it in items for a in it["answers"]]
    tok = _tokenizer(request.param, every)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    _pretrain(model, tok, lines)
    path = tmp_path_factory.mktemp(f"llama-{request.param}")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return request.param, str(path)


def _study(model_path: str, folder, **over) -> config.Study:
    return config.from_params({**PARAMS, "model": model_path, "eq_dir": str(folder), **over})


# --- data -------------------------------------------------------------------


def test_real_layout_loads_and_preprocesses_as_the_paper(eq_folder):
    root, data = eq_folder
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every relation of the real layout has a template
        raw = eq.load(root)
    facts = eq.preprocess(raw, verbose=False)
    counts = eq.counts_table(facts)
    assert set(facts["split"]) == {"train", "dev", "test", "ood_test"}
    assert set(facts.loc[facts.split == "ood_test", "relation"]) == {OOD_REL}
    assert "P20" not in set(facts["relation"])  # dropped relation
    assert counts.loc["P17", "train"] == SIZES["train"] - 1  # the multi-answer example
    assert counts.loc["P19", "train"] == SIZES["train"] - 1  # the subject shared with test
    assert counts.loc["P19", "test"] == SIZES["test"] - 1  # the multi-answer test question
    assert SHARED_SUBJECT not in set(facts.loc[facts.split == "train", "subject"])
    assert (counts.loc[list(TRAIN_RELS), "dev"] == SIZES["dev"]).all()
    assert len(eq.exemplar_pool(raw).query("relation == @OOD_REL")) >= 8  # OOD questions get exemplars


# --- the model engine on a real tokenizer ------------------------------------


def test_tokenizer_quirks_are_handled(llama):
    _, path = llama
    model, tok = lm.load(path, device="cpu")
    assert tok.pad_token_id == tok.eos_token_id  # it had none; pads are masked anyway
    # BOS exactly once, then the text; continuation ids are the rest of the joint tokenization.
    p_ids, c_ids = lm.encode(tok, ["Q: Where was Kalo Mi born? A:"], [" Tafu\n"])
    assert p_ids[0][0] == tok.bos_token_id and tok.bos_token_id not in p_ids[0][1:]
    assert tok.decode(p_ids[0] + c_ids[0], skip_special_tokens=True) == "Q: Where was Kalo Mi born? A: Tafu\n"
    # Newlines merged into other tokens: all are stop tokens, and the gold's line end is found.
    texts = lm.token_texts(tok)
    merged = [i for i, t in enumerate(texts) if "\n" in t and t.strip("\n")]
    assert merged, "the tokenizer should merge newlines into other tokens"
    stops = lm.stop_mask(tok, model.config.vocab_size)
    assert stops[merged].all() and stops[tok.eos_token_id] and not stops[tok.bos_token_id]
    words = tok(" Tafu", add_special_tokens=False)["input_ids"]
    assert not stops[words].any()
    p_ids, c_ids, rests = lm.answer_ids(tok, ["Q: Where was Kalo Mi born? A:"] * 2, ["Tafu", "Kelo Bay"])
    for c, rest, gold in zip(c_ids, rests, ["Tafu", "Kelo Bay"]):
        assert (tok.decode(c) + rest).strip() == gold


def test_save_and_reload_give_identical_logits_and_answers(llama, tmp_path):
    _, path = llama
    model, tok = lm.load(path, device="cpu")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model2, tok2 = lm.load(str(tmp_path / "m"), device="cpu")
    ids = torch.tensor(lm.encode(tok, ["Q: Who is the author of Kalo Mi? A:"])[0])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, model2(input_ids=ids).logits)
    prompts = ["Q: Where was Kalo Mi born? A: Tafu\nQ: Where was Sa Fu born? A:", "Q: Who owns X? A:"]
    assert lm.decode(model, tok, prompts) == lm.decode(model2, tok2, prompts)


def _slick_prompts(folder, study):
    raw = eq.load(folder)
    facts = eq.preprocess(raw, verbose=False)
    table = facts[facts.split != "dev"].reset_index(drop=True)
    pr = slick.prompts(table, eq.exemplar_pool(raw), study.slick)
    return pr["prompt"].tolist(), table["answer"].to_numpy()[pr["example"]].tolist()


def test_teacher_forcing_agrees_with_greedy_decoding(llama, eq_folder):
    _, path = llama
    model, tok = lm.load(path, device="cpu")
    prompts, golds = _slick_prompts(eq_folder[0], _study(path, eq_folder[0]))
    greedy, _ = lm.decode(model, tok, prompts, max_new_tokens=12)
    tf = lm.score(model, tok, prompts, golds).greedy_correct
    em = np.array([exact_match(g, a) for g, a in zip(greedy, golds)])
    assert em.sum() >= 10, "the pretrained tiny model should know some facts"
    assert tf.tolist() == em.tolist()
    # Its own answers that ended within the budget are greedy-correct by teacher forcing, others are not.
    stopped = [i for i, g in enumerate(greedy) if g and len(tok(" " + g, add_special_tokens=False)["input_ids"]) < 10]
    assert len(stopped) >= len(prompts) // 2
    own = lm.score(model, tok, [prompts[i] for i in stopped], [greedy[i] for i in stopped]).greedy_correct
    assert own.all()
    other = lm.score(model, tok, [prompts[i] for i in stopped], [greedy[i] + " Zq" for i in stopped])
    assert not other.greedy_correct.any()


# --- the book's code path ------------------------------------------------------


@pytest.mark.parametrize("estimator", ["sampling", "exact"])
def test_prepare_categorises_every_split_and_caches(llama, eq_folder, estimator, tmp_path, monkeypatch):
    _, path = llama
    study = _study(path, eq_folder[0], estimator=estimator)
    prep = pipeline.prepare(study)
    t = prep.table
    assert prep.world_dir is None and prep.model_path == path and "exposures" not in t
    assert set(t["split"]) == {"train", "dev", "test", "ood_test"}
    assert set(t["category"]) <= set(categories.CATEGORIES) and t["category"].nunique() >= 2
    assert t["p_greedy"].between(0, 1).all() and t["p_sample"].between(0, 1).all()
    assert set(prep.evals["split"]) == {"dev", "test", "ood_test"}
    page.describe(prep)
    # A rerun reads the cache: SliCK is not computed again.
    monkeypatch.setattr(slick, "categorize", lambda *a, **k: pytest.fail("SliCK recomputed"))
    pd.testing.assert_frame_equal(pipeline.prepare(study).table, t)
    monkeypatch.undo()
    # Same seed in an empty artifact store: the same table.
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "fresh"))
    pd.testing.assert_frame_equal(pipeline.prepare(study).table, t)


def test_paper_profile_needs_model_and_data():
    params = config.load_profile("paper")
    assert params["n_ex"] == 10 and params["n_samples"] == 16 and params["k_shot"] == 4
    study = config.from_params(params)
    with pytest.raises(ConfigError, match="MODEL=.*EQ_DIR=.*-p model"):
        pipeline.prepare(study)
    with pytest.raises(ConfigError, match="eq_dir=''"):
        pipeline.prepare(config.from_params({**params, "model": "some/model"}))


def _run(path, prep, variant, seed=0, **over):
    cfg = dataclasses.replace(prep.study.finetune, **over)
    train = prep.train.head(12)
    return finetune.train_run(run_store.RunSpec(path, variant, seed, cfg), train, prep.evals)


@pytest.fixture(scope="module")
def prepared(llama, eq_folder):
    _, path = llama
    return path, pipeline.prepare(_study(path, eq_folder[0], estimator="exact"))


def test_full_fine_tuning_records_two_epochs_and_reruns_from_cache(prepared, tmp_path, monkeypatch):
    path, prep = prepared
    run = _run(path, prep, "natural")
    rec = run_store.load_records([run])
    assert sorted(rec["epoch"].unique()) == [0, 1, 2]
    assert set(rec["split"]) == {"train", "dev", "test", "ood_test"}
    train = rec[rec.split == "train"].pivot(index="example", columns="epoch", values="correct")
    assert len(train) == 12 and (train[2] != train[0]).any()  # training moved the model
    stamp = (run / "epoch_002.parquet").stat().st_mtime_ns
    assert _run(path, prep, "natural") == run and (run / "epoch_002.parquet").stat().st_mtime_ns == stamp
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "again"))  # same seed, from scratch
    pd.testing.assert_frame_equal(run_store.load_records([_run(path, prep, "natural")]), rec)


def test_lora_trains_only_the_adapters_and_resumes_identically(prepared, tmp_path, monkeypatch):
    path, prep = prepared
    wrapped = []
    real_with_lora = finetune._with_lora
    monkeypatch.setattr(finetune, "_with_lora", lambda m, c: wrapped.append(real_with_lora(m, c)) or wrapped[-1])
    lora = {"lora_rank": 4, "lora_alpha": 8, "lora_targets": "q_proj,v_proj", "ft_lr": 1e-2}
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "a"))
    full = run_store.load_records([_run(path, prep, "natural", seed=3, **lora)])
    assert sorted(full["epoch"].unique()) == [0, 1, 2]
    model = wrapped[0]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    base, _ = lm.load(path, device="cpu")
    tuned = dict(model.named_parameters())
    q = "base_model.model.model.layers.0.self_attn.q_proj"
    assert torch.equal(tuned[f"{q}.base_layer.weight"], base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(tuned["base_model.model.lm_head.weight"], base.lm_head.weight)
    assert tuned[f"{q}.lora_B.default.weight"].abs().sum() > 0  # the adapters moved (lora_B starts at 0)
    # Killed after one epoch: the checkpoint holds the adapters only; resuming gives the same records.
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "b"))
    cfg = dataclasses.replace(prep.study.finetune, **lora)
    spec = run_store.RunSpec(path, "natural", 3, cfg)
    run = finetune.train_run(spec, prep.train.head(12), prep.evals, stop_after=1)
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert state and all("lora_" in n for n in state)
    resumed = run_store.load_records([finetune.train_run(spec, prep.train.head(12), prep.evals)])
    pd.testing.assert_frame_equal(full, resumed)


def test_auto_batch_size_uses_free_gpu_memory(llama, monkeypatch):
    _, path = llama
    model, _ = lm.load(path, device="cpu")
    assert lm.auto_batch_size(model, 64, default=7) == 7  # CPU: the default

    class FakeParam:
        device = torch.device("cuda")

        @staticmethod
        def element_size():
            return 2

    class OnGpu:
        config = model.config
        get_output_embeddings = model.get_output_embeddings

        @staticmethod
        def parameters():
            return iter([FakeParam()])

    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (gib, 2 * gib))
    short, long_ = lm.auto_batch_size(OnGpu, 64, default=7), lm.auto_batch_size(OnGpu, 4096, default=7)
    assert 1 <= long_ < short <= 1024
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 20, 2 * gib))
    assert lm.auto_batch_size(OnGpu, 4096, default=7) == 1
