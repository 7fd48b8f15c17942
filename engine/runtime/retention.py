"""Retention: finished runs shed their LangGraph history, and may be removed altogether;
webhook deliveries no live run needs go once they are as old.

`keep_latest` leaves each finished run its newest checkpoint, so `runs show`,
the console and the seed's queries still show where it ended.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.connections import connect
from engine.db.locks import advisory_lock
from engine.db.queries import QUERIES
from engine.settings import Settings

log = logging.getLogger(__name__)

BATCH = 500
# Replicas running the schedule take turns: one prunes, the others skip the round.
LOCK_KEY = 0x6F72636870727E


@dataclass(frozen=True)
class Pruned:
    runs: int  # finished runs whose history was pruned
    deleted: int  # runs removed altogether
    events: int = 0  # webhook deliveries removed (a stranger's, or of finished runs)


async def prune(
    url: str, settings: Settings, older_than: timedelta, *, delete_runs: bool = False
) -> Pruned | None:
    """Prune runs that finished more than `older_than` ago; None if another replica is at it."""
    async with advisory_lock(url, settings, LOCK_KEY, wait=False) as held:
        if not held:
            return None
        async with await connect(url, settings) as conn:
            return await _prune(conn, datetime.now(UTC) - older_than, delete_runs)


async def _prune(conn: AsyncConnection[DictRow], before: datetime, delete_runs: bool) -> Pruned:
    saver = AsyncPostgresSaver(conn)
    pruned = deleted = 0
    after = ""
    while True:
        params = {"before": before, "after": after, "limit": BATCH}
        rows = await (await conn.execute(QUERIES["finished_before"], params)).fetchall()
        run_ids = [row["run_id"] for row in rows]
        if not run_ids:
            return Pruned(pruned, deleted, await _prune_events(conn, before))
        after = run_ids[-1]
        if delete_runs:
            await saver.aprune(run_ids, strategy="delete")
            await conn.execute(QUERIES["delete_runs"], {"run_ids": run_ids})
            deleted += len(run_ids)
        else:
            await saver.aprune(run_ids, strategy="keep_latest")
            pruned += len(run_ids)
        log.info(
            "pruned %d runs", len(run_ids), extra={"action": "prune_batch", "deleted": delete_runs}
        )


async def _prune_events(conn: AsyncConnection[DictRow], before: datetime) -> int:
    """Deliveries received before `before` that no live run needs; after the runs, so that
    the events of runs deleted just now (left unlinked) go in the same prune."""
    removed = 0
    while True:
        params = {"before": before, "limit": BATCH}
        batch = (await conn.execute(QUERIES["prune_webhook_events"], params)).rowcount
        removed += batch
        if batch < BATCH:
            return removed
