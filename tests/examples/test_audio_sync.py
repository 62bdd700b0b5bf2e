"""examples/audio_sync (seed 004), end to end: the README's commands as written, seed 004's own client code
(its ``batch_processor.py`` and its curl + jq workflow) unchanged against the mounted adapter, the adapter's
responses against the seed's example JSON, its errors, the processor's honest failures, and the accuracy
benchmark at a small N. Offsets are checked against the truth the data generator wrote."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from _seed_examples import (
    HERE,
    REPO,
    Serve,
    clean_env,
    code_blocks,
    free_port,
    key_differences,
    run_readme,
    seed_copy_matches,
    wait_for,
    workspace,
)

EXAMPLE = REPO / "examples" / "audio_sync"
SEED = HERE / "seed004"
DOC = (SEED / "BATCH_PROCESSING_API_EXAMPLES.md").read_text()
API = "/api/v1"
BATCH = f"{API}/analysis/batch"
TOLERANCE_S = 0.010
pytestmark = pytest.mark.timeout(300)


def need(tool: str) -> None:
    """Skip without ``tool`` (``make test`` installs it), except under CI, which must run every test."""
    if shutil.which(tool) is None:
        message = f"{tool} is not installed (Debian: apt-get install -y {tool}; `make test` installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run this test")
        pytest.skip(message)


def make_data(out: Path, pairs: int, seconds: float = 30, rate: int = 8000, containers: str = "") -> None:
    args = [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(out), "--pairs", str(pairs),
            "--seconds", str(seconds), "--rate", str(rate)]
    subprocess.run(args + (["--containers", containers] if containers else []), check=True, capture_output=True,
                   timeout=240)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def truth(path: Path) -> dict[str, float]:
    """dub file -> its true offset, from make_data's truth CSV."""
    return {row["dub_file"]: float(row["offset_seconds"]) for row in read_rows(path)}


def seed_json(section: str) -> Any:
    """The first JSON example of the seed document's section whose heading contains ``section``."""
    parts = re.split(r"\n## ", DOC)
    found = next(p for p in parts if section in p.splitlines()[0])
    return json.loads(code_blocks(found, "json")[0])


