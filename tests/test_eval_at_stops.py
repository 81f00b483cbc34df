"""Evaluation where it is read (issue 22, item 3): a run's test and OOD-test questions only at the epochs
where EARLY_STOP or CONVERGENCE can fall (``run_store.Watch``), the same flags there, by either path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_finetune_data

from newknowledge.book import pipeline
from newknowledge.core.config import FinetuneConfig
from newknowledge.evaluation import analysis
from newknowledge.finetuning import finetune, grouped, run_store

CFG = FinetuneConfig(
    ft_format="qa", ft_epochs=6, ft_batch=4, ft_lr=1e-3, ft_eval_batch=32, ft_dropout=0.0, ft_grouped=True
)
LATE = ("test", "ood_test")


def _evals(tiny_world):
    """Dev, test and OOD-test questions (6, 6 and 4), so the late splits are a part of the evaluation."""
    facts = tiny_world[1]
    parts = [facts[facts.split == s].head(n) for s, n in (("dev", 6), ("test", 6), ("ood_test", 4))]
    ev = pd.concat(parts, ignore_index=True)
    assert set(ev.split) == {"dev", "test", "ood_test"}
    return ev.assign(example=np.arange(len(ev)), category="Unknown")


def _expected_epochs(full: pd.DataFrame, last: int) -> set[int]:
    """Epoch 0, the last, and every epoch >= 1 whose dev accuracy beats all earlier ones (>= 1)."""
    dev = full[full.split == "dev"].groupby("epoch")["correct"].mean()
    out, best = {0, last}, -1.0
    for epoch, acc in dev.items():
        if epoch >= 1 and acc > best:
            out.add(int(epoch))
        if epoch >= 1:
            best = max(best, acc)
    return out


def _key(rec):
    return rec.sort_values(["epoch", "split", "example"]).reset_index(drop=True)


def _check(sparse: pd.DataFrame, full: pd.DataFrame, last: int) -> None:
    late = sparse.split.isin(LATE)
    # dev and the fitted flags at every epoch, as a run evaluated every epoch records them
    pd.testing.assert_frame_equal(_key(sparse[~late]), _key(full[~full.split.isin(LATE)]))
    # the late splits at the candidate epochs only, with the same flags there
    assert set(sparse[late].epoch) == _expected_epochs(full, last)
    want = full[full.split.isin(LATE) & full.epoch.isin(set(sparse[late].epoch))]
    pd.testing.assert_frame_equal(_key(sparse[late]), _key(want))
    # what chapters 5-7 read: the records at EARLY_STOP and CONVERGENCE
    pd.testing.assert_frame_equal(_key(analysis.at_stops(sparse, "test")), _key(analysis.at_stops(full, "test")))


def test_the_watch_records_the_late_splits_at_epoch_0_new_best_dev_epochs_and_the_last(tmp_path):
    ev = pd.DataFrame({"split": ["dev", "dev", "test", "ood_test"]})
    spec = run_store.RunSpec("m", "HighlyKnown", 0, dataclasses.replace(CFG, ft_epochs=5), at_stops=LATE)
    w = run_store.Watch(spec, ev, tmp_path)
    assert w.late.tolist() == [False, False, True, True]
    # dev accuracy 0.5 at epochs 0-2, 1.0 at 3, 0.5 at 4 and 5: epoch 1 (first), 3 (new best), 0 and 5 (last)
    devs = {0: [1, 0], 1: [1, 0], 2: [0, 1], 3: [1, 1], 4: [1, 0], 5: [0, 1]}
    assert [e for e, d in devs.items() if w.full(e, np.array(d, bool))] == [0, 1, 3, 5]
    shown, flags = w.evaluated(ev, np.array([True, False]))
    assert shown.split.tolist() == ["dev", "dev"] and flags.tolist() == [True, False]
    shown, flags = w.evaluated(ev, np.array([True, False]), np.array([False, True]))
    assert shown.split.tolist() == ev.split.tolist() and flags.tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="cannot hold 'dev'"):
        run_store.Watch(dataclasses.replace(spec, at_stops=("dev",)), ev, tmp_path)


def test_a_tie_with_the_best_dev_epoch_records_nothing_more(tmp_path):
    spec = run_store.RunSpec("m", "Unknown", 0, CFG, at_stops=LATE)
    w = run_store.Watch(spec, pd.DataFrame({"split": ["dev", "test"]}), tmp_path)
    assert [w.full(e, np.array([e % 2 == 1])) for e in range(4)] == [True, True, False, False]  # ties: no


def test_per_run_and_grouped_sparse_runs_record_the_full_runs_flags_where_they_evaluate(
    tiny_model_path, tiny_world, tmp_path, monkeypatch
):
    train, _ = tiny_finetune_data(tiny_world)
    ev = _evals(tiny_world)
    path = str(tiny_model_path)
    full_spec = run_store.RunSpec(path, "HighlyKnown", 0, CFG)
    sparse_spec = dataclasses.replace(full_spec, at_stops=LATE)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "full"))
    full = run_store.load_records([finetune.train_run(full_spec, train, ev)])
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "sparse"))
    p = finetune.train_run(sparse_spec, train, ev)
    assert p != run_store.run_dir(full_spec, train, ev)  # its own folder: it records less
    _check(run_store.load_records([p]), full, CFG.ft_epochs)
    assert len(set(run_store.load_records([p]).query("split == 'test'").epoch)) < CFG.ft_epochs + 1  # not vacuous
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "grouped"))
    other = dataclasses.replace(full_spec, variant="unknown_50", seed=1)  # a full run in the same group
    paths = grouped.train_group([(sparse_spec, train, ev), (other, train.head(11), ev)])
    _check(run_store.load_records([paths[0]]), full, CFG.ft_epochs)
    assert set(run_store.load_records([paths[1]]).query("split == 'test'").epoch) == set(range(CFG.ft_epochs + 1))


def test_a_killed_sparse_run_resumes_with_the_same_records(tiny_model_path, tiny_world, tmp_path, monkeypatch):
    train, _ = tiny_finetune_data(tiny_world)
    ev = _evals(tiny_world)
    spec = run_store.RunSpec(str(tiny_model_path), "WeaklyKnown", 0, CFG, at_stops=LATE)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "a"))
    whole = run_store.load_records(grouped.train_group([(spec, train, ev)]))
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "b"))
    killed = grouped.train_group([(spec, train, ev)], stop_after=3)[0]  # "killed" after three epochs
    assert not (killed / "done.json").exists()
    resumed = run_store.load_records([finetune.train_run(spec, train, ev)])  # the other path resumes it
    pd.testing.assert_frame_equal(_key(resumed), _key(whole))
    assert set(whole.query("split == 'test'").epoch) < set(range(CFG.ft_epochs + 1))  # some epochs were skipped


def test_only_section_4_runs_evaluate_test_questions_every_epoch():
    for name in ("unknown_0", "unknown_50", "known_50", "unknown_100"):
        assert pipeline.at_stops(name) == ()
    for name in ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown", "natural", "idk_50", "idk_100"):
        assert pipeline.at_stops(name) == pipeline.AT_STOPS


def test_a_finished_run_recorded_every_epoch_is_read_instead_of_training_it_again(
    tiny_model_path, tiny_world, tmp_path, monkeypatch
):
    train, _ = tiny_finetune_data(tiny_world)
    ev = _evals(tiny_world)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path))
    every = run_store.RunSpec(str(tiny_model_path), "MaybeKnown", 0, dataclasses.replace(CFG, ft_epochs=2))
    (path,) = finetune.run_all([(every, train, ev)])
    stamp = (path / "done.json").stat().st_mtime_ns
    sparse = dataclasses.replace(every, at_stops=LATE)
    assert finetune.run_all([(sparse, train, ev)]) == [path]  # the run that recorded more, not retrained
    assert (path / "done.json").stat().st_mtime_ns == stamp
    assert not run_store.run_dir(sparse, train, ev, in_group=True).exists()
    other = dataclasses.replace(sparse, seed=1)  # no finished twin: trained, in a folder of its own
    (own,) = finetune.run_all([(other, train, ev)])
    assert own == run_store.run_dir(other, train, ev, in_group=True) and (own / "done.json").exists()
