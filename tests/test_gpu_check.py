"""The GPU check script's CPU dry run: every path it measures on a GPU runs, and it reports each figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["questions"] == 12
    for key in ("slick_exact_q_per_s", "slick_sampling_q_per_s", "finetune_train_tokens_per_s"):
        assert res[key] > 0
