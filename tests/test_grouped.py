"""Grouped fine-tuning (grouped.py, stacked.py): the same records as the per-run path, resume, the optimizer."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from conftest import tiny_finetune_data

from newknowledge.core.config import FinetuneConfig
from newknowledge.finetuning import finetune, grouped, run_store, stacked
from newknowledge.model import lm, train_step

# As tests/test_finetune.py: the format the tiny model answers zero-shot, and no dropout, with which
# both paths compute the same records (dropout: the tests at the end); grouping switched on (opt-in).
CFG = FinetuneConfig(
    ft_format="qa", ft_epochs=3, ft_batch=4, ft_lr=1e-3, ft_eval_batch=32, ft_dropout=0.0, ft_grouped=True
)


def _jobs(tiny_model_path, tiny_world, cfg=CFG):
    """Three runs of different sizes (16, 8 and 11 examples, so 4, 2 and 3 steps an epoch), two seeds.

    The third run is evaluated on a copy of the questions (another world's, as with
    ``seed_scope: world``): a group may mix evaluation sets.
    """
    train, ev = tiny_finetune_data(tiny_world)
    path = str(tiny_model_path)
    data = [train, train.iloc[::2].reset_index(drop=True), train.head(11)]
    specs = [
        run_store.RunSpec(path, "unknown_50", 0, cfg),
        run_store.RunSpec(path, "known_50", 0, cfg),
        run_store.RunSpec(path, "unknown_25", 1, cfg),
    ]
    return list(zip(specs, data, [ev, ev, ev.copy()]))


def _per_run(jobs):
    return [run_store.load_records([finetune.train_run(*job)]) for job in jobs]


def _records(paths):
    return [run_store.load_records([p]) for p in paths]


def test_grouped_records_equal_the_per_run_records(tiny_model_path, tiny_world, tmp_path, monkeypatch):
    jobs = _jobs(tiny_model_path, tiny_world)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "single"))
    single = _per_run(jobs)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "grouped"))
    paths = grouped.train_group(jobs)
    for path, want in zip(paths, single):
        assert (path / "done.json").exists() and not (path / "checkpoint.pt").exists()
        # Every fitted and evaluation flag is identical: the logits differ by float rounding
        # only (about 1e-5, see test_stacked_forward_matches_hugging_face).
        pd.testing.assert_frame_equal(run_store.load_records([path]), want)
    assert single[1].epoch.max() == 3
    fitted = single[0][single[0].split == "train"].groupby("epoch")["correct"].mean()
    assert fitted.loc[3] > fitted.loc[0]  # the runs learned: equal records are not frozen ones


def test_a_killed_group_resumes_by_either_path_with_identical_records(
    tiny_model_path, tiny_world, tmp_path, monkeypatch
):
    jobs = _jobs(tiny_model_path, tiny_world)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "full"))
    full = _records(grouped.train_group(jobs))
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "killed"))
    paths = grouped.train_group(jobs, stop_after=1)  # "killed" after one epoch
    assert all((p / "checkpoint.pt").exists() and not (p / "done.json").exists() for p in paths)
    (paths[0] / "epoch_002.tmp").write_text("half-written")  # debris of the kill is ignored
    # The first run resumes alone on the per-run path; the other two resume as a group.
    resumed = _per_run(jobs[:1]) + _records(grouped.train_group(jobs[1:]))
    for got, want in zip(resumed, full):
        pd.testing.assert_frame_equal(got, want)


def test_a_per_run_checkpoint_resumes_in_a_group(tiny_model_path, tiny_world, tmp_path, monkeypatch):
    jobs = _jobs(tiny_model_path, tiny_world)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "a"))
    want = _per_run(jobs[:2])
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "b"))
    finetune.train_run(*jobs[0], stop_after=2)  # at epoch 2; the other run not started
    got = _records(grouped.train_group(jobs[:2]))
    for g, w in zip(got, want):
        pd.testing.assert_frame_equal(g, w)


def test_run_all_groups_what_it_can_and_the_switch_turns_it_off(tiny_model_path, tiny_world, tmp_path, monkeypatch):
    jobs = _jobs(tiny_model_path, tiny_world, dataclasses.replace(CFG, ft_epochs=1))
    specs = [s for s, _, _ in jobs]
    assert grouped.plan(specs, workers=1) == ([[0, 1, 2]], [])
    assert grouped.plan(specs, workers=2) == ([[0, 2], [1]], [])
    sized = [dataclasses.replace(s, cfg=dataclasses.replace(s.cfg, ft_group_size=2)) for s in specs]
    assert grouped.plan(sized, workers=1) == ([[0, 2], [1]], [])
    # What the stacked model does not compute as the per-run path does stays there.
    per_run = [
        dataclasses.replace(specs[0], variant="idk_50"),
        dataclasses.replace(specs[0], device="cuda"),
        dataclasses.replace(specs[0], dtype="bfloat16"),
    ]
    per_run += [
        dataclasses.replace(specs[0], cfg=dataclasses.replace(CFG, **{k: v}))
        for k, v in [
            ("lora_rank", 4),
            ("ft_grouped", False),
            ("ft_eval", "generate"),
            ("ft_precision", "bf16-mixed"),
            ("ft_micro_batch", 2),
            ("ft_checkpointing", True),
        ]
    ]
    assert grouped.plan(per_run, workers=1) == ([], list(range(len(per_run))))
    assert grouped.groupable(dataclasses.replace(specs[0], cfg=dataclasses.replace(CFG, ft_micro_batch=4)))
    calls = []
    monkeypatch.setattr(finetune, "train_run", lambda *a, **k: calls.append(a))
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "grouped"))
    paths = finetune.run_all(jobs, workers=1)
    assert not calls and all((p / "done.json").exists() for p in paths)  # all three trained as one group
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "off"))
    finetune.run_all([(per_run[0], *jobs[0][1:]), (per_run[4], *jobs[1][1:])], workers=1)
    assert len(calls) == 2  # D_IDK and ft_grouped: false take the per-run path


def test_stacked_forward_matches_hugging_face(tiny_model, tiny_world):
    model, tok = tiny_model
    train, _ = tiny_finetune_data(tiny_world)
    ids, mask, _ = train_step.collate(
        train_step.encode_examples(tok, train.question.tolist(), train.answer.tolist(), "qa")[:6], tok.pad_token_id
    )
    stack = stacked.Stack(model, 2, lr=1e-3)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits  # right-padded, as in training
        h = stack.hidden(ids.expand(2, -1, -1).contiguous())
        got = stack.logits_at(h, torch.arange(ids.numel()).expand(2, -1)).view(2, *want.shape)
    real = mask.bool()
    for r in range(2):
        torch.testing.assert_close(got[r][real], want[real], atol=1e-4, rtol=1e-4)
    # Rows that open alike: the shared tokens run once (evaluation's prefix), the same logits after them.
    ids[:, :3] = ids[0, :3]
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits[:, 3:]
        h = stack.hidden(ids[None, :, 3:].expand(2, -1, -1).contiguous(), prefix=ids[:1, :3].expand(2, -1))
        got = stack.logits_at(h, torch.arange(ids[:, 3:].numel()).expand(2, -1)).view(2, *want.shape)
    torch.testing.assert_close(got[1][real[:, 3:]], want[real[:, 3:]], atol=1e-4, rtol=1e-4)


def test_stacked_adamw_is_torch_adamw_with_a_step_count_per_run(tiny_model):
    """Bit for bit, weight decay included, for a run that skips steps; the checkpoint state loads into torch's."""
    model, _ = tiny_model
    ref = lm.load(model.name_or_path, device="cpu")[0]
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.1)
    stack = stacked.Stack(model, 3, lr=1e-3, weight_decay=0.1)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        grads = {n: torch.randn(p.shape, generator=gen) for n, p in ref.named_parameters()}
        for n, p in ref.named_parameters():
            p.grad = grads[n].clone()
        opt.step()
        runs = [0, 1] if step == 0 else [1]  # run 0 steps once, run 2 never
        for n, p in stack.params.items():
            p.grad = torch.zeros_like(p)
            p.grad[runs] = grads[n]
        stack.adamw_step(torch.tensor(runs))
    for n, p in ref.named_parameters():
        assert torch.equal(stack.params[n][1], p.detach()), n
        assert torch.equal(stack.params[n][2], base[n]), n  # no batch, no move
    assert stack.steps.tolist() == [1, 4, 0]
    weights, state = stack.run_state(1, opt.state_dict())
    fresh = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.1)
    fresh.load_state_dict(state)
    for (i, a), b in zip(opt.state_dict()["state"].items(), fresh.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq")), i


DROP = dataclasses.replace(CFG, ft_dropout=0.2)


def test_dropout_masks_belong_to_the_run(tiny_model_path, tiny_world, tmp_path, monkeypatch):
    """With dropout a run's records do not depend on its group, and survive a kill; without, they differ."""
    jobs = _jobs(tiny_model_path, tiny_world, DROP)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "alone"))
    alone = run_store.load_records(grouped.train_group(jobs[:1]))
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "group"))
    grouped.train_group(jobs, stop_after=1)
    # Killed after epoch 1; the first run resumes in another group, the others alone.
    together = run_store.load_records(grouped.train_group([jobs[0], jobs[2]])[:1])
    pd.testing.assert_frame_equal(together, alone)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "none"))
    plain = (dataclasses.replace(jobs[0][0], cfg=CFG), *jobs[0][1:])
    without = run_store.load_records(grouped.train_group([plain]))
    assert not without["correct"].equals(alone["correct"])


