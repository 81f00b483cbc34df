"""Profiles and notebook parameters: unknown names and bad types fail loudly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from newknowledge.core import config

ROOT = Path(__file__).resolve().parents[1]


def test_every_profile_loads_and_builds():
    assert {"quick", "full", "paper"} <= set(config.available_profiles())
    for name in config.available_profiles():
        study = config.from_params(config.load_profile(name))
        assert study.study.profile == name


def test_unknown_profile_names_the_available_ones():
    with pytest.raises(config.ConfigError, match=r"unknown profile 'nope'.*available: .*quick"):
        config.load_profile("nope")


def test_unknown_parameter_is_named():
    with pytest.raises(config.ConfigError, match=r"unknown parameter\(s\) \['n_exx'\]"):
        config.from_params({"n_exx": 3})


@pytest.mark.parametrize(
    "name, value, want",
    [("n_ex", "10", "int"), ("ft_lr", "fast", "float"), ("seeds", 3, "list"), ("n_ex", True, "int")],
)
def test_wrong_type_is_named(name, value, want):
    with pytest.raises(config.ConfigError, match=f"parameter '{name}' must be {want}"):
        config.from_params({name: value})


def test_bad_choices_are_rejected():
    with pytest.raises(config.ConfigError, match="estimator must be"):
        config.from_params({"estimator": "guess"})
    with pytest.raises(config.ConfigError, match="ft_format must be one of"):
        config.from_params({"ft_format": "chat"})
    with pytest.raises(config.ConfigError, match="executor must be 'local' or 'ray'"):
        config.from_params({"executor": "dask"})


def test_notebook_namespace_rejects_a_mistyped_papermill_parameter():
    ns = config.from_params(config.load_profile("quick")).params()
    ns.update({"In": [], "_": None, "config": config})  # IPython's own names and modules are ignored
    ns.update({"HTML": dict, "describe": len})  # so are imported classes and functions
    assert config.from_namespace(ns).slick.n_ex == ns["n_ex"]
    with pytest.raises(config.ConfigError, match="n_exemplars"):
        config.from_namespace({**ns, "n_exemplars": 4})


def test_notebook_parameter_cells_are_in_sync_with_the_config():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "sync_notebooks.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr + out.stdout


@pytest.mark.parametrize("profile", config.available_profiles())
def test_a_notebook_run_with_a_profile_gets_that_profile(profile):
    """papermill -f PROFILE.yaml overrides only the names the file holds; every other parameter keeps
    the notebook cell's value, which is the quick profile's.  So each profile must name every
    parameter where quick differs from the defaults, or it would silently inherit quick's."""
    cell = {}
    exec(config.parameters_cell(), {}, cell)  # the values a notebook holds before papermill injects
    seen = config.from_params(
        {**{k: v for k, v in cell.items() if k in config.parameter_fields()}, **config.load_profile(profile)}
    ).params()
    meant = config.from_params(config.load_profile(profile)).params()
    assert {k: seen[k] for k in meant if seen[k] != meant[k]} == {}


def test_parameters_cell_lists_every_parameter_typed_and_commented():
    cell = config.parameters_cell()
    for name in config.parameter_fields():
        assert f"\n{name}: " in cell
    assert "n_ex: int = 10  # random exemplar sets" in cell


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_of_every_notebook(notebook, caplog):
    """What ``papermill --help-notebook`` shows, and the names behind its "unknown parameter" warning.

    papermill's own parser (``papermill.inspection._infer_parameters``, the
    function ``--help-notebook`` calls) skips a line it cannot parse with a
    logged warning; a skipped parameter is then "unknown" to ``papermill -f``.
    """
    from papermill.inspection import _infer_parameters
    from papermill.iorw import load_notebook_node

    nb = load_notebook_node(str(notebook))
    with caplog.at_level("WARNING", logger="papermill"):
        found = {p.name: p for p in _infer_parameters(nb)}
    assert not [r.getMessage() for r in caplog.records], "papermill could not parse these lines"
    fields_ = config.parameter_fields()
    assert sorted(found) == sorted(fields_), f"missing: {sorted(set(fields_) - set(found))}"
    comments = config._field_comments()
    for name, (_, f) in fields_.items():
        assert found[name].inferred_type_name == f.type
        assert found[name].help == comments.get(name, "")


def test_a_comment_papermill_cannot_parse_fails_the_generator(monkeypatch):
    monkeypatch.setitem(
        config._field_comments.__globals__, "_field_comments", lambda: {"n_ex": "prompts per question (0 = none)"}
    )
    with pytest.raises(config.ConfigError, match=r"reword the comment of n_ex"):
        config.parameters_cell()


def test_no_parameter_comment_is_lost_to_a_wrapped_line():
    # The comment is the parameter's documentation (papermill --help-notebook), read line by line;
    # ruff format wraps a field whose line is too long as "name: type = (" and the comment is lost.
    import inspect
    import re

    wrapped = [
        line
        for stage in config.STAGES
        for line in inspect.getsource(stage).splitlines()
        if re.match(r"\s+\w+: \w+ = \($", line)
    ]
    assert wrapped == []
    comments = config._field_comments()
    assert {"qa_templates", "compare_n", "seed_scope", "size_models", "section4_size"} <= set(comments)
