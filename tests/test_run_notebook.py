"""What `make book` shows in the terminal: tools/run_notebook.py and newknowledge.core.progress.

A notebook runs in a kernel whose output streams go into the executed
notebook; the package's progress bars must reach the terminal instead
(the kernel process's own stderr), and a failing notebook must end with its
error in one line.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import nbformat
from conftest import load_script

from newknowledge.core import progress

ROOT = Path(__file__).resolve().parents[1]


def test_bars_go_to_the_process_stderr_when_asked(monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", terminal)
    monkeypatch.setenv(progress.ENV, "terminal")
    for _ in progress.tqdm(range(3), desc="pretraining", mininterval=0):
        pass
    assert "pretraining: 100%" in terminal.getvalue()
    monkeypatch.delenv(progress.ENV)
    for _ in progress.tqdm(range(3), desc="elsewhere", mininterval=0, file=io.StringIO()):
        pass
    assert "elsewhere" not in terminal.getvalue()


def _notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("steps: int = 2  # bar length", metadata={"tags": ["parameters"]}),
        *(nbformat.v4.new_code_cell(c) for c in cells),
    ]
    nbformat.write(nb, path)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_notebook.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_progress_reaches_the_terminal_and_a_failure_ends_with_one_line(tmp_path):
    _notebook(
        tmp_path / "nb.ipynb",
        "from newknowledge.core.progress import tqdm\nfor _ in tqdm(range(steps), desc='SliCK chunks'):\n    pass",
        "from newknowledge.model import lm\nlm.load('/no/such/model')",
    )
    out = _run(tmp_path, "nb.ipynb", "out.ipynb", "-p", "steps", "5")
    assert out.returncode == 1
    assert "SliCK chunks: 100%" in out.stderr and "5/5" in out.stderr  # -p read as an int, bar in the terminal
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: nb.ipynb, cell [")
    assert "ConfigError: model '/no/such/model' is neither an existing folder nor a Hugging Face id" in last
    assert "fix: pass -p model" in last
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    bar_cell = executed.cells[2]  # after papermill's injected parameters
    assert "SliCK chunks" not in str(bar_cell.outputs)  # the bar went to the terminal, not the page


def test_a_notebook_that_runs_says_how_long_it_took(tmp_path):
    _notebook(tmp_path / "ok.ipynb", "print(steps)")
    out = _run(tmp_path, "ok.ipynb", "out.ipynb")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("== ok.ipynb done in ")
    assert "Kernel is running over TCP" not in out.stderr  # the kernel's own log stays quiet


def test_a_missing_notebook_is_one_line_too(tmp_path):
    out = _run(tmp_path, "nope.ipynb", "out.ipynb")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: nope.ipynb: ")


def test_parameters_in_papermill_order_and_a_list_from_yaml_text(tmp_path):
    # -p reads a value as papermill does (a list stays a string); -y gives lists, as papermill's -y.
    import argparse

    tool = load_script("tools/run_notebook.py")
    profile = tmp_path / "profile.yaml"
    profile.write_text("pct_unknown: [0, 50, 100]\nn_train: 130\nft_lr: 0.001\n")
    args = argparse.Namespace(
        parameters_file=[str(profile)],
        parameters_raw=[("profile", "wide")],
        parameters_yaml=["pct_unknown: [0, 25, 50, 75, 100]\nn_train: 220"],
        parameters=[("n_train", "300")],
    )
    assert tool.parameters(args) == {
        "pct_unknown": [0, 25, 50, 75, 100],
        "n_train": 300,
        "ft_lr": 0.001,
        "profile": "wide",
    }
    args.parameters = [("pct_unknown", "[0, 100]")]
    assert tool.parameters(args)["pct_unknown"] == "[0, 100]"
