"""Schedules as rows (create, list, pause, resume, delete, backfill) and the firing
pass every daemon runs: exactly one run per (schedule, fire time), whoever fires it.

A pass locks the schedules due with `FOR UPDATE SKIP LOCKED` (one pass per schedule
at a time), starts their fire times by their overlap policy and advances
`next_fire_at`, all in one transaction; the unique index `runs_schedule_fire` makes a
second insert of the same fire time (a backfill, a pass on a stale read) a no-op.
"""

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from engine.db.queries import QUERIES
from engine.db.status import TERMINAL, Status
from engine.runtime.schedule_times import Timing, Unschedulable, due
from engine.runtime.store import (
    Connection,
    InvalidInput,
    new_id,
    new_run_id,
    storable,
    validate_project,
)

log = logging.getLogger(__name__)

SCHEDULES_PER_PASS = 50
FIRES_PER_PASS = 100  # per schedule: a longer catch-up goes on in the next pass, at once
BACKFILL_LIMIT = 1000
UPCOMING = 3  # fire times shown with each schedule


class ScheduleNotFound(LookupError):
    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id} not found")


def timing_of(schedule: dict[str, Any]) -> Timing:
    """Its timing; `InvalidInput` naming the schedule when its row (written by hand)
    holds a cron, timezone or overlap no schedule is created with."""
    try:
        return Timing.checked(
            schedule["cron"], schedule["timezone"], schedule["overlap"], schedule["catchup"]
        )
    except InvalidInput as error:
        raise InvalidInput(
            f"schedule {schedule['schedule_id']}: its stored {error} (fix the row or delete "
            "the schedule)"
        ) from None


def upcoming(schedule: dict[str, Any], count: int = UPCOMING) -> list[datetime]:
    """Its next fire times (none while paused: resuming chooses them anew)."""
    if schedule["paused"]:
        return []
    first: datetime = schedule["next_fire_at"]
    return [first, *itertools.islice(timing_of(schedule).fire_times(first), count - 1)]


def view(schedule: dict[str, Any]) -> dict[str, Any]:
    """A schedule as the CLI's JSON and the API show it: with its next fire times, or
    (a row no schedule could be created with) none and the problem."""
    try:
        timing_of(schedule)  # a paused row too: it may be resumed
        return {**schedule, "upcoming": upcoming(schedule)}
    except InvalidInput as error:
        return {**schedule, "upcoming": [], "problem": str(error)}


async def _now(conn: Connection) -> datetime:
    row = await (await conn.execute(QUERIES["clock"])).fetchone()
    assert row is not None
    now: datetime = row["now"]
    return now


