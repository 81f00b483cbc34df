"""SliCK as a tool (newknowledge-slick): any data format, the book's categories, resumable runs, clear errors.

The real model is the tests' tiny pretrained one (saved with ``save_pretrained``
and loaded back from its folder); a scripted backend gives each category by
design.  Nothing here reaches the network: every model is a local folder.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import runpy
import sys

import numpy as np
import pandas as pd
import pytest

from newknowledge.cli import qa_data, slick_tool
from newknowledge.cli.qa_data import DataError
from newknowledge.data import entityquestions as eq
from newknowledge.knowledge import slick
from newknowledge.model import lm

# Tiny SliCK settings (the tests' world has 6 dev questions per relation: k_shot 4 needs 5).
SLICK = {"n_ex": 2, "n_samples": 3, "slick_batch": 16, "max_new_tokens": 8}
COLUMNS = {"question": "q_text", "answer": "gold", "relation": "task"}  # the user's own column names


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def qa(tiny_world):
    """12 questions (4 of each of 3 relations) and dev exemplars, in the user's column names, with an extra column."""
    facts = tiny_world[1]
    rels = sorted(set(facts.relation[facts.split == "train"]))[:3]
    questions = facts[(facts.split == "train") & facts.relation.isin(rels)].groupby("relation").head(4)
    questions = questions.reset_index(drop=True)
    dev = facts[facts.split == "dev"].reset_index(drop=True)
    user = (
        questions[["relation", "question", "answer"]].rename(columns=COLUMNS).assign(row_id=np.arange(len(questions)))
    )
    return questions, dev, user, dev[["relation", "question", "answer"]].rename(columns=COLUMNS)


def _save(df: pd.DataFrame, path):
    if path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path)
    return path


def _run(data, model, tmp_path, out="out.parquet", **kw):
    opts = {
        "question": "q_text",
        "answer": "gold",
        "group": "task",
        "device": "cpu",
        "progress": False,
        "verbose": False,
        **SLICK,
        **kw,
    }
    return slick_tool.categorize_dataset(data, model, output=tmp_path / out if out else None, **opts)


def _book(model, questions, dev, **cfg):
    cfg = slick_tool.slick_config(**{**SLICK, **cfg})
    return slick.categorize(*model, questions[["relation", "question", "answer"]], dev, cfg, progress=False)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_file_format_gives_the_books_categories(fmt, qa, tiny_model, tiny_model_path, tmp_path):
    questions, dev, user, user_dev = qa
    data = _save(user, tmp_path / f"train.{fmt}")
    res = _run(data, str(tiny_model_path), tmp_path, exemplars=_save(user_dev, tmp_path / f"dev.{fmt}"))
    book = _book(tiny_model, questions, dev)
    assert res.table["category"].tolist() == book["category"].tolist()
    np.testing.assert_array_equal(res.table["p_greedy"], book["p_greedy"])
    np.testing.assert_array_equal(res.table["p_sample"], book["p_sample"])
    written = pd.read_parquet(tmp_path / "out.parquet")
    assert list(written.columns) == [*user.columns, "p_greedy", "p_sample", "p_any", "category"]
    assert written["row_id"].astype(int).tolist() == list(range(len(user)))  # the input rows, in order
    assert written["category"].tolist() == book["category"].tolist()
    summary = pd.read_csv(tmp_path / "out.summary.csv", index_col=0)
    assert summary.loc["(all)", "n"] == len(user) and set(summary.index) == {*user["task"], "(all)"}
    assert not (tmp_path / "out.parquet.parts").exists()  # chunks removed once the output is complete


def test_sampling_estimator_and_jsonl_output_match_the_book(qa, tiny_model, tmp_path):
    questions, dev, user, user_dev = qa
    res = _run(user, tiny_model, tmp_path, out="out.jsonl", exemplars=user_dev, estimator="sampling")
    book = _book(tiny_model, questions, dev, estimator="sampling")
    assert res.table["category"].tolist() == book["category"].tolist()
    back = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert back["category"].tolist() == book["category"].tolist()
    np.testing.assert_allclose(back["p_sample"], book["p_sample"], rtol=1e-12)


def test_exact_categories_do_not_depend_on_the_chunk_size(qa, tiny_model, tmp_path):
    _, _, user, user_dev = qa
    one = _run(user, tiny_model, tmp_path, out=None, exemplars=user_dev).table
    many = _run(user, tiny_model, tmp_path, out=None, exemplars=user_dev, chunk_size=4).table
    assert many["category"].tolist() == one["category"].tolist()
    np.testing.assert_allclose(many["p_sample"], one["p_sample"], rtol=1e-5, atol=1e-7)


