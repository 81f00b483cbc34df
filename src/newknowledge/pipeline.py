"""The study end to end: data, model, SliCK table, fine-tuning grids.

Every chapter starts with :func:`prepare`, which returns cached artifacts when
they exist.  The controlled world (default) and the real path (``model`` and
``eq_dir`` parameters) differ only in where the questions and the model come
from; everything after that is the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import entityquestions as eq
from . import finetune, lm, pretrain, slick, variants, world
from .config import ConfigError, Study


@dataclass
class Prepared:
    """What every chapter needs, with where it came from."""

    study: Study
    model_path: str
    table: pd.DataFrame  # SliCK table: one row per example of train/dev/test/ood_test
    exemplars: pd.DataFrame  # dev questions with one answer, every relation (few-shot exemplars)
    world_dir: Path | None
    seconds: dict = field(default_factory=dict)  # wall time of each stage in this call

    @property
    def train(self) -> pd.DataFrame:
        return self.table[self.table["split"] == "train"].reset_index(drop=True)

    @property
    def evals(self) -> pd.DataFrame:
        """Dev, test and OOD-test questions with their SliCK category and an ``example`` id."""
        ev = self.table[self.table["split"] != "train"].copy()
        ev["example"] = ev.index
        return ev.reset_index(drop=True)


def exemplar_pool(raw: pd.DataFrame) -> pd.DataFrame:
    """Dev questions with exactly one answer, of every relation (OOD ones included)."""
    dev = raw[(raw["split"] == "dev") & (raw["answers"].map(len) == 1)]
    return dev.assign(answer=dev["answers"].map(lambda a: a[0]))[["relation", "question", "answer"]].reset_index(drop=True)


def prepare(study: Study) -> Prepared:
    """Build (or load from the cache) the data, the model and the SliCK table."""
    s, seconds = study.study, {}
    if s.profile == "paper" and not (s.model and s.eq_dir):
        raise ConfigError(
            "profile 'paper' runs a real model on the real data, so both must be given: "
            "make book PROFILE=paper MODEL=<hf-id-or-folder> EQ_DIR=<entityquestions folder>, or with "
            "papermill -p model <hf-id-or-folder> -p eq_dir <folder> (got model="
            f"{s.model!r}, eq_dir={s.eq_dir!r}; download the data with "
            "newknowledge.entityquestions.download('data/entityquestions'))"
        )
    t = time.time()
    if s.eq_dir:
        # The real data: the same loader and the paper's preprocessing.  It has no
        # exposures column (nobody knows how often a real model saw a fact) and no
        # world folder; describe() and provenance() handle both.
        raw = eq.load(s.eq_dir)
        facts = eq.preprocess(raw, verbose=False)
        world_dir = None
    else:
        world_dir = world.build(study.world)
        raw = eq.load(world_dir)
        facts = world.load(world_dir)
    seconds["data"] = time.time() - t
    t = time.time()
    model_path = s.model or str(pretrain.build(study.world, study.pretrain, world.generate(study.world)))
    seconds["pretrain"] = time.time() - t
    t = time.time()
    exemplars = exemplar_pool(raw)
    table = slick.run(model_path, facts, exemplars, study.slick, device=s.device, dtype=s.dtype)
    seconds["slick"] = time.time() - t
    return Prepared(study, model_path, table, exemplars, world_dir, seconds)


def variant_size(prep: Prepared) -> int:
    """|D|: the profile's ``dataset_size``, or the paper's rule when it is 0."""
    return prep.study.finetune.dataset_size or variants.dataset_size(prep.train)


def run_variants(prep: Prepared, names: list[str], seeds: list[int] | None = None, **overrides) -> pd.DataFrame:
    """Fine-tune on each named variant and seed (cached); return all epoch records.

    Args:
        names: variant specs for :func:`newknowledge.variants.build`.
        seeds: defaults to the study's ``seeds``.
        overrides: fine-tuning config fields to change (e.g. ``ft_format``).
    """
    import dataclasses

    cfg = dataclasses.replace(prep.study.finetune, **overrides)
    size = variant_size(prep)
    jobs = []
    for seed in seeds if seeds is not None else prep.study.study.seeds:
        for name in names:
            data = variants.build(prep.train, name, size=size, seed=seed)
            # "auto" keeps the controlled world's small model on CPU (runs go side by
            # side, one thread each); a real model goes to the GPU when there is one.
            device = prep.study.study.device
            if device == "auto":
                device = str(lm.resolve_device("auto")) if prep.study.study.model else "cpu"
            jobs.append((finetune.RunSpec(prep.model_path, name, seed, cfg, device=device,
                                          dtype=prep.study.study.dtype), data))
    paths = finetune.run_all(jobs, prep.evals, workers=cfg.workers, executor=cfg.executor)
    records = finetune.load_records(paths)
    records.attrs["runs"] = [str(p) for p in paths]  # for the provenance cell
    return records


def describe(prep: Prepared) -> pd.DataFrame:
    """The data and the model in a few numbers (one row per quantity)."""
    import json

    t = prep.table
    rows = [("relations (in-distribution / OOD)",
             f"{t.loc[t.split != 'ood_test', 'relation'].nunique()} / {t.loc[t.split == 'ood_test', 'relation'].nunique()}")]
    rows += [(f"{split} questions", f"{(t.split == split).sum():,}") for split in ("train", "dev", "test", "ood_test")]
    if "exposures" in t:
        ex = t.loc[t.split.isin(["train", "test", "ood_test"]), "exposures"]
        rows += [("never-exposed facts (train/test)", f"{(ex == 0).mean():.0%}"),
                 ("exposures of exposed facts: median / mean / max",
                  f"{ex[ex > 0].median():.0f} / {ex[ex > 0].mean():.1f} / {ex.max()}")]
    stats_file = Path(prep.model_path).parent / "stats.json"
    if stats_file.exists():
        st = json.loads(stats_file.read_text())
        rows += [("model parameters", f"{st['parameters']:,}"), ("pretraining corpus (tokens)", f"{st['corpus_tokens']:,}"),
                 ("pretraining tokens seen", f"{st['train_tokens']:,}"), ("final pretraining loss", f"{st['final_loss']:.2f}"),
                 ("pretraining time (s, when built)", f"{st['seconds']:.0f}")]
    else:
        rows.append(("model", prep.model_path))
    rows.append(("SliCK prompts per question (greedy + samples each)",
                 f"{prep.study.slick.n_ex} x (1 + {prep.study.slick.n_samples}), estimator {prep.study.slick.estimator}"))
    return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")


def provenance(prep: Prepared, started: float, runs: list[Path] | None = None) -> pd.DataFrame:
    """Closing cell of every chapter: parameters, run time and the cached artifacts used."""
    import subprocess

    from . import __version__, store
    from .config import config_hash

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    root = store.artifacts_root()

    def rel(p) -> str:
        p = Path(p)
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    rows = [("profile", prep.study.study.profile), ("parameters hash", config_hash(prep.study.params())),
            ("package version / commit", f"{__version__} / {commit}"),
            ("chapter run time (s)", f"{time.time() - started:.0f}"),
            ("world", rel(prep.world_dir) if prep.world_dir else prep.study.study.eq_dir),
            ("model", rel(prep.model_path))]
    rows += [(f"stage time in this run: {k} (s)", f"{v:.0f}") for k, v in prep.seconds.items()]
    if runs:
        rows.append(("fine-tuning runs used", ", ".join(sorted({rel(p) for p in runs}))))
    rows.append(("all parameters", ", ".join(f"{k}={v}" for k, v in prep.study.params().items())))
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def section4_variants(study: Study) -> list[str]:
    """D with X% Unknown for each X of ``pct_unknown``, and D_Known for 0 < X < 100 (Sec. 4)."""
    xs = [int(x) if float(x).is_integer() else x for x in study.finetune.pct_unknown]
    return [f"unknown_{x}" for x in xs] + [f"known_{x}" for x in xs if 0 < x < 100]


def section4(prep: Prepared, seeds: list[int] | None = None, **overrides) -> pd.DataFrame:
    """Records of every section-4 run (the study's seeds unless given), with the study's config and ``overrides``."""
    return run_variants(prep, section4_variants(prep.study), seeds=seeds, **overrides)
