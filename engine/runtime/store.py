"""Operations on runs for the CLI and the API: create, read, approve, cancel, retry."""

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from engine import settings
from engine.db.queries import QUERIES
from engine.db.status import PENDING_PREFIX, STATUS_PARAMS, TERMINAL, Status, statuses
from engine.runtime.deadlines import SYSTEM_APPROVER
from engine.runtime.holdable import find_unholdable
from engine.runtime.timers import aware

PROJECT_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"

Connection = AsyncConnection[DictRow]


class InvalidInput(ValueError):
    """Bad input from a user; the message names the field."""


class RunNotFound(LookupError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} not found")


class Refused(Exception):
    """The database refused the change (e.g. the approval trigger); message from PostgreSQL."""


@dataclass(frozen=True)
class RunView:
    """The seed's triad: the run, its current checkpoint and its artifacts."""

    run: dict[str, Any]
    checkpoint: dict[str, Any] | None
    artifacts: list[dict[str, Any]]


def storable(value: Any, field: str) -> Any:
    """`value` unless PostgreSQL cannot store it (NUL, NaN, lone surrogates: `find_unholdable`)."""
    problem = find_unholdable(value)
    if problem is not None:
        path, why = problem
        raise InvalidInput(f"{'.'.join([field, *path])}: {why}")
    return value


def new_id(prefix: str) -> str:
    """`prefix` and 12 random base32 characters: `run_…`, `sch_…`."""
    return prefix + "".join(secrets.choice(_BASE32) for _ in range(12))


def new_run_id() -> str:
    return new_id("run_")


def validate_project(project: str) -> str:
    if not PROJECT_SLUG.match(project):
        raise InvalidInput(
            f"project: {project!r} is not a slug (lowercase letters, digits, '-' or '_', "
            "at most 63 characters, starting with a letter or digit)"
        )
    return project


@dataclass(frozen=True)
class Start:
    """A run as `start_run` left it: the one it created, or the one its key had."""

    run: dict[str, Any]
    created: bool


class KeyConflict(Refused):
    """An idempotency key reused for a different request."""


async def create_run(
    conn: Connection,
    *,
    project: str,
    payload: dict[str, Any],
    workflow: str,
    priority: int = 0,
    not_before: datetime | None = None,
) -> dict[str, Any]:
    """A new run (`start_run` without a key)."""
    start = await start_run(
        conn,
        project=project,
        payload=payload,
        workflow=workflow,
        priority=priority,
        not_before=not_before,
    )
    return start.run


async def start_run(
    conn: Connection,
    *,
    project: str,
    payload: dict[str, Any],
    workflow: str,
    priority: int = 0,
    not_before: datetime | None = None,
    idempotency_key: str | None = None,
    key_field: str = "idempotency_key",
    webhook_url: str | None = None,
) -> Start:
    """A queued run; with `not_before` in the future, a run that waits for its timer
    (`waiting_timer` until then) and so is claimed by no daemon before it.

    With `idempotency_key`, at most one run per key and project: the same key asking
    for the same run again gets the run it created (`created` False); asking for a
    different one is `KeyConflict`, naming `key_field`."""
    delayed = not_before is not None and not_before > datetime.now(UTC)
    params = {
        "project": validate_project(project),
        "payload": Jsonb(storable(payload, "payload")),
        "workflow": workflow,
        "priority": priority,
        "idempotency_key": _checked_key(idempotency_key, key_field),
        "request_digest": _digest(payload, workflow, priority, not_before, webhook_url)
        if idempotency_key is not None
        else None,
        "webhook_url": webhook_url,
    }
    cursor = await conn.execute(
        QUERIES["insert_run"],
        {
            **params,
            "run_id": new_run_id(),
            "status": Status.WAITING_TIMER if delayed else Status.QUEUED,
            "wake_at": not_before if delayed else None,
            "waiting_for": Jsonb({"not_before": not_before.isoformat()})
            if delayed and not_before is not None
            else None,
        },
    )
    if (row := await cursor.fetchone()) is not None:
        return Start(dict(row), created=True)
    # The key's run exists (committed: the insert waited for it if it was in flight).
    existing = await (await conn.execute(QUERIES["run_by_key"], params)).fetchone()
    assert existing is not None, "a run holds the key: the insert found it"
    if existing["request_digest"] != params["request_digest"]:
        raise KeyConflict(
            f"{key_field}: {idempotency_key!r} already started run {existing['run_id']} "
            f"of project {project!r} with a different request"
        )
    return Start(dict(existing), created=False)