def test_dropout_same_seed_same_records_and_a_folder_of_its_own(tiny_model_path, tiny_world, tmp_path, monkeypatch):
    """Grouped dropout masks are not the per-run path's: same seed, same records, never mixed with per-run ones."""
    jobs = _jobs(tiny_model_path, tiny_world, DROP)
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "a"))
    first = _records(grouped.train_group(jobs))
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "b"))
    paths = grouped.train_group(jobs)
    for got, want in zip(_records(paths), first):
        pd.testing.assert_frame_equal(got, want)
    assert paths[0] == run_store.run_dir(*jobs[0], in_group=True) != run_store.run_dir(*jobs[0])
    plain = (dataclasses.replace(jobs[0][0], cfg=CFG), *jobs[0][1:])
    assert run_store.run_dir(*plain, in_group=True) == run_store.run_dir(*plain)  # without dropout: one folder


def test_dropout_masks_of_a_run_are_its_own():
    """Each run's masks come from its (seed, epoch) alone, drawn for its own batch shape, padded with zeros."""

    def masks(runs, seeds, shapes):
        return stacked.Dropout(0.25, runs, seeds, [3] * len(runs)).masks(runs, shapes, (4, 6), 8, 2, 1)

    alone = masks([0], [7], [(3, 5)])
    group = masks([0, 1, 2, 3], [7, 8, 7, 9], [(3, 5), (3, 5), (3, 5), (2, 4)])
    assert len(group) == 4  # embeddings; attention probabilities, attention and MLP outputs of the one layer
    for a, g in zip(alone, group):
        assert torch.equal(g[0], a[0])  # the run's masks do not depend on its companions
        assert not torch.equal(g[1], g[0])  # another seed, other masks
        assert torch.equal(g[2], g[0])  # the same (seed, epoch) and shape, as the per-run path
    emb = group[0]  # (A, B, T, d): run 3 has 2 rows of 4 tokens, the rest is padding
    assert emb[3, 2:].abs().sum() == 0 and emb[3, :, 4:].abs().sum() == 0
    kept = emb[1, :3, :5] > 0
    assert torch.allclose(emb[1, :3, :5][kept], torch.tensor(1 / 0.75)) and 0.6 < kept.float().mean() < 0.9


