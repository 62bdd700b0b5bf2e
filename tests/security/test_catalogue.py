"""Bad input and security: a catalogue of hostile or broken requests, against a real ``batchyard serve`` and the
real ``batchyard`` command, each asserting the status (or exit code), the message, and that nothing changed.

The mapping the cases hold the server to (README, "The service"):

- 401 for a missing or wrong key, with one body per kind whatever the route and whether the batch exists;
  another tenant's batch is 404, worded as for a batch that does not exist.
- 403 when a value is well formed but this server will not fetch or read it (a policy refusal:
  ``url_not_allowed``, ``path_not_allowed``, ``processor_not_allowed``); 422 when a value is malformed
  (``invalid_request``: a field the request does not take, a webhook that is not http(s); ``invalid_url``; a
  NUL byte in a path; an unknown processor name), 413 for a body over the limit, before it is parsed.
- Inputs are refused whole with their line numbers, or accepted as they are meant (a BOM, CRLF, a quoted
  newline, a header without rows).

"No state changed" is read from the store file itself (batches, items, idempotency keys, webhook
deliveries), not through the API under test. DNS rebinding at webhook send time needs a resolver that
changes its answer: ``tests/unit/test_pinned_transport.py`` covers it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from _serve_support import API, BIN, PROCS, Server, wait_for

HERE = Path(__file__).parent
CATALOGUE_PROCS = HERE / "catalogue_procs.py"
ACME = "acme-key-0123456789abcdef"
BETA = "beta-key-0123456789abcdef"
LIMIT = 1024 * 1024  # --max-upload-mb 1
DEEP = 10_000
FORMULAS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1"]


@dataclass
class Env:
    server: Server
    dir: Path
    root: Path
    evil: Path
    marker: Path
    acme_batch: str = ""
    beta_batch: str = ""
    formula_batch: str = ""
    keyed_batch: str = ""
    keyed_upload: str = ""


def auth(key: str | None = ACME) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def post_json(path: str, body: Any, key: str | None = ACME, **headers: str) -> dict[str, Any]:
    return {"method": "POST", "url": path, "json": body, "headers": {**auth(key), **headers}}


def upload(name: str, content: bytes, key: str | None = ACME, headers: dict[str, str] | None = None,
           **form: Any) -> dict[str, Any]:
    return {"method": "POST", "url": "/batches/upload", "files": {"file": (name, content)},
            "data": {"processor": "sync-analyze", **form}, "headers": {**auth(key), **(headers or {})}}


def nested(n: int) -> str:
    return "[" * n + "]" * n


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    d = tmp_path_factory.mktemp("catalogue")
    root, outside, evil = d / "root", d / "outside", d / "evil"
    for p in (root / "media", outside, evil, root / "leaky"):
        p.mkdir(parents=True)
    (root / "codes.txt").write_text("1\n2\n3\n")
    (root / "media" / "a.wav").write_bytes(b"x" * 10)
    (outside / "secret.txt").write_text("s3cret\n")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "leaky" / "ok.txt").write_text("fine\n")
    (root / "leaky" / "out.txt").symlink_to(outside / "secret.txt")
    marker = d / "imported.marker"
    # A module that a server importing processor names from requests would run: it must never be imported.
    (evil / "evil_probe.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BATCHYARD_API_KEYS", f"acme:{ACME},beta:{BETA}")
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(evil), os.environ.get("PYTHONPATH")])))
        server = Server(d / "store.db", d / "server.log", "--workers", "2", "--max-upload-mb", "1",
                        "--data-root", str(root), "--processors", str(CATALOGUE_PROCS),
                        "--mount", str(HERE / "boom_adapter.py"))
    e = Env(server=server, dir=d, root=root, evil=evil, marker=marker)
    with httpx.Client(base_url=server.url + API, timeout=30) as h:
        def made(r: httpx.Response) -> str:
            assert r.status_code == 201, r.text
            return str(r.json()["batch_id"])

        e.acme_batch = made(h.post("/batches", json={"processor": "slow", "items": [1, 2]}, headers=auth(ACME)))
        e.beta_batch = made(h.post("/batches", json={"processor": "slow", "items": [3]}, headers=auth(BETA)))
        e.formula_batch = made(h.post("/batches", json={"processor": "echo", "items": [*FORMULAS, "-15.023", "ok"]},
                                      headers=auth(ACME)))
        e.keyed_batch = made(h.post("/batches", json={"processor": "slow", "items": [7]},
                                    headers={**auth(ACME), "Idempotency-Key": "order-1"}))
        e.keyed_upload = made(h.request(**{**upload("rows.csv", b"master_file,dub_file\n/m/1,/d/1\n",
                                                    headers={"Idempotency-Key": "upload-1"})}))
        for bid, key in ((e.acme_batch, ACME), (e.beta_batch, BETA), (e.formula_batch, ACME),
                         (e.keyed_batch, ACME), (e.keyed_upload, ACME)):
            wait_for(lambda b=bid, k=key: h.get(f"/batches/{b}", headers=auth(k)).json()["status"] == "completed",
                     timeout=20)
    yield e
    server.stop()


def state(db: Path) -> Any:
    """What a refused request must leave as it was, read from the store file itself."""
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return (conn.execute("SELECT id, tenant, status, items_total, items_succeeded, items_failed, spec "
                             "FROM batches ORDER BY pk").fetchall(),
                conn.execute("SELECT count(*), coalesce(sum(attempts), 0) FROM items").fetchone(),
                conn.execute("SELECT tenant, key, request_hash, batch_pk FROM idempotency_keys ORDER BY 1, 2")
                .fetchall(),
                conn.execute("SELECT count(*) FROM webhook_deliveries").fetchone())


# -- REST ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rest:
    """Requests (one or several: all must get the same body) and what each must get."""

    id: str
    requests: Callable[[Env], dict[str, Any] | list[dict[str, Any]]]
    status: int
    code: str | None  # the error code; None for an accepted request (then ``check`` looks at the body)
    message: str | Callable[[Env], str]  # a substring of the error message
    details: str = ""  # a substring of the error details, as JSON
    check: Callable[[Env, httpx.Response], None] | None = None


def _idempotent_replay(e: Env, r: httpx.Response) -> None:
    assert r.json()["batch_id"] == e.keyed_batch and r.headers["idempotent-replayed"] == "true"


def _upload_replay(e: Env, r: httpx.Response) -> None:
    assert r.json()["batch_id"] == e.keyed_upload and r.headers["idempotent-replayed"] == "true"


def _report(items: int) -> Callable[[Env, httpx.Response], None]:
    def check(e: Env, r: httpx.Response) -> None:
        report = r.json()
        assert report["valid"] is True and report["items"] == items and report["problems"] == [], report
    return check


def _rows_as_meant(e: Env, r: httpx.Response) -> None:
    _report(3)(e, r)


def _neutralised_csv(e: Env, r: httpx.Response) -> None:
    rows = list(csv.DictReader(io.StringIO(r.text)))
    by_input = {row["input"]: row["result.value"] for row in rows}
    for text in FORMULAS:
        cell = "'" + text
        assert cell in by_input and by_input[cell] == cell, (text, by_input)  # input and result both guarded
    assert by_input["-15.023"] == "-15.023" and by_input["ok"] == "ok"  # numbers and text are data


def _no_trace(e: Env, r: httpx.Response) -> None:
    rid = r.headers["x-request-id"]
    assert r.json()["error"]["details"] == {"request_id": rid} and rid in r.json()["error"]["message"]
    assert not any(s in r.text for s in ("hunter2", "secret.conf", "Traceback", "RuntimeError"))
    log = wait_for(lambda: e.server.output() if rid in e.server.output() else None, timeout=5)
    assert "hunter2" in log  # the trace is in the server log, under the id the client was shown


def _webhook(url: str) -> Callable[[Env], dict[str, Any]]:
    return lambda e: post_json("/batches", {"processor": "slow", "items": [1], "webhook": url})


def _input_uri(uri: str | Callable[[Env], str]) -> Callable[[Env], dict[str, Any]]:
    return lambda e: post_json("/batches", {"processor": "slow",
                                            "input_uri": uri(e) if callable(uri) else uri})


def _mass(field_name: str, value: Any) -> Rest:
    return Rest(f"mass-assignment-{field_name}",
                lambda e: post_json("/batches", {"processor": "slow", "items": [1], field_name: value}), 422,
                "invalid_request", "problem in the request", f'"column": "body.{field_name}", '
                                                              '"reason": "Extra inputs are not permitted"')


def _says_how_to_allow(e: Env, r: httpx.Response) -> None:
    assert "start the server with --allow-private-network to allow it" in r.json()["error"]["message"]


def _guarded_url(case: str, url: str, address: str, why: str) -> Rest:
    return Rest(f"webhook-{case}", _webhook(url), 403, "url_not_allowed", f"{address} ({why}",
                f'"address": "{address}"', check=_says_how_to_allow)


def _batch_routes(e: Env, batch_id: str, key: str | None) -> list[dict[str, Any]]:
    base = f"/batches/{batch_id}"
    return [{"method": m, "url": base + p, "headers": auth(key)}
            for m, p in [("GET", ""), ("GET", "/items"), ("GET", "/items/1"), ("GET", "/results"), ("POST", "/cancel"),
                         ("POST", "/retry"), ("POST", "/pause"), ("GET", "/webhooks"), ("DELETE", "")]]


CSV_HEAD = b"master_file,dub_file\n"
REST_CASES = [
    # -- who is calling ----------------------------------------------------------------------------------
    Rest("no-key-same-body-everywhere",
         lambda e: [*_batch_routes(e, e.acme_batch, None)[:3], *_batch_routes(e, "batch_nope", None)[:3],
                    post_json("/batches", {"processor": "slow", "items": [1]}, key=None)],
         401, "unauthorized", "this server needs an API key: send `Authorization: Bearer <key>`"),
    Rest("wrong-key-same-body-everywhere",
         lambda e: [*_batch_routes(e, e.acme_batch, "wrong-key-0123456789")[:3],
                    *_batch_routes(e, "batch_nope", "wrong-key-0123456789")[:3],
                    post_json("/batches", {"processor": "slow", "items": [1]}, key="wrong-key-0123456789")],
         401, "invalid_api_key", "the API key is not valid (unknown or revoked)"),
    Rest("basic-auth-is-no-bearer",
         lambda e: {"method": "GET", "url": f"/batches/{e.acme_batch}", "headers": {"Authorization": f"Basic {ACME}"}},
         401, "unauthorized", "this server needs an API key"),
    Rest("another-tenants-batch-on-every-route", lambda e: _batch_routes(e, e.beta_batch, ACME), 404,
         "batch_not_found", lambda e: f"no batch {e.beta_batch!r}"),
    Rest("a-batch-that-does-not-exist", lambda e: _batch_routes(e, "batch_nope", ACME)[:4], 404, "batch_not_found",
         "no batch 'batch_nope'"),
    # -- mass assignment -------------------------------------------------------------------------------
    _mass("status", "completed"), _mass("attempts", 0), _mass("tenant", "beta"), _mass("batch_id", "batch_x"),
    _mass("items_succeeded", 10**6), _mass("cost_total", 0), _mass("created_at", "2000-01-01T00:00:00Z"),
    Rest("mass-assignment-upload-form",
         lambda e: upload("rows.csv", CSV_HEAD + b"/m/1,/d/1\n", tenant="beta", status="completed", attempts="0"),
         422, "invalid_request", "3 problems in the request", '"column": "body.tenant"'),
    # -- webhook URLs: refused addresses (403) ------------------------------------------------------------
    _guarded_url("loopback", "http://127.0.0.1:9/hook", "127.0.0.1", "loopback"),
    _guarded_url("localhost", "http://localhost:8080/hook", "127.0.0.1", "loopback"),
    _guarded_url("rfc1918-10", "http://10.0.0.1/hook", "10.0.0.1", "private"),
    _guarded_url("rfc1918-172", "http://172.16.5.4/hook", "172.16.5.4", "private"),
    _guarded_url("rfc1918-192", "https://192.168.1.1/hook", "192.168.1.1", "private"),
    _guarded_url("metadata", "http://169.254.169.254/latest/meta-data/", "169.254.169.254", "cloud metadata"),
    _guarded_url("cgnat", "http://100.64.0.1/hook", "100.64.0.1", "shared, carrier-grade NAT"),
    _guarded_url("ipv6-loopback", "http://[::1]:8080/hook", "::1", "loopback"),
    _guarded_url("ipv6-ula", "http://[fc00::1]/hook", "fc00::1", "private"),
    _guarded_url("ipv6-ula-fd", "http://[fd12:3456::1]/hook", "fd12:3456::1", "private"),
    _guarded_url("unspecified", "http://0.0.0.0:8000/hook", "0.0.0.0", "unspecified"),
    _guarded_url("ipv4-mapped", "http://[::ffff:127.0.0.1]/hook", "::ffff:7f00:1",
                 "loopback, IPv4 127.0.0.1 inside IPv6"),
    _guarded_url("decimal", "http://2130706433/hook", "127.0.0.1", "loopback"),
    _guarded_url("octal", "http://0177.0.0.1/hook", "127.0.0.1", "loopback"),
    _guarded_url("hex", "http://0x7f.1/hook", "127.0.0.1", "loopback"),
    Rest("webhook-upload-form-metadata",
         lambda e: upload("rows.csv", CSV_HEAD + b"/m/1,/d/1\n", webhook_url="http://169.254.169.254/hook"),
         403, "url_not_allowed", "169.254.169.254 (cloud metadata"),
    # -- webhook URLs: malformed (422) -------------------------------------------------------------------
    Rest("webhook-scheme-ftp", _webhook("ftp://example.com/hook"), 422, "invalid_request",
         "in the request; see details", "expected an http:// or https:// URL"),
    Rest("webhook-scheme-file", _webhook("file:///etc/passwd"), 422, "invalid_request",
         "in the request; see details", "expected an http:// or https:// URL"),
    Rest("webhook-scheme-gopher", _webhook("gopher://127.0.0.1:25/"), 422, "invalid_request",
         "in the request; see details", "expected an http:// or https:// URL"),
    Rest("webhook-not-an-ip", _webhook("http://999.1.1.1/hook"), 422, "invalid_url",
         "host '999.1.1.1' is written as an IPv4 address but is not one"),
    Rest("webhook-bad-port", _webhook("http://example.com:99999/hook"), 422, "invalid_url", "is not a valid URL"),
    # -- files the server may read ------------------------------------------------------------------------
    Rest("path-dotdot", _input_uri("../outside/secret.txt"), 403, "path_not_allowed",
         "is outside this server's data roots"),
    Rest("path-absolute", _input_uri("/etc/passwd"), 403, "path_not_allowed", "'/etc/passwd' is outside"),
    Rest("path-file-url", _input_uri("file:///etc/passwd"), 403, "path_not_allowed", "is outside this server's"),
    Rest("path-symlink-out", _input_uri(lambda e: str(e.root / "escape.txt")), 403, "path_not_allowed",
         "once '..' and symlinks are resolved"),
    Rest("path-directory-with-symlink-out", _input_uri(lambda e: str(e.root / "leaky")), 403, "path_not_allowed",
         "file out.txt"),
    Rest("path-nul-byte", _input_uri(lambda e: str(e.root / "codes.txt") + "\x00.png"), 422, "invalid_path",
         "contains a NUL byte: it is not a path"),
    Rest("path-param-outside", lambda e: post_json("/batches", {"processor": "probe",
                                                                "items": [{"media": "/etc/passwd"}]}),
         403, "path_not_allowed", "items, column 'media': item 1: path not allowed: '/etc/passwd' is outside",
         '"column": "media"'),
    Rest("path-param-nul", lambda e: post_json("/batches", {"processor": "probe",
                                                            "items": [{"media": str(e.root) + "/a\x00b"}]}),
         422, "invalid_input", "1 input problem", "contains a NUL byte"),
    Rest("path-shared-param-nul", lambda e: post_json("/batches", {"processor": "probe", "items": [{}],
                                                                   "params": {"media": "/x\x00"}}),
         422, "invalid_input", "1 input problem", '"column": "params.media"'),
    # -- sizes and shapes -----------------------------------------------------------------------------------
    Rest("body-over-the-limit-not-parsed", lambda e: {"method": "POST", "url": "/batches", "headers": {
        **auth(), "content-type": "application/json"}, "content": b"{not json" + b" " * LIMIT}, 413,
         "payload_too_large", "request body larger than the limit of 1048576 bytes"),
    Rest("chunked-body-over-the-limit", lambda e: {"method": "POST", "url": "/batches", "headers": {
        **auth(), "content-type": "application/json"}, "content": iter([b"[" * 65536] * 20)}, 413,
         "payload_too_large", "request body larger than the limit"),
    Rest("upload-over-the-limit", lambda e: upload("big.csv", CSV_HEAD + b"/m/1,/d/1\n" * 120_000), 413,
         "payload_too_large", "larger than the limit of 1048576 bytes"),
    Rest("json-10000-deep", lambda e: {"method": "POST", "url": "/batches", "headers": {
        **auth(), "content-type": "application/json"},
        "content": '{"processor": "slow", "items": [' + nested(DEEP) + "]}"}, 422, "invalid_request",
         "the request body nests JSON deeper than 100 levels"),
    Rest("json-deep-in-params-form-field", lambda e: upload("rows.csv", CSV_HEAD + b"/m/1,/d/1\n",
                                                            params='{"a": ' + nested(DEEP) + "}"),
         422, "invalid_input", "1 input problem", "params nests JSON deeper than 100 levels"),
    Rest("jsonl-line-10000-deep", lambda e: upload("deep.jsonl", b'{"a": 1}\n{"a": ' + nested(DEEP).encode() + b"}\n",
                                                   processor="slow"),
         422, "invalid_input", "1 input problem", '"line": 2, "column": null, "reason": "the line nests JSON'),
    Rest("json-array-item-10000-deep", lambda e: upload("deep.json", b'[1, ' + nested(DEEP).encode() + b"]",
                                                        processor="slow"),
         422, "invalid_input", "1 input problem", "the item nests JSON deeper"),
    # -- CSV shapes ----------------------------------------------------------------------------------------
    Rest("csv-empty", lambda e: upload("empty.csv", b""), 422, "invalid_input", "1 input problem",
         "no header row: the file is empty"),
    Rest("csv-duplicate-header", lambda e: upload("dup.csv", b"master_file,dub_file,dub_file\n/m/1,/d/1,/d/2\n"), 422,
         "invalid_input", "1 input problem", '"line": 1, "column": "dub_file", "reason": "duplicate column name'),
    Rest("csv-bad-rows-every-line", lambda e: upload("bad.csv", CSV_HEAD + b"/m/1,\n/m/2,/d/2\n,/d/3\n"), 422,
         "invalid_input", "2 input problems", '"line": 4, "column": "master_file"'),
    Rest("csv-header-only-is-an-empty-batch", lambda e: upload("head.csv", CSV_HEAD, dry_run="true"), 200, None, "",
         check=_report(0)),
    Rest("csv-bom-crlf-quoted-newline", lambda e: upload(
        "odd.csv", b"\xef\xbb\xbfmaster_file,dub_file\r\n/m/1,/d/1\r\n\"/m/two\nlines\",/d/2\r\n/m/3,\"/d/3,x\"\r\n",
        dry_run="true"), 200, None, "", check=_rows_as_meant),
    # -- parameters the processor's model does not have -------------------------------------------------------
    Rest("param-not-in-model-csv-column", lambda e: upload("x.csv", b"name,colour\nann,red\nbob,blue\n",
                                                           processor="strict"),
         422, "invalid_input", "2 input problems", '"line": 3, "column": "colour", "reason": "Extra inputs'),
    Rest("param-not-in-model-json-key", lambda e: post_json("/batches", {"processor": "strict",
                                                                         "items": [{"name": "a", "colour": 1}]}),
         422, "invalid_input", "1 input problem", '"reason": "item 1: Extra inputs are not permitted (got 1)"'),
    Rest("param-not-in-model-shared", lambda e: post_json("/batches", {"processor": "strict", "items": [{"name": "a"}],
                                                                       "params": {"colour": "red"}}),
         422, "invalid_input", "1 input problem", '"column": "colour", "reason": "Extra inputs are not permitted"'),
    # -- processor names ------------------------------------------------------------------------------------
    Rest("processor-unknown", lambda e: post_json("/batches", {"processor": "nope", "items": [1]}), 422,
         "processor_not_found", "no processor named 'nope' (registered: "),
    Rest("processor-importable-module-name", lambda e: post_json("/batches", {"processor": "evil_probe", "items": [1]}),
         422, "processor_not_found", "no processor named 'evil_probe'"),
    Rest("processor-module-attribute", lambda e: post_json("/batches", {"processor": "evil_probe:run", "items": [1]}),
         422, "processor_not_found", "no processor named 'evil_probe:run'"),
    Rest("processor-file-path", lambda e: post_json("/batches", {"processor": str(e.evil / "evil_probe.py"),
                                                                 "items": [1]}),
         422, "processor_not_found", "evil_probe.py' (registered: "),
    Rest("processor-path-in-upload", lambda e: upload("rows.csv", CSV_HEAD + b"/m/1,/d/1\n", processor="os:system"),
         422, "processor_not_found", "no processor named 'os:system'"),
    Rest("processor-unsafe-not-served", lambda e: post_json("/batches", {"processor": "shell", "items": ["id"]}), 403,
         "processor_not_allowed", "runs arbitrary commands"),
    # -- exports ---------------------------------------------------------------------------------------------
    Rest("csv-export-injection-neutralised", lambda e: {"method": "GET", "url": f"/batches/{e.formula_batch}/results",
                                                        "params": {"format": "csv"}, "headers": auth()},
         200, None, "", check=_neutralised_csv),
    # -- idempotency -----------------------------------------------------------------------------------------
    Rest("idempotency-same-key-same-body", lambda e: post_json("/batches", {"processor": "slow", "items": [7]},
                                                               **{"Idempotency-Key": "order-1"}),
         200, None, "", check=_idempotent_replay),
    Rest("idempotency-same-key-same-upload", lambda e: upload("rows.csv", b"master_file,dub_file\n/m/1,/d/1\n",
                                                              headers={"Idempotency-Key": "upload-1"}),
         200, None, "", check=_upload_replay),
    Rest("idempotency-same-key-other-body", lambda e: post_json("/batches", {"processor": "slow", "items": [8]},
                                                                **{"Idempotency-Key": "order-1"}),
         409, "idempotency_key_reused", "Idempotency-Key 'order-1' was already used for another request"),
    Rest("idempotency-same-key-other-upload", lambda e: upload("rows.csv", b"master_file,dub_file\n/m/1,/d/2\n",
                                                               headers={"Idempotency-Key": "upload-1"}),
         409, "idempotency_key_reused", "'upload-1' was already used for another request"),
    Rest("idempotency-key-malformed", lambda e: post_json("/batches", {"processor": "slow", "items": [1]},
                                                          **{"Idempotency-Key": "two words"}),
         422, "invalid_request", "problem in the request", "header.Idempotency-Key"),
    # -- a failure of ours ------------------------------------------------------------------------------------
    Rest("internal-error-shows-a-request-id-only", lambda e: {"method": "GET", "url": "/boom", "headers": auth(),
                                                              "base": "root"},
         500, "internal_error", "internal server error; see the server log for request", check=_no_trace),
]


@pytest.mark.parametrize("case", REST_CASES, ids=[c.id for c in REST_CASES])
def test_rest(env: Env, case: Rest) -> None:
    db = env.server.store
    before = state(db)
    requests = case.requests(env)
    bodies = []
    with httpx.Client(timeout=30) as http:
        for req in requests if isinstance(requests, list) else [requests]:
            req = dict(req)
            base = env.server.url if req.pop("base", None) == "root" else env.server.url + API
            r = http.request(url=base + req.pop("url"), **req)
            assert r.status_code == case.status, (req, r.status_code, r.text[:500])
            assert r.headers.get("x-request-id"), "every answer carries a request id"
            if case.code is not None:
                err = r.json()["error"]
                assert err["code"] == case.code, err
                message = case.message(env) if callable(case.message) else case.message
                assert message in err["message"], err
                assert case.details in json.dumps(err["details"]), err
                bodies.append(r.json())
            if case.check is not None:
                case.check(env, r)
    assert all(b == bodies[0] for b in bodies), "one body for every route, whatever exists behind it"
    assert state(db) == before, "a refused request changed the store"
    assert not env.marker.exists(), "a processor name from a request was imported"


# -- CLI -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    id: str
    files: dict[str, bytes]  # written to the test's directory
    args: Callable[[Path, Env], list[str]]
    exit_code: int
    output: str  # a substring of stdout + stderr
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path, str], None] | None = None


def _validate(name: str, proc: str = "sync-analyze") -> Callable[[Path, Env], list[str]]:
    return lambda d, e: ["validate", str(d / name), "-p", proc, "--processors", str(PROCS),
                         "--processors", str(CATALOGUE_PROCS)]


def _run(name: str, proc: str = "sync-analyze") -> Callable[[Path, Env], list[str]]:
    return lambda d, e: ["run", str(d / name), "-p", proc, "--store", str(d / "store.db"), "--processors",
                         str(PROCS), "--processors", str(CATALOGUE_PROCS)]


def _cli_csv_neutralised(d: Path, out: str) -> None:
    rows = list(csv.DictReader(io.StringIO((d / "out.csv").read_bytes().decode())))  # no newline translation
    cells = {row["input"] for row in rows} | {row["result.value"] for row in rows}
    assert {"'" + f for f in FORMULAS} <= cells and "-15.023" in cells, cells
    assert not any(c.startswith(("=", "+", "@", "\t", "\r")) for c in cells), cells


CLI_CASES = [
    Cli("run-unknown-processor", {"in.txt": b"1\n"}, _run("in.txt", "nope"), 2, "no processor named 'nope'"),
    Cli("run-importable-module-name-is-not-imported", {"in.txt": b"1\n"}, _run("in.txt", "evil_probe"), 2,
        "no processor named 'evil_probe'"),
    Cli("run-file-path-as-processor-is-not-imported", {"in.txt": b"1\n"},
        lambda d, e: _run("in.txt", str(e.evil / "evil_probe.py"))(d, e), 2, "evil_probe.py' (registered: "),
    Cli("validate-empty-csv", {"e.csv": b""}, _validate("e.csv"), 2, "e.csv: no header row: the file is empty"),
    Cli("validate-duplicate-header", {"d.csv": b"master_file,dub_file,dub_file\n/m/1,/d/1,/d/2\n"},
        _validate("d.csv"), 2, "d.csv, line 1, column 'dub_file': duplicate column name (also column 2)"),
    Cli("validate-header-only", {"h.csv": CSV_HEAD}, _validate("h.csv"), 0, "h.csv: 0 items (csv), valid"),
    Cli("validate-bom-crlf-quoted-newline",
        {"o.csv": b"\xef\xbb\xbfmaster_file,dub_file\r\n/m/1,/d/1\r\n\"/m/two\nlines\",/d/2\r\n"},
        _validate("o.csv"), 0, "o.csv: 2 items (csv), valid"),
    Cli("run-bad-rows-every-line-nothing-created", {"b.csv": CSV_HEAD + b"/m/1,\n/m/2,/d/2\n,/d/3\n"},
        _run("b.csv"), 2, "b.csv, line 4, column 'master_file'"),
    Cli("run-jsonl-10000-deep", {"deep.jsonl": b'{"a": 1}\n{"a": ' + nested(DEEP).encode() + b"}\n"},
        _run("deep.jsonl", "slow"), 2, "deep.jsonl, line 2: the line nests JSON deeper than 100 levels"),
    Cli("run-param-not-in-model", {"s.csv": b"name,colour\nann,red\n"}, _run("s.csv", "strict"), 2,
        "s.csv, line 2, column 'colour': Extra inputs are not permitted"),
    Cli("run-csv-export-injection-neutralised",
        {"f.jsonl": "\n".join(json.dumps(x) for x in [*FORMULAS, "-15.023"]).encode() + b"\n"},
        lambda d, e: [*_run("f.jsonl", "echo")(d, e), "--output", str(d / "out.csv")], 0, "",
        check=_cli_csv_neutralised),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli(env: Env, tmp_path: Path, case: Cli) -> None:
    for name, content in case.files.items():
        (tmp_path / name).write_bytes(content)
    run_env = {**os.environ, "COLUMNS": "200", "BATCHYARD_STORE": str(tmp_path / "store.db"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(env.evil), os.environ.get("PYTHONPATH")])), **case.env}
    proc = subprocess.run([str(BIN), *case.args(tmp_path, env)], capture_output=True, text=True, env=run_env,
                          timeout=120, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == case.exit_code, out
    assert case.output in out, out
    assert "Traceback" not in out
    if case.check is not None:
        case.check(tmp_path, out)
    elif (tmp_path / "store.db").exists():  # a refused input creates no batch
        assert state(tmp_path / "store.db")[0] == []
    assert not env.marker.exists(), "a processor name was imported"


def test_the_catalogue_is_complete() -> None:
    assert len(REST_CASES) + len(CLI_CASES) >= 25
    assert len({c.id for c in REST_CASES}) == len(REST_CASES) and len({c.id for c in CLI_CASES}) == len(CLI_CASES)
