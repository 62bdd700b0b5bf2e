"""``batchyard keys create|list|revoke`` and ``batchyard webhook-secret``: a server's credentials, kept
in its store (so every server and worker on the store shares them)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from batchyard.cli.serve import StoreOpt, fail
from batchyard.core.errors import BatchyardError
from batchyard.core.models import DEFAULT_TENANT
from batchyard.store import open_store

keys = typer.Typer(no_args_is_help=True, help="API keys of a server's store (shown once, stored hashed).")
out = Console(soft_wrap=True)


@keys.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant whose batches the key sees.")] = DEFAULT_TENANT,
    name: Annotated[str | None, typer.Option("--name", help="A note to recognise the key by.")] = None,
    store: StoreOpt = None,
) -> None:
    """Create a key and print it: this is the only time it is shown."""
    from batchyard.server.auth import create_key

    try:
        info, key = create_key(open_store(store), tenant, name)
    except BatchyardError as exc:
        fail(str(exc))
    typer.echo(key)
    Console(stderr=True).print(f"key {info.key_id} for tenant {info.tenant!r}; send it as "
                               "`Authorization: Bearer <key>` (it is not shown again)", highlight=False)


@keys.command("list")
def list_keys(store: StoreOpt = None) -> None:
    """The store's keys (ids, tenants, names; never the keys)."""
    found = open_store(store).list_api_keys()
    table = Table("key id", "tenant", "name", "created", "revoked")
    for k in found:
        table.add_row(k.key_id, k.tenant, k.name or "", f"{k.created_at:%Y-%m-%d %H:%M:%S}",
                      f"{k.revoked_at:%Y-%m-%d %H:%M:%S}" if k.revoked_at else "")
    out.print(table)


@keys.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_...) from `batchyard keys list`.")],
           store: StoreOpt = None) -> None:
    """Revoke a key: servers refuse it within a few seconds."""
    try:
        info = open_store(store).revoke_api_key(key_id)
    except BatchyardError as exc:
        fail(str(exc))
    typer.echo(f"revoked {info.key_id} (tenant {info.tenant})")


def webhook_secret(store: StoreOpt = None) -> None:
    """Print the secret this store's servers sign webhooks with (unless BATCHYARD_WEBHOOK_SECRET sets one)."""
    from batchyard.server.webhooks import SECRET_SETTING, new_secret

    st = open_store(store)
    typer.echo(st.get_setting(SECRET_SETTING) or st.put_setting_once(SECRET_SETTING, new_secret()))
