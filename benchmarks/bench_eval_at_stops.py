"""Evaluation where it is read (issue 22, item 3): chapters 5 and 7's runs with test and OOD-test questions
evaluated only at the epochs where EARLY_STOP or CONVERGENCE can fall, against every epoch.

The runs are the book's own (a profile's first world, its cached model and SliCK table): chapter 5's
single-category and natural D (trained in groups, as the book does) and chapter 7's D_IDK (per run, by
generation), each trained twice in a fresh run folder, in alternating order:

- ``every epoch``: every split evaluated after every epoch (the book until this change);
- ``at stops``: test and OOD test only at epoch 0, the last epoch and each new best dev epoch
  (``pipeline.at_stops``, ``run_store.Watch``).

The table gives the wall seconds of each, their ratio, how many epochs recorded the test questions,
and whether the records chapters 5-7 read (every run's records at EARLY_STOP and CONVERGENCE) are the
same both ways.

    python benchmarks/bench_eval_at_stops.py [--profile quick] [--variants HighlyKnown ... idk_50] [--epochs 0]
"""

from __future__ import annotations

import argparse

import pandas as pd
from _common import report
from bench_grouped import in_folder

from newknowledge.book import pipeline
from newknowledge.book.chapters import name
from newknowledge.core import config
from newknowledge.evaluation import analysis
from newknowledge.finetuning import finetune, run_store, variants


def jobs(setup, names: list[str], every_epoch: bool) -> list[tuple]:
    """The book's ``(spec, train, evals)`` for ``names`` on the first world, as ``Setup.records`` builds them."""
    seed = setup.seeds[0]
    prep = setup.preps[seed]
    out = []
    for n in names:
        data = variants.build(prep.train, n, size=prep.size_of(n), seed=seed)
        stops = () if every_epoch else pipeline.at_stops(n)
        spec = run_store.RunSpec(prep.model_path, n, seed, prep.study.finetune, at_stops=stops)
        out.append((spec, data, prep.evals))
    return out


def timed(job_list: list[tuple], workers: int) -> tuple[float, pd.DataFrame]:
    """Train ``job_list`` in a fresh run folder as the book does; the seconds and the records."""
    seconds, records, _ = in_folder(lambda: (finetune.run_all(job_list, workers=workers), None))
    return seconds, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--variants", nargs="*", default=None, help="default: chapter 5's runs and chapter 7's D_IDK")
    ap.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs (0: the profile's)")
    args = ap.parse_args()
    params = {**config.load_profile(args.profile), "profile": args.profile, "seeds": [0]}
    study = config.from_params({**params, **({"ft_epochs": args.epochs} if args.epochs else {})})
    setup = pipeline.setup(study)  # the profile's cached world, model and SliCK table (built here if not)
    ft = study.finetune
    names = args.variants or [
        *[v for v in analysis.TABLE2_VARIANTS if setup.same_data().get(v, v) == v],
        name("idk", analysis.middle_share([float(x) for x in ft.pct_unknown])),
    ]
    groups = {
        "chapter 5 (grouped)": [n for n in names if not n.startswith("idk")],
        "chapter 7 (D_IDK, per run)": [n for n in names if n.startswith("idk")],
    }
    rows = []
    for label, ns in groups.items():
        if not ns:
            continue
        seconds, recs = {}, {}
        for every in (True, False):
            seconds[every], recs[every] = timed(jobs(setup, ns, every), ft.workers)
            print(f"{label}, {'every epoch' if every else 'at stops'}: {seconds[every]:.0f} s", flush=True)
        same = all(
            analysis.at_stops(recs[True], s)
            .sort_values(list(analysis.RUN) + ["duration", "example"])
            .reset_index(drop=True)
            .equals(
                analysis.at_stops(recs[False], s)
                .sort_values(list(analysis.RUN) + ["duration", "example"])
                .reset_index(drop=True)
            )
            for s in ("test", "ood_test")
        )
        test_epochs = recs[False][recs[False]["split"] == "test"].groupby(analysis.RUN)["epoch"].nunique()
        rows.append(
            {
                "runs": label,
                "variants": ", ".join(ns),
                "s every epoch": round(seconds[True]),
                "s at stops": round(seconds[False]),
                "speed-up": round(seconds[True] / seconds[False], 2),
                "epochs with test records (mean)": round(float(test_epochs.mean()), 1),
                "of": ft.ft_epochs + 1,
                "same records at the stops": same,
            }
        )
    report(pd.DataFrame(rows), "bench_eval_at_stops", f"Test and OOD test evaluated at the stops only ({args.profile})")


if __name__ == "__main__":
    main()
