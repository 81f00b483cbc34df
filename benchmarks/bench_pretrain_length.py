"""Pretraining as short as the knowledge needs (issue 13, item 3): the world's checks against its length.

For each number of passes over the corpus (the warm-up and cosine decay stretched over each run's own
steps, so every point is a complete schedule, not a checkpoint of a longer one), the script pretrains
the profile's world, runs SliCK and measures what chapter 1 measures before any fine-tuning:

- the cost: optimizer steps, training tokens, final loss and the pretraining's own wall time
  (``stats.json``; a point already in the artifacts cache reports the time it took when it was built);
- the knowledge: the 4-shot probe's accuracy on test, the share of HighlyKnown train facts, the
  HighlyKnown share of facts seen 5-8 times, |D| by the paper's rule (Sec. 4.1);
- chapter 1's setup checks (``chapters.knowledge.checks``), each holding or not.

The criterion, fixed before the measurement: a length *keeps the world* when every chapter-1 check
that holds at the default length still holds, |D| is at least the study's minimum, and the probe's test
accuracy is at least 90% of the default length's (a tenth of the knowledge lost is the most we
accept; the quick world already answers 12 points below the default world).  The cheapest length
that keeps the world is a candidate; the fine-tuning checks (EARLY_STOP, CONVERGENCE, the findings)
are not re-measured here and decide adoption in a book build.

    python benchmarks/bench_pretrain_length.py                      # quick world, 7/10/14/20 passes
    python benchmarks/bench_pretrain_length.py --passes 10 14 --profile full

Each new point costs a pretraining (the quick world's 14 passes: ~13 min on 2 idle cores);
points already built come from the artifacts cache (``NEWKNOWLEDGE_ARTIFACTS``).  ``--cached-only``
(what ``make bench`` runs) reports the built points and skips the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report


def study_for(profile: str, passes: float | None = None):
    """The profile's study, pretrained for ``passes`` passes (None: the profile's own)."""
    from newknowledge.core import config

    params = config.load_profile(profile)
    return config.from_params(params if passes is None else dict(params, pretrain_passes=passes))


def built(study) -> bool:
    """Whether this world's model is in the artifacts cache (the world's facts are cheap to make)."""
    from newknowledge.core import store
    from newknowledge.model import pretrain

    return store.is_done(pretrain.artifact(study.world, study.pretrain)[0])


def measure(profile: str, passes: float, default: float) -> dict:
    from newknowledge.book import pipeline
    from newknowledge.book.chapters import knowledge
    from newknowledge.evaluation import analysis
    from newknowledge.finetuning import variants
    from newknowledge.knowledge import categories

    study = study_for(profile, passes)
    prep = pipeline.prepare(study)
    table = prep.table.assign(seed=study.study.seeds[0])
    stats = json.loads((Path(prep.model_path).parent / "stats.json").read_text())
    checks = knowledge.checks(table)
    facts = table[table["split"].isin(["train", "test", "ood_test"])]
    try:
        size = prep.size
    except variants.VariantError:  # too few examples of some category for the paper's rule
        size = 0
    base = analysis.popular_answer_baseline(table, "test")
    shares = categories.split_shares(table, "train")
    return {
        "passes": passes,
        "vs default": passes / default,
        "steps": stats["steps"],
        "train tokens (M)": stats["train_tokens"] / 1e6,
        "final loss": stats["final_loss"],
        "pretrain s": stats["seconds"],
        "probe test %": 100 * table.loc[table["split"] == "test", "p_greedy"].mean(),
        "popular answer %": 100 * float(base.iloc[-1]["baseline"]),
        "HK train %": 100 * shares["HighlyKnown"],
        "HK at 5-8 exp. %": 100 * (facts.loc[facts["exposures"].between(5, 8), "category"] == "HighlyKnown").mean(),
        "Unk train %": 100 * shares["Unknown"],
        "|D|": size,
        "min |D|": study.finetune.min_dataset_size,
        "checks held": f"{sum(bool(c.holds) for c in checks)}/{len(checks)}",
        "failing": ", ".join(c.key for c in checks if c.holds is False) or "-",
    }


def keeps_world(df: pd.DataFrame, default: float, share: float = 0.9) -> list[bool]:
    """The criterion of the module docstring, one bool per row of ``df`` (the rows of :func:`measure`):
    no chapter-1 check fails that holds at ``default`` passes, |D| >= the minimum, and the probe's
    test accuracy at least ``share`` of the default's."""
    ref = df[df["passes"] == default].iloc[0]

    def failing(r) -> set:
        return set(r["failing"].split(", ")) - {"-"}

    return [
        bool(
            failing(r) <= failing(ref) and r["|D|"] >= r["min |D|"] and r["probe test %"] >= share * ref["probe test %"]
        )
        for _, r in df.iterrows()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--passes", type=float, nargs="+", default=[7, 10, 14, 20])
    ap.add_argument("--cached-only", action="store_true", help="report only the points already pretrained")
    args = ap.parse_args()
    default = study_for(args.profile).pretrain.pretrain_passes
    points = sorted(set(args.passes) | {default})
    if args.cached_only:
        skipped = [p for p in points if not built(study_for(args.profile, p))]
        points = [p for p in points if p not in skipped]
        if skipped:
            print(f"not pretrained yet, skipped (--cached-only): {', '.join(f'{p:g}' for p in skipped)} passes")
        if default not in points:
            print(f"the {args.profile} world's default model is not built: nothing to compare against")
            return
    df = pd.DataFrame([measure(args.profile, p, default) for p in points])
    df["keeps the world"] = keeps_world(df, default)
    report(
        df,
        "bench_pretrain_length",
        f"Pretraining length: the {args.profile} world's chapter-1 checks "
        f"against passes over the corpus (default {default:g})",
    )
    kept = df[df["keeps the world"]]
    if len(kept):
        best = kept.sort_values("passes").iloc[0]
        print(
            f"\ncheapest length that keeps the world: {best['passes']:g} passes ({best['steps']} steps, "
            f"{best['vs default']:.2f}x the default's passes)"
        )
    else:
        print("\nno length keeps the world (not even the default: see 'failing')")


if __name__ == "__main__":
    main()
