"""examples/photo_presets (seed 003), end to end: the README's commands as written, seed 003's own client code
unchanged against the mounted adapter (with a crash and a restart between its calls), the adapter's responses
against the seed's example JSON, and what the presets do to real photos."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _seed_examples import (
    HERE,
    REPO,
    Serve,
    clean_env,
    code_blocks,
    example_json,
    free_port,
    key_differences,
    run_python,
    run_readme,
    seed_copy_matches,
    wait_for,
    workspace,
)
from PIL import Image, ImageStat

import batchyard
from batchyard.core.errors import InputError

EXAMPLE = REPO / "examples" / "photo_presets"
SEED = HERE / "seed003"
DOC = (SEED / "BATCH_CONTROL_QUICK_START.md").read_text()
API = "/api/v1"
pytestmark = pytest.mark.timeout(300)


def channel_means(path: Path) -> tuple[float, float, float, float]:
    """Mean red, green, blue and brightness of an image file."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        r, g, b = ImageStat.Stat(rgb).mean
        return r, g, b, ImageStat.Stat(rgb.convert("L")).mean[0]


def make_photos(data: Path, count: int, size: str = "2000x1500") -> None:
    subprocess.run([sys.executable, str(EXAMPLE / "make_photos.py"), "--count", str(count), "--size", size,
                    "--data", str(data)], check=True, capture_output=True, timeout=120)


def serve(tmp: Path, data: Path, store: Path, name: str = "serve") -> Serve:
    """The adapter's server, one photo at a time per batch (so that a batch is still running when the
    seed's client pauses it a moment after starting it)."""
    env = clean_env(PHOTO_PRESETS_DATA=str(data), PHOTO_PRESETS_PARALLEL="1")
    return Serve(tmp, "--store", str(store), "--processors", str(EXAMPLE / "processors.py"),
                 "--mount", str(EXAMPLE / "api.py"), env=env, name=name)