def test_entityquestions_folder_is_the_books_table(tiny_world, tiny_model, tiny_model_path, tmp_path):
    folder = tiny_world[0]
    res = slick_tool.categorize_dataset(
        folder,
        str(tiny_model_path),
        output=tmp_path / "eq.parquet",
        limit=10,
        device="cpu",
        progress=False,
        verbose=False,
        **SLICK,
    )
    raw = eq.load(folder)
    train = eq.preprocess(raw, verbose=False).query("split == 'train'").head(10)
    book = _book(tiny_model, train, eq.exemplar_pool(raw))
    assert res.table["question"].tolist() == train["question"].tolist()
    assert res.table["category"].tolist() == book["category"].tolist()


def test_hugging_face_datasets_folder_and_object(qa, tiny_model, tmp_path):
    datasets = pytest.importorskip("datasets")
    questions, dev, user, user_dev = qa
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_pandas(user), "validation": datasets.Dataset.from_pandas(user_dev)}
    )
    dd.save_to_disk(str(tmp_path / "hf"))
    book = _book(tiny_model, questions, dev)["category"].tolist()
    res = _run(tmp_path / "hf", tiny_model, tmp_path, exemplar_split="validation")
    assert res.table["category"].tolist() == book
    res = _run(dd["train"], tiny_model, tmp_path, out=None, exemplars=user_dev)
    assert res.table["category"].tolist() == book


class Scripted:
    """A model whose answers we choose, read off the question line ("Q: <question> A:").

    ``hk*`` questions: always right.  ``mk*``: right greedily in the first prompt
    of each question only.  ``wk*``: greedily wrong, one sample right in the first
    prompt (exact: a sampling probability of 0.2 per prompt).  ``unk*``: never right.
    Exemplar questions get a non-empty wrong answer (the model answers in format).
    """

    def __init__(self):
        self.seen: dict[str, int] = {}

    def _q(self, prompt):
        q = prompt.rsplit("\n", 1)[-1].removeprefix("Q: ").removesuffix(" A:")
        self.seen[q] = self.seen.get(q, 0) + 1
        return q.split()[-1].rstrip("?"), self.seen[q]

    def decode(self, model, tok, prompts, *, n_samples=0, **kw):
        greedy, samples = [], []
        for p in prompts:
            (q, k), gold = self._q(p), "yes"
            greedy.append(gold if q.startswith("hk") or (q.startswith("mk") and k == 1) else "no")
            samples.append([gold if q.startswith("wk") and k == 1 and i == 0 else "no" for i in range(n_samples)])
        return greedy, samples

    def score(self, model, tok, prompts, golds, **kw):
        out = [self._q(p) for p in prompts]
        greedy = [q.startswith("hk") or (q.startswith("mk") and k == 1) for q, k in out]
        return lm.Scores(
            np.array(greedy), np.array([0.2 if q.startswith("wk") else 0.0 for q, _ in out]), np.zeros(len(out))
        )


def _scripted_data():
    kinds = ["hk", "mk", "wk", "unk"]
    rows = [
        {"task": t, "q_text": f"Is it {k}{t}?", "gold": "yes", "note": f"{k}-{t}"} for t in ("a", "b") for k in kinds
    ]
    dev = [{"task": t, "q_text": f"Dev {i} {t}?", "gold": "yes"} for t in ("a", "b") for i in range(5)]
    return pd.DataFrame(rows), pd.DataFrame(dev)


@pytest.mark.parametrize("estimator", ["exact", "sampling"])
def test_scripted_model_gives_each_category_and_the_finetuning_files(estimator, tmp_path):
    data, dev = _scripted_data()
    kw = {"exemplars": dev, "backend": Scripted(), "estimator": estimator, "n_ex": 4, "slick_batch": 4}
    res = _run(data, (None, None), tmp_path, out="out.jsonl", drop="unknown", **kw)
    expected = ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"] * 2
    assert res.table["category"].tolist() == expected
    assert res.table["p_greedy"].tolist() == [1.0, 0.25, 0.0, 0.0] * 2
    assert (res.summary.drop(columns="n") == 25.0).all().all() and res.summary["n"].tolist() == [4, 4, 8]
    ft = pd.read_json(tmp_path / "out.finetune.jsonl", lines=True)
    assert list(ft.columns) == list(data.columns)  # a drop-in replacement for the input file
    assert ft["note"].tolist() == [n for n, c in zip(data["note"], expected) if c != "Unknown"]
    res = _run(data, (None, None), tmp_path, out="idk.parquet", relabel_idk=True, **{**kw, "backend": Scripted()})
    ft = pd.read_parquet(tmp_path / "idk.finetune.parquet")
    assert ft["note"].tolist() == data["note"].tolist()
    assert ft["gold"].tolist() == ["I don't know" if c == "Unknown" else "yes" for c in expected]
    res = _run(data, (None, None), tmp_path, out=None, drop="Unknown,wk", **{**kw, "backend": Scripted()})
    assert res.finetune["note"].tolist() == [n for n in data["note"] if n[:2] in ("hk", "mk")]


