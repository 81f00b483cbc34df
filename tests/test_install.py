"""The package works installed, not only from this checkout.

A wheel is built from the sources (offline, with the set-up's setuptools) and
imported from a plain folder, as site-packages would hold it: the profiles
must come with it (package data), and the artifacts folder must default to
the current directory, since there is no checkout around an installed copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from newknowledge.core import config, store

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, pathlib
import newknowledge
from newknowledge.core import config, store
print(json.dumps({
    "file": newknowledge.__file__,
    "profiles": config.available_profiles(),
    "quick": config.load_profile("quick")["profile"],
    "checkout": str(config.checkout_root()),
    "artifacts": str(store.artifacts_root()),
}))
"""


def test_editable_checkout_keeps_artifacts_in_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("NEWKNOWLEDGE_ARTIFACTS", raising=False)
    monkeypatch.chdir(tmp_path)  # not the checkout: the default must not follow the working directory
    assert config.checkout_root() == ROOT
    assert store.artifacts_root() == ROOT / "artifacts"
    assert config.profile_path("quick") == ROOT / "src" / "newknowledge" / "profiles" / "quick.yaml"


def test_installed_wheel_has_the_profiles_and_uses_the_working_directory(tmp_path):
    source = tmp_path / "source"  # a clean copy: building in place would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("newknowledge-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        assert {f"newknowledge/profiles/{p}.yaml" for p in ("quick", "full", "paper")} <= set(zf.namelist())
        zf.extractall(site)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NEWKNOWLEDGE_ARTIFACTS"}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install's path
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert Path(got["file"]).is_relative_to(site)
    assert {"quick", "full", "paper"} <= set(got["profiles"])
    assert got["quick"] == "quick"
    assert got["checkout"] == "None"
    assert Path(got["artifacts"]) == work / "artifacts"