def seed_client(code: str, url: str, tmp: Path) -> str:
    """Run the seed's code with only its host and port changed (snippets that use BASE_URL without defining
    it get the quick start's two opening lines)."""
    if "BASE_URL =" in code:
        code = code.replace('BASE_URL = "http://localhost:5100"', f'BASE_URL = "{url}"')
    else:
        code = f'import requests\n\nBASE_URL = "{url}"\n\n{code}'
    done = run_python(code, tmp, clean_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the seed's documents, copied as they are --------------------------------------------------------


def test_the_copies_are_the_seeds_own() -> None:
    blocks = code_blocks(DOC, "python")
    assert (SEED / "quick_start.py").read_text() == "\n".join(blocks[0:5])  # sections 1-5 of the quick start
    assert (SEED / "recover_on_startup.py").read_text() == blocks[6]  # use case 2
    assert (SEED / "cleanup.py").read_text() == blocks[8]  # use case 4
    if seed_copy_matches(SEED / "BATCH_CONTROL_QUICK_START.md", "003_*.txt") is False:
        pytest.fail("tests/examples/seed003/BATCH_CONTROL_QUICK_START.md differs from the seed document")


# -- the README, as written ----------------------------------------------------------------------------


@pytest.mark.slow
def test_readme_commands(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    done = run_readme(EXAMPLE / "README.md", ws, clean_env(), replace={"5100": str(free_port())}, timeout=240)
    assert done.returncode == 0, done.stdout
    data = ws / ".batchyard" / "photo_presets"

    # batchyard run: 40 photos through WhiteLayer_v4 at 60 %: 60 % of the way to white, as the preset says
    rows = (data / "results.csv").read_text().splitlines()
    assert len(rows) == 41 and all(",succeeded," in row for row in rows[1:])
    for photo_id in (1, 17, 40):
        before = channel_means(data / "photos" / f"{photo_id}.jpg")[3]
        after = channel_means(data / "output" / f"{photo_id}_WhiteLayer_v4.jpg")[3]
        assert after == pytest.approx(before * 0.4 + 255 * 0.6, abs=2.5), photo_id

    # seed 003's API: five photos warmed at 80 %: red up, blue down, green as it was
    started = json.loads((data / "started.json").read_text())
    assert started["message"] == "Batch processing started" and started["photo_count"] == 5
    assert re.search(r'"status":"completed","total_photos":5,"processed_count":5', done.stdout)
    for photo_id in range(1, 6):
        r0, g0, b0, _ = channel_means(data / "photos" / f"{photo_id}.jpg")
        r1, g1, b1, _ = channel_means(data / "output" / f"{photo_id}_Warm_v2.jpg")
        assert r1 > r0 * 1.1 and b1 < b0 * 0.88 and g1 == pytest.approx(g0, abs=1.5)

    # the quick start with batchyard.Client, crash and recovery included
    for line in ["Batch paused successfully", "Batch resumed successfully", "completed: 40 photos processed",
                 "Batch cancelled successfully", "Recovered 1 interrupted batches",
                 "completed: all 40 photos processed, none lost", "Cleaned up 3 old batches"]:
        assert line in done.stdout
    mono = sorted((data / "output").glob("*_Mono_v1.jpg"))
    assert len(mono) == 40
    r, g, b, _ = channel_means(mono[0])
    assert abs(r - g) < 1.5 and abs(g - b) < 1.5  # Mono_v1 at 100 %: grey


# -- seed 003's own client code, unchanged -----------------------------------------------------------


def test_seed_quick_start_code_runs_unchanged(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "s.db"
    make_photos(data, 10)
    server = serve(tmp_path, data, store)
    try:
        out = seed_client((SEED / "quick_start.py").read_text(), server.url, tmp_path)
        batch_id = re.search(r"Batch started: (\S+)", out).group(1)  # type: ignore[union-attr]
        assert re.search(r"Status: running\nProgress: [\d.]+%\nProcessed: \d+/10\nFailed: 0\n", out), out
        assert out.endswith("Batch paused successfully\nBatch resumed successfully\nBatch cancelled successfully\n")
        # An ordinary batch, as /api/v1 sees it
        info = wait_for(lambda: (b := httpx.get(f"{server.url}{API}/batches/{batch_id}").json())["status"]
                        == "cancelled" and b)
        assert info["processor"] == "photo-preset" and info["params"] == {"preset": "WhiteLayer_v4", "blend": 60}
        assert set(info["tags"]) == {"seed003", "session_id:123"}
        done = info["items_succeeded"]
        assert done < 10 and info["items_cancelled"] == 10 - done
        assert len(list((data / "output").glob("*_WhiteLayer_v4.jpg"))) == done

        # Use case 2 needs a restart: one batch running and one paused when the server dies
        def start(ids: list[int], config: dict[str, Any]) -> str:
            r = httpx.post(f"{server.url}/batch/start", json={"photo_ids": ids, "config": config})
            return str(r.json()["batch_id"])

        running = start(list(range(1, 11)), {"preset": "Mono_v1", "blend": 100})
        paused = start([1, 2, 3], {"preset": "Warm_v2", "blend": 50})
        assert httpx.post(f"{server.url}/batch/{paused}/pause").status_code == 200
        wait_for(lambda: httpx.get(f"{server.url}{API}/batches/{paused}").json()["items_running"] == 0)
        wait_for(lambda: (b := httpx.get(f"{server.url}{API}/batches/{running}").json())["items_succeeded"] >= 1
                 and b["items_running"] >= 1, interval=0.01)
        server.kill()
    finally:
        server.stop()
    server = serve(tmp_path, data, store, name="restarted")
    try:
        out = seed_client((SEED / "recover_on_startup.py").read_text(), server.url, tmp_path)
        assert out == f"Recovered 1 interrupted batches\nResuming batch {paused}\n"
        for batch_id in (running, paused):
            final = wait_for(lambda b=batch_id: (x := httpx.get(f"{server.url}{API}/batches/{b}").json())["status"]
                             in ("completed", "failed", "cancelled") and x, timeout=120)
            assert final["status"] == "completed" and final["items_failed"] == 0
        assert len(list((data / "output").glob("*_Mono_v1.jpg"))) == 10
        assert seed_client((SEED / "cleanup.py").read_text(), server.url, tmp_path) == "Cleaned up 0 old batches\n"
    finally:
        server.stop()


# -- the adapter against the seed's API reference ------------------------------------------------------


@pytest.fixture(scope="module")
def photo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("photos")
    make_photos(tmp / "data", 6, size="1200x900")
    server = serve(tmp, tmp / "data", tmp / "s.db")
    yield server
    server.stop()


def test_responses_have_the_seeds_keys(photo_server: Serve) -> None:
    url = photo_server.url
    got: dict[str, Any] = {}
    got["POST /batch/start"] = httpx.post(f"{url}/batch/start", json={
        "photo_ids": [1, 2, 3, 4, 5, 6], "session_id": 7, "config": {"preset": "WhiteLayer_v4", "blend": 60}}).json()
    batch_id = got["POST /batch/start"]["batch_id"]
    got["POST /batch/{batch_id}/pause"] = httpx.post(f"{url}/batch/{batch_id}/pause").json()
    got["GET /batch/{batch_id}/status"] = httpx.get(f"{url}/batch/{batch_id}/status").json()
    got["GET /batch/list"] = httpx.get(f"{url}/batch/list").json()
    got["POST /batch/{batch_id}/resume"] = httpx.post(f"{url}/batch/{batch_id}/resume").json()
    got["POST /batch/recover"] = httpx.post(f"{url}/batch/recover").json()
    cancelled = httpx.post(f"{url}/batch/{batch_id}/cancel")
    got["POST /batch/cleanup"] = httpx.post(f"{url}/batch/cleanup", json={"days_old": 7}).json()

    assert got["GET /batch/list"]["count"] >= 1  # so that its items are compared too
    assert got["GET /batch/{batch_id}/status"]["status"] == "paused"
    assert got["GET /batch/{batch_id}/status"]["paused_at"] is not None
    for endpoint, response in got.items():
        assert key_differences(response, example_json(DOC, f"### {endpoint}")) == [], endpoint
    # the seed shows no cancel response; it answers as pause and resume do
    assert cancelled.status_code == 200 and key_differences(
        cancelled.json(), example_json(DOC, "### POST /batch/{batch_id}/pause")) == []
    # and the request examples are accepted as they are
    example = example_json(DOC, "### POST /batch/start", "**Request**")
    assert httpx.post(f"{url}/batch/start", json=example).status_code == 200
    assert httpx.post(f"{url}/batch/cleanup", json=example_json(DOC, "### POST /batch/cleanup", "**Request**")
                      ).status_code == 200


def test_adapter_serves_only_its_own_batches(photo_server: Serve) -> None:
    url = photo_server.url
    other = httpx.post(f"{url}{API}/batches", json={"processor": "noop", "items": [1, 2]}).json()["batch_id"]
    wait_for(lambda: httpx.get(f"{url}{API}/batches/{other}").json()["status"] == "completed")
    r = httpx.get(f"{url}/batch/{other}/status")
    assert r.status_code == 404 and r.json() == {"detail": f"no batch {other!r}"}
    mine = httpx.post(f"{url}/batch/start", json={"photo_ids": [1]}).json()["batch_id"]
    wait_for(lambda: httpx.get(f"{url}/batch/{mine}/status").json()["status"] == "completed")
    r = httpx.post(f"{url}/batch/{mine}/pause")
    assert r.status_code == 409 and "cannot pause" in r.json()["detail"]
    cleaned = httpx.post(f"{url}/batch/cleanup", json={"days_old": 0}).json()["cleaned_count"]
    assert cleaned >= 1
    assert httpx.get(f"{url}/batch/{mine}/status").status_code == 404
    assert httpx.get(f"{url}{API}/batches/{other}").status_code == 200  # not a photo batch: not its to clean
    r = httpx.post(f"{url}/batch/start", json={"photo_ids": [1], "config": {"preset": "Sepia"}})
    assert r.status_code == 422 and "unknown preset 'Sepia'" in r.json()["detail"]


# -- the presets themselves ------------------------------------------------------------------------------


def test_presets_and_failures(tmp_path: Path) -> None:
    make_photos(tmp_path, 3, size="400x300")
    out = tmp_path / "out"
    files = {"photos_dir": str(tmp_path / "photos"), "output_dir": str(out)}
    procs = [str(EXAMPLE / "processors.py")]
    batch = batchyard.run([1, 2, "3", 4, "../1"], "photo-preset", params={**files, "preset": "Mono_v1", "blend": 100,
                                                                          "curve": "s-curve"},
                          processors=procs, store=str(tmp_path / "s.db"))
    results = {r.item_id: r for r in batch.results()}
    for item in ("1", "2", "3"):
        res = results[item].result
        r, g, b, _ = channel_means(Path(res["output"]))
        assert abs(r - g) < 1.5 and abs(g - b) < 1.5 and res["preset"] == "Mono_v1"
    assert results["4"].status == "failed" and "no photo 4 in" in results["4"].error.message
    assert results["5"].status == "failed" and "expected letters, digits" in results["5"].error.message
    assert results["4"].attempts == 1  # permanent: not retried
    # A white layer at 0 % and a linear curve change nothing but the file
    batch = batchyard.run([1], "photo-preset", params={**files, "blend": 0}, processors=procs,
                          store=str(tmp_path / "s.db"))
    res = next(iter(batch.results())).result
    assert res["brightness_after"] == pytest.approx(res["brightness_before"], abs=0.05)
    with pytest.raises(InputError, match="unknown preset"):
        batchyard.run([1], "photo-preset", params={**files, "preset": "Sepia"}, processors=procs,
                      store=str(tmp_path / "s.db"))
