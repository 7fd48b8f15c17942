"""Named identities: tokens with a role, and the console's sessions opened with them.

A token reads `orch_<id>_<secret>`: the id names the identity without a
lookup by secret (so failures can be limited per identity, and the hash is
compared in constant time against one row), the secret is 256 random bits
stored only as its SHA-256. `ORCHESTRATOR_API_TOKEN` is the bootstrap admin.
"""

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import SecretStr

from engine.db.queries import load_queries

QUERIES = load_queries(__name__.rpartition(".")[0])
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
_TOKEN = re.compile(r"^orch_(?P<id>[1-9][0-9]{0,17})_(?P<secret>[A-Za-z0-9_-]{43})$")
BOOTSTRAP_NAME = "admin"
MIN_TOKEN_LENGTH = 32
# What the shipped examples (deploy/) and habit put in a token's place.
PLACEHOLDERS = frozenset({"change_me", "changeme", "change-me", "secret", "token", "password"})

Connection = AsyncConnection[DictRow]


class Role(StrEnum):
    VIEWER = "viewer"  # reads runs, pages and approvals
    APPROVER = "approver"  # and approves or rejects at gates
    ADMIN = "admin"  # and creates, cancels, retries and forks runs

    def allows(self, needed: "Role") -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role
    token_id: int | None  # None: the bootstrap token

    def allows(self, needed: Role) -> bool:
        return self.role.allows(needed)


def escalation_refusal(
    identity: Identity | None, waiting_for: Mapping[str, Any] | None
) -> str | None:
    """Why `identity` may not answer the pause `waiting_for`: one a deadline escalated
    to a role it does not hold (with no identities, anyone may)."""
    escalated = (waiting_for or {}).get("escalated")
    needed = escalated.get("role") if isinstance(escalated, Mapping) else None
    if identity is None or needed not in list(Role) or identity.allows(Role(needed)):
        return None
    return (
        f"{identity.name} is {identity.role}: the {waiting_for.get('gate') if waiting_for else ''} "
        f"gate was escalated to the {needed} role at its deadline"
    )


def weak_bootstrap(token: SecretStr | None) -> str | None:
    """Why `ORCHESTRATOR_API_TOKEN` must not be used, or None (unset is fine: loopback)."""
    if token is None:
        return None
    value = token.get_secret_value()
    if not value.strip():
        return "ORCHESTRATOR_API_TOKEN: is empty; unset it, or set a random token"
    if value.strip().lower() in PLACEHOLDERS:
        return "ORCHESTRATOR_API_TOKEN: is the shipped placeholder; set a random token"
    if len(value) < MIN_TOKEN_LENGTH:
        return (
            f"ORCHESTRATOR_API_TOKEN: {len(value)} characters is too short to resist guessing; "
            f"use at least {MIN_TOKEN_LENGTH} (e.g. openssl rand -hex 32)"
        )
    return None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def claimed_id(token: str) -> int | None:
    """The identity a token names, valid or not (what failures are counted against)."""
    match = _TOKEN.match(token)
    return int(match["id"]) if match else None


async def create_token(conn: Connection, name: str, role: Role) -> tuple[dict[str, Any], str]:
    """A new token for `name`; the token itself is returned once and never stored."""
    secret = secrets.token_urlsafe(32)
    row = await (
        await conn.execute(
            QUERIES["insert_token"], {"name": name, "role": role, "secret_hash": _digest(secret)}
        )
    ).fetchone()
    assert row is not None
    return dict(row), f"orch_{row['id']}_{secret}"


async def list_tokens(conn: Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in await (await conn.execute(QUERIES["list_tokens"])).fetchall()]


async def revoke_token(conn: Connection, name: str) -> dict[str, Any] | None:
    row = await (await conn.execute(QUERIES["revoke_token"], {"name": name})).fetchone()
    return dict(row) if row else None


async def any_live_token(conn: Connection) -> bool:
    row = await (await conn.execute(QUERIES["any_live_token"])).fetchone()
    return bool(row and row["any"])


async def identify(conn: Connection, token: str, bootstrap: SecretStr | None) -> Identity | None:
    """Whose token this is, or None."""
    if bootstrap is not None and hmac.compare_digest(
        token.encode(), bootstrap.get_secret_value().encode()
    ):
        return Identity(BOOTSTRAP_NAME, Role.ADMIN, None)
    match = _TOKEN.match(token)
    if match is None:
        return None
    row = await (await conn.execute(QUERIES["live_token"], {"id": int(match["id"])})).fetchone()
    if row is None or not hmac.compare_digest(_digest(match["secret"]), row["secret_hash"]):
        return None
    return Identity(row["name"], Role(row["role"]), row["id"])


async def open_session(conn: Connection, identity: Identity, ttl: timedelta) -> str:
    """A new session id for `identity` (stored hashed: a leaked table opens nothing)."""
    session_id = secrets.token_urlsafe(32)
    await conn.execute(
        QUERIES["delete_old_sessions"],
    )
    await conn.execute(
        QUERIES["insert_session"],
        {
            "id_hash": _digest(session_id),
            "name": identity.name,
            "role": identity.role,
            "token_id": identity.token_id,
            "ttl": ttl,
        },
    )
    return session_id


async def session_identity(conn: Connection, session_id: str) -> Identity | None:
    row = await (
        await conn.execute(QUERIES["live_session"], {"id_hash": _digest(session_id)})
    ).fetchone()
    return Identity(row["name"], Role(row["role"]), row["token_id"]) if row else None


async def close_session(conn: Connection, session_id: str) -> None:
    await conn.execute(QUERIES["revoke_session"], {"id_hash": _digest(session_id)})