async def create_schedule(
    conn: Connection, *, timing: Timing, project: str, workflow: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """A schedule whose first fire time is the first one after now."""
    validate_project(project)
    next_fire_at = timing.next_after(await _now(conn))
    if next_fire_at is None:
        raise InvalidInput(f"cron: {timing.cron!r} never fires again")
    cursor = await conn.execute(
        QUERIES["insert_schedule"],
        {
            "schedule_id": new_id("sch_"),
            "cron": timing.cron,
            "timezone": timing.timezone,
            "project": project,
            "workflow": workflow,
            "payload": Jsonb(storable(payload, "payload")),
            "overlap": timing.overlap,
            "catchup": timing.catchup,
            "next_fire_at": next_fire_at,
        },
    )
    row = await cursor.fetchone()
    assert row is not None
    return dict(row)


async def list_schedules(conn: Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in await (await conn.execute(QUERIES["list_schedules"])).fetchall()]


async def get_schedule(conn: Connection, schedule_id: str) -> dict[str, Any]:
    return await _one(conn, "get_schedule", {"schedule_id": schedule_id}, schedule_id)


async def pause_schedule(conn: Connection, schedule_id: str) -> dict[str, Any]:
    return await _one(conn, "pause_schedule", {"schedule_id": schedule_id}, schedule_id)


async def resume_schedule(conn: Connection, schedule_id: str) -> dict[str, Any]:
    """Fire again from the first fire time after now; none missed while paused is made up."""
    schedule = await get_schedule(conn, schedule_id)
    next_fire_at = timing_of(schedule).next_after(await _now(conn))
    if next_fire_at is None:
        raise InvalidInput(f"cron: {schedule['cron']!r} never fires again")
    params = {"schedule_id": schedule_id, "next_fire_at": next_fire_at}
    return await _one(conn, "resume_schedule", params, schedule_id)


async def delete_schedule(conn: Connection, schedule_id: str) -> None:
    await _one(conn, "delete_schedule", {"schedule_id": schedule_id}, schedule_id)


async def _one(
    conn: Connection, query: str, params: dict[str, Any], schedule_id: str
) -> dict[str, Any]:
    row = await (await conn.execute(QUERIES[query], params)).fetchone()
    if row is None:
        raise ScheduleNotFound(schedule_id)
    return dict(row)


@dataclass(frozen=True)
class Backfill:
    fire_times: list[datetime]  # every fire time in the range
    created: list[str]  # the runs started now: one per fire time that had none


async def backfill(
    conn: Connection, schedule_id: str, start: datetime, end: datetime, *, prefix: str = ""
) -> Backfill:
    """Start a run for each fire time in [start, end] that has none yet, whatever the
    overlap policy and even while paused: an operator asked for exactly these."""
    if start.tzinfo is None or end.tzinfo is None:
        field = "from" if start.tzinfo is None else "to"
        raise InvalidInput(f"{prefix}{field}: give the time with its UTC offset (or Z)")
    if start > end:
        raise InvalidInput(f"{prefix}from: {start.isoformat()} is after {end.isoformat()}")
    schedule = await get_schedule(conn, schedule_id)
    times = timing_of(schedule).between(start, end, BACKFILL_LIMIT + 1)
    if len(times) > BACKFILL_LIMIT:
        raise InvalidInput(
            f"{prefix}to: the range holds more than {BACKFILL_LIMIT} fire times; backfill "
            "it in parts"
        )
    created = await _insert_runs(conn, schedule, times)
    log.info(
        "backfilled %d of %d fire times",
        len(created),
        len(times),
        extra={"action": "schedule_backfilled", "schedule_id": schedule_id},
    )
    return Backfill(times, created)


async def _insert_runs(
    conn: Connection, schedule: dict[str, Any], fire_times: Sequence[datetime]
) -> list[str]:
    if not fire_times:
        return []
    cursor = await conn.execute(
        QUERIES["insert_scheduled_runs"],
        {
            "project": schedule["project"],
            "status": Status.QUEUED,
            "payload": Jsonb(schedule["payload"]),
            "workflow": schedule["workflow"],
            "schedule_id": schedule["schedule_id"],
            "run_ids": [new_run_id() for _ in fire_times],
            "fire_times": list(fire_times),
        },
    )
    return [row["run_id"] for row in await cursor.fetchall()]


@dataclass(frozen=True)
class Fired:
    """What a firing pass did, and when the next one is due."""

    started: int
    skipped: int
    now: datetime
    next_due: datetime | None  # None: no schedule is running


async def next_due(conn: Connection) -> tuple[datetime, datetime | None]:
    """The database's now, and when a firing pass is next due (None: never, as things are)."""
    row = await (await conn.execute(QUERIES["schedules_due_at"])).fetchone()
    assert row is not None
    return row["now"], row["now"] if row["buffered"] else row["next_fire_at"]


async def fire_due(conn: Connection, now: datetime | None = None) -> Fired:
    """Start what the schedules due at `now` (default: the database's now) owe."""
    started = skipped = 0
    async with conn.transaction():
        cursor = await conn.execute(
            QUERIES["lock_due_schedules"],
            {"now": now, "terminal": list(TERMINAL), "limit": SCHEDULES_PER_PASS},
        )
        for schedule in await cursor.fetchall():
            begun, held = await _fire(conn, dict(schedule))
            started += begun
            skipped += held
    clock, due_at = await next_due(conn)
    return Fired(started, skipped, clock, due_at)


async def _fire(conn: Connection, schedule: dict[str, Any]) -> tuple[int, int]:
    """One locked schedule's pass: (runs started, fire times skipped)."""
    context = {"schedule_id": schedule["schedule_id"]}
    try:
        timing = timing_of(schedule)
        owed = due(timing, schedule["next_fire_at"], schedule["now"], FIRES_PER_PASS)
    except (Unschedulable, InvalidInput) as error:  # one broken row must not stop the others
        log.error(
            "schedule paused: its times cannot be computed: %s",
            error,
            extra={"action": "schedule_broken", **context},
        )
        await conn.execute(QUERIES["pause_schedule"], context)
        return 0, 0
    live: int = schedule["live"]
    held: datetime | None = schedule["buffered_fire_at"]
    start: list[datetime] = []
    if held is not None and live == 0:
        start, held, live = [held], None, 1
    skipped: list[datetime] = []
    for at in owed.start:
        if timing.overlap == "allow" or live == 0:
            start.append(at)
            live += 1
        elif timing.overlap == "buffer_one" and held is None:
            held = at
        else:
            skipped.append(at)
    created = await _insert_runs(conn, schedule, start)
    await conn.execute(
        QUERIES["advance_schedule"],
        {
            "schedule_id": schedule["schedule_id"],
            "next_fire_at": owed.next_fire_at,
            "buffered_fire_at": held,
        },
    )
    if owed.next_fire_at is None:
        log.info("schedule fires no more: paused", extra={"action": "schedule_ended", **context})
    if created:
        log.info(
            "schedule started %d runs",
            len(created),
            extra={"action": "schedule_fired", "runs": created, **context},
        )
    if skipped:
        log.info(
            "schedule skipped %d fire times: its last run has not ended (overlap %s)",
            len(skipped),
            timing.overlap,
            extra={"action": "schedule_skipped", "fire_times": list(map(str, skipped)), **context},
        )
    if owed.missed_since is not None:
        log.warning(
            "schedule missed its fire times from %s to %s: older than its catch-up window (%s)",
            owed.missed_since,
            schedule["now"] - timing.catchup,
            timing.catchup,
            extra={"action": "schedule_missed", **context},
        )
    return len(created), len(skipped)


def wait_for(now: datetime, due_at: datetime | None, ceiling: float) -> float:
    """Seconds until the next firing pass: at the next fire time, at most `ceiling`."""
    if due_at is None:
        return ceiling
    return min(ceiling, max(0.0, (due_at - now) / timedelta(seconds=1)))
