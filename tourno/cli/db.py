"""``tourno db ...``: schema migrations."""

from __future__ import annotations

import click

from tourno.cli import AppContext, new_table


@click.group("db")
def db_group() -> None:
    """Create and upgrade the database schema."""


@db_group.command("migrate")
@click.pass_obj
def migrate_command(app: AppContext) -> None:
    """Apply every pending migration, in order."""
    from tourno import migrations
    from tourno.db import database

    app.setup(check_schema=False, create_database=True)
    applied = migrations.migrate(database.obj)
    if applied:
        for name in applied:
            app.console.print(f"applied {name}")
    else:
        app.console.print("Nothing to migrate: the schema is up to date.")


@db_group.command("status", short_help="List migrations; exit 1 if any is pending.")
@click.pass_obj
def status_command(app: AppContext) -> None:
    """List migrations and whether each is applied; exit 1 if any is pending."""
    from tourno import migrations
    from tourno.db import database

    app.setup(check_schema=False)
    rows = migrations.status(database.obj)
    table = new_table("Migration", "Applied at", title="Migrations")
    pending = 0
    for m in rows:
        if m.applied is None:
            pending += 1
        table.add_row(
            m.name, m.applied.strftime("%Y-%m-%d %H:%M:%S") if m.applied else "[yellow]pending[/yellow]"
        )
    app.console.print(table)
    if pending:
        app.console.print(f"{pending} migration(s) pending: run `tourno db migrate`.")
        raise SystemExit(1)