def _checked_key(key: str | None, field: str) -> str | None:
    if key is not None and not (0 < len(key) <= 200 and key.isprintable()):
        raise InvalidInput(f"{field}: 1 to 200 printable characters, not {key[:40]!r}")
    return key


def _digest(
    payload: dict[str, Any],
    workflow: str,
    priority: int,
    not_before: datetime | None,
    webhook_url: str | None,
) -> str:
    """What a request asked for, as one comparable string."""
    request = {
        "workflow": workflow,
        "payload": payload,
        "priority": priority,
        "not_before": not_before.astimezone(UTC).isoformat() if not_before else None,
        **({"webhook": webhook_url} if webhook_url is not None else {}),
    }
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_not_before(text: str, field: str) -> datetime:
    """The time a run may start, as `--not-before` and `not_before` give it: ISO 8601
    with its UTC offset, not absurdly far away (InvalidInput naming `field`)."""
    try:
        return aware(datetime.fromisoformat(text), field)
    except ValueError as error:
        if str(error).startswith(f"{field}: "):
            raise InvalidInput(str(error)) from None
        raise InvalidInput(
            f"{field}: {text!r} is not an ISO 8601 time (e.g. 2026-12-03T09:00:00+01:00)"
        ) from None


def due_at(run: dict[str, Any]) -> datetime | None:
    """When a run waiting for its timer (a sleep, a delayed start), a provider or its
    limit (handed a slot, or its provider's pause over) is due, or its gate's deadline."""
    status = run.get("status") or ""
    waits = (Status.WAITING_TIMER, Status.WAITING_PROVIDER, Status.WAITING_LIMIT)
    return run.get("wake_at") if status in waits or status.startswith(PENDING_PREFIX) else None


async def get_run(conn: Connection, run_id: str) -> dict[str, Any]:
    row = await (await conn.execute(QUERIES["get_run"], {"run_id": run_id})).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    return dict(row)


async def show_run(conn: Connection, run_id: str) -> RunView:
    run = await get_run(conn, run_id)
    params = {"run_id": run_id}
    checkpoint = await (await conn.execute(QUERIES["get_checkpoint"], params)).fetchone()
    artifacts = await (await conn.execute(QUERIES["list_artifacts"], params)).fetchall()
    return RunView(run, dict(checkpoint) if checkpoint else None, [dict(a) for a in artifacts])


def known_status(status: str, gates: Iterable[str], field: str = "status") -> str:
    """`status` if a run of an App with `gates` can have it; else InvalidInput naming
    `field` and listing the statuses there are (a filter on a typo must not find nothing)."""
    known = statuses(gates)
    if status not in known:
        hint = " (a gate's status is known once its Workflow declares it)" * status.startswith(
            PENDING_PREFIX
        )
        raise InvalidInput(
            f"{field}: {status[:64]!r} is not a status; one of {', '.join(known)}{hint}"
        )
    return status


async def list_runs(
    conn: Connection, *, status: str | None = None, project: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        QUERIES["list_runs"], {"status": status, "project": project, "limit": limit}
    )
    return [dict(row) for row in await cursor.fetchall()]


async def stuck_runs(
    conn: Connection, *, older_than: timedelta, limit: int = 100
) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        QUERIES["stuck_runs"],
        {
            "older_than": older_than,
            "limit": limit,
            **STATUS_PARAMS,
        },
    )
    return [dict(row) for row in await cursor.fetchall()]


def parse_duration(text: str, option: str) -> timedelta:
    """'45s', '30m', '2h', '7d' as a user gives it (InvalidInput naming `option`)."""
    try:
        return settings.parse_duration(text, option)
    except ValueError as error:
        raise InvalidInput(str(error)) from None


