"""World v2 (issue 12): the mechanisms behind the paper's preconditions.

A natural dev split, the paper's fine-tuning format absent from pretraining,
several Q/A templates in the corpus, reproducible dropout, and the setup
checks' own arithmetic (popular-answer baseline, Known facts never exposed,
D - D_Known at every epoch).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import load_script, tiny_finetune_data
from scipy import stats as sps

from newknowledge.core import config, prompts
from newknowledge.core.config import FinetuneConfig
from newknowledge.data import world
from newknowledge.evaluation import analysis
from newknowledge.finetuning import finetune, run_store
from newknowledge.model import pretrain, train_step

SIZES = {"n_train": 300, "n_dev": 300, "n_test": 100, "n_ood_test": 10}


def _facts(**params):
    return world.generate(config.from_params({**SIZES, **params}).world)


def test_dev_split_is_drawn_with_the_natural_exposure_law():
    facts = _facts(dev_exposures="natural")
    dev = facts.loc[facts.split == "dev", "exposures"]
    train = facts.loc[facts.split == "train", "exposures"]
    # Same law: a third never exposed, the same heavy tail (two-sample KS test cannot tell them apart).
    assert abs((dev == 0).mean() - 1 / 3) < 0.03
    assert sps.ks_2samp(dev, train).pvalue > 0.01
    assert dev.max() > 25 and (dev == 1).any()


def test_uniform_dev_split_keeps_the_old_well_known_exemplars():
    facts = _facts(dev_exposures="uniform")
    dev = facts.loc[facts.split == "dev", "exposures"]
    assert dev.between(15, 25).all()
    with pytest.raises(config.ConfigError, match="dev_exposures must be"):
        config.from_params({"dev_exposures": "exemplars"})


@pytest.mark.parametrize("templates", [1, len(prompts.QA_TEMPLATES)])
def test_fine_tuning_formats_never_appear_in_the_pretraining_corpus(templates):
    study = config.from_params({"n_train": 40, "n_dev": 10, "n_test": 10, "n_ood_test": 10, "qa_templates": templates})
    facts = world.generate(study.world)
    corpus = "".join(pretrain.documents(facts, study.pretrain, np.random.default_rng(0)))
    q = facts.question.iloc[0]
    for name in ("paper", "unseen"):
        prompt = prompts.FT_FORMATS[name]
        fixed = prompt.split("{q}")[0] or prompt.split("{q}")[1]  # the text the format adds to a question
        assert fixed.strip() and fixed not in corpus, (name, fixed)
    assert "Answer the following question." not in corpus
    # The probe's own line is there (SliCK's format), and with several templates the others too.
    assert prompts.probe_line(q, "x").split(q)[0] in corpus
    used = sum(t.split("{q}")[1] + " " in corpus for t in prompts.QA_TEMPLATES)  # " A: ", " Solution: ", ...
    assert used == templates


def test_one_template_corpus_is_the_old_corpus():
    study = config.from_params({"n_train": 40, "n_dev": 10, "n_test": 10, "n_ood_test": 10})
    facts = world.generate(study.world)
    docs = pretrain.documents(facts, study.pretrain, np.random.default_rng(0))
    assert all(line.startswith(("Q: ", "Check: ")) for d in docs for line in d.splitlines() if " A: " in line)


def test_qa_templates_out_of_range_is_rejected():
    with pytest.raises(config.ConfigError, match="qa_templates must be"):
        config.from_params({"qa_templates": len(prompts.QA_TEMPLATES) + 1})
    with pytest.raises(config.ConfigError, match="ft_dropout must be"):
        config.from_params({"ft_dropout": 1.5})


def test_paper_format_prompt_and_answer(tiny_model):
    _, tok = tiny_model
    ((ids, labels),) = train_step.encode_examples(tok, ["Where was Foo born?"], ["Zed Town"], "paper")
    n = sum(1 for x in labels if x == -100)
    assert tok.decode(ids[:n]) == "Answer the following question. Where was Foo born?"
    assert tok.decode(ids[n:]) == " Zed Town\n"


def test_set_dropout_reaches_every_dropout_layer(tiny_model_path):
    from newknowledge.model import lm

    model, _ = lm.load(str(tiny_model_path), device="cpu")
    n = finetune.set_dropout(model, 0.05)
    assert n > 0 and all(m.p == 0.05 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_dropout_run_resumes_to_identical_records(tiny_model_path, tiny_world, tmp_path, monkeypatch):
    train, ev = tiny_finetune_data(tiny_world)
    cfg = FinetuneConfig(ft_epochs=3, ft_batch=4, ft_lr=1e-3, ft_eval_batch=32, ft_dropout=0.3, ft_format="paper")
    spec = run_store.RunSpec(str(tiny_model_path), "unknown_50", 2, cfg)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "a"))
    full = run_store.load_records([finetune.train_run(spec, train, ev)])
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "b"))
    finetune.train_run(spec, train, ev, stop_after=2)
    resumed = run_store.load_records([finetune.train_run(spec, train, ev)])
    pd.testing.assert_frame_equal(full, resumed)


def _table():
    rows = [
        ("train", "P1", a, c, e)
        for a, c, e in [("x", "HighlyKnown", 5), ("x", "MaybeKnown", 0), ("y", "Unknown", 0), ("x", "Unknown", 1)]
    ]
    rows += [
        ("test", "P1", a, c, e)
        for a, c, e in [("x", "WeaklyKnown", 0), ("y", "HighlyKnown", 3), ("z", "Unknown", 0), ("y", "MaybeKnown", 2)]
    ]
    rows += [
        ("train", "P2", "u", "HighlyKnown", 2),
        ("test", "P2", "u", "Unknown", 0),
        ("ood_test", "P9", "u", "Unknown", 0),
    ]
    return pd.DataFrame(rows, columns=["split", "relation", "answer", "category", "exposures"])


def test_popular_answer_baseline_by_hand():
    base = analysis.popular_answer_baseline(_table()).set_index("relation")
    assert base.loc["P1", "popular"] == "x" and base.loc["P1", "train_share"] == 0.75
    assert base.loc["P1", "baseline"] == 0.25 and base.loc["P2", "baseline"] == 1.0
    assert base.loc["all", "baseline"] == pytest.approx(2 / 5) and base.loc["all", "n"] == 5


def test_known_never_exposed_by_hand():
    out = analysis.known_never_exposed(_table()).set_index("split")
    assert out.loc["train", ["known", "never_exposed"]].tolist() == [3, 1]
    assert out.loc["test", "share"] == pytest.approx(1 / 3)


def test_gap_by_epoch_pairs_d_with_d_known_at_every_epoch():
    rows = []
    for variant, acc in (("unknown_50", [0.5, 0.25]), ("known_50", [0.5, 0.75]), ("unknown_0", [0.5, 0.5])):
        for epoch, a in enumerate(acc):
            rows += [(variant, 0, epoch, "test", ex, "HighlyKnown", ex < 4 * a) for ex in range(4)]
    rec = pd.DataFrame(rows, columns=["variant", "seed", "epoch", "split", "example", "category", "correct"])
    gap = analysis.gap_by_epoch(rec).set_index(["pct_unknown", "epoch"])
    assert gap.loc[(50.0, 0), "gap"] == 0.0 and gap.loc[(50.0, 1), "gap"] == -0.5
    assert 0.0 not in gap.index.get_level_values("pct_unknown")  # X = 0 has no D_Known run of its own


def _world_design():
    return load_script("benchmarks/world_design.py")


def _screen_records(paper_hk: list[float], qa_hk: list[float]) -> pd.DataFrame:
    """Hand-built records of World v3's two screening runs: 10 HighlyKnown dev questions whose share
    answered at epoch e is the list's e-th value, one test and one train question per epoch."""
    rows = []
    for variant, curve in (("paper", paper_hk), ("qa", qa_hk)):
        for epoch, share in enumerate(curve):
            for q in range(10):
                rows.append((variant, 0, epoch, "dev", q, "HighlyKnown", q < round(10 * share)))
            rows.append((variant, 0, epoch, "test", 10, "Unknown", False))
            rows.append((variant, 0, epoch, "train", 11, "HighlyKnown", epoch > 2))
    return pd.DataFrame(rows, columns=["variant", "seed", "epoch", "split", "example", "category", "correct"])