def load_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"audio_sync_test_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(EXAMPLE))  # processors.py imports its helper module by name, as batchyard loads it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLE))
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six pairs of 30 s at 8 kHz, as WAV/FLAC and wrapped in .mov/.mp4 (ffmpeg)."""
    need("ffmpeg")
    out = tmp_path_factory.mktemp("audio-sync-data")
    make_data(out, 6, containers="mov,mp4")
    return out


@pytest.fixture(scope="module")
def server(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("audio-sync-serve")
    s = Serve(tmp, "--store", str(tmp / "store.db"), "--processors", str(EXAMPLE / "processors.py"),
              "--mount", str(EXAMPLE / "api.py"), "--data-root", str(data), "--workers", "4",
              env=clean_env(), ready_path=f"{API}/analysis/methods")
    yield s
    s.stop()


@pytest.fixture
def http(server: Serve) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as h:
        yield h


def upload(http: httpx.Client, csv_text: str, **form: str) -> httpx.Response:
    return http.post(f"{BATCH}/upload-csv", files={"file": ("batch.csv", csv_text.encode(), "text/csv")}, data=form)


def rows_csv(data: Path, name: str = "batch.csv", limit: int | None = None, methods: str | None = None) -> str:
    """Rows of one of make_data's CSVs (the seed's columns), optionally fewer or with other methods."""
    rows = read_rows(data / name)[:limit]
    out = [["master_file", "dub_file", "methods", "ai_model", "description", "tags"]]
    out += [[r["master_file"], r["dub_file"], r["methods"] if methods is None else methods, r["ai_model"],
             r["description"], r["tags"]] for r in rows]
    buf = io.StringIO()
    csv.writer(buf).writerows(out)
    return buf.getvalue()


def finished(http: httpx.Client, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(lambda: (lambda s: s if s["status"] in ("completed", "failed", "cancelled") else None)(
        http.get(f"{BATCH}/{batch_id}/status").json()), timeout=timeout, interval=0.2)


# -- the seed's documents, copied as they are --------------------------------------------------------


def test_the_copies_are_the_seeds_own() -> None:
    """The document is the seed's; its Python script and its workflow's bash blocks are copied verbatim."""
    same = seed_copy_matches(SEED / "BATCH_PROCESSING_API_EXAMPLES.md", "004_*.txt")
    assert same in (True, None), "tests/examples/seed004/BATCH_PROCESSING_API_EXAMPLES.md differs from seed 004"
    assert (SEED / "batch_processor.py").read_text() == code_blocks(DOC, "python")[0]
    workflow = DOC[DOC.index(" Complete Workflow Example\n"):DOC.index(" Python Script Examples\n")]
    assert (SEED / "workflow.sh").read_text() == "".join(code_blocks(workflow, "bash"))


# -- the README, as written ----------------------------------------------------------------------------


def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    """Every command block of the README, in order, on free ports: sample data (with .mov/.mp4), the CLI run
    checked against the truth, then seed 004's workflow over REST (upload with priority and a webhook,
    start with parallel_jobs, status with details and ETA, JSON and CSV results checked against the truth),
    the signed webhook, and the seed's own Python client."""
    for tool in ("ffmpeg", "curl", "jq"):
        need(tool)
    ws = workspace(tmp_path)
    port, hook_port = free_port(), free_port()
    client = tmp_path / "seed004" / "batch_processor.py"  # the seed's script, on our port
    client.parent.mkdir()
    client.write_text((SEED / "batch_processor.py").read_text().replace("localhost:8000", f"localhost:{port}"))
    done = run_readme(EXAMPLE / "README.md", ws, clean_env(), {
        "localhost:8000": f"localhost:{port}", "--port 8000": f"--port {port}",
        "--port 8001": f"--port {hook_port}", "127.0.0.1:8001": f"127.0.0.1:{hook_port}",
        "../../tests/examples/seed004/batch_processor.py": str(client)}, timeout=280)
    assert done.returncode == 0, done.stdout[-6000:]
    out = ws / ".batchyard" / "audio_sync"
    # The CLI's results and the adapter's CSV were checked by check_offsets.py in the script (exit 1 below 95 %);
    # check them here too, strictly: every pair within 10 ms.
    true = truth(out / "data" / "truth.csv")
    with open(out / "results.csv", newline="") as fh:
        cli = {r["dub_file"]: float(r["result.offset_seconds"]) for r in csv.DictReader(fh)}
    assert len(cli) == len(true) == 20
    assert all(abs(cli[d] - t) <= TOLERANCE_S for d, t in true.items()), (cli, true)
    seed = json.loads((out / "seed_results.json").read_text())
    true_c = truth(out / "data" / "truth_containers.csv")
    assert seed["success"] and seed["status"] == "completed"
    assert seed["summary"]["items_completed"] == 20 and seed["summary"]["items_failed"] == 0
    assert 0 < seed["summary"]["average_confidence"] <= 1
    for r in seed["results"]:
        assert r["dub_file"].endswith((".mov", ".mp4"))
        assert abs(r["result"]["offset_seconds"] - true_c[r["dub_file"]]) <= TOLERANCE_S, r
    assert "20/20 pairs within 10 ms" in done.stdout
    # The webhook was signed with the secret and verified by the receiver
    events = [json.loads(line) for line in (out / "webhooks.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events] == ["batch.completed"]
    assert events[0]["data"]["batch_id"] == seed["batch_id"]
    # The seed's Python client ran to its summary and saved its results where it ran
    assert "Batch processing started with 2 parallel jobs" in done.stdout
    assert "Average Confidence: " in done.stdout
    saved = list(out.glob("batch_results_batch_*.json"))
    assert len(saved) == 1
    from_client = json.loads(saved[0].read_text())
    assert from_client["summary"]["items_completed"] == 20
    for r in from_client["results"]:
        assert abs(r["result"]["offset_seconds"] - true[r["dub_file"]]) <= TOLERANCE_S, r


# -- the seed's own clients, unchanged ----------------------------------------------------------------


def test_seed_curl_and_jq_workflow_runs_unchanged(server: Serve, data: Path, tmp_path: Path) -> None:
    """The seed's four workflow steps as one script. Only the host and port differ, and the CSV rows name the
    generated .mov/.mp4 pairs; everything else is the seed's, so its two rows asking for the 'ai' method
    (wav2vec2) fail with the reason, and its "onset,spectral" row is measured."""
    for tool in ("curl", "jq"):
        need(tool)
    script = (SEED / "workflow.sh").read_text()
    ours = read_rows(data / "batch_containers.csv")[:3]
    seed_rows = re.search(r"<< 'EOF'\n[^\n]*\n(.*?)EOF\n", script, re.S)  # the rows after the header
    assert seed_rows is not None
    new_rows = []
    for line, row in zip(seed_rows.group(1).splitlines(), ours, strict=True):
        _, _, rest = line.split(",", 2)
        new_rows.append(f"{row['master_file']},{row['dub_file']},{rest}")
    script = script.replace(seed_rows.group(1), "\n".join(new_rows) + "\n")
    script = script.replace("http://localhost:8000", server.url)
    (tmp_path / "workflow.sh").write_text(script)
    done = subprocess.run(["bash", "workflow.sh"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Batch Status: completed, Progress: 100%" in done.stdout  # jq prints 100.0 as 100
    saved = list(tmp_path.glob("batch_results_batch_*.json"))
    assert len(saved) == 1
    results = json.loads(saved[0].read_text())
    assert results["summary"]["items_total"] == 3
    assert results["summary"]["items_completed"] == 1 and results["summary"]["items_failed"] == 2
    by_id = {r["item_id"]: r for r in results["results"]}
    for failed in ("item_001", "item_003"):
        assert by_id[failed]["status"] == "failed"
        assert "wav2vec2" in by_id[failed]["error"] and "not available" in by_id[failed]["error"]
    measured = by_id["item_002"]
    assert measured["status"] == "completed"
    assert measured["result"]["method_used"] in ("Onset envelope", "Spectral flux")
    assert abs(measured["result"]["offset_seconds"] - truth(data / "truth_containers.csv")[ours[1]["dub_file"]]) \
        <= TOLERANCE_S


# -- the adapter's responses against the seed's examples -----------------------------------------------


def test_every_response_has_the_seeds_keys(http: httpx.Client, data: Path) -> None:
    """Upload, start, status (basic and with details, while running and after), results and an error: the keys
    of every response, recursively, are those of the seed's example JSON."""
    up = upload(http, rows_csv(data, limit=4), description="keys", priority="normal")
    assert up.status_code == 200, up.text
    assert key_differences(up.json(), seed_json("Upload Batch CSV")) == []
    batch_id = up.json()["batch_id"]
    assert re.fullmatch(r"batch_\d{8}_\d{6}_[0-9a-f]{8}", batch_id)
    assert [i["item_id"] for i in up.json()["items"]] == ["item_001", "item_002", "item_003", "item_004"]

    started = http.post(f"{BATCH}/{batch_id}/start", json={"parallel_jobs": 2, "priority": "normal"})
    assert started.status_code == 200, started.text
    assert key_differences(started.json(), seed_json("Start Batch Processing")) == []
    assert started.json()["items_processing"] == 2 and started.json()["status"] == "processing"

    detailed = seed_json("Monitor Progress")
    by_status = {d["status"]: d for d in detailed["items_details"]}  # completed (with result), processing, pending
    basic = {k: v for k, v in detailed.items() if k != "items_details"}
    seen: set[str] = set()

    def check_status() -> bool:
        plain = http.get(f"{BATCH}/{batch_id}/status").json()
        assert key_differences(plain, basic) == []
        full = http.get(f"{BATCH}/{batch_id}/status", params={"include_details": "true"}).json()
        assert key_differences({k: v for k, v in full.items() if k != "items_details"}, basic) == []
        for item in full["items_details"]:
            assert key_differences(item, by_status[item["status"]]) == [], item
            seen.add(item["status"])
        return full["status"] == "completed"

    wait_for(check_status, timeout=120, interval=0.1)
    assert "completed" in seen

    results = http.get(f"{BATCH}/{batch_id}/results")
    assert results.status_code == 200
    assert key_differences(results.json(), seed_json("Get Results")) == []
    for link in results.json()["download_links"].values():
        assert http.get(link).status_code == 200

    missing = http.get(f"{BATCH}/batch_12345/status")
    assert missing.status_code == 404
    assert key_differences(missing.json(), seed_json("Error Handling")) == []
    assert missing.json()["error"] == "Batch batch_12345 not found"


# -- the seed's workflow, checked field by field --------------------------------------------------------


def test_upload_start_watch_and_results_in_the_seeds_terms(http: httpx.Client, server: Serve, data: Path) -> None:
    """Upload with priority high leaves a pending batch with the seed's item views; start with parallel_jobs runs
    it; status counts and ETA follow it; JSON and CSV results hold every offset within 10 ms and the average
    confidence; and the batch is an ordinary batchyard batch on /api/v1."""
    up = upload(http, rows_csv(data), description="Daily sync analysis batch", priority="high").json()
    batch_id = up["batch_id"]
    assert up["items_count"] == 6 and up["message"] == "Batch uploaded successfully with 6 items"
    first = up["items"][0]
    assert first["methods"] == ["correlation", "onset", "spectral", "mfcc"]  # an empty cell: the default
    assert up["items"][1]["methods"] == ["mfcc", "onset"] and first["tags"] == ["synthetic", "sample"]
    assert first["status"] == "pending" and first["ai_model"] is None
    ours = http.get(f"{API}/batches/{batch_id}").json()
    assert ours["status"] == "pending" and ours["priority"] == "high" and ours["processor"] == "audio-sync"
    assert ours["description"] == "Daily sync analysis batch"

    started = http.post(f"{BATCH}/{batch_id}/start", json={"parallel_jobs": 2}).json()
    assert started["message"] == "Batch processing started with 2 parallel jobs"
    done = finished(http, batch_id)
    assert done["status"] == "completed" and done["progress"] == 100.0
    assert done["items_completed"] == 6 and done["items_failed"] == 0 and done["items_processing"] == 0
    assert done["estimated_completion"].endswith("Z")

    results = http.get(f"{BATCH}/{batch_id}/results").json()
    true = truth(data / "truth.csv")
    confidences = []
    for r in results["results"]:
        assert r["status"] == "completed"
        assert abs(r["result"]["offset_seconds"] - true[r["dub_file"]]) <= TOLERANCE_S, r
        assert re.fullmatch(r"\d{8}_\d{6}", r["result"]["analysis_id"])
        confidences.append(r["result"]["confidence"])
    assert results["summary"]["average_confidence"] == pytest.approx(sum(confidences) / 6, abs=0.002)
    assert results["summary"]["processing_time_seconds"] > 0

    exported = http.get(f"{BATCH}/{batch_id}/results", params={"export_format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(exported.text.splitlines()))
    assert [r["item_id"] for r in rows] == [f"item_{n:03d}" for n in range(1, 7)]
    for r in rows:
        assert abs(float(r["offset_seconds"]) - true[r["dub_file"]]) <= TOLERANCE_S
    ours = http.get(f"{API}/batches/{batch_id}").json()
    assert ours["status"] == "completed" and ours["parallel"] == 2
    assert http.get(f"{API}/batches/{batch_id}/items/item_001").json()["result"]["method_results"]


def test_delete_cancels(http: httpx.Client, data: Path) -> None:
    """Seed 004's DELETE cancels the batch (it does not delete it): no item starts, the batch stays listed."""
    batch_id = upload(http, rows_csv(data)).json()["batch_id"]
    gone = http.delete(f"{BATCH}/{batch_id}")
    assert gone.status_code == 200 and gone.json()["success"] and gone.json()["status"] == "cancelled"
    status = http.get(f"{BATCH}/{batch_id}/status").json()
    assert status["status"] == "cancelled" and status["items_completed"] == 0
    assert http.get(f"{API}/batches/{batch_id}").json()["items_cancelled"] == 6
    again = http.delete(f"{BATCH}/{batch_id}")
    assert again.status_code == 400 and again.json()["success"] is False
    assert http.post(f"{BATCH}/{batch_id}/start").status_code == 400


# -- errors, in the seed's shape -----------------------------------------------------------------------


def test_errors_in_the_seeds_shape(http: httpx.Client, data: Path) -> None:
    """Invalid CSVs are 400 with every problem's line and column, and create nothing; bad requests are 400,
    unknown batches 404; every error is {"success": false, "error", "timestamp"}."""
    before = len(http.get(f"{API}/batches").json()["batches"])
    good = rows_csv(data, limit=2).splitlines()
    bad = "\n".join([good[0], good[1].replace(",,,", ",magic,,"), "only_a_master.wav", good[2]]) + "\n"
    refused = upload(http, bad)
    assert refused.status_code == 400
    body = refused.json()
    assert set(body) == {"success", "error", "timestamp"} and body["success"] is False
    assert "line 2" in body["error"] and "methods" in body["error"] and "line 3" in body["error"]
    assert len(http.get(f"{API}/batches").json()["batches"]) == before  # whole or not at all

    outside = upload(http, "master_file,dub_file\n/etc/passwd,/etc/hostname\n")
    assert outside.status_code == 403 and outside.json()["success"] is False  # not under --data-root

    batch_id = upload(http, rows_csv(data, limit=1)).json()["batch_id"]
    for body_ in ({"parallel_jobs": 0}, {"priority": "urgent"}, {"notification_webhook": "ftp://x"},
                  {"parallel_jobs": 2, "colour": "red"}):
        wrong = http.post(f"{BATCH}/{batch_id}/start", json=body_)
        assert wrong.status_code == 400 and wrong.json()["success"] is False, (body_, wrong.text)
    # The SSRF guard holds for the seed's webhooks too (this server has no --allow-private-network)
    private = http.post(f"{BATCH}/{batch_id}/start", json={"notification_webhook": "http://127.0.0.1:9/hook"})
    assert private.status_code == 403 and private.json()["success"] is False
    assert upload(http, rows_csv(data, limit=1), notification_webhook="http://10.0.0.1/hook").status_code == 403
    assert http.get(f"{BATCH}/{batch_id}/status").json()["status"] == "pending"  # none of that started it
    assert http.get(f"{BATCH}/{batch_id}/results", params={"export_format": "xml"}).status_code == 400
    assert http.get(f"{API}/reports/{batch_id}.pdf").status_code == 400
    for path in (f"{BATCH}/nope/status", f"{BATCH}/nope/results", f"{API}/reports/nope.json"):
        missing = http.get(path)
        assert missing.status_code == 404 and missing.json()["success"] is False
    assert http.post(f"{BATCH}/nope/start").status_code == 404
    assert http.delete(f"{BATCH}/nope").status_code == 404


def test_start_with_other_settings_than_the_upload(http: httpx.Client, data: Path) -> None:
    """Start may ask for other parallel_jobs or priority than the upload gave: applied where batchyard can
    change a pending batch (Engine.configure), otherwise refused with a 400 that says what to do."""
    from batchyard.core.engine import Engine

    batch_id = upload(http, rows_csv(data, limit=2), parallel_jobs="3").json()["batch_id"]
    assert http.get(f"{API}/batches/{batch_id}").json()["parallel"] == 3
    same = http.post(f"{BATCH}/{batch_id}/start", json={"parallel_jobs": 3, "priority": "normal"})
    assert same.status_code == 200 and "3 parallel jobs" in same.json()["message"]
    finished(http, batch_id)

    batch_id = upload(http, rows_csv(data, limit=2)).json()["batch_id"]
    other = http.post(f"{BATCH}/{batch_id}/start", json={"parallel_jobs": 4, "priority": "high"})
    if hasattr(Engine, "configure"):
        assert other.status_code == 200, other.text
        ours = http.get(f"{API}/batches/{batch_id}").json()
        assert ours["parallel"] == 4 and ours["priority"] == "high"
    else:
        assert other.status_code == 400
        assert "parallel_jobs (4)" in other.json()["error"] and "give them with the upload" in other.json()["error"]


def test_health_and_methods(http: httpx.Client) -> None:
    """The seed's /api/v1/health takes the place of batchyard's while mounted; methods say what runs here."""
    health = http.get(f"{API}/health")
    assert health.status_code == 200
    assert health.json()["success"] is True and health.json()["status"] == "healthy"
    found = http.get(f"{API}/analysis/methods").json()
    available = {m["name"]: m["available"] for m in found["methods"]}
    assert available == {"correlation": True, "onset": True, "spectral": True, "mfcc": True, "ai": False}
    assert all(not m["available"] for m in found["ai_models"])


# -- the processor: honest failures, real decoding -------------------------------------------------------


def test_the_processor_fails_what_it_cannot_do(tmp_path: Path) -> None:
    """'ai' fails the item with the reason (whatever else the row asks); a missing file, a file that is not
    audio and a silent one fail theirs; the other items of the batch are measured."""
    import batchyard

    make_data(tmp_path / "d", 2)
    pairs = read_rows(tmp_path / "d" / "truth.csv")
    (tmp_path / "noise.wav").write_text("not audio at all")
    import numpy as np
    import soundfile

    soundfile.write(str(tmp_path / "silent.wav"), np.zeros(8000 * 5), 8000)
    items = [
        {"master_file": pairs[0]["master_file"], "dub_file": pairs[0]["dub_file"], "methods": "mfcc,ai",
         "ai_model": "wav2vec2"},
        {"master_file": pairs[0]["master_file"], "dub_file": pairs[0]["dub_file"], "methods": "ai",
         "ai_model": "spectral"},
        {"master_file": pairs[0]["master_file"], "dub_file": str(tmp_path / "missing.wav")},
        {"master_file": pairs[0]["master_file"], "dub_file": str(tmp_path / "noise.wav")},
        {"master_file": pairs[1]["master_file"], "dub_file": pairs[1]["dub_file"], "methods": "correlation"},
        {"master_file": pairs[0]["master_file"], "dub_file": str(tmp_path / "silent.wav")},
    ]
    batch = batchyard.run(items, "audio-sync", store=str(tmp_path / "s.db"),
                          processors=[str(EXAMPLE / "processors.py")])
    got = {r.item_id: r for r in batch.results()}
    assert "needs the wav2vec2 model" in got["1"].error.message and got["1"].attempts == 1
    assert "use methods=spectral" in got["2"].error.message
    assert "no such file" in got["3"].error.message
    assert "noise.wav" in got["4"].error.message
    assert got["5"].status == "succeeded"
    assert abs(got["5"].result["offset_seconds"] - float(pairs[1]["offset_seconds"])) <= TOLERANCE_S
    assert got["5"].result["method_used"] == "Cross-correlation (GCC-PHAT)"
    assert "dub_file: the audio is silent" in got["6"].error.message


def test_containers_read_through_ffmpeg_or_fail_clearly(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """.mov (PCM) and .mp4 (AAC) decode through ffmpeg to the same offset as the WAV pair; without ffmpeg the
    error says what is missing and that WAV/FLAC still work."""
    processors = load_module("processors")
    true = truth(data / "truth_containers.csv")
    rows = read_rows(data / "truth_containers.csv")
    for row in rows[:2]:
        assert row["dub_file"].endswith((".mov", ".mp4"))
        result = processors.analyse(row["master_file"], row["dub_file"], ["correlation"])
        assert abs(result["offset_seconds"] - true[row["dub_file"]]) <= TOLERANCE_S
    monkeypatch.setattr(processors.dsp.shutil, "which", lambda name: None)
    with pytest.raises(processors.PermanentError, match=r"needs ffmpeg, which is not installed.*WAV and FLAC"):
        processors.analyse(rows[0]["master_file"], rows[0]["dub_file"], ["correlation"])


def test_streamed_resampling_equals_resampling_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are read block by block; resampled piece by piece with context, they equal scipy's resample_poly
    of the whole signal (so a long film never sits in memory at its own rate)."""
    import numpy as np
    from scipy import signal

    dsp = load_module("audio_sync_dsp")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(700_001)
    for rate_in, rate_out in ((44100, 8000), (48000, 8000), (11025, 8000), (8000, 8000), (22050, 16000)):
        chunks = iter(np.array_split(x, 7))
        got = np.concatenate(list(dsp.resample_stream(chunks, rate_in, rate_out)))
        g = np.gcd(rate_in, rate_out)
        want = signal.resample_poly(x, rate_out // g, rate_in // g) if rate_in != rate_out else x
        assert len(got) == len(want)
        assert np.max(np.abs(got - want)) < 1e-4, (rate_in, rate_out)


# -- the benchmark, at a small N ---------------------------------------------------------------------------


def test_accuracy_benchmark_small() -> None:
    """The accuracy benchmark runs (so it does not rot) and its best method meets the target on its pairs."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "audio_sync_accuracy.py"), "--pairs", "6",
                           "--seconds", "30", "--rate", "8000", "--json"], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["failed"] == 0
    assert figures["correlation"]["within_10ms"] >= 0.95
    assert figures["chosen"]["within_10ms"] >= 0.95
    for method in ("correlation", "onset", "spectral", "mfcc"):
        assert figures[method]["s_per_pair"] > 0
    assert "within 10 ms" in done.stdout
