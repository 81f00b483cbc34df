"""World design (issue 12): the paper's preconditions, measured for candidate settings.

Each candidate is a set of parameters on top of the quick profile.  For every
world seed (world and pretraining seeds together) the script builds the world,
pretrains, runs SliCK, fine-tunes the section-4 variants and prints the setup
checks, which are measured *before* looking at any finding:

1. natural dev split: category shares of train, dev and test; whether SliCK
   needs better-known exemplars than dev's (categories of the in-distribution
   test questions with dev exemplars vs exemplars drawn from well-exposed train
   facts, ``--exemplars``);
2. fine-tuning teaches the format: zero-shot accuracy in the fine-tuning format
   before fine-tuning (epoch 0) against the 4-shot probe's P_correct(T=0) on the
   same questions; HighlyKnown dev accuracy at EARLY_STOP;
3. EARLY_STOP where the paper has it: its epoch, Known and Unknown fitted there,
   format learning and Unknown fitting at every epoch, D - D_Known at every
   epoch, and how the dev argmax moves when the dev questions are resampled
   (bootstrap) or when the 720 test questions stand in for a larger dev split;
4. CONVERGENCE is convergence: train accuracy of every run at its last epoch;
5. the answer prior: the popular-answer baseline beside test accuracy, and the
   share of Known facts never exposed.

Then the findings-relevant numbers (test accuracy at EARLY_STOP and
CONVERGENCE per % Unknown, D vs D_Known) and the cost (pretraining seconds,
fine-tuning seconds per run-epoch).  One summary row per candidate and world
goes to ``benchmarks/results/world_design.jsonl``.

    python benchmarks/world_design.py v2 --world-seeds 0 1
    python benchmarks/world_design.py v2 --set ft_lr=1e-4 --set ft_batch=8 --tag lr1e-4
    python benchmarks/world_design.py v2 --stage prepare --exemplars

World v3 (issue 21, research-log E10) screens model sizes, section 4's |D| and
fine-tuning learning rates on the study world (the default world's size) with
10-epoch runs of unknown_0 in the paper's format and in the pretraining format
``qa``; a row per (d_model, |D|, lr, world) goes to
``benchmarks/results/world_v3.jsonl``, appended as each finishes, and a rerun
skips what is there (the runs keep their checkpoints, so a 50-epoch run later
continues them; pretraining resumes from its checkpoint):

    python benchmarks/world_design.py screen --d-model 128 --sizes 0 400 600 --lrs 1e-4 5e-5 3e-5 1e-5

Then the staged confirmation (research-log E13) with the book's own runs: C1-C2 (the rate at which the
all-Unknown runs converge; unknown_0 and the Known-only ``qa`` run at it), and C3 (chapters 1-3, 5, 7 of
the book on one world, scored against E10's criteria (a)-(f)):

    python benchmarks/world_design.py confirm --d-model 256 --size 600 --lrs 1e-4 5e-5 3e-5 1e-5
    python benchmarks/world_design.py confirm-book --d-model 256 --size 600 --lr 3e-5 --world-seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from newknowledge.book import pipeline
from newknowledge.core import config, prompts
from newknowledge.evaluation import analysis
from newknowledge.finetuning import finetune, run_store, variants
from newknowledge.knowledge import categories, slick
from newknowledge.model import lm

RESULTS = Path(__file__).resolve().parent / "results"

# Candidate settings on top of profiles/quick.yaml (see research-log.md for what each showed).
CANDIDATES: dict[str, dict] = {
    # The world before issue 12: well-known dev (the exemplars), the pretraining format.
    "old": {"dev_exposures": "uniform", "ft_format": "qa", "ft_epochs": 20},
    # Natural dev, the paper's format, one Q/A template in pretraining.
    "natural1": {
        "dev_exposures": "natural",
        "n_dev": 40,
        "ft_format": "paper",
        "qa_templates": 1,
        "ft_epochs": 40,
        "pretrain_threads": 1,
    },
    # As natural1 with five Q/A templates in pretraining.
    "natural5": {
        "dev_exposures": "natural",
        "n_dev": 40,
        "ft_format": "paper",
        "qa_templates": 5,
        "ft_epochs": 40,
        "pretrain_threads": 1,
    },
    # natural5 with a weaker answer prior (popular-answer baseline 14% instead of 21% on test) and 8 passes.
    "v2": {
        "dev_exposures": "natural",
        "n_dev": 40,
        "ft_format": "paper",
        "qa_templates": 5,
        "zipf_a": 0.8,
        "pretrain_passes": 8.0,
        "ft_epochs": 40,
        "pretrain_threads": 1,
    },
    # v2 with the default 14 passes (8 passes lost most stored knowledge, research-log E3).
    "v2p14": {
        "dev_exposures": "natural",
        "n_dev": 40,
        "ft_format": "paper",
        "qa_templates": 5,
        "zipf_a": 0.8,
        "pretrain_passes": 14.0,
        "ft_epochs": 40,
        "pretrain_threads": 1,
    },
}
SECTION4 = ["unknown_0", "unknown_50", "unknown_100", "known_50"]


def params_for(candidate: str, world_seed: int, sets: list[str]) -> dict:
    params = dict(config.load_profile("quick"))
    params.update(CANDIDATES[candidate])
    for item in sets:
        name, value = item.split("=", 1)
        value = yaml.safe_load(value)
        if isinstance(value, str):  # YAML reads 5e-3 as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        params[name] = value
    params.update(world_seed=world_seed, pretrain_seed=world_seed)
    return params


def pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}"


def exemplar_check(prep: pipeline.Prepared, min_exposures: int = 15) -> dict:
    """SliCK on the in-distribution test questions with dev exemplars vs well-exposed train exemplars."""
    table = prep.table
    test = table[table["split"] == "test"].reset_index(drop=True)
    well = table[(table["split"] == "train") & (table["exposures"] >= min_exposures)]
    well = well[["relation", "question", "answer"]].reset_index(drop=True)
    model, tok = lm.load(prep.model_path, device="cpu")
    cfg = prep.study.slick
    alt = slick.categorize(
        model, tok, test[["relation", "question", "answer"]], well, cfg, desc="SliCK (well-known exemplars)"
    )
    base = test["category"].to_numpy()
    out = {
        "exemplars_well_known_per_relation": int(well.groupby("relation").size().min()),
        "p_greedy_dev_exemplars": float(test["p_greedy"].mean()),
        "p_greedy_well_exemplars": float(alt["p_greedy"].mean()),
        "category_agreement": float((alt["category"].to_numpy() == base).mean()),
    }
    for c in categories.CATEGORIES:
        out[f"{c}_dev_ex"] = float((base == c).mean())
        out[f"{c}_well_ex"] = float((alt["category"] == c).mean())
    return out


def format_check(prep: pipeline.Prepared) -> dict:
    """Zero-shot accuracy of the pretrained model in every fine-tuning format (no exemplars), dev and test."""
    model, tok = lm.load(prep.model_path, device="cpu")
    t = prep.table[prep.table["split"].isin(["dev", "test"])]
    out = {}
    for fmt in prompts.FT_FORMATS:
        cfg = dataclasses.replace(prep.study.finetune, ft_format=fmt)
        ok = finetune.correct_flags(model, tok, t["question"].tolist(), t["answer"].tolist(), cfg)
        out[f"zero_shot_{fmt}_devtest"] = float(ok.mean())
        out[f"zero_shot_{fmt}_HK"] = float(ok[(t["category"] == "HighlyKnown").to_numpy()].mean())
    return out


def prepare_checks(prep: pipeline.Prepared) -> dict:
    t = prep.table
    row: dict = {}
    for split in ("train", "dev", "test"):
        shares = categories.split_shares(t, split)
        row.update({f"{split}_{c}": float(shares[c]) for c in categories.CATEGORIES})
    row["dev_n"] = int((t.split == "dev").sum())
    never = analysis.known_never_exposed(t).set_index("split")
    row["known_never_exposed_train"] = float(never.loc["train", "share"])
    row["known_never_exposed_test"] = float(never.loc["test", "share"])
    base = analysis.popular_answer_baseline(t, "test")
    row["popular_baseline_test"] = float(base.iloc[-1]["baseline"])
    row["probe_4shot_test"] = float(t.loc[t.split == "test", "p_greedy"].mean())
    row["probe_4shot_dev"] = float(t.loc[t.split == "dev", "p_greedy"].mean())
    stats_file = Path(prep.model_path).parent / "stats.json"
    if stats_file.exists():
        st = json.loads(stats_file.read_text())
        row.update(pretrain_seconds=st["seconds"], corpus_tokens=st["corpus_tokens"], final_loss=st["final_loss"])
    trend = categories.exposure_table(t).reset_index()
    print("\nHighlyKnown / Unknown share by exposure count (train+test+ood):")
    print(trend.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print("\nPopular-answer baseline per relation (test):")
    print(base.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    return row


def bootstrap_es(records: pd.DataFrame, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """EARLY_STOP epoch when the dev questions are resampled with replacement, per run."""
    rng = np.random.default_rng(seed)
    dev = records[(records["split"] == "dev") & (records["epoch"] >= 1)]
    out = []
    for (variant, s), g in dev.groupby(analysis.RUN):
        m = g.pivot_table(index="example", columns="epoch", values="correct").to_numpy(
            dtype=float
        )  # (questions, epochs)
        epochs = np.array(sorted(g["epoch"].unique()))
        picks = [epochs[np.argmax(m[rng.integers(0, len(m), len(m))].mean(0))] for _ in range(n)]
        out.append(
            {
                "variant": variant,
                "seed": s,
                "es_p10": np.percentile(picks, 10),
                "es_median": np.median(picks),
                "es_p90": np.percentile(picks, 90),
            }
        )
    return pd.DataFrame(out)


def test_as_dev(records: pd.DataFrame) -> pd.DataFrame:
    """The argmax epoch if the (larger, identically drawn) test split were the dev split."""
    acc = analysis.accuracy(records[(records["split"] == "test") & (records["epoch"] >= 1)])
    acc = acc.sort_values(analysis.RUN + ["accuracy", "epoch"], ascending=[True, True, False, True])
    return acc.groupby(analysis.RUN).head(1)[analysis.RUN + ["epoch"]].rename(columns={"epoch": "es_if_test_were_dev"})


def seconds_per_epoch(paths) -> float:
    per = []
    for p in paths:
        times = sorted(f.stat().st_mtime for f in Path(p).glob("epoch_*.parquet"))
        if len(times) > 2:
            per.append(np.median(np.diff(times)))
    return float(np.median(per)) if per else float("nan")


def finetune_checks(prep: pipeline.Prepared, variants: list[str], row: dict) -> pd.DataFrame:
    t0 = time.time()
    setup = pipeline.Setup(prep.study, {prep.study.study.seeds[0]: prep})
    rec = setup.records(variants)
    row["finetune_wall_s"] = round(time.time() - t0, 1)
    row["sec_per_run_epoch"] = seconds_per_epoch(setup.runs)
    row["D_size"] = prep.size
    row["steps_per_epoch"] = int(np.ceil(row["D_size"] / prep.study.finetune.ft_batch))
    ep = analysis.epoch_table(rec)
    stops = analysis.early_stop(rec)
    ep0 = ep[ep.epoch == 0].iloc[0]
    row["zero_shot_ft_format_dev"], row["zero_shot_ft_format_test"] = float(ep0["dev"]), float(ep0["test"])
    pd.set_option("display.width", 200)
    print("\nPer epoch (shares in %):")
    show = ep.copy()
    for c in show.columns[3:]:
        show[c] = (100 * show[c]).round(1)
    for v in variants:
        print(f"\n{v}:")
        print(show[show.variant == v].drop(columns=["variant"]).to_string(index=False))
    gap = analysis.gap_by_epoch(rec)
    if len(gap):
        print("\nD - D_Known on test, every epoch (points):")
        print((100 * gap.set_index(["pct_unknown", "seed", "epoch"])).round(1).reset_index().to_string(index=False))
    boot = bootstrap_es(rec).merge(test_as_dev(rec), on=analysis.RUN).merge(stops, on=analysis.RUN)
    print("\nEARLY_STOP: dev argmax, its bootstrap spread over dev questions, and the argmax on test:")
    print(boot.to_string(index=False))
    at = ep.merge(stops, on=analysis.RUN)
    es = at[at.epoch == at.early_stop].set_index("variant")
    conv = at[at.epoch == at.convergence].set_index("variant")
    for v in variants:
        tag = v.replace("unknown_", "u").replace("known_", "k")
        row[f"es_epoch_{tag}"] = int(es.loc[v, "epoch"])
        row[f"test_es_{tag}"], row[f"test_conv_{tag}"] = float(es.loc[v, "test"]), float(conv.loc[v, "test"])
        row[f"ood_es_{tag}"], row[f"ood_conv_{tag}"] = float(es.loc[v, "ood_test"]), float(conv.loc[v, "ood_test"])
        row[f"dev_hk_es_{tag}"] = float(es.loc[v, "dev_hk"])
        row[f"known_fit_es_{tag}"], row[f"unknown_fit_es_{tag}"] = (
            float(es.loc[v, "known_fitted"]),
            float(es.loc[v, "unknown_fitted"]),
        )
        row[f"train_conv_{tag}"] = float(conv.loc[v, "train"])
    row["min_train_acc_last_epoch"] = float(conv["train"].min())
    # Format learning: first epoch where HighlyKnown dev questions reach 90% (unknown_0 and unknown_50).
    for v in ("unknown_0", "unknown_50"):
        if v in variants:
            e = ep[(ep.variant == v) & (ep.dev_hk >= 0.9)]["epoch"]
            row[f"epoch_dev_hk90_{v}"] = int(e.min()) if len(e) else -1
    return rec


# The study world of World v3 (research-log E10): the default world's size, one thread per job.
V3_WORLD = {
    "n_train": 220,
    "n_dev": 40,
    "n_test": 60,
    "n_ood_test": 60,
    "pretrain_threads": 1,
    "ft_threads": 1,
    "ft_epochs": 50,
    "workers": 1,
    "ft_grouped": False,
}
# Screening criteria (E10): best HighlyKnown dev accuracy over epochs 1-10 in the paper's format, and the
# Known-only run in the pretraining format keeping this share of its epoch-0 HighlyKnown dev accuracy.
SCREEN_HK_BEST, SCREEN_KEEP = 0.85, 0.90


def screen_row(rec: pd.DataFrame, epochs: int) -> dict:
    """The screening numbers of one candidate from its two runs' records (``variant`` paper / qa)."""
    ep = analysis.epoch_table(rec).set_index(["variant", "epoch"])
    paper, qa = ep.loc["paper"], ep.loc["qa"]
    best_epoch = int(paper.loc[1:epochs, "dev_hk"].idxmax())
    row = {
        "hk_dev_best": float(paper.loc[best_epoch, "dev_hk"]),
        "hk_dev_best_epoch": best_epoch,
        "hk_dev_by_epoch": [round(float(x), 3) for x in paper["dev_hk"]],
        "qa_hk_dev_0": float(qa.loc[0, "dev_hk"]),
        "qa_hk_dev_last": float(qa.loc[epochs, "dev_hk"]),
        "qa_hk_dev_by_epoch": [round(float(x), 3) for x in qa["dev_hk"]],
        "zero_shot_paper_dev": float(paper.loc[0, "dev"]),
        "test_by_epoch": [round(float(x), 3) for x in paper["test"]],
        "train_last": float(paper.loc[epochs, "train"]),
        "qa_train_last": float(qa.loc[epochs, "train"]),
    }
    row["qa_keep"] = row["qa_hk_dev_last"] / row["qa_hk_dev_0"]
    row["pass_s1"] = row["hk_dev_best"] >= SCREEN_HK_BEST
    row["pass_s2"] = row["qa_keep"] >= SCREEN_KEEP
    row["survives"] = row["pass_s1"] and row["pass_s2"]
    return row