async def approve(
    conn: Connection,
    run_id: str,
    *,
    gate: str,
    rejected: bool = False,
    comment: str | None = None,
    approver: str | None = None,
    approver_ip: str | None = None,
    payload: dict[str, Any] | None = None,
    pause_id: int | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Insert an approval row; the database's trigger decides whether it is accepted.

    `pause_id` (the run's `waiting_for.pause_id` that the approver was shown)
    makes sure the approval answers that question and no later one. `check`, given
    the run, raises `InvalidInput` for a payload its gate would refuse.
    """
    if approver == SYSTEM_APPROVER:
        raise InvalidInput(
            f"approver: {SYSTEM_APPROVER!r} is the name of the system's answers at deadlines"
        )
    if check is not None:
        check(await get_run(conn, run_id))
    try:
        cursor = await conn.execute(
            QUERIES["insert_approval"],
            {
                "run_id": run_id,
                "gate": gate,
                "approver": approver,
                "approver_ip": approver_ip,
                "decision": "rejected" if rejected else "approved",
                "comment": storable(comment, "comment"),
                "payload": Jsonb(storable(payload, "payload")) if payload is not None else None,
                "pause_id": pause_id,
            },
        )
    except psycopg.errors.CheckViolation as error:
        raise Refused(str(error.diag.message_primary)) from None
    except psycopg.errors.UniqueViolation:
        # Only a transaction whose snapshot predates the other approval's commit
        # gets here (REPEATABLE READ and up); READ COMMITTED gets the trigger's words.
        raise Refused(
            f"approval refused: run {run_id} already has an approval for this pause at gate {gate}"
        ) from None
    row = await cursor.fetchone()
    assert row is not None
    return dict(row)


async def cancel_run(conn: Connection, run_id: str) -> dict[str, Any]:
    return await _transition(conn, "cancel_run", run_id, "it has already ended")


async def retry_run(conn: Connection, run_id: str) -> dict[str, Any]:
    return await _transition(conn, "retry_run", run_id, "only failed runs can be retried")


async def _transition(conn: Connection, query: str, run_id: str, why: str) -> dict[str, Any]:
    changed = await _change(conn, query, [run_id])
    if not changed:
        current = await get_run(conn, run_id)
        raise Refused(f"run {run_id} is {current['status']}: {why}")
    return changed[0]


# The most runs one bulk operation changes: more and it says so (run it again).
BULK_LIMIT = 10_000


@dataclass(frozen=True)
class Selection:
    """Which runs a bulk operation takes: by status, project and age (None: any);
    `live`: only runs that have not ended."""

    status: str | None = None
    project: str | None = None
    older_than: timedelta | None = None
    live: bool = False


def bulk_selection(
    operation: str,
    *,
    status: str | None,
    project: str | None,
    older_than: str | None,
    gates: list[str],
    prefix: str = "",
) -> Selection:
    """The runs `runs cancel` or `runs retry` (`operation`) is asked to take, checked:
    InvalidInput naming the field (`prefix` + its name) for an unknown or unfitting
    status, a bad project or age, or, to cancel, no filter at all."""
    if project is not None:
        validate_project(project)
    age = (
        parse_duration(older_than, f"{prefix}older-than" if prefix else "older_than")
        if (older_than is not None)
        else None
    )
    if status is not None:
        known_status(status, gates, f"{prefix}status")
    if operation == "retry":
        if status not in (None, Status.FAILED):
            raise InvalidInput(f"{prefix}status: only failed runs can be retried, not {status}")
        return Selection(Status.FAILED, project, age)
    if status in TERMINAL:
        raise InvalidInput(
            f"{prefix}status: {status} runs have ended; only live runs are cancelled"
        )
    if status is None and project is None and age is None:
        raise InvalidInput(
            f"{prefix}status: give a status, a project or an age: cancelling every live run "
            "takes at least one"
        )
    return Selection(status, project, age, live=True)


async def matching_runs(conn: Connection, selection: Selection) -> list[str]:
    """The ids of the runs `selection` takes, oldest first, at most `BULK_LIMIT`."""
    cursor = await conn.execute(
        QUERIES["matching_runs"],
        {
            "status": selection.status,
            "project": selection.project,
            "older_than": selection.older_than,
            "live": selection.live,
            "limit": BULK_LIMIT,
        },
    )
    return [row["run_id"] for row in await cursor.fetchall()]


async def cancel_runs(conn: Connection, run_ids: list[str]) -> list[dict[str, Any]]:
    """Cancel those of `run_ids` that have not ended; the runs cancelled."""
    return await _change(conn, "cancel_run", run_ids)


async def retry_runs(conn: Connection, run_ids: list[str]) -> list[dict[str, Any]]:
    """Queue again those of `run_ids` that failed; the runs queued."""
    return await _change(conn, "retry_run", run_ids)


async def _change(conn: Connection, query: str, run_ids: list[str]) -> list[dict[str, Any]]:
    cursor = await conn.execute(QUERIES[query], {"run_ids": run_ids, **STATUS_PARAMS})
    return [dict(row) for row in await cursor.fetchall()]
