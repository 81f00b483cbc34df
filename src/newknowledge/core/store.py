"""The artifact store: one folder per unit of expensive work, keyed by a config hash.

Each folder holds the config that made it (``config.json``), so it describes
itself.  Folders are built under a temporary name and renamed when complete:
a run cut off halfway leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from newknowledge.core.config import checkout_root, config_hash


def artifacts_root() -> Path:
    """Where models and runs are cached.

    ``$NEWKNOWLEDGE_ARTIFACTS`` when set; else ``artifacts/`` in the source
    checkout (an editable install: the same folder from any notebook or
    working directory); else, for an installed package, ``artifacts/`` in the
    current directory.
    """
    if os.environ.get("NEWKNOWLEDGE_ARTIFACTS"):
        return Path(os.environ["NEWKNOWLEDGE_ARTIFACTS"])
    return (checkout_root() or Path.cwd()) / "artifacts"


def stage_dir(stage: str, config: dict[str, Any]) -> Path:
    """Where the artifact of ``stage`` made with ``config`` lives (may not exist yet)."""
    return artifacts_root() / stage / config_hash(config)


def is_done(path: Path) -> bool:
    """A finished artifact: the folder exists under its final name with its config."""
    return (path / "config.json").exists()


@contextlib.contextmanager
def building(path: Path, config: dict[str, Any]) -> Iterator[Path]:
    """Build an artifact folder atomically.

    Yields a temporary folder to write into; on success writes ``config.json``
    and renames it to ``path``; on any error removes it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        write_json(tmp / "config.json", config)
        if path.exists():  # a concurrent builder finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