def test_world_v3_screening_keeps_a_candidate_that_learns_the_format_without_erosion():
    row = _world_design().screen_row(
        _screen_records(
            [0, 0.5, 0.7, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8], [1, 1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
        ),
        10,
    )
    assert row["hk_dev_best"] == 0.9 and row["hk_dev_best_epoch"] == 3 and row["qa_keep"] == 0.9
    assert row["survives"] and row["train_last"] == 1.0


@pytest.mark.parametrize(
    "paper, qa, failed",
    [
        ([0, 0.5, 0.6, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8], [1] * 11, "pass_s1"),  # format never reaches 85%
        (
            [0] + [0.9] * 10,
            [1, 1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8],
            "pass_s2",
        ),  # qa run eroded to 80% of epoch 0
        ([0.9] + [0.6] * 10, [1] * 11, "pass_s1"),  # epoch 0 does not count: the format must be learned
    ],
)
def test_world_v3_screening_drops_a_candidate_that_fails_either_criterion(paper, qa, failed):
    row = _world_design().screen_row(_screen_records(paper, qa), 10)
    assert not row[failed] and not row["survives"]


def _run(es=5, hk=0.95, train=1.0, hk0=0.0, hk_conv=0.9):
    return {"es_epoch": es, "dev_hk_es": hk, "train_conv": train, "dev_hk_0": hk0, "dev_hk_conv": hk_conv}


def _world():
    runs = {v: _run() for v in ("unknown_0", "unknown_50", "unknown_100", "known_50", "HighlyKnown", "idk_50")}
    runs["unknown_0 (qa)"] = _run(es=1, hk=0.99, hk0=0.99, hk_conv=0.95)  # its EARLY_STOP is not chapter 2/5/7's
    checks = {"knowledge.present.train": True, "knowledge.present.dev": True, "speed.zero_shot": True}
    return runs, checks


CH2 = ["unknown_0", "unknown_50", "unknown_100", "known_50"]


def test_world_v3_confirmation_criteria_all_hold():
    runs, checks = _world()
    assert all(_world_design().criteria(runs, CH2, checks, 147).values())


@pytest.mark.parametrize(
    "change, failed",
    [
        (lambda r, c: r["unknown_50"].update(dev_hk_es=0.72), "a"),  # a chapter-2 run below 90%
        (lambda r, c: r["unknown_0 (qa)"].update(dev_hk_conv=0.85), "b"),  # 86% of epoch 0 kept
        (lambda r, c: r.pop("unknown_0 (qa)"), "b"),  # no Known-only run: not met
        (lambda r, c: r["HighlyKnown"].update(es_epoch=1), "c"),  # chapter 5 stops at epoch 1
        (lambda r, c: r["idk_50"].update(train_conv=0.98), "d"),  # chapter 7 not converged
        (lambda r, c: c.update({"speed.zero_shot": False}), "e"),
        (lambda r, c: c.update({"knowledge.present.dev": False}), "f"),
    ],
)
def test_world_v3_confirmation_criteria_each_can_fail(change, failed):
    runs, checks = _world()
    change(runs, checks)
    crit = _world_design().criteria(runs, CH2, checks, 147)
    assert [k for k, v in crit.items() if not v] == [failed]


def test_world_v3_confirmation_criterion_f_needs_both_sizes_of_at_least_100():
    runs, checks = _world()
    assert not _world_design().criteria(runs, CH2, checks, 99)["f"]


def test_world_v3_run_summary_reads_early_stop_and_convergence():
    rec = _screen_records([0, 0.5, 0.9, 0.8, 0.7], [0, 0, 0, 0, 0])
    rec = rec[rec["variant"] == "paper"].assign(variant="unknown_0")
    r = _world_design().run_summary(rec)["unknown_0"]
    assert r["es_epoch"] == 2 and r["dev_hk_es"] == 0.9 and r["dev_hk_conv"] == 0.7 and r["train_conv"] == 1.0
