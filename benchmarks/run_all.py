"""Run every benchmark (``make bench``): SliCK, the SliCK command, training and evaluation, grouped
fine-tuning, the profile of one fine-tuning epoch, a grouped epoch against its arithmetic, evaluation
at the stops, D_IDK's flags, bf16 autocast, book chapters, the book at an old commit against now, the
pretraining-length curve (its built points).

Each script prints its tables and writes CSV files to ``benchmarks/results/``.
Extra arguments go to every script that accepts them, e.g. ``--quick``:

    python benchmarks/run_all.py            # the full benchmarks (about an hour on 2 cores: the book twice)
    python benchmarks/run_all.py --quick    # a smoke run (~2 min; the book-twice benchmark skipped)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = {
    "bench_slick.py": ["--n", "20", "--repeats", "1"],
    "bench_slick_tool.py": ["--n", "20"],
    "bench_finetune.py": ["--steps", "5", "--eval-n", "100", "--repeats", "1"],
    "bench_grouped.py": ["--size", "100", "--eval-n", "540"],
    "bench_epoch_profile.py": ["--settings", "quick", "--epochs", "1"],
    "bench_grouped_bound.py": ["--settings", "quick", "--epochs", "1"],
    "bench_eval_at_stops.py": ["--variants", "MaybeKnown", "idk_50", "--epochs", "3"],
    "bench_idk_flags.py": ["--epochs", "2"],
    "bench_bf16.py": ["--steps", "1", "--repeats", "1", "--n", "10"],
    "bench_book.py": [],
    "bench_book_ab.py": [],
    "bench_pretrain_length.py": [],
}
# Benchmarks too long for a smoke run: the book from an empty cache twice (15-40 minutes a side).
FULL_ONLY = {"bench_book_ab.py"}
# Arguments every run gets: the pretraining-length curve reports the lengths already pretrained
# (each new one is a pretraining of minutes; `python benchmarks/bench_pretrain_length.py` builds them).
ALWAYS = {"bench_pretrain_length.py": ["--cached-only"]}


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    failed = []
    for script, small in QUICK.items():
        if quick and script in FULL_ONLY:
            print(f"\n=== {script}: skipped with --quick (a full book build a side)", flush=True)
            continue
        print(f"\n=== {script} ===", flush=True)
        t = time.time()
        rc = subprocess.run(
            [sys.executable, str(HERE / script), *(small if quick else []), *ALWAYS.get(script, [])], cwd=HERE.parent
        ).returncode
        print(f"=== {script}: {'ok' if rc == 0 else f'failed ({rc})'} in {time.time() - t:.0f} s", flush=True)
        if rc:
            failed.append(script)
    print(f"\nResults in {HERE / 'results'}/" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
