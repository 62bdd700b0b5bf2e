"""JSONL (and OpenAI batch files), JSON arrays, text lines, directories and globs, fsspec URIs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from batchyard.core.errors import InputError
from batchyard.io.inputs import detect_format, from_iterable, open_input

pytestmark = pytest.mark.timeout(60)


def req(cid: str, content: str = "hi") -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}}


def items(location: str | Path, fmt: str | None = None, **kw) -> list:
    return list(open_input(str(location), fmt, **kw).items())


def problems(location: str | Path, fmt: str | None = None, **kw) -> list[str]:
    with pytest.raises(InputError) as exc:
        items(location, fmt, **kw)
    return [str(p) for p in exc.value.problems]


@pytest.fixture(scope="module")
def sync():
    import sample_processors

    return sample_processors.sync_analyze


# -- JSONL -----------------------------------------------------------------------------------------

def test_openai_jsonl_custom_id_is_the_key(tmp_path: Path) -> None:
    src = tmp_path / "requests.jsonl"
    src.write_text("\n".join(json.dumps(req(c)) for c in ("a", "b", "c")) + "\n\n")
    got = items(src)
    assert [k for k, _ in got] == ["a", "b", "c"]
    assert got[0][1] == req("a")


def test_openai_duplicates_and_malformed_lines_name_their_lines(tmp_path: Path) -> None:
    src = tmp_path / "requests.jsonl"
    bad_method = {**req("d"), "method": "GET"}
    lines = [json.dumps(req("a")), json.dumps(req("b")), "{not json", json.dumps(req("a")),
             json.dumps({"custom_id": "e", "body": {}}), json.dumps(bad_method), json.dumps(req("b"))]
    src.write_text("\n".join(lines) + "\n")
    found = problems(src)
    assert found == [
        f"{src}, line 3: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{src}, line 4, column 'custom_id': duplicate custom_id 'a': line 1 has it too",
        f"{src}, line 5: OpenAI batch request without method, url",
        f"{src}, line 6, column 'method': method must be \"POST\", got 'GET'",
        f"{src}, line 7, column 'custom_id': duplicate custom_id 'b': line 2 has it too",
    ]


def test_plain_jsonl_objects_are_validated_against_the_model(tmp_path: Path, sync) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_text('{"master_file": "/m", "dub_file": "/d"}\n{"master_file": "/m2"}\n'
                   '{"master_file": "/m", "dub_file": "/d", "channels": "six"}\n')
    found = problems(src, processor=sync)
    assert found == [f"{src}, line 2, column 'dub_file': required value is missing",
                     f"{src}, line 3, column 'channels': Input should be a valid integer, unable to parse "
                     "string as an integer (got 'six')"]
    assert items(src, params={"dub_file": "/x"}, processor=None)[1] == (None, {"master_file": "/m2"})


# -- JSON ------------------------------------------------------------------------------------------

def test_json_arrays_of_scalars_and_objects(tmp_path: Path) -> None:
    ids = tmp_path / "photo_ids.json"
    ids.write_bytes(b'\xef\xbb\xbf  [101, "p-2", 3.5, null, true]')
    assert [p for _, p in items(ids)] == [101, "p-2", 3.5, None, True]
    objs = tmp_path / "objs.json"
    objs.write_text(json.dumps([{"a": 1, "nested": {"b": [1, 2]}}, {"a": 2}], indent=2))
    assert [p for _, p in items(objs)] == [{"a": 1, "nested": {"b": [1, 2]}}, {"a": 2}]
    openai = tmp_path / "openai.json"
    openai.write_text(json.dumps([req("x"), req("y"), req("x")]))
    assert problems(openai) == [f"{openai}, column 'custom_id': item 3: duplicate custom_id 'x': item 1 has it too"]


def test_json_that_is_not_an_array_or_is_broken(tmp_path: Path) -> None:
    obj = tmp_path / "o.json"
    obj.write_text('{"photo_ids": [1, 2]}')
    assert problems(obj) == [f"{obj}, line 1: expected a JSON array of items, got an object"]
    broken = tmp_path / "b.json"
    broken.write_text("[1, 2, {\"a\": }]")
    found = problems(broken)
    assert len(found) == 1 and "invalid JSON after item 2" in found[0]


def test_scalar_items_need_required_params_from_the_command_line(tmp_path: Path) -> None:
    from batchyard.core import processor as registry

    shell = registry.get("shell")
    src = tmp_path / "files.txt"
    src.write_text("a\nb\n")
    found = problems(src, processor=shell)
    assert len(found) == 1 and "needs parameter 'command'" in found[0] and "--param command=" in found[0]
    assert len(items(src, processor=shell, params={"command": "echo"})) == 2


# -- text ------------------------------------------------------------------------------------------

def test_text_lines_skip_blank_lines_and_comments(tmp_path: Path) -> None:
    src = tmp_path / "upc.txt"
    src.write_bytes(b"\xef\xbb\xbf# UPC codes\n012345678905\n\n   \n  036000291452  \r\n#another\n"
                    b"abc # not a comment\n")
    assert [p for _, p in items(src)] == ["012345678905", "036000291452", "abc # not a comment"]


def test_format_by_extension_and_override(tmp_path: Path) -> None:
    assert detect_format("x.CSV") == "csv" and detect_format("a/b.ndjson") == "jsonl"
    assert detect_format("x.json.gz") == "json" and detect_format("x.unknown") is None
    src = tmp_path / "data.txt"
    src.write_text('{"a": 1}\n')
    assert items(src) == [(None, '{"a": 1}')]
    assert items(src, "jsonl") == [(None, {"a": 1})]
    assert open_input(str(src), "csv").format == "csv"
    with pytest.raises(InputError, match="unknown input format 'xml'"):
        open_input(str(src), "xml")
    with pytest.raises(InputError, match="no such file"):
        open_input(str(tmp_path / "missing.csv"))


def test_compressed_input_streams(tmp_path: Path) -> None:
    src = tmp_path / "rows.csv.gz"
    with gzip.open(src, "wt") as fh:
        fh.write("a,b\n1,2\n3,4\n")
    source = open_input(str(src))
    assert source.format == "csv"
    assert [p for _, p in source.items()] == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_fingerprint_is_the_content_hash(tmp_path: Path) -> None:
    import hashlib

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("x\ny\n")
    b.write_text("x\ny\n")
    assert open_input(str(a)).fingerprint() == open_input(str(b)).fingerprint() \
        == hashlib.sha256(b"x\ny\n").hexdigest()


# -- directories and globs -------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "sample_files"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    for i in range(1, 4):
        (root / f"log_00{i}.txt").write_text("x" * i * 100)
    (root / "notes.md").write_text("md")
    (root / "sub" / "log_010.txt").write_text("sub")
    (root / "sub" / "deeper" / "log_020.txt").write_text("deeper")
    (root / ".DS_Store").write_text("hidden")
    (root / ".git" / "HEAD").write_text("hidden")
    return root


def test_directory_items_are_files(files: Path) -> None:
    got = [p for _, p in items(files)]
    assert [p["name"] for p in got] == ["log_001.txt", "log_002.txt", "log_003.txt", "notes.md"]
    assert got[0] == {"path": str(files / "log_001.txt"), "name": "log_001.txt", "size": 100}
    deep = [p["name"] for _, p in items(files, recursive=True)]
    assert deep == ["log_001.txt", "log_002.txt", "log_003.txt", "notes.md", "sub/deeper/log_020.txt",
                    "sub/log_010.txt"]


def test_globs(files: Path) -> None:
    assert [p["name"] for _, p in items(f"{files}/*.txt")] == ["log_001.txt", "log_002.txt", "log_003.txt"]
    assert [p["name"] for _, p in items(f"{files}/**/log_0*.txt")] == [
        "log_001.txt", "log_002.txt", "log_003.txt", "sub/deeper/log_020.txt", "sub/log_010.txt"]
    assert len(items(f"{files}/*.txt", recursive=True)) == 5
    assert "no files found" in problems(f"{files}/*.csv")[0]


def test_directory_fingerprint_follows_the_listing(files: Path) -> None:
    before = open_input(str(files)).fingerprint()
    assert open_input(str(files)).fingerprint() == before
    (files / "log_004.txt").write_text("new")
    assert open_input(str(files)).fingerprint() != before


def test_a_directory_cannot_be_read_as_a_file_format(files: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        open_input(str(files), "csv")


# -- fsspec ----------------------------------------------------------------------------------------

def test_memory_and_file_uris(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/io-test/upc.txt", b"1\n2\n")
    fs.pipe("/io-test/dir/a.bin", b"abc")
    assert [p for _, p in items("memory://io-test/upc.txt")] == ["1", "2"]
    assert [p for _, p in items("memory://io-test/dir")] == [
        {"path": "memory:///io-test/dir/a.bin", "name": "a.bin", "size": 3}]
    local = tmp_path / "x.jsonl"
    local.write_text('{"k": 1}\n')
    assert items(f"file://{local}") == [(None, {"k": 1})]


def test_missing_cloud_extra_names_it(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['gcsfs'] = None; sys.modules['s3fs'] = None\n"
            "from batchyard.io.inputs import open_input\n"
            "from batchyard.core.errors import InputError\n"
            "for url in ('gs://bucket/items.txt', 's3://bucket/items.txt'):\n"
            "    try:\n"
            "        open_input(url)\n"
            "    except InputError as exc:\n"
            "        print(exc)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if "pip install" in line]
    assert len(lines) == 2
    assert all("pip install 'batchyard[cloud]'" in line for line in lines)
    assert "gs://" in lines[0] and "s3://" in lines[1]


def test_from_iterable_checks_values_built_in_code(sync) -> None:
    good = [{"master_file": "/m", "dub_file": "/d"}, {"master_file": "/m2", "dub_file": "/d2"}]
    assert [p for _, p in from_iterable(good, processor=sync)] == good
    with pytest.raises(InputError) as exc:
        list(from_iterable([*good, {"master_file": "/m3"}], processor=sync))
    assert str(exc.value.problems[0]) == "<items>, column 'dub_file': item 3: required value is missing"
