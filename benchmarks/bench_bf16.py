"""bf16 autocast against fp32 on this CPU, stage by stage (the machines have AVX512-BF16).

For each stage, the same work is timed in fp32 and under
``torch.autocast("cpu", dtype=torch.bfloat16)``, interleaved over repeats so
both see the same machine load; the ratio is fp32 time / bf16 time:

1. a 512 x 512 matmul (the hardware's own gain, the ceiling for the rest);
2. pretraining steps of the default architecture (batch 32 x 128 tokens, 2 threads);
3. fine-tuning steps (batch 16 of real questions, 1 thread, as a run does);
4. SliCK's exact estimator (teacher-forced scoring of few-shot prompts), with
   how many greedy flags and categories bf16 changes.

    python benchmarks/bench_bf16.py [--repeats 2] [--steps 3] [--n 30]

The defaults are small because bf16 is slow here: in a side measurement on
these 2-core EPYC machines, a training step of the default architecture under
CPU autocast took 5-9x as long as in fp32 (7.5 s against 1.0 s at 2 threads)
and one 2048 x 2048 matrix multiply 103 s against 0.4 s.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time

import numpy as np
import pandas as pd
import torch
from _common import load_default, report

from newknowledge.knowledge import slick
from newknowledge.model import lm, pretrain, train_step


def _bf16(on: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def _time(fn, on: bool) -> float:
    with _bf16(on):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--n", type=int, default=30, help="SliCK questions")
    parser.add_argument("--model", default="", help="a model folder (default: the controlled world's)")
    args = parser.parse_args(argv)
    study, facts, raw, exemplars, path, model, tok = load_default(args.model)
    rows = []

    # 512, not larger: one 2048 x 2048 multiply under autocast took 103 s here (0.4 s in fp32).
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    torch.set_num_threads(2)
    stages = {"matmul 512 (2 threads)": lambda: [a @ b for _ in range(3)]}

    pre = pretrain.make_model(tok, study.pretrain)
    opt = torch.optim.AdamW(pre.parameters(), lr=1e-4)
    blocks = torch.randint(0, len(tok), (32, 128))

    def pretrain_steps():
        for _ in range(args.steps):
            loss = pre(input_ids=blocks, labels=blocks).loss
            opt.zero_grad()
            loss.backward()
            opt.step()

    stages["pretraining steps (2 threads)"] = pretrain_steps
    train = facts[facts["split"] == "train"].head(16 * args.steps)
    pairs = train_step.encode_examples(
        tok, train["question"].tolist(), train["answer"].tolist(), study.finetune.ft_format
    )
    ft_model = lm.load(path, device="cpu")[0]
    ft_opt = torch.optim.AdamW(ft_model.parameters(), lr=3e-5)
    cfg = study.finetune

    def finetune_steps():
        torch.set_num_threads(1)
        for i in range(0, len(pairs), 16):
            train_step.step(ft_model, pairs[i : i + 16], tok.pad_token_id, ft_opt, cfg)
        torch.set_num_threads(2)

    stages["fine-tuning steps (1 thread)"] = finetune_steps
    table = facts[facts["split"] == "test"].head(args.n).reset_index(drop=True)
    scfg = dataclasses.replace(study.slick, estimator="exact")
    out = {}

    def slick_exact(tag):
        def run():
            out[tag] = slick.categorize(model, tok, table, exemplars, scfg, desc=f"SliCK {tag}")

        return run

    for r in range(args.repeats):
        for name, fn in stages.items():
            for on in (False, True):
                rows.append({"stage": name, "bf16": on, "repeat": r, "seconds": _time(fn, on)})
        for on in (False, True):
            rows.append(
                {
                    "stage": "SliCK exact estimator",
                    "bf16": on,
                    "repeat": r,
                    "seconds": _time(slick_exact("bf16" if on else "fp32"), on),
                }
            )
    df = pd.DataFrame(rows)
    best = df.groupby(["stage", "bf16"])["seconds"].min().unstack("bf16")
    res = pd.DataFrame(
        {
            "stage": best.index,
            "fp32 s (best)": best[False].values,
            "bf16 s (best)": best[True].values,
            "speed-up": (best[False] / best[True]).values,
        }
    )
    f, b16 = out["fp32"], out["bf16"]
    greedy = np.mean([np.array_equal(x, y) for x, y in zip(f["prompt_greedy"], b16["prompt_greedy"])])
    cats = (f["category"] == b16["category"]).mean()
    res["note"] = [
        ""
        if s != "SliCK exact estimator"
        else f"greedy flags identical on {100 * greedy:.0f}% of questions, categories on {100 * cats:.0f}%"
        for s in res["stage"]
    ]
    report(res, "bf16", "bf16 autocast vs fp32 (best of repeats; speed-up = fp32 / bf16)")
    return res


if __name__ == "__main__":
    main()
