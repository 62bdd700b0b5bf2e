"""examples/upc_lookup (seed 001), end to end: the README's commands as written, seed 001's own curl calls
unchanged against the mounted adapter (``gs://draft-maker-bucket/upcs.txt`` served for real by
gcp-storage-emulator), the adapter's responses against the seed's example JSON, and what the catalogue service
measured: the rate limit held and every Retry-After was waited out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _seed_examples import (
    BIN,
    HERE,
    REPO,
    Serve,
    clean_env,
    example_json,
    free_port,
    key_differences,
    run_readme,
    seed_copy_matches,
    wait_for,
    workspace,
)

import batchyard

EXAMPLE = REPO / "examples" / "upc_lookup"
SEED = HERE / "seed001"
DOC = (SEED / "BATCH_PROCESSING_GCS.md").read_text()
CATALOGUE = {p["upc"]: p for p in json.loads((EXAMPLE / "catalogue.json").read_text())["products"]}
RATE = 20  # what the catalogue allows in any one-second window
pytestmark = pytest.mark.timeout(300)


def gtin_ok(code: str) -> bool:
    """The check digit, computed here independently of the example's processor."""
    digits = [int(c) for c in code]
    odd_from_right = sum(digits[-2::-2])  # the digits next to the check digit, every other one, weigh 3
    return (odd_from_right * 3 + sum(digits[-3::-2]) + digits[-1]) % 10 == 0


def codes_in(path: Path) -> list[str]:
    return path.read_text().split()


def expected_outcomes(codes: list[str]) -> tuple[set[str], set[str], set[str]]:
    """(found in the catalogue, bad check digit, valid but unknown)."""
    bad = {c for c in codes if not gtin_ok(c)}
    found = {c for c in codes if c in CATALOGUE and c not in bad}
    return found, bad, set(codes) - found - bad


def check_drafts(drafts: Path, found: set[str]) -> None:
    assert {p.stem for p in drafts.glob("*.json")} == found
    for code in found:
        d = json.loads((drafts / f"{code}.json").read_text())
        p = CATALOGUE[code]
        assert d["status"] == "draft" and d["sku"] == code and d["item_specifics"]["UPC"] == code
        assert p["artist"] in d["title"] and p["title"] in d["title"] and len(d["title"]) <= 80
        assert d["price"] == {"value": p["price"]["amount"], "currency": "USD"} and d["images"] == [p["artwork"]]


def check_stats(stats: dict[str, Any], retry_after: float = 1.0) -> None:
    """The catalogue's own record: the limit held, refusals happened, and every retry came when it was told."""
    assert stats["max_per_second"] <= RATE and stats["rate_limited"] == 0, stats
    assert stats["injected_429"] + stats["injected_503"] > 0 and stats["retries_after_refusal"] > 0, stats
    assert stats["early_retries"] == 0 and stats["min_retry_gap_s"] >= retry_after - 0.05, stats


# -- the services: the catalogue and a GCS emulator holding seed 001's bucket ----------------------------------


@dataclass
class Catalogue:
    url: str
    proc: subprocess.Popen[bytes]

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/stats").json()  # type: ignore[no-any-return]


def start_catalogue(*args: str) -> Catalogue:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(EXAMPLE / "catalogue.py"), "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/health").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up)
    return Catalogue(url, proc)


@pytest.fixture
def catalogue() -> Iterator[Catalogue]:
    c = start_catalogue("--fail-429", "0.2", "--fail-503", "0.1", "--rate", str(RATE), "--seed", "3")
    yield c
    c.proc.terminate()
    c.proc.wait(10)


