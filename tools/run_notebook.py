"""Execute one notebook with papermill, the way ``make book`` shows it in a terminal.

    python tools/run_notebook.py NOTEBOOK OUTPUT [-f PROFILE.yaml] [-y YAML] [-p NAME VALUE]... [-r NAME VALUE]...

Options as papermill's own (``-f`` files first, then ``-y`` YAML text, then
``-r`` raw strings, then ``-p`` values read as papermill reads them: ``60`` an
int, ``1e-4`` a float), so ``make book PARAMS="-p ft_lr 1e-4"`` works as
before; a list needs ``-y``: ``PARAMS="-y 'pct_unknown: [0, 25, 50, 75, 100]'"``.
What differs from the ``papermill`` command is what the terminal shows:

- instead of papermill's cell counter, which stands still for minutes on a
  cell that pretrains or fine-tunes, the package's own progress bars
  (pretraining steps, SliCK chunks, fine-tuning runs and epochs): this sets
  ``NEWKNOWLEDGE_PROGRESS=terminal`` for the kernel (see
  ``newknowledge/progress.py``);
- when the notebook fails, the kernel's traceback and then, as the last line,
  the error in one line: the notebook, the cell, the exception type and its
  message (the package's messages name the value and the fix). Exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

import yaml

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def resolve(value: str):
    """A ``-p`` value as papermill's command line reads it (int, float, bool, None, else str)."""
    from papermill.cli import _resolve_type

    return _resolve_type(value)


def parameters(args: argparse.Namespace) -> dict:
    """Files first, then YAML text, then raw values, then typed values; later ones win (papermill's order)."""
    out: dict = {}
    for path in args.parameters_file or []:
        out.update(yaml.safe_load(Path(path).read_text()) or {})
    for text in args.parameters_yaml or []:
        out.update(yaml.safe_load(text) or {})
    out.update({name: value for name, value in args.parameters_raw or []})
    out.update({name: resolve(value) for name, value in args.parameters or []})
    return out


def one_line(text: str) -> str:
    return " ".join(ANSI.sub("", str(text)).split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("-f", "--parameters-file", action="append", metavar="YAML")
    parser.add_argument("-y", "--parameters-yaml", action="append", metavar="YAML")
    parser.add_argument("-p", "--parameters", nargs=2, action="append", metavar=("NAME", "VALUE"))
    parser.add_argument("-r", "--parameters-raw", nargs=2, action="append", metavar=("NAME", "VALUE"))
    parser.add_argument("-k", "--kernel", default="python3")
    args = parser.parse_args(argv)

    # papermill's own warnings (an unknown parameter, ...) stay visible; its INFO chatter does not.
    logging.basicConfig(level=logging.WARNING, format="papermill: %(message)s")
    os.environ["NEWKNOWLEDGE_PROGRESS"] = "terminal"  # inherited by the kernel papermill starts
    name = args.notebook.as_posix()
    try:
        import papermill
        from papermill.exceptions import PapermillExecutionError

        params = parameters(args)
        start = time.time()
        papermill.execute_notebook(
            str(args.notebook),
            str(args.output),
            parameters=params,
            kernel_name=args.kernel,
            progress_bar=False,
            log_output=False,
            # The kernel's INFO/WARNING log (e.g. about its local TCP transport) is not for this reader.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except PapermillExecutionError as err:
        print("".join(ANSI.sub("", line) + "\n" for line in err.traceback), file=sys.stderr, end="")
        where = f"{name}, cell [{err.exec_count}]" if err.exec_count else name
        print(
            f"error: {where}: {err.ename}: {one_line(err.evalue)} "
            f"(the executed copy with its outputs: {args.output.as_posix()})",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except Exception as err:  # before or around the execution: a missing file, a bad profile, a dead kernel
        print(f"error: {name}: {type(err).__name__}: {one_line(err)}", file=sys.stderr, flush=True)
        return 1
    print(f"== {name} done in {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