def test_relabelling_keeps_answers_written_as_lists_of_one(tmp_path):
    data, dev = _scripted_data()
    data = data.assign(gold=[[g] for g in data["gold"]])
    res = _run(
        data, (None, None), tmp_path, out="lists.jsonl", exemplars=dev, backend=Scripted(), relabel_idk=True, n_ex=4
    )
    ft = pd.read_json(tmp_path / "lists.finetune.jsonl", lines=True)
    assert ft["gold"].tolist() == [["I don't know"] if c == "Unknown" else ["yes"] for c in res.table["category"]]
    assert (res.table["category"] == "Unknown").sum() == 2


class Stop(Exception):
    """Stands for Ctrl-C or a killed job."""


class Counting:
    """The real engine, counting calls; raises :class:`Stop` at call ``stop_at`` (1-based)."""

    def __init__(self, stop_at: int = 0):
        self.calls, self.stop_at = 0, stop_at

    def _tick(self):
        self.calls += 1
        if self.calls == self.stop_at:
            raise Stop

    def score(self, *a, **kw):
        self._tick()
        return lm.score(*a, **kw)

    def decode(self, *a, **kw):
        self._tick()
        return lm.decode(*a, **kw)


@pytest.mark.parametrize("estimator", ["exact", "sampling"])
def test_an_interrupted_run_resumes_to_identical_output(estimator, qa, tiny_model_path, tmp_path):
    _, _, user, user_dev = qa
    data = _save(user, tmp_path / "train.jsonl")
    kw = {"exemplars": user_dev, "estimator": estimator, "chunk_size": 4}  # 3 chunks of 4 questions
    _run(data, str(tiny_model_path), tmp_path, out="whole.parquet", **kw)
    with pytest.raises(Stop):  # stopped in the second chunk
        _run(data, str(tiny_model_path), tmp_path, out="cut.parquet", backend=Counting(stop_at=2), **kw)
    assert not (tmp_path / "cut.parquet").exists()  # no half-written output
    assert sorted(p.name for p in (tmp_path / "cut.parquet.parts").iterdir()) == ["chunk-00000.parquet", "config.json"]
    with pytest.raises(DataError, match="other slick; rerun with the same options"):
        _run(data, str(tiny_model_path), tmp_path, out="cut.parquet", **{**kw, "n_ex": 3})
    resumed = Counting()
    _run(data, str(tiny_model_path), tmp_path, out="cut.parquet", backend=resumed, **kw)
    assert resumed.calls == 2  # only the two unfinished chunks ran
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "cut.parquet"), pd.read_parquet(tmp_path / "whole.parquet")
    )
    assert not (tmp_path / "cut.parquet.parts").exists()


