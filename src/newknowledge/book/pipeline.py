"""The study end to end: data, model, SliCK table, fine-tuning grids.

Every chapter starts with :func:`start`, which reads the notebook's
parameters and returns a :class:`Setup`: the study's configuration and, for
each seed, the prepared world (data, pretrained model, SliCK table), all
cached.  The chapter then asks the setup for the fine-tuning records it needs
(:meth:`Setup.records`), which trains only what is not in the run store.

A *seed* is a replicate of the study.  With ``seed_scope: finetune`` seeds
vary only the fine-tuning draw and data order on one world; with
``seed_scope: world`` seed ``s`` also shifts the world, pretraining and SliCK
seeds by ``s``, so each seed is a new world with its own model (intervals
across worlds, as the book must not depend on one lucky world).

The controlled world (default) and the real path (``model`` and ``eq_dir``
parameters) differ only in where the questions and the model come from.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from newknowledge.core.config import ConfigError, Study
from newknowledge.data import entityquestions as eq
from newknowledge.data import world
from newknowledge.finetuning import finetune, run_store, variants
from newknowledge.finetuning.variants import SAME_DATA
from newknowledge.knowledge import slick
from newknowledge.model import lm, pretrain


@dataclass
class Prepared:
    """One world: its data, its model and its SliCK table, with where they came from."""

    study: Study  # the configuration of this world (seeds shifted for seed_scope "world")
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

    @property
    def size(self) -> int:
        """|D|: the profile's ``dataset_size``, or the paper's rule when it is 0 (Sec. 4.1).

        Raises:
            VariantError: the data do not allow the study's variants (one message, per relation).
        """
        ft = self.study.finetune
        return variants.check_size(self.train, ft.dataset_size, ft.min_dataset_size)

    @property
    def size4(self) -> int:
        """|D| of section 4's variants: ``section4_size``, or :attr:`size` when it is 0.

        The paper fixes |D| across the variants of one comparison (Sec. 4.1); section 4's
        comparison (X% Unknown) may use more examples than section 5's single-category rule
        allows, since it needs only Known and Unknown examples.
        """
        ft = self.study.finetune
        if ft.section4_size and ft.section4_size < ft.min_dataset_size:
            raise variants.VariantError(
                f"section4_size {ft.section4_size} is below the {ft.min_dataset_size} "
                "the study needs (min_dataset_size); set 0 to use dataset_size's |D|"
            )
        return ft.section4_size or self.size

    def size_of(self, name: str) -> int:
        """|D| of the variant ``name``: :attr:`size4` for section 4's, :attr:`size` for the others."""
        return self.size4 if variants.is_section4(name) else self.size


def world_study(study: Study, seed: int) -> Study:
    """The configuration of seed ``seed``'s world: the study's own for ``seed_scope: finetune``,
    else with the world, pretraining and SliCK seeds shifted by ``seed``."""
    if study.study.seed_scope != "world":
        return study
    return dataclasses.replace(
        study,
        world=dataclasses.replace(study.world, world_seed=study.world.world_seed + seed),
        pretrain=dataclasses.replace(study.pretrain, pretrain_seed=study.pretrain.pretrain_seed + seed),
        slick=dataclasses.replace(study.slick, slick_seed=study.slick.slick_seed + seed),
    )


def prepare(study: Study) -> Prepared:
    """Build (or load from the cache) one world's data, model and SliCK table."""
    s, seconds = study.study, {}
    if s.profile == "paper" and not (s.model and s.eq_dir):
        raise ConfigError(
            "profile 'paper' runs a real model on the real data, so both must be given: "
            "make book PROFILE=paper MODEL=<hf-id-or-folder> EQ_DIR=<entityquestions folder>, or with "
            "papermill -p model <hf-id-or-folder> -p eq_dir <folder> (got model="
            f"{s.model!r}, eq_dir={s.eq_dir!r}; download the data with "
            "newknowledge.data.entityquestions.download('data/entityquestions'))"
        )
    t = time.time()
    if s.eq_dir:
        # The real data: the same loader and the paper's preprocessing.  It has no
        # exposures column (nobody knows how often a real model saw a fact) and no
        # world folder; the display functions handle both.
        raw = eq.load(s.eq_dir)
        facts = eq.preprocess(raw, verbose=False)
        world_dir = None
    else:
        world_dir = world.build(study.world)
        raw = eq.load(world_dir)
        facts = world.load(world_dir)
    seconds["data"] = time.time() - t
    t = time.time()
    model_path = s.model or str(pretrain.build(study.world, study.pretrain, world.facts(world_dir)))
    seconds["pretrain"] = time.time() - t
    t = time.time()
    exemplars = eq.exemplar_pool(raw)
    table = slick.run(model_path, facts, exemplars, study.slick, device=s.device, dtype=s.dtype)
    seconds["slick"] = time.time() - t
    return Prepared(study, model_path, table, exemplars, world_dir, seconds)


def _device(study: Study) -> str:
    # "auto" keeps the controlled world's small model on CPU (runs go side by side, one
    # thread each); a real model goes to the GPU when there is one.
    device = study.study.device
    if device == "auto":
        device = str(lm.resolve_device("auto")) if study.study.model else "cpu"
    return device


