"""``tourno users ...``: create accounts (organizers and admins too) and
rotate API tokens. A token is printed once; only its hash is stored."""

from __future__ import annotations

import click

from tourno.cli import AppContext, fail, new_table


@click.group("users")
def users_group() -> None:
    """Create users and manage their API tokens."""


@users_group.command("create")
@click.option("--email", required=True, help="Login email (stored lower-cased).")
@click.option("--name", "display_name", required=True, help="Display name.")
@click.option(
    "--role",
    type=click.Choice(["player", "organizer", "admin"]),
    default="player",
    show_default=True,
    help="What the user may do.",
)
@click.pass_obj
def create_command(app: AppContext, email: str, display_name: str, role: str) -> None:
    """Create a user and print their API token (shown only this once)."""
    from tourno.accounts.models import Role
    from tourno.api.auth import hash_token, new_token
    from tourno.db import write_transaction
    from tourno.tournaments import services
    from tourno.tournaments.errors import ValidationError

    app.setup()
    token = new_token()
    try:
        # The user and their token hash commit together.
        with write_transaction():
            user = services.create_user(email, display_name, role=Role(role))
            services.set_api_token_hash(user, hash_token(token))
    except ValidationError as exc:
        fail("; ".join(f"{k}: {v}" for k, v in sorted(exc.errors.items())), code=2)
    click.echo(f"Created {user.role.value} {user.email} (id {user.id}).")
    click.echo("API token (shown once; store it now):", err=True)
    click.echo(token)


@users_group.command("token")
@click.argument("email")
@click.pass_obj
def token_command(app: AppContext, email: str) -> None:
    """Give EMAIL a new API token; the old one stops working."""
    from tourno.accounts.models import User
    from tourno.api.auth import issue_token

    app.setup()
    user = User.get_or_none(User.email == email.strip().lower())
    if user is None:
        fail(f"no user with email {email}")
    click.echo(issue_token(user))


@users_group.command("list")
@click.option(
    "--role", type=click.Choice(["player", "organizer", "admin"]), default=None, help="Only this role."
)
@click.pass_obj
def list_command(app: AppContext, role: str | None) -> None:
    """List users (id, email, name, role, whether they have a token)."""
    from tourno.accounts.models import User

    app.setup()
    query = User.select().order_by(User.id)
    if role:
        query = query.where(User.role == role)
    table = new_table("ID", "Email", "Name", "Role", "Token", "Created (UTC)", title="Users")
    n = 0
    for u in query:
        n += 1
        table.add_row(
            str(u.id),
            u.email,
            u.display_name,
            u.role.value,
            "yes" if u.api_token_hash else "no",
            u.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    if n == 0:
        app.console.print("No users.")
        return
    app.console.print(table)
