"""CSV inputs: the processor's model decides columns and types; every bad row is reported, by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _io_support import SEED_004_CSV, batch_ids, cli, ok

from batchyard.core.errors import InputError
from batchyard.core.models import BatchSpec
from batchyard.io.inputs import open_input
from batchyard.store.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sync():
    import sample_processors

    return sample_processors.sync_analyze


def rows(path: Path, proc=None, **kw):
    return list(open_input(str(path), processor=proc, **kw).items())


def problems(path: Path, proc=None, **kw) -> list[str]:
    with pytest.raises(InputError) as exc:
        rows(path, proc, **kw)
    return [str(p) for p in exc.value.problems]


def test_seed_004_csv_as_written(tmp_path: Path, sync) -> None:
    src = tmp_path / "batch.csv"
    src.write_text(SEED_004_CSV)
    got = rows(src, sync)
    assert [k for k, _ in got] == [None, None, None]
    first, second, third = (p for _, p in got)
    assert first == {"master_file": "/mnt/data/audio/master1.wav", "dub_file": "/mnt/data/audio/dub1.wav",
                     "methods": ["mfcc", "ai"], "ai_model": "wav2vec2", "description": "Daily batch item 1",
                     "tags": "daily,batch"}  # tags: not a model field, kept as text
    assert second["methods"] == ["onset", "spectral"]
    assert "ai_model" not in second  # empty optional cell: the model's default applies
    assert third["methods"] == ["ai"]


def test_types_come_from_the_model(tmp_path: Path, sync) -> None:
    src = tmp_path / "t.csv"
    src.write_text('master_file,dub_file,channels,offset_hint,methods\nm,d,6,-1.5,"[""ai"", ""onset""]"\n'
                   "m,d, 4 ,,mfcc\n")
    (_, a), (_, b) = rows(src, sync)
    assert a == {"master_file": "m", "dub_file": "d", "channels": 6, "offset_hint": -1.5, "methods": ["ai", "onset"]}
    assert b["channels"] == 4 and "offset_hint" not in b and b["methods"] == ["mfcc"]


def test_bom_crlf_quoted_commas_and_newlines(tmp_path: Path, sync) -> None:
    src = tmp_path / "bom.csv"
    text = ('master_file,dub_file,description\r\n"/a,b.wav",/d.wav,"line one\r\nline ""two"""\r\n'
            "/c.wav,/e.wav,plain\r\n")
    src.write_bytes(b"\xef\xbb\xbf" + text.encode())
    (_, a), (_, b) = rows(src, sync)
    assert a == {"master_file": "/a,b.wav", "dub_file": "/d.wav", "description": 'line one\r\nline "two"'}
    assert b["master_file"] == "/c.wav"


def test_every_bad_row_reported_with_line_column_and_expectation(tmp_path: Path, sync) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(
        "master_file,dub_file,methods,ai_model,channels\n"       # 1
        "/m1.wav,/d1.wav,mfcc,wav2vec2,2\n"                      # 2 fine
        '/m2.wav,/d2.wav,"mfcc,\nbogus",,2\n'                    # 3-4 bad list element, row starts on 3
        ",/d3.wav,ai,gpt,two\n"                                  # 5 three problems
        "/m4.wav,/d4.wav,ai\n"                                   # 6 too few fields
        "/m5.wav,/d5.wav,ai,,3\n")                               # 7 fine
    found = problems(src, sync)
    assert found == [
        f"{src}, line 3, column 'methods': at methods[1]: "
        "Input should be 'mfcc', 'onset', 'spectral' or 'ai' (got 'bogus')",
        f"{src}, line 5, column 'master_file': required value is empty",
        f"{src}, line 5, column 'ai_model': Input should be 'wav2vec2', 'yamnet' or 'spectral' (got 'gpt')",
        f"{src}, line 5, column 'channels': Input should be a valid integer, unable to parse string as an "
        "integer (got 'two')",
        f"{src}, line 6: row has 3 fields, the header has 5",
    ]


