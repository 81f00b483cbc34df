"""Prove the real path's GPU code in minutes: SliCK (both estimators) and one fine-tuning epoch on a larger model.

Nothing is downloaded.  The script builds a randomly initialised Llama-style
model of ~100-500M parameters with a byte-level BPE tokenizer trained on the
controlled world's corpus, saves both with ``save_pretrained`` and loads them
back through :func:`newknowledge.model.lm.load` (the call a real model goes through),
then measures, with batch sizes chosen from the free GPU memory:

- SliCK on ``--questions`` questions with the exact and the sampling estimator
  (questions per second);
- one fine-tuning epoch at the paper's batch of 128 in micro-batches, bf16
  mixed precision (fp32 weights and AdamW) and activation checkpointing
  (training tokens per second, epoch time with its evaluation);
- the peak GPU memory of each.

The random model answers nothing correctly, so its categories are all
Unknown: the point is that every code path runs on the device and what it
costs.  ``--device cpu --tiny`` is the dry run CI executes.

    python benchmarks/gpu_check.py                      # on a lent GPU (~300M parameters)
    python benchmarks/gpu_check.py --size 500M --questions 2000
    python benchmarks/gpu_check.py --device cpu --tiny  # CPU dry run, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {  # hidden, layers, heads, kv heads, intermediate
    "tiny": (64, 2, 4, 2, 172),
    "100M": (768, 10, 12, 4, 2048),
    "300M": (1024, 20, 16, 8, 2816),
    "500M": (1280, 24, 20, 4, 3456),
}


def build_model(folder: Path, size: str, vocab: int) -> int:
    """A random Llama-style model and a BPE tokenizer, saved to ``folder``; returns the parameter count."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from newknowledge.core import config
    from newknowledge.data import world
    from newknowledge.model import pretrain

    study = config.from_params({"n_train": 40, "n_dev": 8, "n_test": 10, "n_ood_test": 5})
    facts = world.generate(study.world)
    docs = pretrain.documents(facts, study.pretrain, np.random.default_rng(0))
    tok = pretrain.train_tokenizer(docs, vocab)
    hidden, layers, heads, kv, inter = SIZES[size]
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def questions(n: int):
    """``n`` questions in ENTITYQUESTIONS format (a synthetic world), their dev exemplars, and eval questions."""
    from newknowledge.core import config
    from newknowledge.data import entityquestions as eq
    from newknowledge.data import world

    per = max(6, n // 12 + 1)
    study = config.from_params({"n_train": per, "n_dev": 8, "n_test": max(2, per // 4), "n_ood_test": 2})
    folder = world.build(study.world)
    facts = world.load(folder)
    train = facts[facts["split"] == "train"].head(n).reset_index(drop=True)
    evals = facts[facts["split"] != "train"].head(max(8, n // 4)).reset_index(drop=True)
    return train, eq.exemplar_pool(eq.load(folder)), evals


def _peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="300M", choices=sorted(SIZES))
    parser.add_argument("--tiny", action="store_true", help="the CPU dry run: tiny model, few questions")
    parser.add_argument("--questions", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.questions, args.vocab = "tiny", 12, 600
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    os.environ["NEWKNOWLEDGE_ARTIFACTS"] = str(work / "artifacts")

    from newknowledge.core import config
    from newknowledge.finetuning import finetune, run_store
    from newknowledge.knowledge import slick
    from newknowledge.model import lm, train_step

    device = torch.device(args.device)
    params = build_model(work / "model", args.size, args.vocab)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    train, exemplars, evals = questions(args.questions)
    train = train.assign(category=np.where(np.arange(len(train)) % 2, "Unknown", "HighlyKnown"))
    evals = evals.assign(example=np.arange(len(evals)), category="Unknown")
    out = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "parameters": params,
        "questions": len(train),
    }
    model, tok = lm.load(str(work / "model"), device=str(device), dtype=dtype)
    base = config.from_params({"n_ex": 2, "n_samples": 4} if args.tiny else {}).slick
    for estimator in ("exact", "sampling"):
        cfg = dataclasses.replace(base, estimator=estimator, slick_batch=0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        table = slick.categorize(model, tok, train, exemplars, cfg, desc=f"SliCK ({estimator})")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t
        out[f"slick_{estimator}_q_per_s"] = round(len(table) / seconds, 2)
        out[f"slick_{estimator}_peak_gib"] = round(_peak(device), 2)
    del model
    ft = dataclasses.replace(
        config.from_params({}).finetune,
        ft_epochs=1,
        ft_batch=128,
        ft_micro_batch=0,
        ft_checkpointing=True,
        ft_eval_batch=0,
        ft_lr=1e-5,
        ft_precision="bf16-mixed" if device.type == "cuda" else "model",
    )
    spec = run_store.RunSpec(str(work / "model"), "unknown_50", 0, ft, device=str(device), dtype="float32")
    n_tokens = sum(
        len(ids)
        for ids, _ in train_step.encode_examples(
            tok, train["question"].tolist(), train["answer"].tolist(), ft.ft_format
        )
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    finetune.train_run(spec, train, evals)
    out["finetune_epoch_s"] = round(time.perf_counter() - t, 1)  # includes the epoch-0 and epoch-1 evaluations
    out["finetune_train_tokens_per_s"] = round(n_tokens / out["finetune_epoch_s"], 1)
    out["finetune_peak_gib"] = round(_peak(device), 2)
    width = max(map(len, out))
    for k, v in out.items():
        print(f"{k:<{width}}  {v}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
