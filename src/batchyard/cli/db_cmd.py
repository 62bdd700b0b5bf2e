"""``batchyard db``: the store's schema.

A SQLite store migrates itself whenever it is opened (one machine, one file). A PostgreSQL store is
shared by many machines running possibly different versions, so it is only created automatically when
the database is empty; migrating an existing one is this deliberate step.
"""

from __future__ import annotations

import typer

from batchyard.cli.serve import StoreOpt, err, fail
from batchyard.core.errors import BatchyardError

db = typer.Typer(no_args_is_help=True, help="The store's schema: migrate it to this batchyard's version.")


@db.command()
def upgrade(store: StoreOpt = None) -> None:
    """Apply the schema migrations the store is missing, in one transaction."""
    from batchyard.store import upgrade_store

    try:
        before, after = upgrade_store(store)
    except BatchyardError as exc:
        fail(str(exc))
    if before == after:
        typer.echo(f"up to date (schema version {after})")
    else:
        typer.echo(f"upgraded: schema version {before} -> {after}")
        err.print("processes running an older batchyard now refuse this store until they are upgraded too",
                  highlight=False)
