"""Fine-tuning and pretraining throughput, and teacher-forced against generated evaluation.

1. Peak: the best time of a 2048 x 2048 fp32 matmul, measured right before
   each row with that row's threads (the machine is shared: the peak is taken
   under the same load as the row).  With 2 threads on 2 cores that other jobs
   also use, every op waits for the slower thread, so those rows swing widely.
2. Training: the default model fine-tuned as :func:`newknowledge.finetuning.finetune.train_run`
   does (AdamW, answer-only loss) at ``ft_batch`` 16 (and 128 for contrast),
   1 and 2 threads.  Model FLOPs = 6 x parameters x tokens (forward 2, backward
   4; attention ignored, it is small at these lengths); utilisation (MFU) =
   model FLOP/s / peak.  Tokens are real (non-pad) tokens; the time is split
   into forward, backward and optimizer step to show what bounds it.
3. Pretraining: a few steps of :func:`newknowledge.model.pretrain.train`'s loop on
   random 128-token blocks, batch 32.
4. Evaluation: :func:`newknowledge.finetuning.finetune.correct_flags` on the same
   questions by teacher forcing and by generation (our decoder), plain Hugging
   Face ``generate`` (greedy, stop at the newline) for reference, and
   ``lm.score(greedy_only=True)`` (no sampling-probability work); the fitted
   flags must agree.

    python benchmarks/bench_finetune.py [--steps 30] [--eval-n 500]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd
import torch
from _common import load_default, matmul_gflops, report
from bench_slick import GenerateBaseline

from newknowledge.core import prompts
from newknowledge.core.metrics import exact_match
from newknowledge.finetuning import finetune
from newknowledge.model import lm, pretrain, train_step


def _train_steps(model, batches, steps: int, warmup: int = 3, clip: bool = False) -> dict:
    """Time ``steps`` optimizer steps (after ``warmup``): forward, backward and step separately."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
    model.train()
    split = {"forward": 0.0, "backward": 0.0, "step": 0.0}
    tokens = padded = 0
    for i in range(warmup + steps):
        ids, mask, labels = batches(i)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= warmup:
            split["forward"] += t1 - t0
            split["backward"] += t2 - t1
            split["step"] += t3 - t2
            tokens += int(mask.sum())
            padded += mask.numel()
    total = sum(split.values())
    return {
        "tokens/s": tokens / total,
        "padded tokens/s": padded / total,
        **{f"{k} %": 100 * v / total for k, v in split.items()},
        "ms/step": 1000 * total / steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps per setting")
    ap.add_argument("--eval-n", type=int, default=500, help="questions for the evaluation comparison")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved evaluation rounds (fastest counts)")
    args = ap.parse_args()
    study, facts, _, _, model_path, model, tok = load_default()
    n_params = sum(p.numel() for p in model.parameters())
    train = facts[facts["split"] == "train"].sample(frac=1.0, random_state=0)
    examples = train_step.encode_examples(tok, train["question"].tolist(), train["answer"].tolist(), "qa")
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (study.finetune.ft_batch, 128):
            m, _ = lm.load(model_path, device="cpu")

            def batches(i, b=batch):
                start = (i * b) % (len(examples) - b)
                return train_step.collate(examples[start : start + b], tok.pad_token_id)

            peak = matmul_gflops(threads)
            r = _train_steps(m, batches, args.steps)
            rows.append(
                {
                    "stage": "fine-tuning",
                    "threads": threads,
                    "batch": batch,
                    **r,
                    "peak GFLOP/s": peak,
                    "model GFLOP/s": 6 * n_params * r["tokens/s"] / 1e9,
                    "MFU %": 100 * 6 * n_params * r["tokens/s"] / (peak * 1e9),
                }
            )
        # Pretraining: random blocks through the same loop (with gradient clipping, as pretrain.train).
        m = pretrain.make_model(tok, study.pretrain)
        cfg = study.pretrain
        gen = torch.Generator().manual_seed(0)

        def blocks(i):
            ids = torch.randint(0, len(tok), (cfg.pretrain_batch, cfg.block_size), generator=gen)  # noqa: B023 (called within the iteration)
            return ids, torch.ones_like(ids), ids

        peak = matmul_gflops(threads)
        r = _train_steps(m, blocks, max(5, args.steps // 3), clip=True)
        p = sum(q.numel() for q in m.parameters())
        rows.append(
            {
                "stage": "pretraining",
                "threads": threads,
                "batch": cfg.pretrain_batch,
                **r,
                "peak GFLOP/s": peak,
                "model GFLOP/s": 6 * p * r["tokens/s"] / 1e9,
                "MFU %": 100 * 6 * p * r["tokens/s"] / (peak * 1e9),
            }
        )
    df = pd.DataFrame(rows)
    report(df, "bench_train", f"Training throughput ({n_params:,} parameters, {args.steps} timed steps per row)")

    # Evaluation: teacher forcing against generation, interleaved, one thread.
    torch.set_num_threads(1)
    qs = facts[facts["split"].isin(["train", "test"])].sample(args.eval_n, random_state=1)
    questions, answers = qs["question"].tolist(), qs["answer"].tolist()
    cfgs = {m: dataclasses.replace(study.finetune, ft_eval=m) for m in ("generate", "teacher")}
    hf = GenerateBaseline(prompts_per_batch=study.finetune.ft_eval_batch or 128)
    texts = [prompts.ft_prompt(study.finetune.ft_format, q) for q in questions]
    modes = {
        "HF generate": lambda: np.array([exact_match(g, a) for g, a in zip(hf.decode(model, tok, texts)[0], answers)]),
        "generate": lambda: finetune.correct_flags(model, tok, questions, answers, cfgs["generate"]),
        "teacher": lambda: finetune.correct_flags(model, tok, questions, answers, cfgs["teacher"]),
        "teacher, greedy_only": lambda: (
            lm.score(model, tok, texts, answers, batch_size=hf.p, greedy_only=True).greedy_correct
        ),
    }
    seconds = {m: [] for m in modes}
    flags = {}
    for r in range(args.repeats):
        for m in list(modes) if r % 2 == 0 else list(modes)[::-1]:
            t = time.perf_counter()
            flags[m] = modes[m]()
            seconds[m].append(time.perf_counter() - t)
    ev = pd.DataFrame(
        [
            {
                "evaluation": m,
                "questions": args.eval_n,
                "seconds": min(seconds[m]),
                "speed-up vs HF generate": min(seconds["HF generate"]) / min(seconds[m]),
                "speed-up vs generate": min(seconds["generate"]) / min(seconds[m]),
                "identical flags": float(np.mean(flags[m] == flags["HF generate"])),
                "correct": float(np.mean(flags[m])),
                "all rounds (s)": " ".join(f"{t:.2f}" for t in seconds[m]),
            }
            for m in modes
        ]
    )
    report(ev, "bench_eval", "Fine-tuning evaluation: teacher forcing vs generation (1 thread)")
    print(
        "\nTargets: teacher-forced evaluation >= 5x generation with 100% identical flags; "
        "training >= 40% of the matmul peak."
    )


if __name__ == "__main__":
    main()
