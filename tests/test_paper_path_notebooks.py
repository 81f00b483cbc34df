"""Every notebook on the real path (profile ``paper``), executed with papermill as ``make book`` does.

The notebooks are run one after the other through ``tools/run_notebook.py``
(the Makefile's runner) with ``-f src/newknowledge/profiles/paper.yaml``, the
model and data as ``-p model`` / ``-p eq_dir``, and a second ``-f`` file that
shrinks the study (:data:`SHRUNK`: one seed, 2 fine-tuning epochs, the exact
estimator, CPU, few prompts, a small ``min_dataset_size``). Two runs:

(a) The controlled world's own ENTITYQUESTIONS folder (``world.build`` writes
    one) with the model pretrained on it: every notebook, the findings page
    included, must complete, and the SliCK categories the notebooks computed
    must equal those of the default (controlled-world) path on the same
    questions.  The world (:data:`WORLD`) is tuned so that a tiny model,
    pretrained in seconds, knows some facts of every relation surely and others
    not at all: most relations have all four categories, and the paper's |D|
    rule gives 17, above the shrunk bar of 8.
(b) A small real ENTITYQUESTIONS folder (``tests/data/entityquestions``, the
    first questions of each file of the data set) with the same model, which
    knows none of its facts: chapter 1 completes and shows the per-relation
    category table; chapter 2 stops with the one clear message of
    :func:`newknowledge.finetuning.variants.check_size`, as the last line, not a
    traceback from deep inside.

Marked ``notebooks``: ``make test`` runs them; ``pytest -m "not notebooks"``
leaves them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from newknowledge.book import pipeline
from newknowledge.core import config
from newknowledge.knowledge import slick

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REAL_DATA = ROOT / "tests" / "data" / "entityquestions"

pytestmark = pytest.mark.notebooks

# A tiny world a tiny model learns in seconds: Q/A lines only (the probe's format), few facts, exposures
# from 0 (never seen: Unknown) to 10 (HighlyKnown), and pretraining blocks longer than a 2-shot prompt.
# Every setting the categories depend on is pinned, so a change of the package's defaults cannot empty
# a category (zipf_a and qa_templates did once).
WORLD = {
    "n_train": 24,
    "n_dev": 3,
    "n_test": 2,
    "n_ood_test": 2,
    "pool_scale": 0.3,
    "never_exposed": 0.3,
    "exposure_mu": 1.2,
    "exposure_sigma": 0.9,
    "exposure_cap": 10,
    "zipf_a": 1.0,
    "dev_exposures": "natural",
    "statement_share": 0.0,
    "qa_templates": 1,
    "verify_share": 0.05,
    "vocab_size": 500,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 2,
    "block_size": 128,
    "pretrain_batch": 4,
    "pretrain_passes": 12.0,
    "pretrain_lr": 1e-2,
    "pretrain_warmup": 0.05,
    "pretrain_threads": 1,
}
# SliCK as both paths run it (the default path's study and the notebooks' -f file).
SLICK = {"k_shot": 2, "n_ex": 6, "n_samples": 4, "max_new_tokens": 8, "slick_batch": 64, "estimator": "exact"}
# The paper profile, shrunk to seconds.
SHRUNK = {
    **SLICK,
    "seeds": [0],
    "ft_epochs": 2,
    "device": "cpu",
    "dtype": "float32",
    "pct_unknown": [0, 50, 100],
    "min_dataset_size": 8,
    "compare_n": 16,
}


def run_notebook(nb: Path, out: Path, artifacts: Path, overrides: Path, model: str, eq_dir: Path):
    """``make notebooks``' command for one notebook; returns (exit status, stderr, CPU seconds)."""
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "run_notebook.py"),
        str(nb.relative_to(ROOT)),
        str(out),
        "-k",
        "python3",
        "-f",
        str(config.profile_path("paper")),
        "-f",
        str(overrides),
        "-p",
        "model",
        model,
        "-p",
        "eq_dir",
        str(eq_dir),
    ]
    env = {**os.environ, "NEWKNOWLEDGE_ARTIFACTS": str(artifacts)}
    out.parent.mkdir(parents=True, exist_ok=True)
    before = os.times()
    # The timeout only guards against a hung kernel: a notebook takes 15-45 s of CPU here, but a
    # machine busy with other jobs can stretch that tenfold.
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    after = os.times()
    return (
        res.returncode,
        res.stderr,
        (after.children_user - before.children_user + after.children_system - before.children_system),
    )


@pytest.fixture(scope="module")
def world_model():
    """The default (controlled-world) path on the tiny world: its folder, its model and its SliCK table."""
    study = config.from_params({"profile": "quick", **WORLD, **SLICK})
    prep = pipeline.prepare(study)
    return prep


@pytest.fixture(scope="module")
def overrides(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("params") / "shrunk.yaml"
    path.write_text(yaml.safe_dump(SHRUNK))
    return path


def _outputs(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    return "\n".join(
        json.dumps(o.get("data", o.get("text", "")))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


def test_every_notebook_runs_on_the_world_folder(world_model, overrides, tmp_path, monkeypatch):
    prep = world_model
    model, eq_dir = prep.model_path, prep.world_dir
    artifacts = tmp_path / "artifacts"  # a store of its own: SliCK is computed again, not read from the default path's
    timings = {}
    for nb in NOTEBOOKS:
        out = tmp_path / "book" / nb.name
        t = time.time()
        rc, err, cpu = run_notebook(nb, out, artifacts, overrides, model, eq_dir)
        timings[nb.stem] = (round(time.time() - t, 1), round(cpu, 1))
        assert rc == 0, f"{nb.name} failed:\n{err[-4000:]}"
        assert "error" not in [
            o.get("output_type") for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])
        ]
    print("wall / CPU seconds per notebook:", timings)
    # Same questions, same categories as the default path: read the notebooks' SliCK table from their store
    # (computing it again here would fail the test).
    monkeypatch.setenv("NEWKNOWLEDGE_ARTIFACTS", str(artifacts))
    monkeypatch.setattr(slick, "categorize", lambda *a, **k: pytest.fail("SliCK recomputed"))
    real = pipeline.prepare(
        config.from_params({**config.load_profile("paper"), **SHRUNK, "model": model, "eq_dir": str(eq_dir)})
    )
    assert real.world_dir is None and "exposures" not in real.table
    keys = ["split", "relation", "question", "answer"]
    both = prep.table[keys + ["category"]].merge(
        real.table[keys + ["category"]], on=keys, suffixes=("_world", "_real"), validate="one_to_one"
    )
    assert len(both) == len(prep.table) == len(real.table)
    assert (both["category_world"] == both["category_real"]).all()


def test_real_data_stops_in_chapter_2_with_the_size_message(world_model, overrides, tmp_path):
    model = world_model.model_path
    artifacts = tmp_path / "artifacts"
    out1 = tmp_path / "book" / "01.ipynb"
    rc, err, _ = run_notebook(NOTEBOOKS[0], out1, artifacts, overrides, model, REAL_DATA)
    assert rc == 0, err[-4000:]
    shown = _outputs(out1)
    assert "quota" in shown and "P800" in shown  # the per-relation table (Table 3's shape)
    rc, err, _ = run_notebook(NOTEBOOKS[1], tmp_path / "book" / "02.ipynb", artifacts, overrides, model, REAL_DATA)
    assert rc == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: notebooks/02_unknown_harm.ipynb, cell [")
    assert "VariantError: |D| by the paper's rule" in last and "below the 8 the study needs" in last
    assert "relation P17: HighlyKnown 0" in last and "Fixes: set dataset_size" in last
