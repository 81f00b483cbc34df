"""SliCK as a tool: categorise any QA fine-tuning set with any causal LM, then filter or relabel it.

The paper's practical advice (Sec. 4.2, 5 and App. K): keep Unknown examples
out of fine-tuning data, or relabel their answers "I don't know".  This module
runs the book's SliCK (:func:`newknowledge.knowledge.slick.categorize`, the same function
every chapter uses) on a practitioner's own data:

    newknowledge-slick train.jsonl --model meta-llama/Llama-3.1-8B \\
        --exemplars dev.jsonl --group-column relation \\
        --output train.slick.parquet --filter unknown

- :func:`categorize_dataset`: the Python API; :func:`main`: the command (``newknowledge-slick``, or
  ``python -m newknowledge.cli.slick_tool``).
- Output: the input rows plus ``p_greedy`` (P_correct(T=0)), ``p_sample``
  (P_correct(T>0)), ``p_any`` (exact estimator only) and ``category``; a summary
  of category shares per group (``<output>.summary.csv``); with ``--filter`` or
  ``--relabel-idk`` a fine-tuning file with the input's columns.
- Resumable: results are written chunk by chunk to ``<output>.parts/``; a
  rerun of the same command continues there and gives identical output.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from newknowledge.cli import qa_data
from newknowledge.cli.qa_data import DataError
from newknowledge.core import store
from newknowledge.core.config import SlickConfig, _field_comments
from newknowledge.core.prompts import IDK, PROBE, check_template
from newknowledge.data import entityquestions as eq
from newknowledge.finetuning import variants
from newknowledge.knowledge import categories, slick
from newknowledge.model import lm

TOOL_DEFAULTS = {"estimator": "exact", "slick_batch": 0}  # where the tool's defaults differ from the book's
PARAMS = [f.name for f in dataclasses.fields(SlickConfig) if f.name != "compare_n"]  # compare_n: chapter 6 only
RESULT_COLUMNS = ("p_greedy", "p_sample", "p_any", "category")


@dataclass
class Result:
    """What :func:`categorize_dataset` made."""

    table: pd.DataFrame  # the input rows plus p_greedy, p_sample, (p_any) and category
    summary: pd.DataFrame  # % of each category per group, and n; last row "(all)"
    finetune: pd.DataFrame | None  # the fine-tuning file's rows (input columns), when asked for
    files: dict[str, Path]  # "output", "summary", "finetune" -> where each was written


class Parts:
    """The finished chunks of one run, beside its output: ``config.json`` and ``chunk-00000.parquet``, ...

    A folder left by an interrupted run is continued only by a run with the
    same key (data, exemplars, model, template, SliCK settings, chunk size).
    """

    def __init__(self, folder: Path, key: dict, restart: bool = False):
        self.folder, self.key = folder, key
        meta = folder / "config.json"
        if meta.exists() and store.read_json(meta)["key"] != key:
            if not restart:
                old = store.read_json(meta)["key"]
                differ = sorted(k for k in key if old.get(k) != key[k])
                raise DataError(
                    f"{folder}: holds partial results of a run with other {', '.join(differ)}; rerun "
                    "with the same options to continue it, or pass --restart to discard it."
                )
            shutil.rmtree(folder)
        elif restart:
            shutil.rmtree(folder, ignore_errors=True)

    def start(self, batch: int) -> int:
        meta = self.folder / "config.json"
        if meta.exists():  # continue with the batch size of the first run (auto sizing may differ now)
            return int(store.read_json(meta)["batch"])
        self.folder.mkdir(parents=True, exist_ok=True)
        store.write_json(meta, {"key": self.key, "batch": batch})
        return batch

    def done(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.folder.glob("chunk-*.parquet")}

    def save(self, chunk: int, table: pd.DataFrame) -> None:
        qa_data.write(table, self.folder / f"chunk-{chunk:05d}.parquet")

    def load(self, chunk: int) -> pd.DataFrame:
        return pd.read_parquet(self.folder / f"chunk-{chunk:05d}.parquet")


def slick_config(**params) -> SlickConfig:
    """The SliCK settings: the book's :class:`SlickConfig` with the tool's defaults (exact, auto batch), checked."""
    if unknown := sorted(set(params) - set(PARAMS)):
        raise DataError(f"unknown SliCK parameter(s) {unknown}; known: {', '.join(PARAMS)}")
    cfg = SlickConfig(**{**TOOL_DEFAULTS, **params})
    low = {"n_ex": 1, "k_shot": 1, "n_samples": 1, "max_new_tokens": 1, "top_k": 0, "slick_batch": 0}
    bad = [f"{k} = {getattr(cfg, k)!r} (must be >= {v})" for k, v in low.items() if getattr(cfg, k) < v]
    bad += [f"temperature = {cfg.temperature!r} (must be > 0)"] if not cfg.temperature > 0 else []
    bad += (
        [f"estimator = {cfg.estimator!r} (must be 'exact' or 'sampling')"]
        if cfg.estimator not in ("exact", "sampling")
        else []
    )
    if bad:
        raise DataError(f"bad SliCK parameter(s): {'; '.join(bad)}.")
    return cfg


def _load_model(name: str, ex: pd.DataFrame, cfg: SlickConfig, template: str, device: str, dtype: str):
    """:func:`newknowledge.knowledge.slick.load_checked`, with one-line errors for a path that holds no model."""
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) and not path.exists():
        raise DataError(f"{name}: no such model folder; give a save_pretrained folder or a Hugging Face model id.")
    if path.is_dir() and not (path / "config.json").exists():
        raise DataError(f"{name}: a folder without config.json; give a folder saved with save_pretrained.")
    try:
        return slick.load_checked(
            str(path) if path.exists() else name, ex, cfg, device=device, dtype=dtype, template=template
        )
    except (OSError, ValueError) as err:
        raise DataError(
            f"{name}: cannot load a causal LM ({str(err).strip().splitlines()[0]}); give a "
            "save_pretrained folder or a Hugging Face model id."
        ) from None


def _check_groups(core: pd.DataFrame, ex: pd.DataFrame, need: int, where: str) -> None:
    counts = ex["relation"].value_counts()
    short = [(g, int(counts.get(g, 0))) for g in sorted(set(core["relation"])) if counts.get(g, 0) < need]
    if short:
        listed = ", ".join(f"{g!r} has {n}" for g, n in short[:5]) + (
            f" and {len(short) - 5} more" if len(short) > 5 else ""
        )
        raise DataError(
            f"{where}: too few exemplars per group ({listed}); SliCK needs k_shot + 1 = {need} per group "
            "(add exemplars, lower --k-shot, or check --group-column)."
        )


def _categories(names) -> list[str]:
    lookup = {c.lower(): c for c in categories.CATEGORIES} | {a.lower(): c for c, a in categories.ABBREV.items()}
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if bad := [n for n in names if n.lower() not in lookup]:
        raise DataError(
            f"--filter: unknown category {bad}; choose from {', '.join(categories.CATEGORIES)} "
            "(any case, comma-separated)."
        )
    return [lookup[n.lower()] for n in names]


def summarize(res: pd.DataFrame, group: str | None) -> pd.DataFrame:
    """% of each category per group (rows sum to 100) and ``n``, with a last row ``(all)``."""
    rows = [categories.shares(res, "relation")] if group else []
    out = pd.concat([*rows, categories.shares(res.assign(relation="(all)"), "relation")])
    return out.rename_axis(group or "group")


def categorize_dataset(
    data,
    model,
    *,
    exemplars=None,
    split: str | None = None,
    exemplar_split: str | None = None,
    split_column: str = "split",
    question: str = "question",
    answer: str = "answer",
    group: str | None = "relation",
    template: str = PROBE,
    output=None,
    finetune_output=None,
    drop=(),
    relabel_idk: bool = False,
    idk_text: str = IDK,
    chunk_size: int = 1000,
    limit: int = 0,
    restart: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
    verbose: bool = True,
    backend=lm,
    **params,
) -> Result:
    """SliCK's categories for every question of a QA data set (paper Sec. 3), and a fine-tuning file.

    Args:
        data, exemplars, split, exemplar_split, split_column: see :func:`newknowledge.cli.qa_data.load_inputs`.
        model: a Hugging Face id or ``save_pretrained`` folder of any causal LM,
            or a loaded ``(model, tokenizer)`` pair.
        question, answer, group: column names (``group=None``: one group).
        template: the question line of the few-shot prompts, ``{q}`` the question.
        output: where to write the table (``.parquet``, ``.jsonl`` or ``.csv``);
            None = write nothing (then there is nothing to resume either).
        finetune_output: the fine-tuning file (default ``<output>.finetune.<ext>``).
        drop: categories to leave out of the fine-tuning file (``["Unknown"]``: the paper's D_Known).
        relabel_idk: answer "I don't know" (``idk_text``) on Unknown rows (App. K's D_IDK).
        chunk_size: questions per resumable chunk (results are identical on a rerun
            with the same chunk size; the exact estimator's also across chunk sizes).
        limit: categorise only the first ``limit`` rows (0 = all).
        restart, overwrite: discard an earlier run's parts; replace existing output.
        device, dtype: passed to :func:`newknowledge.model.lm.load` ("auto": CUDA and bf16 when present).
        backend: :mod:`newknowledge.model.lm` or a scripted stand-in (tests).
        params: SliCK's parameters, named as in :class:`newknowledge.core.config.SlickConfig`.

    Returns:
        A :class:`Result`.

    Raises:
        DataError: a bad input, option or output path, before anything is written.
        newknowledge.model.lm.ModelError: the model never answers a few-shot prompt.
    """
    cfg = slick_config(**params)
    try:
        template = check_template(template)
    except ValueError as err:
        raise DataError(str(err)) from None
    drop = _categories(drop)
    if relabel_idk and "Unknown" in drop:
        raise DataError("--filter unknown drops the rows --relabel-idk would relabel; choose one.")
    rows, where, pool, pool_where = qa_data.load_inputs(
        data, exemplars, split=split, exemplar_split=exemplar_split, split_column=split_column
    )
    rows = (rows.head(limit) if limit > 0 else rows).reset_index(drop=True)
    if taken := [c for c in RESULT_COLUMNS if c in rows.columns]:
        raise DataError(f"{where}: already has column(s) {taken}; rename them (is this a SliCK output?).")
    core = qa_data.qa_table(rows, question, answer, group, where)
    ex = qa_data.qa_table(pool, question, answer, group, pool_where)
    _check_groups(core, ex, cfg.k_shot + 1, pool_where)
    files: dict[str, Path] = {}
    if output is not None:
        files["output"] = out = Path(output)
        qa_data.check_writable(rows, out)
        if out.exists() and not overwrite:
            raise DataError(f"{out}: exists; pass --overwrite to replace it, or choose another --output.")
        if not out.parent.is_dir():
            raise DataError(f"{out}: folder {out.parent} does not exist; create it first.")
        files["summary"] = out.with_name(out.stem + ".summary.csv")
        if drop or relabel_idk:
            files["finetune"] = Path(finetune_output or out.with_name(f"{out.stem}.finetune{out.suffix}"))
            qa_data.check_writable(rows, files["finetune"])
    elif finetune_output is not None:
        files["finetune"] = Path(finetune_output)
        qa_data.check_writable(rows, files["finetune"])
    if isinstance(model, (str, os.PathLike)):
        name = str(model)
        model, tokenizer = _load_model(name, ex, cfg, template, device, dtype)
    else:
        model, tokenizer = model
        name = getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
        slick.check_answers(model, tokenizer, ex, cfg, backend=backend, template=template)
    parts = None
    if output is not None:
        key = {
            "slick": {k: v for k, v in dataclasses.asdict(cfg).items() if k in PARAMS},
            "model": name,
            "template": template,
            "chunk_size": chunk_size,
            "questions": pd.util.hash_pandas_object(core).sum().item(),
            "exemplars": pd.util.hash_pandas_object(ex).sum().item(),
        }
        parts = Parts(out.with_name(out.name + ".parts"), key, restart)
    try:
        res = slick.categorize(
            model,
            tokenizer,
            core,
            ex,
            cfg,
            backend=backend,
            template=template,
            chunk_size=chunk_size,
            parts=parts,
            progress=progress,
        )
    except KeyboardInterrupt:
        if parts is not None and parts.folder.exists():
            print(
                f"\ninterrupted: {len(parts.done())} chunk(s) of {chunk_size} questions kept in {parts.folder}; "
                "rerun the same command to continue.",
                file=sys.stderr,
            )
        raise
    table = rows.copy()
    for col in RESULT_COLUMNS:
        if col in res.columns:
            table[col] = res[col].to_numpy()
    summary = summarize(res, group)
    ft = None
    if drop or relabel_idk:
        ft = table[~table["category"].isin(drop)]
        if relabel_idk:
            lab = variants.relabel_idk(
                pd.DataFrame({"answer": ft[answer].to_numpy(), "category": ft["category"].to_numpy()}), idk_text
            )
            # An answer written as a list of one (ENTITYQUESTIONS' "answers") is relabelled as a list of one.
            listed = [isinstance(o, (list, tuple)) or hasattr(o, "shape") for o in ft[answer]]
            ft = ft.assign(
                **{
                    answer: [
                        [a] if c == "Unknown" and is_list else a
                        for a, c, is_list in zip(lab["answer"], lab["category"], listed)
                    ]
                }
            )
        ft = ft[list(rows.columns)].reset_index(drop=True)
    if "output" in files:
        qa_data.write(table, files["output"])
        qa_data.write(summary.reset_index(), files["summary"])
    if "finetune" in files:
        qa_data.write(ft, files["finetune"])
    if parts is not None:
        shutil.rmtree(parts.folder, ignore_errors=True)
    if verbose:
        print(
            f"\nSliCK categories of {len(table)} questions ({cfg.estimator} estimator, model {name}), % per "
            f"{group or 'data set'}:\n{summary.round(1).to_string()}"
        )
        for kind, path in files.items():
            print(f"{kind}: {path}" + (f" ({len(ft)} rows)" if kind == "finetune" else ""))
    return Result(table, summary, ft, files)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parser() -> argparse.ArgumentParser:
    """The command's options; every SliCK parameter of :class:`SlickConfig` has one, named as in the book."""
    ap = argparse.ArgumentParser(
        prog="newknowledge-slick",
        formatter_class=_Formatter,
        description="SliCK (Gekhman et al. 2024, Sec. 3): label every question of a QA data set HighlyKnown, "
        "MaybeKnown, WeaklyKnown or Unknown to a causal LM, then write a fine-tuning file without "
        "Unknown examples (--filter unknown) or with their answers relabelled (--relabel-idk).",
        epilog="example:\n  newknowledge-slick train.jsonl --model meta-llama/Llama-3.1-8B --exemplars dev.jsonl \\\n"
        "      --output train.slick.parquet --filter unknown\n\nA rerun of the same command continues "
        "an interrupted run (results in <output>.parts/); errors exit with status 2.",
    )
    g = ap.add_argument_group("input")
    g.add_argument(
        "data",
        help="the data set: a .jsonl, .json, .csv, .tsv or .parquet file, an ENTITYQUESTIONS "
        "folder (train/, dev/, test/; the paper's preprocessing is applied), or a folder "
        "saved by Hugging Face datasets' save_to_disk",
    )
    g.add_argument("--question-column", default="question", help="column holding the question")
    g.add_argument(
        "--answer-column",
        default="answer",
        help="column holding the one gold answer (a list of one answer is accepted)",
    )
    g.add_argument(
        "--group-column",
        default="relation",
        help="column grouping the questions (the paper's relation); exemplars come from the same group; '' = one group",
    )
    g.add_argument(
        "--split",
        default=None,
        help="categorise only this split (rows with --split-column equal to it, a DatasetDict split; "
        "default: every row, or 'train' for ENTITYQUESTIONS and DatasetDicts)",
    )
    g.add_argument(
        "--split-column", default="split", help="column naming each row's split, for --split and --exemplar-split"
    )
    g.add_argument("--limit", type=int, default=0, help="categorise only the first N questions (0 = all)")
    g = ap.add_argument_group("few-shot exemplars")
    g.add_argument(
        "--exemplars",
        default=None,
        help="file of exemplar questions (a dev set; same columns and formats as the data), or 'self' "
        "to draw them from the data itself (default: ENTITYQUESTIONS' dev split)",
    )
    g.add_argument("--exemplar-split", default=None, help="take the exemplars from this split of the data")
    g.add_argument(
        "--template",
        default=PROBE,
        help="question line of the prompts, {q} = the question, \\n = a newline; each exemplar line is "
        "the template followed by ' ' + answer + newline",
    )
    g = ap.add_argument_group("model")
    g.add_argument(
        "--model", required=True, help="any AutoModelForCausalLM: a Hugging Face id or a save_pretrained folder"
    )
    g.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="'auto' = bf16 on CUDA (fp16 where bf16 is missing), fp32 on CPU",
    )
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    g = ap.add_argument_group(
        "SliCK parameters (the book's names; paper values: n_ex 10, k_shot 4, n_samples 16, temperature 0.5, top_k 40)"
    )
    comments = _field_comments()
    for f in dataclasses.fields(SlickConfig):
        if f.name in PARAMS:
            default = TOOL_DEFAULTS.get(f.name, f.default)
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            extra = {"choices": ["exact", "sampling"]} if f.name == "estimator" else {}
            g.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                type=kind,
                default=default,
                help=comments[f.name].replace("%", "%%"),
                **extra,
            )
    g = ap.add_argument_group("output")
    g.add_argument(
        "--output",
        required=True,
        help="the input rows plus p_greedy (P_correct(T=0)), p_sample "
        "(P_correct(T>0)), p_any (exact only) and category: .parquet, .jsonl or .csv; the summary goes "
        "to <output stem>.summary.csv",
    )
    g.add_argument(
        "--filter",
        default="",
        help="categories to drop from the fine-tuning file, comma-separated (e.g. 'unknown': the paper's D_Known)",
    )
    g.add_argument(
        "--relabel-idk",
        action="store_true",
        help="in the fine-tuning file, answer --idk-text on Unknown questions (the paper's App. K)",
    )
    g.add_argument("--idk-text", default=IDK, help="the abstention answer of --relabel-idk")
    g.add_argument(
        "--finetune-output",
        default=None,
        help="the fine-tuning file, with the input's columns (default: <output stem>.finetune.<output suffix>)",
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    g = ap.add_argument_group("long runs")
    g.add_argument(
        "--chunk-size",
        type=int,
        default=1000,
        help="questions per chunk written to <output>.parts/; a rerun continues after the last one",
    )
    g.add_argument("--restart", action="store_true", help="discard the chunks of an earlier, unfinished run")
    g.add_argument(
        "--no-progress", action="store_true", help="no progress bar (questions done, questions/s, time left)"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    """The ``newknowledge-slick`` command; returns the exit status (2: bad input, 130: interrupted)."""
    args = parser().parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        categorize_dataset(
            args.data,
            args.model,
            exemplars=args.exemplars,
            split=args.split,
            exemplar_split=args.exemplar_split,
            split_column=args.split_column,
            question=args.question_column,
            answer=args.answer_column,
            group=args.group_column or None,
            template=args.template.replace("\\n", "\n"),
            output=args.output,
            finetune_output=args.finetune_output,
            drop=args.filter,
            relabel_idk=args.relabel_idk,
            idk_text=args.idk_text,
            chunk_size=args.chunk_size,
            limit=args.limit,
            restart=args.restart,
            overwrite=args.overwrite,
            device=args.device,
            dtype=args.dtype,
            progress=not args.no_progress,
            **{k: getattr(args, k) for k in PARAMS},
        )
    except (DataError, eq.DataError, lm.ModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