@dataclass
class Setup:
    """What a chapter works with: the study, one prepared world per seed, the runs it used."""

    study: Study
    preps: dict[int, Prepared]  # seed -> its world (one shared object for seed_scope "finetune")
    started: float = field(default_factory=time.time)
    runs: list[Path] = field(default_factory=list)  # every fine-tuning run read so far (provenance)

    @property
    def seeds(self) -> list[int]:
        return list(self.preps)

    @property
    def prep(self) -> Prepared:
        """The first seed's world (what chapter 1 shows question by question)."""
        return self.preps[self.seeds[0]]

    def worlds(self) -> dict[int, Prepared]:
        """The distinct worlds, by the first seed that uses each."""
        out: dict[int, Prepared] = {}
        for seed, prep in self.preps.items():
            if all(prep is not p for p in out.values()):
                out[seed] = prep
        return out

    def tables(self) -> pd.DataFrame:
        """Every distinct world's SliCK table, with ``seed`` and ``example`` (the row's id in
        its world's records) columns."""
        return pd.concat(
            [p.table.assign(seed=s, example=p.table.index) for s, p in self.worlds().items()], ignore_index=True
        )

    def records(self, names: list[str], seeds: list[int] | None = None, **overrides) -> pd.DataFrame:
        """Fine-tune on each named variant for each seed (cached); return every epoch record.

        Args:
            names: variant specs for :func:`newknowledge.finetuning.variants.build`; a name of
                :data:`SAME_DATA` reads the run of the variant it names (relabelled).
            seeds: defaults to every seed of the study.
            overrides: fine-tuning config fields to change (e.g. ``ft_format``).

        Returns:
            The tidy records of :func:`newknowledge.finetuning.run_store.load_records` (``variant``,
            ``seed``, ``epoch``, ``split``, ``example``, ``category``, ``correct``, ...);
            ``example`` ids are positions in that seed's world's evaluation table.
        """
        names = list(dict.fromkeys(names))
        same = self.same_data() if any(n in SAME_DATA for n in names) else {}
        runs = list(dict.fromkeys(same.get(n, n) for n in names))  # one run per distinct data set
        jobs = []
        for seed in seeds if seeds is not None else self.seeds:
            prep = self.preps[seed]
            cfg = dataclasses.replace(prep.study.finetune, **overrides)
            for name in runs:
                data = variants.build(prep.train, name, size=prep.size_of(name), seed=seed)
                spec = run_store.RunSpec(
                    prep.model_path,
                    name,
                    seed,
                    cfg,
                    device=_device(prep.study),
                    dtype=prep.study.study.dtype,
                    at_stops=at_stops(name),
                )
                jobs.append((spec, data, prep.evals))
        cfg = self.study.finetune
        paths = finetune.run_all(jobs, workers=cfg.workers, executor=cfg.executor)
        self.runs += [p for p in paths if p not in self.runs]
        recs = run_store.load_records(paths)
        return pd.concat([recs[recs["variant"] == same.get(n, n)].assign(variant=n) for n in names], ignore_index=True)

    def same_data(self) -> dict[str, str]:
        """:data:`~newknowledge.finetuning.variants.SAME_DATA`, where both names have one |D| in every world
        (D_Unknown is D with 100% Unknown only when section 4's |D| is section 5's)."""
        return {a: b for a, b in SAME_DATA.items() if all(p.size_of(a) == p.size_of(b) for p in self.worlds().values())}

    def section4(self, seeds: list[int] | None = None, **overrides) -> pd.DataFrame:
        """Records of every section-4 run: D with each share of Unknown, and D_Known (Sec. 4)."""
        return self.records(section4_variants(self.study), seeds=seeds, **overrides)


# The splits a run evaluates only where EARLY_STOP or CONVERGENCE can fall (run_store.Watch).
AT_STOPS = ("test", "ood_test")


def at_stops(name: str) -> tuple[str, ...]:
    """The splits the run of variant ``name`` records only at candidate stops: which chapter reads what.

    Test and OOD-test accuracy at every epoch is read only from section 4's runs, D with X% Unknown and
    D_Known (``unknown_X``, ``known_X``, in either format): chapter 2's curves, chapter 4's linear model
    (both splits), chapter 3's and chapter 8's D - D_Known per epoch and the erosion check.  Every other
    run is read at EARLY_STOP and CONVERGENCE only: section 5's single-category and natural D (chapter 5's
    Table 2 and its EARLY_STOP/CONVERGENCE test, chapter 6's test set) and D_IDK (chapter 7's Table 8), so
    their test and OOD-test questions are evaluated only where those can fall; dev and the fitted flags,
    which EARLY_STOP and the fitting speed read, at every epoch.
    """
    every_epoch = variants.is_section4(name) and not name.startswith("idk")
    return () if every_epoch else AT_STOPS


def section4_variants(study: Study) -> list[str]:
    """D with X% Unknown for each X of ``pct_unknown``, and D_Known for 0 < X < 100 (Sec. 4)."""
    xs = [int(x) if float(x).is_integer() else x for x in study.finetune.pct_unknown]
    return [f"unknown_{x}" for x in xs] + [f"known_{x}" for x in xs if 0 < x < 100]


def setup(study: Study) -> Setup:
    """Prepare every seed's world (cached); worlds shared between seeds are prepared once."""
    preps: dict[int, Prepared] = {}
    by_config: dict[str, Prepared] = {}
    for seed in study.study.seeds:
        ws = world_study(study, seed)
        key = repr((ws.world, ws.pretrain, ws.slick))
        if key not in by_config:
            by_config[key] = prepare(ws)
        preps[seed] = by_config[key]
    return Setup(study, preps)


def start(namespace: dict) -> Setup:
    """A chapter's one setup call: parameters from the notebook's globals, the book's plot style,
    every seed's world prepared (cached).

    Args:
        namespace: the notebook's ``globals()`` right after its parameters cell; an
            unknown or mistyped parameter fails here (papermill only warns).
    """
    from newknowledge.book import plots
    from newknowledge.core import config

    study = config.from_namespace(namespace)
    plots.use()
    return setup(study)