def test_groups_need_one_model_and_config(tiny_model_path, tiny_world):
    jobs = _jobs(tiny_model_path, tiny_world)
    other = (dataclasses.replace(jobs[1][0], cfg=dataclasses.replace(CFG, ft_lr=1e-4)), *jobs[1][1:])
    with pytest.raises(ValueError, match="same model and config"):
        grouped.train_group([jobs[0], other])


def test_a_run_killed_before_its_first_checkpoint_resumes(tiny_model_path, tiny_world, tmp_path, monkeypatch):
    """Only epoch 0 recorded, no checkpoint yet: both paths continue from the base model."""
    jobs = _jobs(tiny_model_path, tiny_world, dataclasses.replace(CFG, ft_epochs=1))
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "full"))
    want = _per_run(jobs[:2])
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path / "killed"))
    paths = [finetune.train_run(*jobs[0], stop_after=0), grouped.train_group(jobs[1:2], stop_after=0)[0]]
    assert all((p / "epoch_000.parquet").exists() and not (p / "checkpoint.pt").exists() for p in paths)
    got = [
        run_store.load_records(grouped.train_group(jobs[:1])),
        run_store.load_records([finetune.train_run(*jobs[1])]),
    ]
    for g, w in zip(got, want):
        pd.testing.assert_frame_equal(g, w)
