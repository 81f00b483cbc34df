"""Progress bars that a reader of ``make book`` sees move.

papermill runs each notebook in a kernel whose output streams are captured
into the executed notebook, so the package's bars (pretraining steps, SliCK
chunks, fine-tuning runs and epochs) would only land there, and the terminal
would show papermill's cell counter, frozen for minutes on a cell that
pretrains. ``tools/run_notebook.py`` (what ``make book`` uses) sets
``NEWKNOWLEDGE_PROGRESS=terminal`` for the kernel it starts; the bars then
write to the kernel process's own stderr, ``sys.__stderr__``, which is the
terminal papermill was started from (and worker processes inherit it).
Anywhere else (a notebook opened by hand, a script, the tests) this is
``tqdm.auto``, which picks the display itself.
"""

from __future__ import annotations

import os
import sys

ENV = "NEWKNOWLEDGE_PROGRESS"
# Into a log file (CI) rather than a terminal: one update per this many seconds, not a stream of them.
LOG_INTERVAL_S = 30.0


def to_terminal() -> bool:
    """Whether bars go to the process's own stderr (``NEWKNOWLEDGE_PROGRESS=terminal``)."""
    return os.environ.get(ENV) == "terminal" and sys.__stderr__ is not None


def tqdm(*args, **kwargs):
    """``tqdm(...)`` with the same arguments, shown where the reader is looking (see the module)."""
    if to_terminal():
        from tqdm.std import tqdm as std

        kwargs.setdefault("file", sys.__stderr__)
        kwargs.setdefault("dynamic_ncols", True)
        if not sys.__stderr__.isatty():
            # maxinterval too: tqdm's monitor thread otherwise forces a line every 10 s.
            kwargs.setdefault("mininterval", LOG_INTERVAL_S)
            kwargs.setdefault("maxinterval", LOG_INTERVAL_S)
        return std(*args, **kwargs)
    from tqdm.auto import tqdm as auto

    return auto(*args, **kwargs)
