"""``batchyard serve``: the REST API on uvicorn, with embedded workers unless ``--workers 0``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from batchyard.cli.env import split_paths
from batchyard.core.engine import Engine
from batchyard.core.errors import BatchyardError
from batchyard.store import open_store, safe_url

LOOPBACK = ("127.0.0.1", "::1", "localhost")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_STARTUP_FAILURE = 3  # uvicorn's: the server never started (the port is taken, the lifespan failed)
err = Console(stderr=True, soft_wrap=True)

# The same options as ``cli.main``'s (redefined: this module must import without it, and it without this).
StoreOpt = Annotated[str | None, typer.Option("--store", envvar="BATCHYARD_STORE",
                                              help="Store path or URL (default ./.batchyard/batchyard.db).")]
ProcessorsOpt = Annotated[list[str] | None, typer.Option(
    "--processors", envvar="BATCHYARD_PROCESSORS", callback=split_paths,
    help="Module or .py file registering processors (repeatable; BATCHYARD_PROCESSORS: separated like PATH).")]


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(EXIT_USAGE)


def serve(
    host: Annotated[str, typer.Option("--host", envvar="BATCHYARD_HOST", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="BATCHYARD_PORT", min=0, max=65535)] = 8000,
    store: StoreOpt = None,
    workers: Annotated[int, typer.Option("--workers", envvar="BATCHYARD_WORKERS", min=0,
                                         help="Items the embedded worker runs at once; 0 = API only.")] = 8,
    processors: ProcessorsOpt = None,
    mounts: Annotated[list[str] | None, typer.Option(
        "--mount", envvar="BATCHYARD_MOUNTS", callback=split_paths, metavar="PATH_OR_MODULE",
        help="Adapter to serve alongside the API: a .py file or module with a module-level FastAPI `router`, "
             "mounted at the root ahead of batchyard's own routes, behind the same API keys (repeatable; "
             "BATCHYARD_MOUNTS: separated like PATH).")] = None,
    retention_days: Annotated[float | None, typer.Option(
        "--retention-days", envvar="BATCHYARD_RETENTION_DAYS", min=0,
        help="Delete final batches older than this many days, hourly.")] = None,
    allow_unsafe_processors: Annotated[bool, typer.Option(
        "--allow-unsafe-processors", help="Serve processors that run arbitrary commands (shell).")] = False,
    data_roots: Annotated[list[Path] | None, typer.Option(
        "--data-root", envvar="BATCHYARD_DATA_ROOTS", exists=True, file_okay=False, dir_okay=True,
        resolve_path=True, metavar="DIR",
        help="Directory whose files clients may name, as input_uri or in path columns (repeatable; "
             "BATCHYARD_DATA_ROOTS: separated like PATH). Without one, the server reads no local files.")] = None,
    allow_private_network: Annotated[bool, typer.Option(
        "--allow-private-network",
        help="Let input_uri (and webhooks) reach loopback, private, link-local and cloud-metadata addresses, "
             "which the SSRF guard refuses. gs://, s3:// and az:// URIs are always read, with the "
             "server's own cloud credentials.")] = False,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", envvar="BATCHYARD_MAX_UPLOAD_MB", min=0.001,
                                                 help="Largest request body; 413 beyond.")] = 100.0,
    webhook_url: Annotated[str | None, typer.Option(
        "--webhook-url", envvar="BATCHYARD_WEBHOOK_URL", help="Webhook for batches submitted without one.")] = None,
    tenant_max_queued: Annotated[int | None, typer.Option(
        "--tenant-max-queued", envvar="BATCHYARD_TENANT_MAX_QUEUED", min=1,
        help="Most items a tenant may have waiting; submissions beyond get 429 with Retry-After.")] = None,
    tenant_max_running: Annotated[int | None, typer.Option(
        "--tenant-max-running", envvar="BATCHYARD_TENANT_MAX_RUNNING", min=1,
        help="Most items a tenant may have running at once (across workers).")] = None,
    upstream: Annotated[str | None, typer.Option(
        "--upstream", envvar="BATCHYARD_UPSTREAM", metavar="URL",
        help="Base URL of an OpenAI-compatible API (http://host:8080/v1): serves OpenAI's Batch API under /v1 "
             "(files, batches) for the openai package, each request sent there.")] = None,
    upstream_key_env: Annotated[str, typer.Option(
        "--upstream-key-env", envvar="BATCHYARD_UPSTREAM_KEY_ENV", metavar="NAME",
        help="Environment variable holding the upstream's API key.")] = "BATCHYARD_UPSTREAM_KEY",
    upstream_rpm: Annotated[float | None, typer.Option(
        "--upstream-rpm", envvar="BATCHYARD_UPSTREAM_RPM", min=0.001,
        help="Requests per minute per upstream key, across every worker on the store.")] = None,
    upstream_tpm: Annotated[float | None, typer.Option(
        "--upstream-tpm", envvar="BATCHYARD_UPSTREAM_TPM", min=1,
        help="Tokens per minute per upstream key (estimated before sending, corrected from usage).")] = None,
    upstream_concurrency: Annotated[int, typer.Option(
        "--upstream-concurrency", envvar="BATCHYARD_UPSTREAM_CONCURRENCY", min=1,
        help="Upstream requests in flight at once, across every worker on the store.")] = 64,
    upstream_recovery_s: Annotated[float, typer.Option(
        "--upstream-recovery-s", envvar="BATCHYARD_UPSTREAM_RECOVERY_S", min=0.01,
        help="After the upstream stops refusing (429/503), seconds for the shared rate to grow from half back "
             "to full (additive increase).")] = 10.0,
    upstream_routes: Annotated[list[str] | None, typer.Option(
        "--upstream-route", metavar="MODEL=URL[@KEY_ENV]",
        help="Send this model's requests to another upstream (repeatable; MODEL may end in *; "
             "BATCHYARD_UPSTREAM_ROUTES: space-separated).")] = None,
    prices: Annotated[Path | None, typer.Option(
        "--prices", envvar="BATCHYARD_PRICES", exists=True, dir_okay=False,
        help="JSON price table for the gateway's costs: model -> {input, output} USD per 1M tokens and "
             "batch_discount, added to the built-in one.")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Serve the REST API (OpenAPI at /docs), recovering interrupted work at start-up."""
    from batchyard.core.models import Webhook
    from batchyard.server import mounts as adapters
    from batchyard.server.app import create_app
    from batchyard.server.auth import Keyring
    from batchyard.server.settings import Settings

    try:
        engine = Engine(open_store(store), processors or [])
        settings = Settings(host=host, port=port, store=store, processors=processors or [], mounts=mounts or [],
                            workers=workers, retention_days=retention_days,
                            allow_unsafe_processors=allow_unsafe_processors,
                            data_roots=data_roots or [], allow_private_network=allow_private_network,
                            max_upload_bytes=int(max_upload_mb * 1024 * 1024))
        settings = settings.model_copy(update={"webhook_url": webhook_url, "tenant_max_queued": tenant_max_queued,
                                               "tenant_max_running": tenant_max_running})
        if upstream:
            from batchyard.gateway.config import GatewayConfig

            gateway = {"upstream": upstream, "upstream_key_env": upstream_key_env, "upstream_rpm": upstream_rpm,
                       "upstream_tpm": upstream_tpm, "upstream_concurrency": upstream_concurrency, "prices": prices,
                       "upstream_recovery_s": upstream_recovery_s}
            if upstream_routes:
                gateway["upstream_routes"] = upstream_routes
            settings = settings.model_copy(update=gateway)
            GatewayConfig.from_settings(settings)  # now, so that a bad route or price table is one line and exit 2
        keyring = Keyring(engine.store, settings.api_keys)
        adapters.load(settings.mounts)  # now, so that a broken adapter is one line and exit 2, not a traceback
        if webhook_url:
            Webhook(url=webhook_url)
    except (BatchyardError, ValueError) as exc:
        fail(str(exc))
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not keyring.required():
        if host not in LOOPBACK:
            err.print(f"[yellow]no API keys configured: binding to 127.0.0.1, not {host}[/yellow] (anyone who can "
                      "reach the server controls its batches; create keys with `batchyard keys create` or set "
                      "BATCHYARD_API_KEYS to serve other machines)", highlight=False)
            host = settings.host = "127.0.0.1"
        else:
            err.print("no API keys configured: loopback only, one tenant (default)", highlight=False)
    mode = f"embedded worker, {workers} at once" if workers else "API only (run `batchyard worker` alongside)"
    if upstream:
        mode += f"; OpenAI batch gateway at /v1 -> {upstream}"
        if workers < upstream_concurrency:
            err.print(f"[yellow]the embedded worker runs {workers} items at once: at most {workers} upstream requests "
                      f"in flight, not --upstream-concurrency {upstream_concurrency} (raise --workers)[/yellow]",
                      highlight=False)
    err.print(f"batchyard serving {safe_url(engine.store.url)} on http://{host}:{port} ({mode}); docs at /docs",
              highlight=False)
    config: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "timeout_graceful_shutdown": 5}
    _run(create_app(engine, settings), config, settings.grace_seconds)


def _run(app: Any, config: dict[str, Any], grace: float) -> None:
    """Serve until SIGTERM/SIGINT, stopping as ``batchyard worker`` does.

    The first signal stops the embedded worker's claims at once (uvicorn alone stops it only once its open
    connections are closed, which an event stream holds up to ``timeout_graceful_shutdown``), lets in-flight
    items commit within ``grace``, and exits 0; a second one leaves at once with 130, the leases left behind
    recovered by the next server or worker to start on the store.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                os._exit(EXIT_INTERRUPTED)
            worker = getattr(app.state, "worker", None)
            if worker is not None:
                worker.begin_stop(grace)
            # Not uvicorn's own handler: it also notes the signal, to raise it again once shut down so that
            # the process dies of it (exit 143 for SIGTERM). A graceful stop is a normal exit here: 0.
            self.should_exit = True

    server = Server(uvicorn.Config(app, **config))
    server.run()
    if not server.started:
        raise typer.Exit(EXIT_STARTUP_FAILURE)
