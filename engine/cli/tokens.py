"""`orchestrator tokens ...`: named identities, each with a role."""

import sys
from typing import TYPE_CHECKING, Annotated

import psycopg
import typer

from engine.cli.common import (
    UsageFailure,
    console,
    new_table,
    print_json,
    tokens_app,
    with_db,
)
from engine.runtime import store
from engine.service.access import identities
from engine.service.access.identities import Role

if TYPE_CHECKING:
    pass


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="Who the token is for; recorded on their approvals.")],
    role: Annotated[
        Role, typer.Option(help="viewer reads; approver also approves; admin also runs.")
    ],
) -> None:
    """Create a token and print it, once: only its hash is kept."""
    if not identities.NAME.match(name):
        raise UsageFailure(
            f"--name: {name[:80]!r} must be 1 to 63 letters, digits or '_.@-', "
            "starting with a letter or digit"
        )

    async def create(conn: store.Connection) -> str:
        try:
            _, token = await identities.create_token(conn, name, role)
        except psycopg.errors.UniqueViolation:
            raise store.Refused(
                f"a live token named {name!r} exists: revoke it first ('tokens revoke {name}')"
            ) from None
        return token

    token = with_db(create)
    print(token)
    print(f"token for {name} ({role}): shown once, keep it safe", file=sys.stderr)


@tokens_app.command("list")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every token: name, role, when it was created and revoked (never the token)."""
    rows = with_db(identities.list_tokens)
    if as_json:
        print_json(rows)
        return
    table = new_table("name", "role", "created", "revoked")
    for row in rows:
        table.add_row(
            row["name"], row["role"], str(row["created_at"]), str(row["revoked_at"] or "")
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke the live token of NAME at once, with every console session it opened."""

    async def revoke(conn: store.Connection) -> None:
        if await identities.revoke_token(conn, name) is None:
            raise store.Refused(f"no live token named {name!r}")

    with_db(revoke)
    console.print(f"revoked the token of {name}")
