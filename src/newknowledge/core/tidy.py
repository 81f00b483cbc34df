"""Helpers for the tidy tables every stage passes on (one row per run x epoch x example, ...).

Small on purpose: the one column check that analysis, statistics, plots and
variants share, so a missing column fails the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

# A fine-tuning run is identified by its variant and seed in every record table.
RUN = ["variant", "seed"]


class TableError(ValueError):
    """A table passed to a function lacks a column it needs."""


def require_columns(df: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    """Fail with one message naming the table, the missing columns and the columns it has.

    Args:
        df: the table.
        columns: the columns the caller needs.
        name: how the caller calls the table (its argument name).
    """
    if missing := [c for c in columns if c not in df.columns]:
        raise TableError(f"{name} lacks column(s) {missing}; it has {list(df.columns)}")