def screen(args) -> None:
    """World v3's screening (research-log E10): one pretraining per size and world, then per |D| and lr
    two 10-epoch unknown_0 runs (paper format, ``qa``), resumable, a row appended as each finishes."""
    out = RESULTS / "world_v3.jsonl"
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["kind"], r["d_model"], r.get("section4_size"), r.get("ft_lr"), r["world_seed"]))
    for ws in args.world_seeds:
        params = dict(config.load_profile("quick"))
        params.update(V3_WORLD, d_model=args.d_model, world_seed=ws, pretrain_seed=ws, slick_seed=ws)
        t0 = time.time()
        prep = pipeline.prepare(config.from_params(params))
        if ("prepare", args.d_model, None, None, ws) not in done:
            row = {
                "kind": "prepare",
                "d_model": args.d_model,
                "world_seed": ws,
                "rule_D": variants.dataset_size(prep.train),  # the rule as it is, below 100 too (criterion f)
                "prepare_wall_s": round(time.time() - t0, 1),
                **prepare_checks(prep),
                **format_check(prep),
            }
            with open(out, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")
        for size in args.sizes if args.epochs else []:  # --epochs 0: the world's model and its row only
            for lr in args.lrs:
                key = ("screen", args.d_model, size, lr, ws)
                if key in done:
                    continue
                cfg = dataclasses.replace(prep.study.finetune, ft_lr=lr, section4_size=size)
                data = variants.build(prep.train, "unknown_0", size=size or variants.dataset_size(prep.train), seed=ws)
                paths, t1 = [], time.time()
                for fmt in ("paper", "qa"):
                    spec = run_store.RunSpec(
                        prep.model_path, "unknown_0", ws, dataclasses.replace(cfg, ft_format=fmt), device="cpu"
                    )
                    path = run_store.run_dir(spec, data, prep.evals)
                    start = max(1, run_store.resume_point(path)[0]) if not (path / "done.json").exists() else 99
                    if start <= args.epochs:
                        finetune.train_run(spec, data, prep.evals, stop_after=args.epochs - start + 1)
                    paths.append(path)
                rec = pd.concat(
                    [run_store.load_records([p]).assign(variant=fmt) for p, fmt in zip(paths, ("paper", "qa"))]
                )
                rec = rec[rec["epoch"] <= args.epochs]
                row = {
                    "kind": "screen",
                    "d_model": args.d_model,
                    "section4_size": size,
                    "D": len(data),
                    "ft_lr": lr,
                    "world_seed": ws,
                    "epochs": args.epochs,
                    "finetune_wall_s": round(time.time() - t1, 1),
                    "sec_per_run_epoch": seconds_per_epoch(paths),
                    **screen_row(rec, args.epochs),
                }
                print(json.dumps({k: v for k, v in row.items() if not k.endswith("by_epoch")}, default=float))
                with open(out, "a") as f:
                    f.write(json.dumps(row, default=float) + "\n")


def confirm_params(d_model: int, size: int, lr: float, world_seed: int) -> dict:
    """The book's parameters for one candidate (research-log E13): ``full``'s recipe on the study world,
    one world (``seeds: [world_seed]``, ``seed_scope: world``), one worker, the screen's models."""
    params = dict(config.load_profile("full"))
    params.update({k: V3_WORLD[k] for k in ("n_train", "n_dev", "n_test", "n_ood_test", "pretrain_threads")})
    params.update(d_model=d_model, section4_size=size, ft_lr=lr, seeds=[world_seed], workers=1)
    return params


def run_summary(rec: pd.DataFrame) -> dict:
    """Per run: EARLY_STOP epoch, HighlyKnown dev accuracy and Unknown fitted there, train accuracy at
    CONVERGENCE, and HighlyKnown dev accuracy at epoch 0 and at CONVERGENCE (the erosion rule)."""
    ep = analysis.epoch_table(rec).merge(analysis.early_stop(rec), on=analysis.RUN)
    out = {}
    for v, e in ep.groupby("variant"):
        e = e.set_index("epoch")
        es, conv = int(e["early_stop"].iloc[0]), int(e["convergence"].iloc[0])
        out[v] = {
            "es_epoch": es,
            "dev_hk_es": float(e.loc[es, "dev_hk"]),
            "unknown_fit_es": float(e.loc[es, "unknown_fitted"]),
            "train_conv": float(e.loc[conv, "train"]),
            "dev_hk_0": float(e.loc[0, "dev_hk"]),
            "dev_hk_conv": float(e.loc[conv, "dev_hk"]),
            "epochs": conv,
        }
    return out


def confirm(args) -> None:
    """World v3's staged confirmation (research-log E13): C1 the smallest surviving rate at which both
    all-Unknown runs converge, C2 unknown_0 and the Known-only ``qa`` run at that rate; the book's own
    runs (grouped, cached), a row appended after each stage."""
    out = RESULTS / "world_v3.jsonl"
    ws = args.world_seed
    c1_rate = None
    for lr in sorted(args.lrs):
        s = pipeline.setup(config.from_params(confirm_params(args.d_model, args.size, lr, ws)))
        t0 = time.time()
        runs = run_summary(s.records(["unknown_100", "Unknown"]))
        converged = all(r["train_conv"] >= CONVERGED for r in runs.values())
        row = {"kind": "confirm_c1", "d_model": args.d_model, "section4_size": args.size, "ft_lr": lr}
        row.update(world_seed=ws, wall_s=round(time.time() - t0, 1), runs=runs, converged=converged)
        row["sec_per_group_epoch"] = seconds_per_epoch(s.runs)
        print(json.dumps(row, default=float))
        with open(out, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        c1_rate = lr
        if converged:
            break
    t0 = time.time()
    paper = run_summary(s.records(["unknown_0"]))["unknown_0"]
    qa = run_summary(s.records(["unknown_0"], ft_format="qa"))["unknown_0"]
    row = {"kind": "confirm_c2", "d_model": args.d_model, "section4_size": args.size, "ft_lr": c1_rate}
    row.update(world_seed=ws, wall_s=round(time.time() - t0, 1), c1_converged=converged, paper=paper, qa=qa)
    row["qa_keep"] = qa["dev_hk_conv"] / qa["dev_hk_0"]
    row["pass_a_unknown_0"] = paper["dev_hk_es"] >= 0.9
    row["pass_b"] = row["qa_keep"] >= 0.9
    print(json.dumps(row, default=float))
    with open(out, "a") as f:
        f.write(json.dumps(row, default=float) + "\n")


CONVERGED = 0.99  # CONVERGENCE: train accuracy at epoch 50 (E10, criterion d)


def confirm_book(args) -> None:
    """Stage C3 (research-log E13): the book's chapters 1, 2, 3, 5 and 7 on one world with the candidate's
    parameters (cached runs are read, the rest trained), then E10's criteria (a)-(f), a row appended."""
    from newknowledge.book import chapters

    ws = args.world_seed
    params = confirm_params(args.d_model, args.size, args.lr, ws)
    params["workers"] = args.workers
    s = pipeline.setup(config.from_params(params))
    t0 = time.time()
    chs = {n: chapters.module(n).results(s) for n in (1, 2, 3, 5, 7)}
    wall = round(time.time() - t0, 1)
    runs = {}
    for path in s.runs:
        fmt = json.loads((Path(path) / "config.json").read_text()).get("ft_format")
        for v, r in run_summary(run_store.load_records([path])).items():
            runs[v if fmt == s.study.finetune.ft_format else f"{v} ({fmt})"] = r
    prep = s.preps[ws]
    checks = {c.key: c.holds for n in (1, 3) for c in chs[n].checks if c.kind == "setup"}
    crit = criteria(runs, pipeline.section4_variants(s.study), checks, min(prep.size, prep.size4))
    row = {"kind": "confirm_c3", "d_model": args.d_model, "section4_size": args.size, "ft_lr": args.lr}
    row.update(world_seed=ws, wall_s=wall, criteria=crit, met=sum(crit.values()), rule_D=prep.size, D4=prep.size4)
    row.update(setup_checks=checks, runs=runs)
    print(json.dumps(row, default=float, indent=1))
    with open(RESULTS / "world_v3.jsonl", "a") as f:
        f.write(json.dumps(row, default=float) + "\n")


def criteria(runs: dict[str, dict], chapter2: list[str], checks: dict[str, bool | None], smallest_d: int) -> dict:
    """E10's criteria (a)-(f) from one world's run summaries (:func:`run_summary`, keyed by variant; the
    Known-only run in the pretraining format as ``"unknown_0 (qa)"``), chapter 1 and 3's setup checks
    (key -> holds) and the smaller of section 4's and section 5's |D|."""
    book_runs = {v: r for v, r in runs.items() if "(" not in v}  # chapters 2, 5, 7 (paper format)
    qa = runs.get("unknown_0 (qa)")
    return {
        "a": all(runs[v]["dev_hk_es"] >= 0.9 for v in chapter2),
        "b": qa is not None and qa["dev_hk_conv"] >= 0.9 * qa["dev_hk_0"],
        "c": all(r["es_epoch"] > 1 for r in book_runs.values()),
        "d": all(r["train_conv"] >= CONVERGED for r in book_runs.values()),
        "e": bool(checks.get("speed.zero_shot")),
        "f": all(h for k, h in checks.items() if k.startswith("knowledge.")) and smallest_d >= 100,
    }


def main() -> None:
    if len(__import__("sys").argv) > 1 and __import__("sys").argv[1] == "screen":
        ap = argparse.ArgumentParser(description="World v3 screening (research-log E10)")
        ap.add_argument("cmd", choices=["screen"])
        ap.add_argument("--d-model", type=int, required=True)
        ap.add_argument("--sizes", type=int, nargs="+", default=[0, 400, 600], help="section 4's |D| (0: the rule)")
        ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 5e-5, 3e-5, 1e-5])
        ap.add_argument("--world-seeds", type=int, nargs="+", default=[0])
        ap.add_argument("--epochs", type=int, default=10, help="0: pretrain and categorise only (a prepare row)")
        RESULTS.mkdir(exist_ok=True)
        return screen(ap.parse_args())
    if len(__import__("sys").argv) > 1 and __import__("sys").argv[1] in ("confirm", "confirm-book"):
        book = __import__("sys").argv[1] == "confirm-book"
        stages = "stage C3" if book else "stages C1-C2"
        ap = argparse.ArgumentParser(description=f"World v3 confirmation, {stages} (research-log E13)")
        ap.add_argument("cmd", choices=["confirm", "confirm-book"])
        ap.add_argument("--d-model", type=int, required=True)
        ap.add_argument("--size", type=int, required=True, help="section 4's |D|")
        ap.add_argument("--world-seed", type=int, default=0)
        if book:
            ap.add_argument("--lr", type=float, required=True, help="the rate C1 chose")
            ap.add_argument("--workers", type=int, default=1)
        else:
            ap.add_argument("--lrs", type=float, nargs="+", required=True, help="the screen's surviving rates")
        RESULTS.mkdir(exist_ok=True)
        return (confirm_book if book else confirm)(ap.parse_args())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidate", choices=sorted(CANDIDATES))
    ap.add_argument("--world-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], help="extra parameter, name=value (YAML value)")
    ap.add_argument("--tag", default="", help="name of this setting in the results (default: the candidate)")
    ap.add_argument("--stage", choices=["prepare", "all"], default="all")
    ap.add_argument("--variants", nargs="+", default=SECTION4)
    ap.add_argument("--exemplars", action="store_true", help="also compare SliCK with well-known exemplars")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for ws in args.world_seeds:
        params = params_for(args.candidate, ws, args.set)
        study = config.from_params(params)
        print(
            f"\n=== {args.tag or args.candidate}, world seed {ws}: "
            + ", ".join(f"{k}={v}" for k, v in params.items() if k not in ("profile",))
        )
        t0 = time.time()
        prep = pipeline.prepare(study)
        row = {
            "setting": args.tag or args.candidate,
            "world_seed": ws,
            "params": json.dumps(
                {
                    k: v
                    for k, v in params.items()
                    if CANDIDATES[args.candidate].get(k, None) is not None or k in [s.split("=")[0] for s in args.set]
                }
            ),
            "prepare_wall_s": round(time.time() - t0, 1),
        }
        row.update(prepare_checks(prep))
        row.update(format_check(prep))
        if args.exemplars:
            row.update(exemplar_check(prep))
        if args.stage == "all":
            finetune_checks(prep, args.variants, row)
        print("\nSummary:")
        for k, v in row.items():
            print(f"  {k}: {pct(v) if isinstance(v, float) and abs(v) <= 1 and not k.endswith('_s') else v}")
        with open(RESULTS / "world_design.jsonl", "a") as f:
            f.write(json.dumps(row, default=float) + "\n")


if __name__ == "__main__":
    main()
