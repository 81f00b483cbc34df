"""ENTITYQUESTIONS: relations, templates, loading and the paper's preprocessing (paper Sec. 2, App. A).

The data set (Sciavolino et al., 2021; MIT licence) is one JSON file per relation
and split, ``{split}/{Pid}.{split}.json``, each a list of
``{"question": str, "answers": [str, ...]}``.  The synthetic world of
:mod:`newknowledge.data.world` is written in the same format and read by the same
:func:`load`.

- :func:`load` reads and validates a folder into a tidy table, one row per question.
- :func:`preprocess` applies the paper's selection (Sec. 2 and App. A): 12
  relations for train/dev/test, 7 held-out relations as the OOD test set,
  single-answer questions only, no train subject shared with a test question.
- :func:`counts_table` gives the per-relation counts (the shape of Tables 3-5).
- :func:`download` fetches the official archive when there is a network.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Iterable
from http.client import HTTPException
from pathlib import Path

import pandas as pd

# Question templates of ENTITYQUESTIONS; ``[X]`` marks the subject.
TEMPLATES: dict[str, str] = {
    "P17": "Which country is [X] located in?",
    "P19": "Where was [X] born?",
    "P20": "Where did [X] die?",
    "P26": "Who is [X] married to?",
    "P30": "Which continent is [X] located?",
    "P36": "What is the capital of [X]?",
    "P40": "Who is [X]'s child?",
    "P50": "Who is the author of [X]?",
    "P69": "Where was [X] educated?",
    "P106": "What kind of work does [X] do?",
    "P112": "Who founded [X]?",
    "P127": "Who owns [X]?",
    "P131": "Where is [X] located?",
    "P136": "What type of music does [X] play?",
    "P159": "Where is the headquarter of [X]?",
    "P170": "Who was [X] created by?",
    "P175": "Who performed [X]?",
    "P176": "Which company is [X] produced by?",
    "P264": "What music label is [X] represented by?",
    "P276": "Where is [X] located?",
    "P407": "Which language was [X] written in?",
    "P413": "What position does [X] play?",
    "P495": "Which country was [X] created in?",
    "P740": "Where was [X] founded?",
    "P800": "What is [X] famous for?",
}

# The 12 relations used for train/dev/test (paper Sec. 2).
TRAIN_RELATIONS: tuple[str, ...] = (
    "P17",
    "P19",
    "P26",
    "P36",
    "P40",
    "P69",
    "P131",
    "P136",
    "P264",
    "P495",
    "P740",
    "P800",
)
# The 7 held-out relations forming the out-of-distribution test set.
OOD_RELATIONS: tuple[str, ...] = ("P127", "P50", "P407", "P176", "P170", "P175", "P112")
# Dropped by the paper as too close to a training relation.
DROPPED_RELATIONS: tuple[str, ...] = ("P276", "P20", "P106", "P413", "P159")


SPLITS: tuple[str, ...] = ("train", "dev", "test")
# Splits after :func:`preprocess`; the OOD relations contribute only their test split.
OUT_SPLITS: tuple[str, ...] = ("train", "dev", "test", "ood_test")
# The authors' archive (github.com/princeton-nlp/EntityQuestions, MIT licence).
DEFAULT_URL = "https://nlp.cs.princeton.edu/projects/entity-questions/dataset.zip"
_LAYOUT = "{folder}/{train,dev,test}/{Pid}.{split}.json, e.g. train/P17.train.json"


class DataError(ValueError):
    """A data folder, file or entry that is not in the ENTITYQUESTIONS format.

    The message names the file, the entry index and field where relevant, and the fix.
    """


@functools.cache
def _template_regex(relation: str) -> re.Pattern[str]:
    # Escape the template's literal text (its "?" and "'" must match verbatim) and
    # turn the one [X] into the subject group; the caller anchors with fullmatch.
    before, after = TEMPLATES[relation].split("[X]")
    return re.compile(re.escape(before) + "(.+)" + re.escape(after), flags=re.DOTALL)


def extract_subject(relation: str, question: str) -> str | None:
    """The subject of ``question`` under ``relation``'s template, or None if it does not match.

    Args:
        relation: a Wikidata property id in :data:`TEMPLATES`, e.g. ``"P40"``.
        question: e.g. ``"Who is Thurgood Marshall's child?"``.

    Returns:
        The text standing for ``[X]`` (``"Thurgood Marshall"``), or None.
    """
    match = _template_regex(relation).fullmatch(question)
    return None if match is None else match.group(1)


def _read_file(path: Path, split: str, relation: str) -> list[dict]:
    """Validate one ``{Pid}.{split}.json`` file and return its rows."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        # One line naming file and position beats a chained decoder traceback.
        raise DataError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "fix the file or download the data set again."
        ) from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; download the data set again.") from None
    entry_format = 'a list of {"question": str, "answers": [str, ...]} objects'
    if not isinstance(data, list):
        raise DataError(f"{path}: top level is a JSON {type(data).__name__}, expected {entry_format}.")
    rows = []
    for index, entry in enumerate(data):
        where = f"{path}, entry {index}"
        if not isinstance(entry, dict):
            raise DataError(
                f"{where}: is a JSON {type(entry).__name__}, expected an object; the file must hold {entry_format}."
            )
        for field in ("question", "answers"):
            if field not in entry:
                raise DataError(
                    f"{where}: missing field '{field}'; every entry needs "
                    "'question' (a string) and 'answers' (a non-empty list of strings)."
                )
        question, answers = entry["question"], entry["answers"]
        if not isinstance(question, str):
            raise DataError(f"{where}, field 'question': expected a string, got {question!r:.80}.")
        # An empty gold answer would count an empty generation as correct under EM.
        if not (isinstance(answers, list) and answers and all(isinstance(a, str) and a.strip() for a in answers)):
            raise DataError(
                f"{where}, field 'answers': expected a non-empty list of non-empty strings, got {answers!r:.80}."
            )
        subject = extract_subject(relation, question)
        if subject is None:
            raise DataError(
                f"{where}, field 'question': {question!r} does not match the {relation} "
                f"template {TEMPLATES[relation]!r}; fix the question or the file name."
            )
        rows.append(
            {
                "split": split,
                "relation": relation,
                "index": index,
                "question": question,
                "subject": subject,
                "answers": list(answers),
            }
        )
    return rows


