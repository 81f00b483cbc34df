"""Helpers shared by the benchmark scripts: the default model, timing, tables."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def load_default(model_path: str = ""):
    """The controlled world's default model and data.

    The model is the default pretraining config's cached one.  While that is
    not built (pretraining takes minutes to an hour on a busy machine), the
    finished model of the same world whose pretraining settings differ least
    stands in, with a note; only when there is none is the model pretrained.

    Returns:
        ``(study, facts, raw, exemplars, model_path, model, tokenizer)``.
    """
    from newknowledge.core import config
    from newknowledge.data import entityquestions as eq
    from newknowledge.data import world
    from newknowledge.model import lm, pretrain

    study = config.from_params({})
    wd = world.build(study.world)
    facts, raw = world.load(wd), eq.load(wd)
    if not model_path:
        model_path = built_default_model() or str(
            pretrain.build(study.world, study.pretrain, world.generate(study.world))
        )
    model, tok = lm.load(model_path, device="cpu")
    return study, facts, raw, eq.exemplar_pool(raw), model_path, model, tok


def built_default_model() -> str | None:
    """The default model's folder if it is pretrained; else the built model of the same world whose
    pretraining settings differ least (with a note); None when there is none."""
    import dataclasses

    from newknowledge.core import config, store

    study = config.from_params({})
    want = dataclasses.asdict(study.pretrain)
    built = [(store.read_json(p), p.parent) for p in (store.artifacts_root() / "pretrain").glob("*/config.json")]
    built = [(c["pretrain"], d) for c, d in built if c.get("world") == dataclasses.asdict(study.world)]
    # Fields missing from a stored config (e.g. thread counts, left out of the key) do not count.
    differ = sorted((sum(want.get(k) != v for k, v in c.items()), str(d)) for c, d in built)
    if not differ:
        return None
    if differ[0][0]:
        print(f"note: the default model is not built yet; using {Path(differ[0][1]) / 'model'}")
    return str(Path(differ[0][1]) / "model")


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul throughput (best of ``repeats``) with ``threads`` torch threads: this machine's peak."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(old)
    return 2 * n**3 / best / 1e9


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f}, "
        f"torch {torch.__version__}"
    )


def report(df: pd.DataFrame, name: str, title: str) -> Path:
    """Print ``df`` as a table and write it to ``benchmarks/results/<name>.csv``, and as Markdown
    (title, machine, date, table) to ``<name>.md``, which ``make readme`` copies into the book's Performance
    page (book/performance.md)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.csv"
    df.to_csv(path, index=False)
    # A "|" in a column name (|D|) would split the Markdown header into more cells than its rows have.
    shown = df.rename(columns=lambda c: str(c).replace("|", "\\|"))
    table = shown.to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else df.to_string(index=False)
    print(f"\n## {title}\n({machine()})\n")
    print(table)
    print(f"\n-> {path.relative_to(RESULTS.parents[1])}")
    when = time.strftime("%Y-%m-%d")
    (RESULTS / f"{name}.md").write_text(f"**{title}** ({machine()}; {when})\n\n{table}\n")
    return path


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
