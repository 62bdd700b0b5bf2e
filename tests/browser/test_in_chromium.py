"""The dashboard as a person uses it, in headless Chromium against a real ``batchyard serve``.

One test follows a batch from a CSV upload to a cancelled batch's CSV download (with the list page open in
another tab, updated live); one runs the same pages with API keys configured. Every page is screenshotted
and scanned by axe-core.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _browser_support import Artifacts, assert_accessible
from _serve_support import API, Server
from playwright.sync_api import expect

from batchyard import Client

ITEMS = 200
FAILING = {7, 50, 120}  # rows whose master_file has "fail" in it: sync-analyze fails them permanently
KEY = "by_dashboard-test-key-0123456789abcdef"


def write_csv(path: Path) -> Path:
    rows = [f"{'fail' if i in FAILING else 'm'}{i}.wav,d{i}.wav" for i in range(1, ITEMS + 1)]
    path.write_text("master_file,dub_file\n" + "\n".join(rows) + "\n")
    return path


# As a function, not an expression: the dashboard's CSP forbids eval(), which Playwright uses for expressions.
ABOVE = "([selector, value]) => document.querySelector(selector)?.value > value"


def progress(page: Any) -> float:
    return float(page.eval_on_selector("#batch-progress", "e => e.value"))


def test_upload_watch_pause_resume_cancel_download(start_server: Callable[..., Server], context: Any,
                                                   artifacts: Artifacts, tmp_path: Path) -> None:
    server = start_server("--workers", "2")
    csv = write_csv(tmp_path / "audio.csv")

    # The list in its own tab, loaded once: whatever it shows later came over the event stream.
    batches = context.new_page()
    batches.goto(server.url + "/")
    expect(batches.locator("h1")).to_have_text("Batches")
    expect(batches.get_by_text("Live", exact=True)).to_be_visible()
    batches.evaluate("window.__loadedOnce = true")

    # New batch: processor, a shared parameter from its schema form, the file, the validation report
    page = context.new_page()
    page.goto(server.url + "/#/new")
    page.get_by_label("Processor", exact=True).select_option("sync-analyze")
    page.get_by_label("Ms").fill("150")
    page.get_by_label("Input file").set_input_files(str(csv))
    report = page.locator("#validation-report")
    expect(report).to_contain_text(f"{ITEMS} items are ready to run")
    page.get_by_label("Parallel jobs").fill("2")
    page.get_by_label("Batch description").fill("dashboard test")
    page.get_by_label("Batch tags").fill("browser, e2e")
    expect(report).to_contain_text(f"{ITEMS} items are ready to run")  # checked again for the last change
    artifacts.screenshot(page, "new-batch")
    assert_accessible(page, artifacts, "new-batch")
    expect(page.get_by_role("button", name="Start batch")).to_be_enabled()
    page.get_by_role("button", name="Start batch").click()

    # The batch page: running, and the progress bar advances
    page.wait_for_url("**/#/batches/batch_*")
    batch_id = page.url.rsplit("/", 1)[-1]
    status = page.locator("#batch-status")
    expect(status).to_contain_text("running")
    page.wait_for_function(ABOVE, arg=["#batch-progress", 0])
    first = progress(page)
    page.wait_for_function(ABOVE, arg=["#batch-progress", first])
    assert progress(page) > first

    # The list tab, never reloaded, shows the new batch and its progress
    row = batches.locator(f"tr[data-batch-id='{batch_id}']")
    expect(row).to_contain_text("sync-analyze")
    expect(row).to_contain_text("dashboard test")
    batches.wait_for_function(ABOVE, arg=[f"tr[data-batch-id='{batch_id}'] progress", 0])
    assert batches.evaluate("window.__loadedOnce") is True

    # Pause, then resume
    page.get_by_role("button", name="Pause").click()
    expect(status).to_contain_text("paused (user)")
    expect(row).to_contain_text("paused")
    expect(page.get_by_role("button", name="Resume")).to_be_enabled()
    page.get_by_role("button", name="Resume").focus()  # by keyboard: the controls are real buttons
    page.keyboard.press("Enter")
    expect(status).to_contain_text("running")
    expect(page.get_by_role("button", name="Pause")).to_be_enabled()

    # The chart comes from the stored timeline: after a reload it is drawn again, from that endpoint
    expect(page.locator("#chart svg rect.bar-ok").first).to_be_attached()
    with page.expect_response(lambda r: r.url.endswith(f"/batches/{batch_id}/timeline") and r.ok):
        page.reload()
    expect(page.locator("#chart svg rect.bar-ok").first).to_be_attached()
    expect(page.locator("#chart svg")).to_have_attribute("role", "img")
    expect(page.locator("#items-table tbody tr").first).to_be_visible()
    artifacts.screenshot(page, "batch-running")
    assert_accessible(page, artifacts, "batch")

    # Failed items show their error and attempts
    page.get_by_label("Status", exact=True).select_option("failed")
    expect(page.locator("#items-table tbody tr").first).to_contain_text("cannot open fail7.wav")
    expect(page.locator("#items-table tbody tr").first).to_contain_text("PermanentError")

    # Cancel asks first, in a modal dialog; keeping it running changes nothing
    page.get_by_role("button", name="Cancel…").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-keep")).to_be_focused()
    assert_accessible(page, artifacts, "cancel-dialog")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(status).to_contain_text("running")
    page.get_by_role("button", name="Cancel…").click()
    dialog.get_by_role("button", name="Cancel batch").click()
    expect(status).to_contain_text("cancelled", timeout=20_000)
    expect(row).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Cancel…")).to_be_disabled()

    # Download the results as CSV: the same file the API gives
    page.get_by_label("Results as").select_option("csv")
    with page.expect_download() as got:
        page.get_by_role("button", name="Download results").click()
    download = got.value
    assert download.suggested_filename == f"{batch_id}.csv"
    content = Path(download.path()).read_bytes()
    expected = httpx.get(f"{server.url}{API}/batches/{batch_id}/results", params={"format": "csv"}).content
    assert content == expected
    header, *lines = content.decode().splitlines()
    assert "status" in header and len(lines) == ITEMS
    assert any(",cancelled," in line or line.endswith(",cancelled") for line in lines)

    artifacts.screenshot(page, "batch-cancelled")
    batches.bring_to_front()
    artifacts.screenshot(batches, "batches")
    assert_accessible(batches, artifacts, "batches")


def test_api_keys_are_asked_for_and_kept_for_the_tab(start_server: Callable[..., Server], context: Any,
                                                     monkeypatch: Any, artifacts: Artifacts, tmp_path: Path) -> None:
    monkeypatch.setenv("BATCHYARD_API_KEYS", f"acme:{KEY}")
    server = start_server("--workers", "2")
    flag = tmp_path / "flag"
    flag.touch()
    with Client(server.url, api_key=KEY) as client:
        done = client.create_batch("slow", [{"n": i} for i in range(20)] + [{"n": 99, "flag": str(flag)}],
                                   params={"ms": 5}, description="made by the API")
        client.wait(done.batch_id, timeout=30)

    page = context.new_page()
    page.goto(server.url + "/")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.get_by_role("textbox", name="API key")).to_be_focused()
    artifacts.screenshot(page, "key-dialog")
    assert_accessible(page, artifacts, "key-dialog")

    page.get_by_role("textbox", name="API key").fill("not-the-key-0123456789")
    page.get_by_role("button", name="Use this key").click()
    expect(dialog.get_by_role("alert")).to_contain_text("not accepted")
    page.get_by_role("textbox", name="API key").fill(KEY)
    page.get_by_role("button", name="Use this key").click()
    expect(dialog).to_be_hidden()
    row = page.locator(f"tr[data-batch-id='{done.batch_id}']")
    expect(row).to_contain_text("completed")
    assert page.evaluate("sessionStorage.getItem('batchyard.apiKey')") == KEY
    assert page.evaluate("localStorage.length") == 0  # never kept beyond the tab's session

    # Live updates carry the key too (fetch-read SSE with the header)
    with Client(server.url, api_key=KEY) as client:
        live = client.create_batch("slow", [1, 2, 3], params={"ms": 5}, description="while watching")
    expect(page.locator(f"tr[data-batch-id='{live.batch_id}']")).to_contain_text("completed", timeout=20_000)

    # A reload keeps the key; the batch page works with it: chart, items, retry, a download as a blob
    page.reload()
    expect(row).to_contain_text("completed")
    expect(dialog).to_be_hidden()
    row.get_by_role("link").click()
    expect(page.locator("#batch-status")).to_contain_text("completed")
    expect(page.locator("#chart svg rect.bar-ok").first).to_be_attached()
    expect(page.locator("#chart svg rect.bar-failed").first).to_be_attached()
    flag.unlink()
    page.get_by_role("button", name="Retry failed items").click()
    expect(page.locator("[data-counter='Succeeded'] dd")).to_have_text("21", timeout=20_000)
    expect(page.locator("#batch-status")).to_contain_text("completed")
    expect(page.locator("[data-counter='Failed'] dd")).to_have_text("0")
    page.get_by_label("Results as").select_option("json")
    with page.expect_download() as got:
        page.get_by_role("button", name="Download results").click()
    results = json.loads(Path(got.value.path()).read_text())  # fetched with the key, handed over as a blob
    assert results["batch_id"] == done.batch_id and results["summary"]["succeeded"] == 21
    artifacts.screenshot(page, "batch-with-key")

    # Another tab has its own session: it asks again
    other = context.new_page()
    other.goto(server.url + "/")
    expect(other.locator("#key-dialog")).to_be_visible()
    other.close()

    # Forgetting the key asks for it again
    page.get_by_role("button", name="Forget API key").click()
    expect(page.locator("#key-dialog")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('batchyard.apiKey')") is None


def test_a_dropped_file_is_checked_and_shared_parameters_fill_its_gaps(start_server: Callable[..., Server],
                                                                      context: Any, artifacts: Artifacts) -> None:
    server = start_server("--workers", "0")
    page = context.new_page()
    page.goto(server.url + "/#/new")
    page.get_by_label("Processor", exact=True).select_option("sync-analyze")
    lines = [{"master_file": "a.wav", "dub_file": "b.wav"}, {"master_file": "c.wav"}, {"master_file": "e.wav"}]
    dropped = page.evaluate_handle(
        "([name, text]) => { const dt = new DataTransfer(); dt.items.add(new File([text], name)); return dt; }",
        ["takes.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n"])
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dropped})
    expect(page.locator("#file-chosen")).to_contain_text("takes.jsonl")
    report = page.locator("#validation-report")
    expect(report).to_contain_text("Not valid")
    expect(report.locator("li")).to_have_count(2)
    expect(report.locator("li").first).to_contain_text("Line 2, column dub_file")
    expect(page.get_by_role("button", name="Start batch")).to_be_disabled()
    artifacts.screenshot(page, "new-batch-invalid")
    assert_accessible(page, artifacts, "new-batch-invalid")

    page.get_by_label("Dub File").fill("shared.wav")  # a shared parameter supplies the missing column
    expect(report).to_contain_text("3 items are ready to run")
    expect(page.get_by_role("button", name="Start batch")).to_be_enabled()
