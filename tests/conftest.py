"""Shared fixtures: a private artifacts folder and a tiny pretrained model.

The tiny model is the controlled world's full pipeline at toy sizes (a few
seconds of pretraining), so tests exercise the real code path: world ->
corpus -> tokenizer -> GPT-2 style model -> ``save_pretrained``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from newknowledge.core import config
from newknowledge.data import world
from newknowledge.model import lm, pretrain

TINY = {
    "n_train": 12,
    "n_dev": 6,
    "n_test": 6,
    "n_ood_test": 4,
    "pool_scale": 0.1,
    "exposure_mu": 2.3,
    "vocab_size": 600,
    "d_model": 48,
    "n_layers": 2,
    "n_heads": 2,
    "block_size": 64,
    "pretrain_batch": 16,
    "pretrain_passes": 10.0,
    "pretrain_lr": 5e-3,
    "pretrain_threads": 1,
    "n_ex": 2,
    "n_samples": 3,
    "slick_batch": 16,
    "max_new_tokens": 8,
    # The old world (one Q/A template, well-known dev exemplars, Zipf 1.0): a model this small learns
    # facts in seconds only from concentrated Q/A lines, and answers in format only after known exemplars.
    "qa_templates": 1,
    "dev_exposures": "uniform",
    "zipf_a": 1.0,
}


def pytest_addoption(parser):
    parser.addoption(
        "--book-html",
        default=None,
        metavar="DIR",
        help="built book for the browser test (tests/test_browser.py, marker 'book')",
    )


@pytest.fixture(autouse=True, scope="session")
def _artifacts(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NEWKNOWLEDGE_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))
    torch.set_num_threads(1)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_study():
    return config.from_params(TINY)


@pytest.fixture(scope="session")
def tiny_world(tiny_study):
    folder = world.build(tiny_study.world)
    return folder, world.load(folder)


@pytest.fixture(scope="session")
def tiny_model_path(tiny_study, tiny_world):
    folder, _ = tiny_world
    facts = world.generate(tiny_study.world)
    return pretrain.build(tiny_study.world, tiny_study.pretrain, facts)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    return lm.load(str(tiny_model_path), device="cpu")


def tiny_finetune_data(tiny_world):
    """A 16-example train set (every other example labelled Unknown) and 20 evaluation questions."""
    facts = tiny_world[1]
    train = facts[facts.split == "train"].head(16).reset_index(drop=True)
    train["category"] = np.where(np.arange(len(train)) % 2, "Unknown", "HighlyKnown")
    ev = facts[facts.split != "train"].head(20).reset_index(drop=True)
    ev = ev.assign(example=np.arange(len(ev)), category="Unknown")
    return train, ev


ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """A script of the repository (``benchmarks/<name>.py``, ``tools/<name>.py``) imported as a module.

    Its folder is first on ``sys.path`` while it loads, as when the script runs: benchmarks import their
    neighbours.
    """
    path = ROOT / relative
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod
