"""Tests for newknowledge.data.entityquestions on small fixtures in the real ENTITYQUESTIONS format."""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from newknowledge.data.entityquestions import (
    TEMPLATES,
    DataError,
    counts_table,
    download,
    extract_subject,
    load,
    preprocess,
)


def qa(question: str, *answers: str) -> dict:
    return {"question": question, "answers": list(answers)}


# Train relations P40 and P495, OOD relation P50, dropped relation P20 and an
# id with no template (P9999).  Comments say what preprocess() must do with each.
FIXTURE: dict[str, list] = {
    "train/P40.train.json": [
        qa("Who is Shlomo Zalman Auerbach's child?", "Ezriel Auerbach"),  # kept: dev overlap is fine
        qa("Who is John Bowes, 10th Earl of Strathmore and Kinghorne's child?", "John Bowes"),  # kept
        qa("Who is Josef Motzfeldt's child?", "Nukâka Coster-Waldau", "Other Child"),  # 2 answers
        qa("Who is Thurgood Marshall's child?", "John W. Marshall"),  # subject in test
        qa("Who is Leonhard Euler's child?", "Johann Euler"),  # kept: P20 is not a study test set
    ],
    "train/P495.train.json": [
        qa("Which country was Amélie created in?", "France"),  # kept
        qa("Which country was Nineteen Eighty-Four created in?", "United Kingdom"),  # subject in ood_test
        qa("Which country was Crouching Tiger, Hidden Dragon created in?", "Taiwan"),  # subject in test
    ],
    "train/P50.train.json": [qa("Who is the author of Hamlet?", "William Shakespeare")],
    "train/P20.train.json": [qa("Where did Carl Friedrich Gauss die?", "Göttingen")],
    "train/P9999.train.json": [qa("Whatever about something?", "something")],
    "dev/P40.dev.json": [qa("Who is Shlomo Zalman Auerbach's child?", "Shmuel Auerbach")],
    "dev/P495.dev.json": [qa("Which country was Das Boot created in?", "Germany")],
    "dev/P50.dev.json": [qa("Who is the author of Dune?", "Frank Herbert")],
    "test/P40.test.json": [qa("Who is Thurgood Marshall's child?", "Thurgood Marshall Jr.")],
    "test/P495.test.json": [
        # Two answers: dropped itself, but its subject still keeps train clean.
        qa("Which country was Crouching Tiger, Hidden Dragon created in?", "Taiwan", "China"),
        qa("Which country was Ponyo created in?", "Japan"),
    ],
    "test/P50.test.json": [
        qa("Who is the author of Nineteen Eighty-Four?", "George Orwell"),
        qa("Who is the author of Les Misérables?", "Victor Hugo"),
    ],
    "test/P20.test.json": [qa("Where did Leonhard Euler die?", "Saint Petersburg")],
}


def write_tree(root: Path, files: dict[str, object]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=1)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def eq(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "eq", FIXTURE)


def load_quiet(folder, **kwargs) -> pd.DataFrame:
    with pytest.warns(UserWarning, match="P9999"):
        return load(folder, **kwargs)


def test_load_reads_tidy_table_and_skips_unknown_relation(eq):
    table = load_quiet(eq)
    assert list(table.columns) == ["split", "relation", "index", "question", "subject", "answers"]
    # 10 train (P9999 skipped) + 3 dev + 6 test rows, every relation kept by load.
    assert len(table) == 19
    assert "P9999" not in set(table["relation"])
    assert table["split"].tolist() == ["train"] * 10 + ["dev"] * 3 + ["test"] * 6
    assert table.query("split == 'train'")["relation"].tolist() == ["P20"] + ["P40"] * 5 + ["P495"] * 3 + ["P50"]
    row = table[(table["relation"] == "P40") & (table["index"] == 2)].iloc[0]
    assert row["subject"] == "Josef Motzfeldt"
    assert row["answers"] == ["Nukâka Coster-Waldau", "Other Child"]
    assert table.query("split == 'test' and relation == 'P50'")["index"].tolist() == [0, 1]


@pytest.mark.parametrize(
    "relation, question, subject",
    [
        ("P40", "Who is Thurgood Marshall's child?", "Thurgood Marshall"),
        (
            "P40",
            "Who is John Bowes, 10th Earl of Strathmore and Kinghorne's child?",
            "John Bowes, 10th Earl of Strathmore and Kinghorne",
        ),
        ("P40", "Who is Nukâka Coster-Waldau's child?", "Nukâka Coster-Waldau"),
        ("P40", "Who is James's child?", "James"),
        ("P36", "What is the capital of Côte d'Ivoire?", "Côte d'Ivoire"),
        ("P17", "Which country is São Tomé located in?", "São Tomé"),
        ("P800", "What is C++ (language) famous for?", "C++ (language)"),
        ("P19", "Where was 孫文 born?", "孫文"),
    ],
)
def test_extract_subject(relation, question, subject):
    assert extract_subject(relation, question) == subject


@pytest.mark.parametrize(
    "relation, question",
    [
        ("P40", "Who is Thurgood Marshall's child"),  # "?" is literal, not "optional"
        ("P40", "Who is Thurgood Marshall's children?"),
        ("P40", "Who is 's child?"),  # empty subject
        ("P17", "Where was Paris born?"),
        ("P40", "Oh. Who is Thurgood Marshall's child?"),  # anchored at the start
    ],
)
def test_extract_subject_rejects_other_questions(relation, question):
    assert extract_subject(relation, question) is None


def test_load_subjects_from_files(eq):
    table = load_quiet(eq)
    train = table.query("split == 'train' and relation == 'P40'")
    assert train["subject"].tolist() == [
        "Shlomo Zalman Auerbach",
        "John Bowes, 10th Earl of Strathmore and Kinghorne",
        "Josef Motzfeldt",
        "Thurgood Marshall",
        "Leonhard Euler",
    ]
    assert table.query("relation == 'P50' and split == 'test'")["subject"].tolist() == [
        "Nineteen Eighty-Four",
        "Les Misérables",
    ]


def test_load_relations_filter(eq):
    table = load_quiet(eq, relations=["P50"])
    assert set(table["relation"]) == {"P50"}
    assert table["split"].tolist() == ["train", "dev", "test", "test"]
    assert load_quiet(eq, relations="P495")["relation"].tolist() == ["P495"] * 6


def test_load_relations_filter_rejects_unknown_id(eq):
    with pytest.raises(DataError, match=r"P9999.*known relation ids are P17, P19"):
        load(eq, relations=["P17", "P9999"])


def test_load_relations_filter_rejects_absent_relation(eq):
    with pytest.raises(DataError, match=r"no files for relations \['P17'\]"):
        load_quiet(eq, relations=["P17", "P40"])


def test_preprocess(eq, capsys):
    pre = preprocess(load_quiet(eq), verbose=False)
    assert capsys.readouterr().out == ""
    assert list(pre.columns) == ["split", "relation", "question", "subject", "answer"]
    assert pre["split"].tolist() == ["train"] * 4 + ["dev"] * 2 + ["test"] * 2 + ["ood_test"] * 2
    assert pre.query("split == 'train'")["subject"].tolist() == [
        "Shlomo Zalman Auerbach",
        "John Bowes, 10th Earl of Strathmore and Kinghorne",
        "Leonhard Euler",
        "Amélie",
    ]
    assert pre.query("split == 'ood_test'")["question"].tolist() == [
        "Who is the author of Nineteen Eighty-Four?",
        "Who is the author of Les Misérables?",
    ]
    assert pre.query("split == 'test'")["answer"].tolist() == ["Thurgood Marshall Jr.", "Japan"]
    assert pre["answer"].map(type).eq(str).all()
    assert set(pre["relation"]) == {"P40", "P495", "P50"}  # P20, P9999 and OOD train/dev gone
    held_out = set(pre.loc[pre["split"].isin(["test", "ood_test"]), "subject"])
    assert not held_out & set(pre.loc[pre["split"] == "train", "subject"])


def test_preprocess_prints_counts(eq, capsys):
    preprocess(load_quiet(eq))
    out = capsys.readouterr().out
    assert "ood_test" in out
    assert out.splitlines()[-1].split() == ["total", "4", "2", "2", "2"]


def test_counts_table(eq):
    counts = counts_table(preprocess(load_quiet(eq), verbose=False))
    expected = pd.DataFrame(
        {"train": [3, 1, 0, 4], "dev": [1, 1, 0, 2], "test": [1, 1, 0, 2], "ood_test": [0, 0, 2, 2]},
        index=pd.Index(["P40", "P495", "P50", "total"], name="relation"),
    )
    pd.testing.assert_frame_equal(counts, expected, check_dtype=False)
    assert all(pd.api.types.is_integer_dtype(t) for t in counts.dtypes)


GOOD = [qa("Who is Thurgood Marshall's child?", "John W. Marshall")]


@pytest.mark.parametrize(
    "files, match",
    [
        (
            {"train/P40.train.json": '[{"question": "Who is'},
            r"P40\.train\.json: not valid JSON \(.* at line 1, column \d+\)",
        ),
        (
            {"train/P40.train.json": {"question": "q", "answers": ["a"]}},
            r"P40\.train\.json: top level is a JSON dict, expected a list",
        ),
        (
            {"train/P40.train.json": GOOD + ["Who is X's child?"]},
            r"P40\.train\.json, entry 1: is a JSON str, expected an object",
        ),
        ({"train/P40.train.json": GOOD + [{"answers": ["a"]}]}, r"P40\.train\.json, entry 1: missing field 'question'"),
        (
            {"dev/P40.dev.json": GOOD + GOOD + [{"question": "Who is A's child?"}]},
            r"P40\.dev\.json, entry 2: missing field 'answers'",
        ),
        (
            {"test/P40.test.json": [qa("Who is A's child?")]},
            r"P40\.test\.json, entry 0, field 'answers': expected a non-empty list",
        ),
        (
            {"test/P40.test.json": [{"question": "Who is A's child?", "answers": "B"}]},
            r"P40\.test\.json, entry 0, field 'answers'",
        ),
        (
            {"test/P40.test.json": [{"question": "Who is A's child?", "answers": ["B", 3]}]},
            r"P40\.test\.json, entry 0, field 'answers'",
        ),
        (
            {"train/P40.train.json": GOOD + [qa("Who is the child of A?", "B")]},
            r"P40\.train\.json, entry 1, field 'question': 'Who is the child of A\?' does not match "
            r"the P40 template \"Who is \[X\]'s child\?\"",
        ),
        ({"train/P40.json": GOOD}, r"train/P40\.json: file name is not \{Pid\}\.train\.json"),
        ({"train/P40.dev.json": GOOD}, r"train/P40\.dev\.json: file name is not \{Pid\}\.train\.json"),
        ({"dev/child.dev.json": GOOD}, r"dev/child\.dev\.json: file name is not \{Pid\}\.dev\.json"),
    ],
)
def test_malformed_input_raises_one_clear_error(tmp_path, files, match):
    root = write_tree(
        tmp_path / "eq", {"train/P40.train.json": GOOD, "dev/P40.dev.json": GOOD, "test/P40.test.json": GOOD, **files}
    )
    with pytest.raises(DataError, match=match) as info:
        load(root)
    assert "\n" not in str(info.value)
    # No chained traceback is shown: no cause, and any context is suppressed.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_missing_split_folder(tmp_path):
    root = write_tree(tmp_path / "eq", {"train/P40.train.json": GOOD, "test/P40.test.json": GOOD})
    with pytest.raises(DataError, match=r"eq: no 'dev' folder; expected the layout .*train/P17\.train\.json"):
        load(root)


def test_folder_without_data_files(tmp_path):
    for split in ("train", "dev", "test"):
        (tmp_path / "eq" / split).mkdir(parents=True)
    (tmp_path / "eq" / "train" / "README.md").write_text("not data")
    with pytest.raises(DataError, match=r"eq: no \*\.json data files"):
        load(tmp_path / "eq")


# --- download, against a local server -------------------------------------------------


def make_zip(files: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content if isinstance(content, str) else json.dumps(content))
    return buffer.getvalue()


@pytest.fixture
def serve(monkeypatch):
    """Serve bytes at http://127.0.0.1:<port>/dataset.zip from a thread; yields a setup function."""
    monkeypatch.setenv("no_proxy", "*")  # never route 127.0.0.1 through a proxy
    monkeypatch.setenv("NO_PROXY", "*")
    servers = []

    def start(payload: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/dataset.zip"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/x.zip"


def test_download_unpacks_the_data_folder(tmp_path, serve):
    files = {f"dataset/{name}": content for name, content in FIXTURE.items() if "P9999" not in name}
    # Decoys: the one-off folders of the real archive must not be taken for the root.
    files["dataset/one-off/no-overlap/P19/P19_no_overlap.test.json"] = GOOD
    files["__MACOSX/dataset/._train"] = "junk"
    url = serve(make_zip(files))
    dest = tmp_path / "data" / "entityquestions"
    assert download(dest, url) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["dev", "one-off", "test", "train"]
    assert os.listdir(dest.parent) == ["entityquestions"]  # no temp file or folder left
    pre = preprocess(load(dest), verbose=False)
    assert len(pre) == 10
    # Already there: no second download, so a dead url is fine.
    assert download(dest, closed_port_url()) == dest


def test_download_without_network_says_where_to_put_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    dest = tmp_path / "entityquestions"
    with pytest.raises(DataError, match=r"no network.*entityquestions with train/, dev/, test/ inside.*eq_dir") as info:
        download(dest, closed_port_url(), timeout=5)
    assert str(dest) in str(info.value)
    assert info.value.__suppress_context__
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"<html>not a zip</html>", r"not a zip archive"),
        (make_zip({"dataset/train/P40.train.json": GOOD}), r"no folder holding train/, dev/ and test/"),
    ],
)
def test_download_bad_archive_leaves_nothing(tmp_path, serve, payload, match):
    dest = tmp_path / "entityquestions"
    with pytest.raises(DataError, match=match):
        download(dest, serve(payload))
    assert os.listdir(tmp_path) == []


def test_download_refuses_a_foreign_dest(tmp_path):
    (tmp_path / "entityquestions").mkdir()
    (tmp_path / "entityquestions" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"entityquestions: exists but holds no train/"):
        download(tmp_path / "entityquestions", closed_port_url())
    assert (tmp_path / "entityquestions" / "notes.txt").read_text() == "mine"


def test_templates_cover_the_study_relations():
    from newknowledge.data.entityquestions import DROPPED_RELATIONS, OOD_RELATIONS, TRAIN_RELATIONS

    assert len(TRAIN_RELATIONS) == 12 and len(OOD_RELATIONS) == 7 and len(DROPPED_RELATIONS) == 5
    assert set(TRAIN_RELATIONS + OOD_RELATIONS + DROPPED_RELATIONS) <= TEMPLATES.keys()
    assert all(t.count("[X]") == 1 for t in TEMPLATES.values())
