"""The SliCK command (``newknowledge-slick``) against a plain ``generate`` loop: questions per second.

What a practitioner runs, on the same N questions (a JSONL file of the
default world's train questions, its dev questions as the exemplar file;
paper settings n_ex 10, k_shot 4, 16 samples at T = 0.5, top 40):

- ``plain generate loop``: SliCK's prompts answered with Hugging Face
  ``model.generate`` (greedy, then ``num_return_sequences=16`` sampling), the
  batched baseline of ``bench_slick.py``;
- ``categorize_dataset, sampling`` and ``categorize_dataset, exact`` (the
  command's default): what the command runs, in this process, timed without
  start-up;
- ``command end to end``: ``python -m newknowledge.cli.slick_tool`` in a subprocess
  (Python and torch start-up, model loading, SliCK, writing the files).

Category agreement is with the ``generate`` loop's categories.  The model is
the default model (see ``_common.load_default``) or ``--model PATH`` (any
causal LM folder, e.g. a smaller one when the default is not pretrained yet).

    python benchmarks/bench_slick_tool.py [--n 100] [--threads 1] [--model PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import load_default, report, timed
from bench_slick import GenerateBaseline
from transformers.utils import logging as hf_logging

from newknowledge.cli import slick_tool
from newknowledge.knowledge import slick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100, help="questions (train split, fixed random draw)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the same for every method)")
    ap.add_argument("--model", default="", help="a causal LM folder instead of the default model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    study, facts, _, exemplars, model_path, model, tok = load_default(args.model)
    questions = facts[facts["split"] == "train"].sample(args.n, random_state=0).reset_index(drop=True)
    params = {k: v for k, v in dataclasses.asdict(study.slick).items() if k in slick_tool.PARAMS}
    sampling = {**params, "estimator": "sampling", "slick_batch": 64}
    rows, cats = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, dev = tmp / "train.jsonl", tmp / "dev.jsonl"
        questions[["relation", "question", "answer"]].to_json(data, orient="records", lines=True)
        exemplars.to_json(dev, orient="records", lines=True)
        base, t_base = timed(
            slick.categorize,
            model,
            tok,
            questions,
            exemplars,
            slick_tool.slick_config(**sampling),
            backend=GenerateBaseline(),
            desc="generate loop",
        )
        cats["plain generate loop (sampling)"] = base["category"]
        rows.append(("plain generate loop (sampling)", t_base))
        for name, kw in (
            ("categorize_dataset, sampling", sampling),
            ("categorize_dataset, exact (default)", {**params, "estimator": "exact"}),
        ):
            res, t = timed(
                slick_tool.categorize_dataset,
                str(data),
                (model, tok),
                exemplars=str(dev),
                progress=False,
                verbose=False,
                **kw,
            )
            cats[name] = res.table["category"]
            rows.append((name, t))
        cmd = [
            sys.executable,
            "-m",
            "newknowledge.cli.slick_tool",
            str(data),
            "--model",
            model_path,
            "--exemplars",
            str(dev),
            "--output",
            str(tmp / "out.parquet"),
            "--threads",
            str(args.threads),
            "--device",
            "cpu",
            "--no-progress",
            *[f"--{k.replace('_', '-')}={v}" for k, v in params.items() if k not in ("estimator", "slick_batch")],
        ]
        done, t_cmd = timed(subprocess.run, cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"the command failed:\n{done.stderr}")
        cats["command end to end (exact)"] = pd.read_parquet(tmp / "out.parquet")["category"]
        rows.append(("command end to end (exact)", t_cmd))
    df = pd.DataFrame(
        [
            {
                "method": m,
                "seconds": t,
                "questions/s": args.n / t,
                "speed-up": t_base / t,
                "category agreement": float(np.mean(cats[m].to_numpy() == base["category"].to_numpy())),
            }
            for m, t in rows
        ]
    )
    shown = args.model or "the default (the controlled world's)"  # no path of this machine in the table
    report(
        df,
        "bench_slick_tool",
        f"The SliCK command on {args.n} questions x {params['n_ex']} prompts, model {shown}, {args.threads} thread(s)",
    )
    print("\n'command end to end' includes Python and torch start-up and model loading (a few seconds).")


if __name__ == "__main__":
    main()