def load(folder: str | os.PathLike, relations: Iterable[str] | None = None) -> pd.DataFrame:
    """Read an ENTITYQUESTIONS folder into a tidy table (paper Sec. 2).

    Files of relation ids not in :data:`TEMPLATES` are skipped with a warning: the
    study's selection ignores them.  Other ``*.json`` files must be named
    ``{Pid}.{split}.json``; files with other extensions are ignored.

    Args:
        folder: a folder holding ``train/``, ``dev/`` and ``test/``.
        relations: optional relation ids to read (a single id may be a string);
            default all relations in :data:`TEMPLATES` found in the folder.

    Returns:
        DataFrame with one row per question and columns ``split``, ``relation``,
        ``index`` (position in its file), ``question``, ``subject`` and
        ``answers`` (list of str), ordered by split (train, dev, test), relation, index.

    Raises:
        DataError: on a missing split folder, no data files, a bad file name, an
            unknown id in ``relations`` or a malformed entry (the message says where).
    """
    folder = Path(folder)
    wanted = None
    if relations is not None:
        wanted = {relations} if isinstance(relations, str) else set(relations)
        unknown = sorted(wanted - TEMPLATES.keys())
        if unknown:
            raise DataError(f"relations={unknown} not known; the known relation ids are {', '.join(TEMPLATES)}.")
    files = []
    for split in SPLITS:
        if not (folder / split).is_dir():
            raise DataError(f"{folder}: no '{split}' folder; expected the layout {_LAYOUT}.")
        for path in (folder / split).glob("*.json"):
            match = re.fullmatch(rf"(P\d+)\.{split}\.json", path.name)
            if match is None:
                raise DataError(
                    f"{path}: file name is not {{Pid}}.{split}.json (e.g. P17.{split}.json); rename or remove the file."
                )
            files.append((SPLITS.index(split), match.group(1), split, path))
    if not files:
        raise DataError(f"{folder}: no *.json data files in train/, dev/ or test/; expected the layout {_LAYOUT}.")
    rows, skipped, found = [], set(), set()
    for _, relation, split, path in sorted(files):
        if relation not in TEMPLATES:
            skipped.add(relation)
        elif wanted is None or relation in wanted:
            found.add(relation)
            rows.extend(_read_file(path, split, relation))
    if skipped:
        warnings.warn(
            f"{folder}: skipped relations without a question template: {', '.join(sorted(skipped))}.", stacklevel=2
        )
    if wanted is not None and wanted - found:
        raise DataError(f"{folder}: no files for relations {sorted(wanted - found)} in train/, dev/ or test/.")
    return pd.DataFrame(rows, columns=["split", "relation", "index", "question", "subject", "answers"])