def test_missing_required_column_reported_once_unless_shared(tmp_path: Path, sync) -> None:
    src = tmp_path / "nodub.csv"
    src.write_text("master_file,methods\n/m1.wav,ai\n/m2.wav,ai\n")
    found = problems(src, sync)
    assert len(found) == 1 and "line 1, column 'dub_file': missing required column 'dub_file'" in found[0]
    # The shared parameters (--param) can supply it for every row.
    got = rows(src, sync, params={"dub_file": "/same.wav"})
    assert [p["master_file"] for _, p in got] == ["/m1.wav", "/m2.wav"]
    assert "dub_file" not in got[0][1]


def test_header_problems(tmp_path: Path) -> None:
    src = tmp_path / "h.csv"
    src.write_text("a,b,a,\n1,2,3,4\n")
    found = problems(src)
    assert any("duplicate column name (also column 1)" in p and "'a'" in p for p in found)
    assert any("column 4 of the header has no name" in p for p in found)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "no header row" in problems(empty)[0]


def test_malformed_quoting_and_bad_utf8_are_located(tmp_path: Path) -> None:
    src = tmp_path / "m.csv"
    src.write_bytes(b'a,b\n1,"x"y\n2,\xff\xfe\n3,ok\n4,"never closed\n')
    found = problems(src)
    assert any("line 2: malformed CSV" in p for p in found)
    assert any("line 3: not UTF-8" in p for p in found)
    assert any("line 5: malformed CSV" in p for p in found)
    assert not any("line 4" in p for p in found)


def test_without_a_model_rows_are_text(tmp_path: Path) -> None:
    src = tmp_path / "plain.csv"
    src.write_text("x,y\n1,\n\n2,b\n")
    assert rows(src) == [(None, {"x": "1", "y": ""}), (None, {"x": "2", "y": "b"})]


def test_bad_csv_creates_no_batch(tmp_path: Path, sync) -> None:
    """The error is raised after the last row, inside the store's transaction: nothing is created."""
    src = tmp_path / "bad.csv"
    src.write_text("master_file,dub_file,channels\n" + "".join(f"/m{i},/d{i},{i}\n" for i in range(6000))
                   + "/m,/d,many\n")
    store = SQLiteStore(tmp_path / "s.db")
    try:
        from batchyard.core.engine import Engine

        engine = Engine(store)
        with pytest.raises(InputError) as exc:
            engine.submit(BatchSpec(processor=sync.name), open_input(str(src), processor=sync).items())
        assert "line 6002, column 'channels'" in str(exc.value)
        assert store.list_batches() == []
        assert store._conn().execute("SELECT count(*) FROM items").fetchone()[0] == 0
    finally:
        store.close()


def test_cli_run_and_validate_report_all_problems(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("master_file,dub_file,channels\n/m1,/d1,1\n,/d2,2\n/m3,/d3,x\n")
    store = tmp_path / "s.db"
    res = ok(cli("run", src, "-p", "sync-analyze", store=store), 2)
    assert "2 input problems" in res.stderr
    assert "line 3, column 'master_file'" in res.stderr and "line 4, column 'channels'" in res.stderr
    assert batch_ids(store) == []
    res = ok(cli("validate", src, "-p", "sync-analyze"), 2)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and "line 3" in lines[0] and "line 4" in lines[1]
    good = tmp_path / "good.csv"
    good.write_text(SEED_004_CSV)
    res = ok(cli("validate", good, "-p", "sync-analyze"))
    assert "3 items (csv)" in res.stdout
    res = ok(cli("run", good, "-p", "sync-analyze", "--dry-run"))
    assert "3 items" in res.stdout


def test_values_stored_are_the_typed_ones(tmp_path: Path) -> None:
    src = tmp_path / "seed.csv"
    src.write_text(SEED_004_CSV)
    store = tmp_path / "s.db"
    out = tmp_path / "r.json"
    ok(cli("run", src, "-p", "sync-analyze", "-o", out, store=store))
    data = json.loads(out.read_text())
    assert data["results"][0]["input"]["methods"] == ["mfcc", "ai"]
    assert data["results"][0]["result"]["offset_seconds"] == -15.023