def _bad_inputs(tmp_path, user, user_dev):
    """(case, data file, exemplars file, expected message part) for each kind of bad input."""
    ok_dev = _save(user_dev, tmp_path / "dev.jsonl")
    missing = _save(user.drop(columns="gold"), tmp_path / "nogold.jsonl")
    empty = _save(user.assign(gold=["x", " ", *user["gold"][2:]]), tmp_path / "empty.csv")
    few = _save(user_dev.groupby("task").head(3), tmp_path / "fewdev.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"q_text": "a?", "gold": "b", "task": "P17"}) + "\n{not json\n")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not a parquet file")
    good = _save(user, tmp_path / "good.jsonl")
    return [
        ("missing column", missing, ok_dev, "nogold.jsonl: no column 'gold'"),
        ("empty answer", empty, ok_dev, "empty.csv, row 1 (0-based), column 'gold': empty"),
        ("too few exemplars", good, few, "fewdev.jsonl: too few exemplars per group"),
        ("invalid JSON line", broken, ok_dev, "broken.jsonl, line 2: not valid JSON"),
        ("not parquet", garbage, ok_dev, "garbage.parquet: cannot be read as PARQUET"),
        ("no such file", tmp_path / "nothere.jsonl", ok_dev, "nothere.jsonl: no such file"),
    ]


def test_each_bad_input_gives_one_clear_line_and_writes_nothing(qa, tiny_model_path, tmp_path, capsys):
    _, _, user, user_dev = qa
    for case, data, dev, message in _bad_inputs(tmp_path, user, user_dev):
        before = set(tmp_path.iterdir())
        rc = slick_tool.main(
            [
                str(data),
                "--model",
                str(tiny_model_path),
                "--exemplars",
                str(dev),
                "--output",
                str(tmp_path / "out.parquet"),
                "--question-column",
                "q_text",
                "--answer-column",
                "gold",
                "--group-column",
                "task",
                "--device",
                "cpu",
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2, case
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (case, err)
        assert set(tmp_path.iterdir()) == before, case


def test_a_folder_that_is_no_model_is_a_clear_error(qa, tmp_path):
    _, _, user, user_dev = qa
    (tmp_path / "nomodel").mkdir()
    with pytest.raises(DataError, match="nomodel: a folder without config.json"):
        _run(user, str(tmp_path / "nomodel"), tmp_path, exemplars=user_dev)
    (tmp_path / "nomodel" / "config.json").write_text("{}")
    with pytest.raises(DataError, match="nomodel: cannot load a causal LM"):
        _run(user, str(tmp_path / "nomodel"), tmp_path, exemplars=user_dev)
    with pytest.raises(DataError, match="bad SliCK parameter.*k_shot = 0"):
        _run(user, str(tmp_path / "nomodel"), tmp_path, exemplars=user_dev, k_shot=0)


def test_command_end_to_end(qa, tiny_model_path, tmp_path, capsys):
    _, _, user, user_dev = qa
    data, dev = _save(user, tmp_path / "train.csv"), _save(user_dev, tmp_path / "dev.csv")
    argv = [
        str(data),
        "--model",
        str(tiny_model_path),
        "--exemplars",
        str(dev),
        "--output",
        str(tmp_path / "out.parquet"),
        "--question-column",
        "q_text",
        "--answer-column",
        "gold",
        "--group-column",
        "task",
        "--filter",
        "unknown",
        "--device",
        "cpu",
        "--no-progress",
        *[f"--{k.replace('_', '-')}={v}" for k, v in SLICK.items()],
    ]
    assert slick_tool.main(argv) == 0
    out = capsys.readouterr().out
    assert "SliCK categories of 12 questions" in out and "(all)" in out
    table = pd.read_parquet(tmp_path / "out.parquet")
    ft = pd.read_parquet(tmp_path / "out.finetune.parquet")
    assert len(ft) == (table["category"] != "Unknown").sum() and list(ft.columns) == list(user.columns)
    assert slick_tool.main(argv) == 2 and "exists; pass --overwrite" in capsys.readouterr().err


def test_template_option_writes_every_prompt_line(monkeypatch):
    seen = []
    monkeypatch.setattr(slick_tool, "categorize_dataset", lambda *a, **kw: seen.append(kw["template"]))
    assert (
        slick_tool.main(["d.jsonl", "--model", "m", "--output", "o.parquet", "--template", "Question: {q}\\nAnswer:"])
        == 0
    )
    assert seen == ["Question: {q}\nAnswer:"]
    data, dev = _scripted_data()
    pr = slick.prompts(
        qa_data.qa_table(data, "q_text", "gold", "task", "d"),
        qa_data.qa_table(dev, "q_text", "gold", "task", "d"),
        slick_tool.slick_config(n_ex=1),
        template="Question: {q}\nAnswer:",
    )
    assert pr["prompt"][0].endswith("\nQuestion: Is it hka?\nAnswer:") and "Answer: yes\nQuestion:" in pr["prompt"][0]


def test_help_documents_every_option():
    ap = slick_tool.parser()
    text = ap.format_help()
    for action in ap._actions:
        assert action.help and action.help.strip(), action.dest
        for opt in action.option_strings:
            assert opt in text
    options = {o for a in ap._actions for o in a.option_strings}
    assert {f"--{p.replace('_', '-')}" for p in slick_tool.PARAMS} <= options  # every SliCK parameter
    assert {f.name for f in dataclasses.fields(slick.SlickConfig)} - set(slick_tool.PARAMS) == {"compare_n"}


def test_python_dash_m_and_the_console_script_run_the_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["newknowledge-slick", "--help"])
    with pytest.warns(RuntimeWarning, match="found in sys.modules"), pytest.raises(SystemExit) as done:
        runpy.run_module("newknowledge.cli.slick_tool", run_name="__main__")  # python -m newknowledge.cli.slick_tool
    assert done.value.code == 0 and "--relabel-idk" in capsys.readouterr().out
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["newknowledge-slick"] == "newknowledge.cli.slick_tool:main"


def test_read_errors_name_the_file(tmp_path):
    (tmp_path / "x.txt").write_text("q,a\n")
    with pytest.raises(DataError, match="x.txt: unknown data format"):
        qa_data.read(tmp_path / "x.txt")
    (tmp_path / "l.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="expected a JSON list of objects"):
        qa_data.read(tmp_path / "l.json")
    df = pd.DataFrame({"question": ["a?"], "answer": [["x", "y"]], "relation": ["r"]})
    with pytest.raises(DataError, match="several answers"):
        qa_data.qa_table(df, "question", "answer", "relation", "d.jsonl")
    one = qa_data.qa_table(df.assign(answer=[["x"]]), "question", "answer", None, "d.jsonl")
    assert one.to_dict("records") == [{"relation": "all", "question": "a?", "answer": "x"}]
