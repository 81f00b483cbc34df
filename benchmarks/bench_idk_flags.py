"""D_IDK's abstention flags, teacher-forced against generated, epoch by epoch (issue 22, item 4).

Chapter 7's D_IDK run (a profile's first world, X = the middle share of Unknown) is fine-tuned with the
book's per-run recipe (its seed's batch order and dropout masks), and after every epoch its evaluation
questions (dev, test, OOD test) are scored both ways:

- generated (today's records): the greedy answer, then exact match with the gold and with "I don't know"
  after normalisation (``finetune.greedy_answers``, ``exact_match``);
- teacher-forced: the gold and "I don't know" each scored as the correct flags are
  (``finetune.correct_flags``: the greedy answer is that string and then stops), no generation.

Teacher forcing can replace generation only where the two give the same flags: the table gives, per
epoch, the questions whose flags differ (correct and abstained), the abstentions each way, and the seconds
each way takes; the near misses (generated answers that normalise to "I don't know" but are not that
string) are printed.

    python benchmarks/bench_idk_flags.py [--profile quick] [--epochs 0 (the profile's)]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from _common import report

from newknowledge.book import pipeline
from newknowledge.book.chapters import name
from newknowledge.core import config
from newknowledge.core.metrics import exact_match
from newknowledge.core.prompts import IDK
from newknowledge.evaluation import analysis
from newknowledge.finetuning import finetune, variants
from newknowledge.model import lm, train_step


def flags_both_ways(model, tok, evals: pd.DataFrame, cfg) -> dict:
    """Per question: correct and abstained, generated and teacher-forced, and the seconds of each."""
    qs, golds = evals["question"].tolist(), evals["answer"].tolist()
    t = time.perf_counter()
    greedy = finetune.greedy_answers(model, tok, qs, cfg)
    gen = (
        np.array([exact_match(g, a) for g, a in zip(greedy, golds)]),
        np.array([exact_match(g, IDK) for g in greedy]),
    )
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    tf = (
        np.asarray(finetune.correct_flags(model, tok, qs, golds, cfg), bool),
        np.asarray(finetune.correct_flags(model, tok, qs, [IDK] * len(qs), cfg), bool),
    )
    t_tf = time.perf_counter() - t
    return {"greedy": greedy, "gen": gen, "tf": tf, "s_gen": t_gen, "s_tf": t_tf}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--epochs", type=int, default=0, help="epochs (0: the profile's ft_epochs)")
    args = ap.parse_args()
    study = config.from_params({**config.load_profile(args.profile), "profile": args.profile})
    setup = pipeline.setup(study)  # the profile's cached world, model and SliCK table
    seed = setup.seeds[0]
    prep = setup.preps[seed]
    cfg = prep.study.finetune
    variant = name("idk", analysis.middle_share([float(v) for v in cfg.pct_unknown]))
    train = variants.build(prep.train, variant, size=prep.size_of(variant), seed=seed)
    evals = prep.evals
    torch.set_num_threads(cfg.ft_threads)
    torch.manual_seed(seed)
    model, tok = train_step.prepare(*lm.load(prep.model_path, device="cpu"), cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.ft_lr, weight_decay=cfg.ft_weight_decay)
    examples = train_step.encode_examples(tok, train["question"].tolist(), train["answer"].tolist(), cfg.ft_format)
    finetune.set_dropout(model, cfg.ft_dropout)
    rows, misses = [], set()
    print(f"{args.profile}: {variant}, seed {seed}, |D| {len(train)}, {len(evals)} evaluation questions")
    for epoch in range(0, (args.epochs or cfg.ft_epochs) + 1):
        if epoch:  # as finetune.train_run: batch order and dropout masks from (seed, epoch)
            model.train()
            torch.manual_seed(int(np.random.default_rng([seed, epoch, 1]).integers(2**62)))
            order = np.random.default_rng([seed, epoch]).permutation(len(examples))
            for i in range(0, len(order), cfg.ft_batch):
                train_step.step(model, [examples[j] for j in order[i : i + cfg.ft_batch]], tok.pad_token_id, opt, cfg)
        model.eval()
        f = flags_both_ways(model, tok, evals, cfg)
        (gc, gi), (tc, ti) = f["gen"], f["tf"]
        misses |= {g for g, a, b in zip(f["greedy"], gi, ti) if a != b}
        rows.append(
            {
                "epoch": epoch,
                "questions": len(evals),
                "correct: flags differ": int((gc != tc).sum()),
                "abstained: flags differ": int((gi != ti).sum()),
                "abstained, generated": int(gi.sum()),
                "abstained, teacher-forced": int(ti.sum()),
                "s generated": round(f["s_gen"], 2),
                "s teacher-forced": round(f["s_tf"], 2),
            }
        )
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    total = df[["correct: flags differ", "abstained: flags differ"]].sum()
    print(f"\nflags that differ over {len(df)} epochs: {dict(total)}; near misses: {sorted(misses)[:20]}")
    print(
        f"seconds per epoch: generated {df['s generated'].mean():.2f}, teacher-forced {df['s teacher-forced'].mean():.2f}"
    )
    report(df, "bench_idk_flags", f"D_IDK's flags, teacher-forced against generated ({args.profile}, {variant})")


if __name__ == "__main__":
    main()
