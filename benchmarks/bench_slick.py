"""SliCK speed: plain Hugging Face ``generate`` against our engines, on the same questions.

Methods (each runs :func:`newknowledge.knowledge.slick.categorize` on the same N train
questions of the default world, n_ex = 10 prompts per question):

- ``baseline: HF generate``: the straightforward way.  Per batch of prompts,
  ``model.generate`` greedy, then ``model.generate`` with ``do_sample``,
  temperature 0.5, top-k 40 and ``num_return_sequences=16``; a
  ``StoppingCriteria`` ends each row at its first newline (or EOS).
- ``sampling engine``: :func:`newknowledge.model.lm.decode` (shared-prefix prefill,
  preallocated cache, answer tree), the paper's estimator.
- ``exact``: :func:`newknowledge.model.lm.score` (teacher forcing, exact sampling
  probability), with shared-prefix prefill.
- the two engines again without the prefix cache (``prefixes`` dropped);
- the sampling engine with another sampling seed (same prompts): how much two
  sampling runs agree by chance (the noise floor of category agreement).

Methods run interleaved, ``--repeats`` rounds, so background load hits all
alike; the table reports the fastest round of each.  Greedy agreement: share
of prompts whose greedy answer is the baseline's (sampling engines) or share of
questions with the baseline's P_correct(T=0) (exact).  Category agreement:
share of questions with the baseline's SliCK category.

    python benchmarks/bench_slick.py [--n 100] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pandas as pd
import torch
from _common import load_default, report, timed
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.utils import logging as hf_logging

from newknowledge.knowledge import slick
from newknowledge.model import lm


class StopAtLineEnd(StoppingCriteria):
    """Per row: done once a generated token is a stop token (newline or EOS)."""

    def __init__(self, stops: torch.Tensor, prompt_len: int):
        self.stops, self.prompt_len = stops, prompt_len

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return self.stops[input_ids[:, self.prompt_len :]].any(1)


class GenerateBaseline:
    """A SliCK backend built on ``model.generate`` (only ``decode``: the sampling estimator).

    Batch sizes are the fastest found on this machine: 64 prompts for greedy
    decoding, 2 prompts (32 rows) for sampling; larger sampling batches were
    slower (every row waits for the batch's longest answer, and the cache is
    copied at every step).
    """

    def __init__(self, prompts_per_batch: int = 64, sample_prompts_per_batch: int = 2, seed: int = 0):
        self.p, self.ps, self.seed = prompts_per_batch, sample_prompts_per_batch, seed

    def _generate(self, model, tok, prompts, stops, **kw) -> list[str]:
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
        width = enc["input_ids"].shape[1]
        out = model.generate(
            **enc,
            stopping_criteria=StoppingCriteriaList([StopAtLineEnd(stops, width)]),
            pad_token_id=tok.pad_token_id,
            **kw,
        )
        return [lm._cut(t) for t in tok.batch_decode(out[:, width:], skip_special_tokens=True)]

    def decode(self, model, tok, prompts, *, n_samples=0, temperature=0.5, top_k=40, max_new_tokens=16, **_):
        torch.manual_seed(self.seed)
        stops = lm.stop_mask(tok, model.get_output_embeddings().weight.shape[0])
        greedy, samples = [], []
        for s in range(0, len(prompts), self.p):
            greedy += self._generate(
                model, tok, prompts[s : s + self.p], stops, do_sample=False, max_new_tokens=max_new_tokens
            )
        for s in range(0, len(prompts) if n_samples else 0, self.ps):
            flat = self._generate(
                model,
                tok,
                prompts[s : s + self.ps],
                stops,
                do_sample=True,
                temperature=temperature,
                top_k=top_k,
                top_p=1.0,
                num_return_sequences=n_samples,
                max_new_tokens=max_new_tokens,
            )
            samples += [flat[i : i + n_samples] for i in range(0, len(flat), n_samples)]
        return greedy, samples or [[] for _ in prompts]


class NoPrefix:
    """Our engine with the prefix cache switched off (for the ablation rows)."""

    @staticmethod
    def decode(*args, prefixes=None, **kw):
        return lm.decode(*args, **kw)

    @staticmethod
    def score(*args, prefixes=None, **kw):
        return lm.score(*args, **kw)


class Reseeded:
    """Our engine drawing from its own random stream (same prompts, other samples)."""

    def __init__(self, seed: int):
        self.seed, self.gen = seed, None

    def reset(self) -> None:
        self.gen = torch.Generator().manual_seed(self.seed)

    def decode(self, *args, generator=None, **kw):
        return lm.decode(*args, generator=self.gen, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100, help="questions (train split, fixed random draw)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the fastest round counts")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the same for every method)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # generate's padding advice, once per run
    study, facts, _, exemplars, _, model, tok = load_default()
    table = facts[facts["split"] == "train"].sample(args.n, random_state=0).reset_index(drop=True)
    cfg = dataclasses.replace(study.slick, estimator="sampling")
    exact = dataclasses.replace(cfg, estimator="exact")
    methods = {  # name -> (config, backend)
        "baseline: HF generate": (cfg, GenerateBaseline()),
        "sampling engine": (cfg, lm),
        "exact": (exact, lm),
        "sampling engine, no prefix cache": (cfg, NoPrefix),
        "exact, no prefix cache": (exact, NoPrefix),
        "sampling engine, other seed": (cfg, Reseeded(1)),
    }
    seconds = {m: [] for m in methods}
    outs = {}
    for r in range(args.repeats):
        names = list(methods) if r % 2 == 0 else list(methods)[::-1]  # alternate the order
        for m in names:
            c, backend = methods[m]
            if hasattr(backend, "reset"):
                backend.reset()
            outs[m], t = timed(slick.categorize, model, tok, table, exemplars, c, desc=m, backend=backend)
            seconds[m].append(t)
            print(f"round {r}: {m}: {t:.1f} s", flush=True)
    base = outs["baseline: HF generate"]
    rows = []
    for m, out in outs.items():
        best = min(seconds[m])
        if out["greedy_answers"].iloc[0] is not None:
            a = np.concatenate(out["greedy_answers"].to_list())
            b = np.concatenate(base["greedy_answers"].to_list())
            greedy = float(np.mean(a == b))
        else:
            greedy = float(np.mean(out["p_greedy"].to_numpy() == base["p_greedy"].to_numpy()))
        rows.append(
            {
                "method": m,
                "seconds": best,
                "questions/s": args.n / best,
                "speed-up": min(seconds["baseline: HF generate"]) / best,
                "greedy agreement": greedy,
                "category agreement": float(np.mean(out["category"].to_numpy() == base["category"].to_numpy())),
                "all rounds (s)": " ".join(f"{t:.1f}" for t in seconds[m]),
            }
        )
    df = pd.DataFrame(rows)
    report(df, "bench_slick", f"SliCK on {args.n} questions x {cfg.n_ex} prompts, {args.threads} thread(s)")
    counts = pd.DataFrame({m: o["category"].value_counts() for m, o in outs.items()}).fillna(0).astype(int)
    print("\nCategories per method:\n" + counts.to_string())
    print(
        "\nTargets: sampling engine >= 5x baseline with 100% greedy agreement; exact >= 30x with >= 97% "
        "category agreement."
    )


if __name__ == "__main__":
    main()
