"""Advisory locks that serialise work across replicas, through a transaction pooler too."""

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow
from tenacity import AsyncRetrying, retry_if_result, wait_exponential

from engine.db.connections import connect
from engine.settings import Settings

# Seconds between attempts while another holds the lock.
RETRY_FIRST, RETRY_MAX = 0.05, 1.0


@asynccontextmanager
async def advisory_lock(
    url: str, settings: Settings, key: int, *, wait: bool
) -> AsyncIterator[bool]:
    """Hold advisory lock `key` for the block; yield whether it is held (with
    `wait=False`, False at once when another holds it).

    The lock is a transaction's, held by keeping that transaction open on a
    connection of its own while the block works on others. A session's lock
    would not do behind PgBouncer in transaction mode: it stays with whichever
    server connection took it, which then serves other clients, and the unlock
    may reach another. The block's own work may need autocommit (LangGraph's
    setup creates indexes CONCURRENTLY), and CREATE INDEX CONCURRENTLY waits
    for every transaction that holds a snapshot: so the holder's transaction
    holds none between its statements, and a waiter tries again, each attempt
    a transaction that ends at once, instead of waiting inside a statement
    (its snapshot would wait for the holder's index, which waits for it). A
    process that dies ends its transaction, and the lock with it.
    """
    # The key inlined, not a parameter: a statement with parameters goes by the
    # extended protocol, whose unnamed portal (and with it a snapshot) stays open
    # until the next statement.
    attempt = sql.SQL("SELECT pg_try_advisory_xact_lock({}) AS held").format(key)
    async with await connect(url, settings) as guard:
        retrying = AsyncRetrying(
            retry=retry_if_result(lambda held: wait and not held),
            wait=wait_exponential(multiplier=RETRY_FIRST, max=RETRY_MAX),
        )
        held: bool = await retrying(_take, guard, attempt)
        try:
            yield held
        finally:
            if held:
                with contextlib.suppress(psycopg.Error):  # closing ends it all the same
                    await guard.execute("ROLLBACK")


async def _take(guard: AsyncConnection[DictRow], attempt: sql.Composed) -> bool:
    """One attempt in a transaction of its own, left open if it took the lock."""
    await guard.execute("BEGIN")
    # A server's idle_in_transaction_session_timeout must not end it mid-block.
    await guard.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', true)")
    row = await (await guard.execute(attempt)).fetchone()
    if row is not None and row["held"]:
        return True
    await guard.execute("ROLLBACK")
    return False
