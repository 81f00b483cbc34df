"""The epoch profile (benchmarks/bench_epoch_profile.py) on the tiny model: its parts add up to the epoch."""

import numpy as np
import pytest
import torch
from conftest import load_script

from newknowledge.core.config import FinetuneConfig
from newknowledge.finetuning import run_store
from newknowledge.model import engine, lm, train_step


def _bench():
    return load_script("benchmarks/bench_epoch_profile.py")


@pytest.fixture(scope="module")
def profiled(tiny_model_path, tiny_world):
    facts = tiny_world[1]
    train = facts[facts.split == "train"].head(12).reset_index(drop=True)
    train["category"] = np.where(np.arange(len(train)) % 2, "Unknown", "HighlyKnown")
    evals = facts[facts.split != "train"].reset_index(drop=True)
    evals = evals.assign(example=np.arange(len(evals)), category="Unknown")
    cfg = FinetuneConfig(ft_format="qa", ft_epochs=2, ft_batch=4, ft_eval_batch=8, ft_dropout=0.0)
    spec = run_store.RunSpec(str(tiny_model_path), "profile", 0, cfg)
    bench = _bench()
    return bench, bench.profile_epoch(spec, train, evals), train, evals


def test_the_parts_are_non_negative_and_add_up_to_the_epoch(profiled):
    bench, result, _, evals = profiled
    seconds = result["seconds"]
    splits = [f"eval: {s}" for s in dict.fromkeys(evals["split"])]
    assert set(seconds) == {*bench.TRAIN_PARTS, "eval: train flags", *splits, "saving", *bench.OVERHEAD}
    assert all(v >= 0 for v in seconds.values()), seconds
    assert result["total"] > 0
    assert sum(seconds.values()) == pytest.approx(result["total"], rel=1e-9)
    for part in (*bench.TRAIN_PARTS, "eval: train flags", *splits):
        assert seconds[part] > 0, part


def test_padding_waste_is_a_share_and_the_rows_are_every_example_and_question(profiled):
    _, result, train, evals = profiled
    assert set(result["padding"]) >= {"training", "evaluation", "eval: train flags"}
    assert all(0 <= v < 1 for v in result["padding"].values()), result["padding"]
    assert result["rows"]["training"] == len(train) == result["rows"]["eval: train flags"]
    assert result["rows"]["evaluation"] == len(train) + len(evals)
    for split, n in evals["split"].value_counts().items():
        assert result["rows"][f"eval: {split}"] == n


def test_the_package_functions_are_restored_after_the_profile(profiled):
    bench = profiled[0]
    wrapped = [lm.load, lm.answer_ids, engine.prefill, train_step.step, train_step.collate, torch.Tensor.backward]
    wrapped += [bench.finetune.correct_flags, run_store.save_epoch]
    assert not [f.__qualname__ for f in wrapped if "<locals>" in f.__qualname__]
