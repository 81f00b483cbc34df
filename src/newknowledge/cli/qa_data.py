"""Any question-answering data set as a table: reading, checking and writing it (for the SliCK tool).

SliCK (paper Sec. 3) needs, per question, its text, one gold answer and a group
(the paper's relation) whose dev questions serve as few-shot exemplars.  A
practitioner's data come in many shapes; this module turns each into a pandas
table and checks it, with one-line errors that name the file, the row or
column, and the fix:

- JSON Lines (``.jsonl``), a JSON list of objects (``.json``), CSV/TSV (every
  cell read as text), Parquet;
- a folder saved by Hugging Face ``datasets`` (``save_to_disk``), or a
  ``datasets.Dataset``/``DatasetDict`` object (needs ``pip install datasets``);
- an ENTITYQUESTIONS folder, read by :mod:`newknowledge.data.entityquestions` with
  the paper's preprocessing (Sec. 2), the book's own table.

:func:`load_inputs` finds the rows to categorise and the few-shot exemplars
(a dev file, a split, or the data itself); :func:`qa_table` picks the
question, answer and group columns out of any of them; :func:`write` writes
atomically (a temporary file, then a rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from newknowledge.data import entityquestions as eq

READ_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
WRITE_SUFFIXES = (".parquet", ".jsonl", ".csv")
_HF_MARKERS = ("dataset_dict.json", "state.json")


class DataError(ValueError):
    """A data set the SliCK tool cannot use; the message names the file, the row or column, and the fix."""


def is_hf_folder(path: Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``)."""
    return path.is_dir() and any((path / m).exists() for m in _HF_MARKERS)