@pytest.fixture
def gcs(tmp_path: Path) -> Iterator[str]:
    """gcp-storage-emulator holding seed 001's bucket, ``draft-maker-bucket``; its URL."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port),
                             "--in-memory", "--default-bucket", "draft-maker-bucket", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/storage/v1/b/draft-maker-bucket").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def gcs_put(endpoint: str, bucket: str, name: str, data: bytes) -> None:
    url = f"{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={urllib.parse.quote(name, safe='')}"
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(req, timeout=10).read()


def make_codes(path: Path) -> list[str]:
    subprocess.run([sys.executable, str(EXAMPLE / "make_codes.py"), "--output", str(path)], check=True,
                   capture_output=True, timeout=60)
    return codes_in(path)


def serve(tmp: Path, catalogue: Catalogue, gcs: str) -> Serve:
    env = clean_env(UPC_CATALOGUE_URL=catalogue.url, UPC_LOOKUP_DATA=str(tmp / "data"),
                    STORAGE_EMULATOR_HOST=gcs, GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
    return Serve(tmp, "--store", str(tmp / "s.db"), "--processors", str(EXAMPLE / "processors.py"),
                 "--mount", str(EXAMPLE / "api.py"), env=env)


def curl(name: str, server: Serve, job_id: str | None = None) -> str:
    """One of the seed's curl calls as written, with only the host and port (and the job id) changed."""
    command = (SEED / name).read_text().replace("http://localhost:8080", server.url)
    if job_id is not None:
        command = command.replace("batch_20240318_143022_0", job_id).replace("JOB_ID", job_id)
    done = subprocess.run(["bash", "-c", "set -o pipefail\n" + command], capture_output=True, text=True,
                          timeout=60, env=clean_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the seed's documents, copied as they are -------------------------------------------------------------


def test_the_copies_are_the_seeds_own() -> None:
    for name in ("process.sh", "status.sh", "jobs.sh", "health.sh", "status_pretty.sh"):
        assert (SEED / name).read_text() in DOC, name
    if seed_copy_matches(SEED / "BATCH_PROCESSING_GCS.md", "001_*.txt") is False:
        pytest.fail("tests/examples/seed001/BATCH_PROCESSING_GCS.md differs from the seed document")


def test_check_digits() -> None:
    for code in ("722975007524", "638812705228", "724383030422", "036000291452", "4006381333931", "96385074"):
        assert gtin_ok(code)
    sys.path.insert(0, str(EXAMPLE))
    try:
        from processors import validate
    finally:
        sys.path.remove(str(EXAMPLE))
    assert validate("722975007524") == "722975007524" and validate("4006381333931") == "4006381333931"
    for code, reason in [("722975007525", "invalid check digit 5 (expected 4)"), ("72297500752", "not a UPC"),
                         ("72297500752x", "not a UPC"), ("", "not a UPC")]:
        with pytest.raises(batchyard.PermanentError, match=re.escape(reason)):
            validate(code)


# -- the README, as written -------------------------------------------------------------------------------


@pytest.mark.slow
def test_readme_commands(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    ports = {p: str(free_port()) for p in ("8765", "8080", "9023")}
    done = run_readme(EXAMPLE / "README.md", ws, clean_env(), replace=ports, timeout=280)
    assert done.returncode == 0, done.stdout
    out = done.stdout
    data = ws / ".batchyard" / "upc_lookup"
    found, bad, unknown = expected_outcomes(codes_in(data / "upcs.txt"))
    assert (len(found), len(bad), len(unknown)) == (20, 4, 2)

    assert "dry run: 26 items from file://" in out and "nothing was created" in out
    results = json.loads((data / "results.json").read_text())
    by_code = {r["input"]: r for r in results["results"]}
    assert {c for c, r in by_code.items() if r["status"] == "succeeded"} == found
    for code in bad:
        assert "invalid check digit" in by_code[code]["error"]["message"] and by_code[code]["attempts"] == 1
    for code in unknown:
        assert by_code[code]["error"]["message"].startswith("not in the catalogue")
    check_drafts(data / "drafts", found)
    stats = json.loads(next(line for line in out.splitlines() if line.startswith('{"requests"')))
    check_stats(stats)
    assert stats["found"] == 20 and stats["not_found"] == 2  # typos never reach the catalogue

    batch_mode = json.loads((data / "batch-mode.json").read_text())  # from BATCHYARD_* alone
    assert batch_mode["summary"]["succeeded"] == 20 and batch_mode["summary"]["failed"] == 6
    assert all(r["result"]["draft"] is None for r in batch_mode["results"] if r["result"])  # create_drafts=false

    assert "722975007525 failed UPC 722975007525: invalid check digit 5 (expected 4)" in out  # memory://
    assert "'test_mode': True, 'lookup': 'http://127.0.0.1:" in out
    assert "gs://draft-maker-bucket/upcs.txt: 26 items (text), valid for 'upc-lookup'" in out

    job = json.loads((data / "job.json").read_text())  # seed 001's curl, through the adapter
    jobs = json.loads(next(line for line in out.splitlines() if line.startswith('{"jobs"')))
    assert jobs["count"] == 1 and jobs["jobs"][0]["job_id"] == job["job_id"]
    final = jobs["jobs"][0]
    assert (final["status"], final["total_upcs"], final["successful"], final["failed"]) == ("completed", 26, 20, 6)
    assert final["results"]["source_type"] == "gcs" and final["results"]["success_rate"] == 76.9


# -- seed 001's own curl calls, unchanged -------------------------------------------------------------------


def test_seed_curl_calls_run_unchanged(tmp_path: Path, catalogue: Catalogue, gcs: str) -> None:
    codes = make_codes(tmp_path / "upcs.txt")
    gcs_put(gcs, "draft-maker-bucket", "upcs.txt", (tmp_path / "upcs.txt").read_bytes())
    server = serve(tmp_path, catalogue, gcs)
    try:
        assert json.loads(curl("health.sh", server))["status"] == "healthy"
        started = json.loads(curl("process.sh", server))
        job_id = started["job_id"]
        assert started["gcs_path"] == "gs://draft-maker-bucket/upcs.txt" and started["total_upcs"] == 26
        assert started["status"] in ("pending", "processing")
        final = wait_for(lambda: (j := json.loads(curl("status.sh", server, job_id)))["status"] == "completed"
                         and j, timeout=120, interval=0.5)
        found, bad, unknown = expected_outcomes(codes)
        assert (final["successful"], final["failed"]) == (len(found), len(bad) + len(unknown)) == (20, 6)
        per_code = {r["upc"]: r for r in final["results"]["results"]}
        assert [r["upc"] for r in final["results"]["results"]] == codes  # in the file's order
        assert {c for c, r in per_code.items() if r["status"] == "success"} == found
        for code in bad:
            assert per_code[code]["status"] == "failed" and "invalid check digit" in per_code[code]["error"]
        for code in unknown:
            assert per_code[code]["error"].startswith("not in the catalogue")
        assert final["results"]["success_rate"] == 76.9 and final["results"]["processing_time_seconds"] > 0
        pretty = curl("status_pretty.sh", server, job_id)
        assert pretty.startswith('{\n    "job_id": ') and json.loads(pretty) == final
        jobs = json.loads(curl("jobs.sh", server))
        assert [j["job_id"] for j in jobs["jobs"]] == [job_id]
        check_drafts(tmp_path / "data" / "drafts", found)
        check_stats(catalogue.stats())
        # an ordinary batch: /api/v1 shows the same job
        batch = httpx.get(f"{server.url}/api/v1/batches/{job_id}").json()
        assert batch["processor"] == "upc-lookup" and batch["items_succeeded"] == 20 and "seed001" in batch["tags"]
    finally:
        server.stop()


def test_responses_have_the_seeds_keys_and_test_mode_looks_nothing_up(tmp_path: Path, catalogue: Catalogue,
                                                                      gcs: str) -> None:
    make_codes(tmp_path / "upcs.txt")
    gcs_put(gcs, "draft-maker-bucket", "upcs.txt", (tmp_path / "upcs.txt").read_bytes())
    example = example_json(DOC, "## Results Structure", label="")
    server = serve(tmp_path, catalogue, gcs)
    try:
        body = {"gcs_path": "gs://draft-maker-bucket/upcs.txt", "create_drafts": True, "test_mode": True}
        started = httpx.post(f"{server.url}/api/batch/process", json=body).json()
        # a job as the status shows it, without the per-code list (jobs list it the same way)
        summary = {**example, "results": {k: v for k, v in example["results"].items() if k != "results"}}
        assert key_differences(started, summary) == []
        job_id = started["job_id"]
        final = wait_for(lambda: (j := httpx.get(f"{server.url}/api/batch/status/{job_id}").json())["status"]
                         == "completed" and j)
        assert key_differences(final, example) == []
        listed = httpx.get(f"{server.url}/api/batch/jobs").json()
        assert [key_differences(j, summary) for j in listed["jobs"]] == [[]]

        # test mode: every code validated and planned; no lookups, no drafts
        assert final["successful"] == 22 and final["failed"] == 4  # 20 known + 2 unknown pass, 4 typos fail
        assert catalogue.stats()["requests"] == 0 and not (tmp_path / "data" / "drafts").exists()
        planned = [r for r in final["results"]["results"] if r["status"] == "success"]
        assert all(r["test_mode"] and r["lookup"] == f"{catalogue.url}/products/{r['upc']}" for r in planned)

        # errors in the adapter's shape
        r = httpx.get(f"{server.url}/api/batch/status/batch_missing")
        assert r.status_code == 404 and r.json() == {"error": "no batch 'batch_missing'"}
        r = httpx.post(f"{server.url}/api/batch/process", json={"gcs_path": "gs://draft-maker-bucket/nope.txt"})
        assert r.status_code == 422 and "no such file" in r.json()["error"]
        r = httpx.post(f"{server.url}/api/batch/process", json={"gcs_path": "/etc/passwd"})
        assert r.status_code == 403 and "error" in r.json()  # the server's data roots hold for adapters too
    finally:
        server.stop()


def test_what_each_answer_of_the_catalogue_leads_to() -> None:
    """Retry-After -> RetryAfter (retry when told); 503 without it -> an ordinary error (the backoff);
    404 -> a permanent failure."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from processors import lookup

        from batchyard.core.retry import retry_after_seconds as retry_after
    finally:
        sys.path.remove(str(EXAMPLE))
    told = start_catalogue("--fail-503", "1.0", "--retry-after", "2.5")
    silent = start_catalogue("--fail-503", "1.0", "--retry-after", "0")
    plain = start_catalogue()
    try:
        with pytest.raises(batchyard.RetryAfter) as info:
            lookup(f"{told.url}/products/722975007524", "k")
        assert info.value.seconds == 2.5 and "HTTP 503" in str(info.value)
        with pytest.raises(RuntimeError, match="HTTP 503 from the catalogue"):
            lookup(f"{silent.url}/products/722975007524", "k")
        with pytest.raises(batchyard.PermanentError, match="not in the catalogue"):
            lookup(f"{plain.url}/products/000000000000", "k")
        assert lookup(f"{plain.url}/products/722975007524", "k")["title"] == "Small Hours"
    finally:
        for c in (told, silent, plain):
            c.proc.terminate()
            c.proc.wait(10)
    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    assert 55 < retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))) <= 60
