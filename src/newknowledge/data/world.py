"""The controlled world: synthetic facts in ENTITYQUESTIONS format.

No weights or data sets can be downloaded for the default path, so the model
must learn its facts from us.  This module invents (subject, relation, object)
facts for the study's 19 relations (paper Sec. 2: 12 in-distribution, 7 OOD),
gives every fact a *true* pretraining exposure count, and writes the world as an
ENTITYQUESTIONS folder plus a side table of exposure counts.  Downstream code
reads it with :func:`newknowledge.data.entityquestions.load`, exactly as it reads the
real data set.  Unlike the paper, we therefore know the ground truth that SliCK
tries to estimate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from newknowledge.core import store
from newknowledge.core.config import WorldConfig
from newknowledge.data import entityquestions as eq

# Per relation: (object kind, object-pool size, three statement paraphrases).
# Pool sizes follow the real relations' answer spaces (few countries and genres,
# many people); answers are drawn from the pool with a Zipf law.
RELATIONS: dict[str, tuple[str, int, tuple[str, str, str]]] = {
    "P17": ("country", 25, ("{X} is located in {Y}.", "{X} lies in the country of {Y}.", "The country of {X} is {Y}.")),
    "P19": ("city", 150, ("{X} was born in {Y}.", "The birthplace of {X} is {Y}.", "{X} came into the world in {Y}.")),
    "P26": (
        "person",
        300,
        ("{X} is married to {Y}.", "The spouse of {X} is {Y}.", "{X} and {Y} are husband and wife."),
    ),
    "P36": (
        "city",
        150,
        ("The capital of {X} is {Y}.", "{Y} is the capital city of {X}.", "{X} has its capital in {Y}."),
    ),
    "P40": ("person", 300, ("{Y} is the child of {X}.", "{X} is a parent of {Y}.", "The child of {X} is named {Y}.")),
    "P69": ("school", 80, ("{X} was educated at {Y}.", "{X} studied at {Y}.", "{X} is an alumnus of {Y}.")),
    "P131": ("region", 100, ("{X} is located in {Y}.", "{X} is a place in {Y}.", "{X} can be found in {Y}.")),
    "P136": ("genre", 15, ("{X} plays {Y} music.", "The genre of {X} is {Y}.", "{X} is known for {Y}.")),
    "P264": (
        "label",
        40,
        ("{X} is signed to {Y}.", "{X} records for the label {Y}.", "The record label of {X} is {Y}."),
    ),
    "P495": ("country", 25, ("{X} was created in {Y}.", "{X} comes from {Y}.", "The country of origin of {X} is {Y}.")),
    "P740": ("city", 100, ("{X} was founded in {Y}.", "{X} was formed in {Y}.", "The founding place of {X} is {Y}.")),
    "P800": ("work", 60, ("{X} is famous for {Y}.", "{X} is best known for {Y}.", "The notable work of {X} is {Y}.")),
    "P127": ("company", 80, ("{X} is owned by {Y}.", "The owner of {X} is {Y}.", "{Y} owns {X}.")),
    "P50": ("person", 200, ("{X} was written by {Y}.", "The author of {X} is {Y}.", "{Y} wrote {X}.")),
    "P407": ("language", 15, ("{X} is written in {Y}.", "The language of {X} is {Y}.", "{X} was published in {Y}.")),
    "P176": ("company", 40, ("{X} is produced by {Y}.", "The maker of {X} is {Y}.", "{Y} manufactures {X}.")),
    "P170": ("person", 150, ("{X} was created by {Y}.", "The creator of {X} is {Y}.", "{Y} created {X}.")),
    "P175": ("person", 150, ("{X} was performed by {Y}.", "The performer of {X} is {Y}.", "{Y} performed {X}.")),
    "P112": ("person", 200, ("{X} was founded by {Y}.", "The founder of {X} is {Y}.", "{Y} founded {X}.")),
}

_ONSETS = [
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "z",
    "sh",
    "th",
    "w",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "m", "k", "th", "nd"]
# Suffixes give each kind of object a recognisable shape (like "...ia" countries).
_KIND_SUFFIX = {
    "country": ["ia", "land", "stan", "ica"],
    "city": ["burg", "ton", "ville", "port"],
    "region": [" County", " Province", " Valley"],
    "school": [" University", " College", " Institute"],
    "genre": [" rock", " pop", " folk", " jazz"],
    "label": [" Records", " Music"],
    "work": [" Theory", " Prize", " Engine", " Method"],
    "company": [" Corp", " Industries", " Group"],
    "language": ["ish", "ese", "ic"],
    "person": [""],
}


def _syllable(rng: np.random.Generator) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _word(rng: np.random.Generator, lo: int = 2, hi: int = 3) -> str:
    return "".join(_syllable(rng) for _ in range(rng.integers(lo, hi + 1))).capitalize()


def _unique(make, used: set[str]) -> str:
    while True:
        name = make()
        if name not in used:
            used.add(name)
            return name


def _object_pool(kind: str, size: int, rng: np.random.Generator, used: set[str]) -> list[str]:
    suffixes = _KIND_SUFFIX[kind]
    if kind == "person":
        make = lambda: f"{_word(rng, 1, 2)} {_word(rng, 2, 3)}"  # noqa: E731
    elif kind == "genre":
        make = lambda: _word(rng, 1, 2).lower() + rng.choice(suffixes)  # noqa: E731
    else:
        make = lambda: _word(rng, 1, 2) + rng.choice(suffixes)  # noqa: E731
    return [_unique(make, used) for _ in range(size)]


def _subject(relation: str, rng: np.random.Generator) -> str:
    # One or two invented words: never-seen names still tokenize into pieces.
    if rng.random() < 0.5:
        return _word(rng, 2, 3)
    return f"{_word(rng, 1, 2)} {_word(rng, 2, 3)}"


def exposures(n: int, cfg: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """True pretraining exposure counts: a share never exposed, the rest heavy-tailed.

    ``ceil(lognormal(mu, sigma))`` capped at ``exposure_cap`` (feasibility study:
    mean about 6, median 2).
    """
    counts = np.ceil(rng.lognormal(cfg.exposure_mu, cfg.exposure_sigma, size=n))
    counts = np.minimum(counts, cfg.exposure_cap).astype(int)
    counts[rng.random(n) < cfg.never_exposed] = 0
    return counts


def generate(cfg: WorldConfig) -> pd.DataFrame:
    """Invent the world's facts.

    Returns:
        One row per fact: ``split`` (train/dev/test for the 12 in-distribution
        relations, test for the 7 OOD ones, as in the data set's own files;
        the OOD relations also get dev facts, the few-shot exemplars of their
        test questions),
        ``relation``, ``subject``, ``answer``, ``question``, ``exposures``.
        Every subject is unique, so no subject is shared between splits.
    """
    rng = np.random.default_rng(cfg.world_seed)
    used: set[str] = set()
    rows = []
    for relation, (kind, pool_size, _) in RELATIONS.items():
        pool = _object_pool(kind, max(2, round(pool_size * cfg.pool_scale)), rng, used)
        weights = 1.0 / np.arange(1, len(pool) + 1) ** cfg.zipf_a
        weights /= weights.sum()
        if relation in eq.TRAIN_RELATIONS:
            sizes = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
        else:
            sizes = {"dev": cfg.n_dev, "test": cfg.n_ood_test}  # dev: exemplars only
        for split, n in sizes.items():
            answers = rng.choice(len(pool), size=n, p=weights)
            if split == "dev" and cfg.dev_exposures == "uniform":  # the old dev: well-known exemplars only
                counts = rng.integers(cfg.dev_min_exposures, cfg.dev_max_exposures + 1, size=n)
            else:  # the paper's dev is drawn like train and test: the same exposure law
                counts = exposures(n, cfg, rng)
            for a, c in zip(answers, counts):
                subject = _unique(lambda: _subject(relation, rng), used)  # noqa: B023 (called within the iteration)
                question = eq.TEMPLATES[relation].replace("[X]", subject)
                rows.append((split, relation, subject, pool[a], question, int(c)))
    return pd.DataFrame(rows, columns=["split", "relation", "subject", "answer", "question", "exposures"])


def write(facts: pd.DataFrame, folder: Path) -> None:
    """Write facts as an ENTITYQUESTIONS folder plus ``exposures.csv``."""
    folder = Path(folder)
    for (split, relation), group in facts.groupby(["split", "relation"], sort=True):
        (folder / split).mkdir(parents=True, exist_ok=True)
        items = [{"question": q, "answers": [a]} for q, a in zip(group["question"], group["answer"])]
        (folder / split / f"{relation}.{split}.json").write_text(json.dumps(items, indent=1, ensure_ascii=False))
    facts[["split", "relation", "subject", "answer", "exposures"]].to_csv(folder / "exposures.csv", index=False)


def build(cfg: WorldConfig) -> Path:
    """Generate and store the world (cached by config hash); return its folder."""
    config = {"stage": "world", **cfg.__dict__}
    path = store.stage_dir("world", config)
    if not store.is_done(path):
        with store.building(path, config) as tmp:
            write(generate(cfg), tmp)
    return path


def facts(folder: Path) -> pd.DataFrame:
    """Every fact of a stored world, in :func:`generate`'s order and columns (dev included).

    Read back from ``exposures.csv`` (the questions rebuilt from the relation
    templates), so pretraining gets the world without generating it again.
    """
    table = pd.read_csv(
        Path(folder) / "exposures.csv",
        keep_default_na=False,
        dtype={"split": str, "relation": str, "subject": str, "answer": str, "exposures": int},
    )
    table["question"] = [eq.TEMPLATES[r].replace("[X]", s) for r, s in zip(table["relation"], table["subject"])]
    return table[["split", "relation", "subject", "answer", "question", "exposures"]]


def load(folder: Path) -> pd.DataFrame:
    """Read a world folder with the ENTITYQUESTIONS loader, preprocessed, with exposures.

    Returns:
        :func:`newknowledge.data.entityquestions.preprocess`'s table plus ``exposures``.
    """
    folder = Path(folder)
    table = eq.preprocess(eq.load(folder), verbose=False)
    side = pd.read_csv(folder / "exposures.csv")[["relation", "subject", "exposures"]]
    return table.merge(side, on=["relation", "subject"], how="left", validate="one_to_one")
