"""fsspec inputs against real local servers: S3 (moto in server mode), GCS (gcp-storage-emulator), HTTP.

The servers are started by the fixtures on free loopback ports and stopped afterwards. The CLI reaches them
through the standard variables: ``AWS_ENDPOINT_URL`` (botocore) and ``STORAGE_EMULATOR_HOST`` (gcsfs).
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _io_support import (
    SEED_004_CSV,
    cli,
    cloud_env,
    free_port,
    ok,
    read_jsonl,
    start_server,
    stop_server,
    venv_bin,
)

pytestmark = pytest.mark.timeout(60)

REQUESTS = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]}})
                   + "\n" for i in range(3))


# -- S3 ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = start_server([venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        client.create_bucket(Bucket="batches")
        client.put_object(Bucket="batches", Key="seed004/batch.csv", Body=SEED_004_CSV.encode())
        client.put_object(Bucket="batches", Key="openai/requests.jsonl", Body=REQUESTS.encode())
        for i in range(1, 4):
            client.put_object(Bucket="batches", Key=f"sample_files/log_00{i}.txt", Body=b"x" * (10 * i))
        client.put_object(Bucket="batches", Key="sample_files/sub/log_010.txt", Body=b"deep")
        yield cloud_env(AWS_ENDPOINT_URL=endpoint)
    finally:
        stop_server(proc)


def test_s3_csv_to_csv(s3: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    res = ok(cli("run", "s3://batches/seed004/batch.csv", "-p", "sync-analyze", "-o", out, store=tmp_path / "s.db",
                 env=s3))
    assert "3 items" in res.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and lines[1].startswith("1,succeeded,/mnt/data/audio/master1.wav")


def test_s3_jsonl_and_directory_and_glob(s3: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    ok(cli("run", "s3://batches/openai/requests.jsonl", "-p", "openai-echo", "-o", out, store=tmp_path / "s.db",
           env=s3))
    assert [line["custom_id"] for line in read_jsonl(out)] == ["r0", "r1", "r2"]
    res = ok(cli("validate", "s3://batches/sample_files", "-p", "upload", env=s3))
    assert "3 items (dir)" in res.stdout
    res = ok(cli("validate", "s3://batches/sample_files/", "-p", "upload", "--recursive", env=s3))
    assert "4 items (dir)" in res.stdout
    manifest = tmp_path / "m.json"
    ok(cli("run", "s3://batches/sample_files/*.txt", "-p", "upload", "--manifest", manifest,
           store=tmp_path / "s.db", env=s3))
    m = json.loads(manifest.read_text())
    assert [(e["name"], e["size"]) for e in m["items"]] == [("log_001.txt", 10), ("log_002.txt", 20),
                                                           ("log_003.txt", 30)]
    res = ok(cli("results", m["batch_id"], "--format", "json", store=tmp_path / "s.db"))
    assert json.loads(res.stdout)["results"][0]["input"]["path"] == "s3://batches/sample_files/log_001.txt"


def test_s3_missing_object(s3: dict[str, str], tmp_path: Path) -> None:
    res = ok(cli("validate", "s3://batches/nope.csv", "-p", "noop", env=s3), 2)
    assert "s3://batches/nope.csv: no such file" in res.stderr + res.stdout


# -- GCS ---------------------------------------------------------------------------------------------

def _gcs_put(endpoint: str, bucket: str, name: str, data: bytes) -> None:
    url = f"{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={urllib.parse.quote(name, safe='')}"
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req, timeout=10).read()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    port = free_port()
    log = tmp_path_factory.mktemp("gcs") / "gcs.log"
    proc = start_server([venv_bin("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port),
                         "--in-memory"], port, log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        body = json.dumps({"name": "upc-data"}).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"{endpoint}/storage/v1/b?project=test", data=body, method="POST",
            headers={"Content-Type": "application/json"}), timeout=10).read()
        _gcs_put(endpoint, "upc-data", "in/upcs.txt", b"# seed 001\n012345678905\n\n036000291452\nbad\n")
        _gcs_put(endpoint, "upc-data", "in/photo_ids.json", b"[101, 102, 103]")
        _gcs_put(endpoint, "upc-data", "files/a.bin", b"aaaa")
        _gcs_put(endpoint, "upc-data", "files/b.bin", b"bb")
        yield cloud_env(STORAGE_EMULATOR_HOST=endpoint)
    finally:
        stop_server(proc)


def test_gcs_text_lines_like_seed_001(gcs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = cli("run", "gs://upc-data/in/upcs.txt", "-p", "upc", "-o", out, store=tmp_path / "s.db", env=gcs)
    ok(res, 1)  # "bad" fails; the others succeed
    data = json.loads(out.read_text())
    assert [r["input"] for r in data["results"]] == ["012345678905", "036000291452", "bad"]
    assert data["summary"]["succeeded"] == 2 and data["summary"]["failed"] == 1


def test_gcs_json_and_directory(gcs: dict[str, str], tmp_path: Path) -> None:
    res = ok(cli("validate", "gs://upc-data/in/photo_ids.json", "-p", "noop", env=gcs))
    assert "3 items (json)" in res.stdout
    manifest = tmp_path / "m.json"
    ok(cli("run", "gs://upc-data/files", "-p", "upload", "--manifest", manifest, store=tmp_path / "s.db", env=gcs))
    m = json.loads(manifest.read_text())
    assert [(e["name"], e["size"]) for e in m["items"]] == [("a.bin", 4), ("b.bin", 2)]
    res = ok(cli("validate", "gs://upc-data/missing.txt", "-p", "noop", env=gcs), 2)
    assert "no such file" in res.stdout + res.stderr


# -- HTTP --------------------------------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_http_inputs(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_root
    (root / "requests.jsonl").write_text(REQUESTS)
    (root / "batch.csv").write_bytes(b"\xef\xbb\xbf" + SEED_004_CSV.encode())
    out = tmp_path / "o.jsonl"
    ok(cli("run", f"{base}/requests.jsonl", "-p", "openai-echo", "-o", out, store=tmp_path / "s.db"))
    assert [line["response"]["status_code"] for line in read_jsonl(out)] == [200, 200, 200]
    res = ok(cli("validate", f"{base}/batch.csv", "-p", "sync-analyze"))
    assert "3 items (csv)" in res.stdout
    res = ok(cli("validate", f"{base}/missing.csv", "-p", "noop"), 2)
    assert "missing.csv" in res.stdout + res.stderr