def preprocess(table: pd.DataFrame, *, verbose: bool = True) -> pd.DataFrame:
    """The paper's selection of relations and examples (Sec. 2, App. A).

    Keeps :data:`TRAIN_RELATIONS` in train/dev/test and the test split of
    :data:`OOD_RELATIONS` as ``ood_test``; drops every other relation (among them
    :data:`DROPPED_RELATIONS`), questions with more than one answer, and train
    questions whose subject is the subject of any test or ood_test question
    (same string, any relation), so a test question can only be answered from
    pre-existing knowledge.  Dev subjects may recur in train, as in the paper.

    Args:
        table: the output of :func:`load`.
        verbose: print :func:`counts_table` of the result.

    Returns:
        DataFrame with columns ``split`` (train/dev/test/ood_test), ``relation``,
        ``question``, ``subject`` and ``answer`` (str), ordered by split, relation, index.
    """
    missing = {"split", "relation", "index", "question", "subject", "answers"} - set(table.columns)
    if missing:
        raise DataError(f"table lacks columns {sorted(missing)}; pass the output of load().")
    in_dist = table["relation"].isin(TRAIN_RELATIONS)
    ood = table["relation"].isin(OOD_RELATIONS) & (table["split"] == "test")
    kept = table[in_dist | ood].copy()
    kept.loc[ood[in_dist | ood], "split"] = "ood_test"
    # Held-out subjects are taken before the single-answer filter: conservative, a
    # train subject never appears anywhere in the study's test files.
    held_out = set(kept.loc[kept["split"].isin(["test", "ood_test"]), "subject"])
    kept = kept[kept["answers"].map(len) == 1]
    kept = kept[~((kept["split"] == "train") & kept["subject"].isin(held_out))]
    kept = kept.assign(answer=kept["answers"].str[0].astype("str"), split_order=kept["split"].map(OUT_SPLITS.index))
    kept = kept.sort_values(["split_order", "relation", "index"], kind="stable")
    out = kept[["split", "relation", "question", "subject", "answer"]].reset_index(drop=True)
    if verbose:
        print("ENTITYQUESTIONS after preprocessing (questions per relation and split):")
        print(counts_table(out).to_string())
    return out


def counts_table(pre: pd.DataFrame) -> pd.DataFrame:
    """Questions per relation and split, as in the paper's Tables 3-5.

    Args:
        pre: the output of :func:`preprocess`.

    Returns:
        DataFrame of ints indexed by relation (in-distribution relations first, then
        OOD ones, each sorted by id as the paper's tables are), one column per split
        in :data:`OUT_SPLITS`, and a last row ``total``.
    """
    counts = pre.groupby(["relation", "split"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(OUT_SPLITS), fill_value=0)
    order = sorted(counts.index, key=lambda r: (r in OOD_RELATIONS, r))
    counts = counts.reindex(order).astype(int)
    counts.loc["total"] = counts.sum()
    counts.index.name, counts.columns.name = "relation", None
    return counts


def _find_root(tree: Path) -> Path | None:
    """The shallowest folder under ``tree`` (itself included) holding train/, dev/ and test/."""
    candidates = [tree, *(p for p in tree.rglob("*") if p.is_dir())]
    roots = [p for p in candidates if all((p / s).is_dir() for s in SPLITS)]
    return min(roots, key=lambda p: len(p.parts), default=None)


def download(dest: str | os.PathLike, url: str = DEFAULT_URL, *, timeout: float = 30) -> Path:
    """Download and unpack the official ENTITYQUESTIONS archive (paper Sec. 2).

    Source: Sciavolino et al. (2021), github.com/princeton-nlp/EntityQuestions,
    MIT licence.  The archive is written to a temporary folder beside ``dest`` and
    unpacked there; only then is its folder that holds
    ``train/``, ``dev/`` and ``test/`` renamed to ``dest``, so a failure leaves
    nothing half-written.  If ``dest`` already holds the data, nothing is fetched.

    Args:
        dest: the folder to create; it will hold ``train/``, ``dev/`` and ``test/``.
        url: the archive's address.
        timeout: seconds to wait for the server.

    Returns:
        ``dest``, ready for :func:`load`.

    Raises:
        DataError: no network, not a zip archive, no train/dev/test inside, or
            ``dest`` exists with other content.
    """
    dest = Path(dest)
    if dest.is_dir() and all((dest / s).is_dir() for s in SPLITS):
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: exists but holds no train/, dev/ and test/; remove it or choose another dest.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # One temporary folder beside dest (same file system, so the final rename is
    # atomic) holds the archive and its unpacked tree; it goes away in any case.
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    archive, unpacked = work / "dataset.zip", work / "unpacked"
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (OSError, HTTPException) as err:  # URLError and timeouts are OSErrors
            raise DataError(
                f"could not download {url} ({err}); there seems to be no network. Download "
                f"dataset.zip elsewhere, unzip it and put its folder by hand at {dest} with "
                "train/, dev/, test/ inside, then point the `eq_dir` parameter (or the EQ_DIR "
                "environment variable) at it."
            ) from None
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpacked)  # zipfile drops absolute and ".." parts of names
        except zipfile.BadZipFile:
            raise DataError(f"{url}: not a zip archive; check the url.") from None
        root = _find_root(unpacked)
        if root is None:
            raise DataError(f"{url}: the archive has no folder holding train/, dev/ and test/.")
        if dest.exists():
            dest.rmdir()  # empty, checked above; rename cannot replace it portably
        os.replace(root, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def exemplar_pool(raw: pd.DataFrame) -> pd.DataFrame:
    """Dev questions with exactly one answer, of every relation (OOD ones included)."""
    dev = raw[(raw["split"] == "dev") & (raw["answers"].map(len) == 1)]
    return dev.assign(answer=dev["answers"].map(lambda a: a[0]))[["relation", "question", "answer"]].reset_index(
        drop=True
    )
