"""Fine-tuning (paper Sec. 4): answer-only loss, records, resume, and the record analyses."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from conftest import tiny_finetune_data

from newknowledge.core.config import FinetuneConfig
from newknowledge.evaluation import analysis
from newknowledge.finetuning import finetune, run_store
from newknowledge.model import train_step


def test_answer_only_loss_masks_the_question_tokens(tiny_model):
    _, tok = tiny_model
    ((ids, labels),) = train_step.encode_examples(tok, ["Where was Foo born?"], ["Zed Town"], "qa")
    prompt_len = len(tok("Q: Where was Foo born? A:")["input_ids"])
    assert labels[:prompt_len] == [-100] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert tok.decode(ids[prompt_len:]) == " Zed Town\n"


def test_unknown_format_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="unknown ft_format 'chat'"):
        train_step.encode_examples(tiny_model[1], ["q"], ["a"], "chat")


def _data(tiny_world):
    return tiny_finetune_data(tiny_world)


# The probe's own format, which the tiny model answers zero-shot (in an unlearned format its rare
# correct generations can come through a non-canonical BPE split that teacher forcing does not score).
CFG = FinetuneConfig(ft_format="qa", ft_epochs=3, ft_batch=4, ft_lr=1e-3, ft_eval_batch=32, ft_dropout=0.0)


def test_records_have_one_row_per_example_and_epoch(tiny_model_path, tiny_world):
    train, ev = _data(tiny_world)
    path = finetune.train_run(run_store.RunSpec(str(tiny_model_path), "unknown_50", 0, CFG), train, ev)
    rec = run_store.load_records([path])
    assert sorted(rec.epoch.unique()) == [0, 1, 2, 3]
    assert (rec[rec.split == "train"].groupby("epoch").size() == len(train)).all()
    assert (rec[rec.split != "train"].groupby("epoch").size() == len(ev)).all()
    assert (path / "done.json").exists() and not (path / "checkpoint.pt").exists()
    # Training moved the model: train accuracy is not frozen at its epoch-0 value.
    tr = rec[rec.split == "train"].groupby("epoch")["correct"].mean()
    assert tr.loc[3] > tr.loc[0]


def test_resume_after_a_kill_gives_identical_records(tiny_model_path, tiny_world, tmp_path, monkeypatch):
    train, ev = _data(tiny_world)
    spec = run_store.RunSpec(str(tiny_model_path), "unknown_25", 1, CFG)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "a"))
    full = run_store.load_records([finetune.train_run(spec, train, ev)])
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "b"))
    path = finetune.train_run(spec, train, ev, stop_after=1)  # "killed" after one epoch
    assert not (path / "done.json").exists() and (path / "checkpoint.pt").exists()
    (path / "epoch_002.tmp").write_text("half-written")  # debris of the kill is ignored
    resumed = run_store.load_records([finetune.train_run(spec, train, ev)])
    pd.testing.assert_frame_equal(full, resumed)


def test_finished_runs_are_skipped(tiny_model_path, tiny_world):
    train, ev = _data(tiny_world)
    spec = run_store.RunSpec(str(tiny_model_path), "unknown_50", 0, CFG)
    path = finetune.train_run(spec, train, ev)
    stamp = (path / "epoch_003.parquet").stat().st_mtime_ns
    finetune.run_all([(spec, train, ev)])
    assert (path / "epoch_003.parquet").stat().st_mtime_ns == stamp


def test_generation_and_teacher_forcing_give_the_same_flags(tiny_model, tiny_world):
    model, tok = tiny_model
    train, _ = _data(tiny_world)
    q, a = train.question.tolist(), train.answer.tolist()
    tf = finetune.correct_flags(model, tok, q, a, CFG)
    gen = finetune.correct_flags(model, tok, q, a, dataclasses.replace(CFG, ft_eval="generate"))
    assert tf.tolist() == gen.tolist()


def _records():
    """Hand-made records: two runs, 3 epochs, 4 train examples (2 Unknown), 4 dev, 4 test."""
    rows = []
    for variant in ("unknown_0", "unknown_50"):
        for epoch in range(3):
            for ex in range(4):
                unk = variant == "unknown_50" and ex >= 2
                rows.append(
                    (variant, 0, epoch, "train", ex, "Unknown" if unk else "HighlyKnown", epoch >= (2 if unk else 1))
                )
                rows.append((variant, 0, epoch, "dev", ex, "HighlyKnown", ex < (3 if epoch == 1 else 2)))
                rows.append((variant, 0, epoch, "test", ex, "HighlyKnown", ex < (4 - epoch)))
    return pd.DataFrame(rows, columns=["variant", "seed", "epoch", "split", "example", "category", "correct"])


def test_early_stop_is_the_best_dev_epoch():
    stops = analysis.early_stop(_records())
    assert stops.set_index("variant")["early_stop"].to_dict() == {"unknown_0": 1, "unknown_50": 1}
    assert (stops["convergence"] == 2).all()


def test_linear_points_count_fitted_known_and_unknown():
    pts = analysis.linear_points(_records(), size=4).set_index(["variant", "epoch"])
    assert pts.loc[("unknown_50", 1), ["kn", "unk", "acc"]].tolist() == [0.5, 0.0, 0.75]
    assert pts.loc[("unknown_50", 2), ["kn", "unk", "acc"]].tolist() == [0.5, 0.5, 0.5]
    assert pts.loc[("unknown_0", 2), ["kn", "unk"]].tolist() == [1.0, 0.0]
    assert 0 not in pts.index.get_level_values("epoch")


def test_harm_table_pairs_d_with_d_known():
    rec = _records()
    known = rec[(rec.variant == "unknown_50") & ~((rec.split == "train") & (rec.category == "Unknown"))]
    rec = pd.concat([rec, known.assign(variant="known_50")])
    h = analysis.harm_table(rec)
    assert set(h["data"]) == {"D", "D_Known"}
    assert set(h.loc[h.data == "D_Known", "pct_unknown"]) == {0.0, 50.0}
    es = h[(h.duration == "EARLY_STOP") & (h.data == "D") & (h.pct_unknown == 50)]
    assert es["accuracy"].item() == 0.75


def test_a_run_in_training_is_locked_and_a_second_caller_waits_then_reads_it(tiny_model_path, tiny_world):
    import fcntl
    import threading

    train, ev = _data(tiny_world)
    spec = run_store.RunSpec(str(tiny_model_path), "unknown_0", 3, CFG)
    path = finetune.train_run(spec, train, ev)
    stamp = (path / "epoch_003.parquet").stat().st_mtime_ns
    with run_store.claimed([path]):  # as another build would hold it while training
        with open(path / ".lock") as f, pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = threading.Thread(target=finetune.train_run, args=(spec, train, ev))
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive()  # waits for the holder
    second.join(timeout=30)
    assert not second.is_alive()  # then finds the run done and trains nothing
    assert (path / "epoch_003.parquet").stat().st_mtime_ns == stamp
    with open(path / ".lock") as f:  # released
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