def read(path: str | os.PathLike) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Read a data file (or a ``datasets`` folder) into a table.

    Returns:
        A DataFrame, or ``{split: DataFrame}`` for a saved ``DatasetDict``.

    Raises:
        DataError: a missing or unreadable file, or an unknown format.
    """
    path = Path(path)
    if is_hf_folder(path):
        return from_hf(_load_from_disk(path), where=str(path))
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check the path.")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix not in READ_SUFFIXES:
        raise DataError(
            f"{path}: unknown data format; give a {', '.join(READ_SUFFIXES)} file, an ENTITYQUESTIONS "
            "folder (train/, dev/, test/) or a folder saved by datasets' save_to_disk."
        )
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path)
        if suffix == ".json":
            return _read_json(path)
        if suffix in (".csv", ".tsv"):
            # Every cell as text, nothing turned into NaN: an answer "NA", "None" or "007" stays as written.
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        return pd.read_parquet(path)
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save it as UTF-8.") from None
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid and pandas' ParserError are ValueErrors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"{path}: cannot be read as {suffix[1:].upper()} ({first}); fix or re-export the file."
        ) from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path}, line {n}: not valid JSON ({err.msg}, column {err.colno}); "
                    "every line must be one JSON object."
                ) from None
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}, line {n}: a JSON {type(row).__name__}, expected an object "
                    '({"question": ..., "answer": ...}).'
                )
            rows.append(row)
    return pd.DataFrame.from_records(rows)


def _read_json(path: Path) -> pd.DataFrame:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "fix the file (JSON Lines files end in .jsonl)."
        ) from None
    if not (isinstance(data, list) and all(isinstance(r, dict) for r in data)):
        raise DataError(
            f"{path}: expected a JSON list of objects (one per question), got a JSON "
            f"{type(data).__name__}; or write JSON Lines (.jsonl)."
        )
    return pd.DataFrame.from_records(data)


def _load_from_disk(path: Path):
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{path}: a Hugging Face datasets folder; reading it needs the datasets package (pip install datasets)."
        ) from None
    try:
        return datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises many kinds; one line is what the user needs
        raise DataError(
            f"{path}: datasets.load_from_disk failed ({type(err).__name__}: {err}); "
            "save the data set again with save_to_disk."
        ) from None


def from_hf(obj, where: str = "the data set") -> pd.DataFrame | dict[str, pd.DataFrame]:
    """A ``datasets.Dataset`` as a DataFrame, a ``DatasetDict`` as ``{split: DataFrame}``."""
    if hasattr(obj, "to_pandas"):
        return obj.to_pandas()
    if isinstance(obj, dict) and all(hasattr(v, "to_pandas") for v in obj.values()):
        return {k: v.to_pandas() for k, v in obj.items()}
    raise DataError(f"{where}: expected a datasets Dataset or DatasetDict, got {type(obj).__name__}.")


def _text(value, *, allow_list: bool):
    """``value`` as one string, or None when it is not usable (empty, missing, several answers)."""
    if isinstance(value, (list, tuple, np.ndarray)) and allow_list:
        return _text(value[0], allow_list=False) if len(value) == 1 else None
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def qa_table(df: pd.DataFrame, question: str, answer: str, group: str | None, where: str) -> pd.DataFrame:
    """The ``relation``, ``question`` and ``answer`` columns SliCK reads, checked.

    Args:
        df: the data set's rows.
        question, answer: column names; an answer cell may be a string, an
            integer, or a list of exactly one of them (ENTITYQUESTIONS' ``answers``).
        group: the grouping column (the paper's relation: exemplars come from the
            same group); None or "" puts every row in one group, ``all``.
        where: how to name the data in messages (a file name).

    Returns:
        DataFrame with string columns ``relation``, ``question``, ``answer``, one
        row per row of ``df``, index reset.

    Raises:
        DataError: a missing column, or a row with an empty question or answer
            (or several answers); the message names the first such row.
    """
    options = {question: "--question-column", answer: "--answer-column", group: "--group-column"}
    for col in (question, answer, group):
        if col and col not in df.columns:
            raise DataError(
                f"{where}: no column {col!r} (columns: {', '.join(map(str, df.columns))}); "
                f"name the right one with {options[col]}"
                + (", or --group-column '' for one group." if col == group else ".")
            )
    if df.empty:
        raise DataError(f"{where}: no rows to use; check the file and the --split options.")
    out = {}
    for col, name, allow_list in ((question, "question", False), (answer, "answer", True)):
        texts = [_text(v, allow_list=allow_list) for v in df[col]]
        bad = next((i for i, t in enumerate(texts) if t is None), None)
        if bad is not None:
            value = df[col].iloc[bad]
            several = name == "answer" and isinstance(value, (list, tuple, np.ndarray)) and len(value) > 1
            fix = (
                (
                    "SliCK scores one gold answer: keep one, or drop rows with several (the paper keeps "
                    "single-answer questions only)"
                )
                if several
                else "fill it in or drop the row"
            )
            raise DataError(
                f"{where}, row {bad} (0-based), column {col!r}: "
                f"{'several answers' if several else 'empty or not text'} ({value!r:.60}); {fix}."
            )
        out[name] = texts
    groups = df[group].astype(str).to_numpy() if group else np.full(len(df), "all")
    return pd.DataFrame({"relation": groups, "question": out["question"], "answer": out["answer"]})


def check_writable(df: pd.DataFrame, path: Path) -> None:
    """Fail now, not after hours of SliCK, if ``df`` cannot be written to ``path``'s format."""
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise DataError(f"{path}: unknown output format; name it .parquet, .jsonl or .csv.")
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa

        try:
            pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as err:
            raise DataError(
                f"{path}: the input's columns cannot be stored as Parquet ({err}); write JSON Lines instead (.jsonl)."
            ) from None


def write(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as Parquet, JSON Lines or CSV (by ``path``'s suffix), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif suffix == ".jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False, double_precision=15)
        elif suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise DataError(f"{path}: unknown output format; name it .parquet, .jsonl or .csv.")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _split(df, name: str, column: str, where: str) -> pd.DataFrame:
    """Rows of split ``name``: a DatasetDict's key, or rows whose ``column`` is ``name``."""
    if isinstance(df, dict):  # a DatasetDict
        if name not in df:
            raise DataError(f"{where}: no split {name!r} (splits: {', '.join(df)}); choose one with --split.")
        return df[name]
    if column not in df.columns:
        raise DataError(f"{where}: no column {column!r} to select split {name!r} by; name it with --split-column.")
    rows = df[df[column].astype(str) == name]
    if rows.empty:
        raise DataError(
            f"{where}: no rows with {column} = {name!r} (values: "
            f"{', '.join(map(str, sorted(df[column].astype(str).unique())[:10]))})."
        )
    return rows


def _is_eq(path: Path) -> bool:
    return path.is_dir() and all((path / s).is_dir() for s in eq.SPLITS)


def load_inputs(data, exemplars=None, *, split=None, exemplar_split=None, split_column="split"):
    """The rows to categorise and the exemplar pool, each with a name for messages.

    Args:
        data: a path (file, ENTITYQUESTIONS folder, ``datasets`` folder), a
            DataFrame, or a ``datasets`` Dataset/DatasetDict.
        exemplars: a path or DataFrame of exemplars (dev questions), or
            ``"self"`` (the data set's own rows; a question never serves as its own exemplar).
        split, exemplar_split: splits of ``data`` (``split_column`` of a table,
            a DatasetDict's key, an ENTITYQUESTIONS split: default train and dev).

    Returns:
        ``(rows, where, pool, pool_where)``.
    """
    pool, pool_where = None, ""
    if isinstance(data, (str, os.PathLike)) and _is_eq(Path(data)):
        # The paper's selection (Sec. 2) and the book's exemplar pool: the same table the book would categorise.
        where, raw = str(data), eq.load(data)
        table = eq.preprocess(raw, verbose=False)
        rows = _split(table, split or "train", "split", where)
        if exemplars is None and exemplar_split in (None, "dev"):
            pool, pool_where = eq.exemplar_pool(raw), f"{where} (dev)"
    else:
        if isinstance(data, (str, os.PathLike)):
            where, table = str(data), read(data)
        else:
            where = "the data set"
            table = data if isinstance(data, pd.DataFrame) else from_hf(data)
        if isinstance(table, dict):
            rows = _split(table, split or "train", split_column, where)
        else:
            rows = _split(table, split, split_column, where) if split else table
    if exemplar_split and pool is None and exemplars is None:
        pool, pool_where = _split(table, exemplar_split, split_column, where), f"{where} ({exemplar_split})"
    if isinstance(exemplars, str) and exemplars == "self":
        pool, pool_where = rows, where
    elif isinstance(exemplars, pd.DataFrame):
        pool, pool_where = exemplars, "the exemplars"
    elif exemplars is not None:
        pool_where = str(exemplars)
        if _is_eq(Path(exemplars)):
            pool = eq.exemplar_pool(eq.load(exemplars))
        else:
            pool = read(exemplars)
            if isinstance(pool, dict):
                pool = _split(pool, exemplar_split or "validation", split_column, pool_where)
    if pool is None:
        raise DataError(
            f"{where}: no few-shot exemplars; pass --exemplars FILE (dev questions, same columns), "
            "--exemplar-split NAME (a split of the data), or --exemplars self."
        )
    return rows, where, pool, pool_where
