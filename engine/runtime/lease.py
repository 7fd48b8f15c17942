"""Fencing: a write on behalf of a run commits only while its worker still holds the run."""

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import LiteralString

import psycopg
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow

from engine.db.connections import Pool
from engine.db.queries import QUERIES

# Raised by the orchestrator_fence() SQL function (migration 0001).
LEASE_LOST_SQLSTATE = "OR001"


class LeaseLost(Exception):
    """This worker no longer holds the run: another claimed it, or it was cancelled."""


@dataclass(frozen=True)
class Lease:
    run_id: str
    epoch: int
    ttl: timedelta

    @property
    def params(self) -> dict[str, object]:
        """The fence's parameters: `%(run_id)s`, `%(epoch)s`, `%(lease_ttl)s`."""
        return {"run_id": self.run_id, "epoch": self.epoch, "lease_ttl": self.ttl}

    async def execute(self, pool: Pool, query: LiteralString, params: dict[str, object]) -> None:
        """Run one statement that fences itself (it calls `orchestrator_fence()` first).

        A single statement commits or fails as a whole: one round trip, no
        BEGIN or COMMIT of its own.
        """
        async with pool.connection() as conn:
            with lease_lost_on_fence():
                await conn.execute(query, {**self.params, **params})

    @asynccontextmanager
    async def transaction(self, pool: Pool) -> AsyncIterator[AsyncConnection[DictRow]]:
        """A pipelined transaction that starts by renewing this lease, or fails with LeaseLost."""
        async with pipelined_transaction(pool) as conn:
            await conn.execute(QUERIES["fence"], self.params)
            yield conn


@asynccontextmanager
async def pipelined_transaction(pool: Pool) -> AsyncIterator[AsyncConnection[DictRow]]:
    """A transaction sent as one round trip; a fenced statement in it that finds the
    lease lost fails it with LeaseLost.

    BEGIN, the caller's statements and COMMIT (ROLLBACK if the block raises)
    are queued and sent with a single sync at the end. (`conn.transaction()`
    inside a pipeline syncs after BEGIN and at each nested exit: four round
    trips.) A failed statement makes the server skip the rest up to the sync,
    COMMIT included, so nothing commits.
    """
    async with pool.connection() as conn:
        try:
            with lease_lost_on_fence():
                async with conn.pipeline():
                    await conn.execute("BEGIN")
                    try:
                        yield conn
                    except psycopg.Error:
                        raise  # the server skips everything up to the sync already
                    except BaseException:
                        await conn.execute("ROLLBACK")
                        raise
                    await conn.execute("COMMIT")
        finally:
            # After a failed statement the session waits in the aborted transaction.
            if conn.info.transaction_status == TransactionStatus.INERROR:
                with contextlib.suppress(psycopg.Error):
                    await conn.rollback()


@contextmanager
def lease_lost_on_fence() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as error:
        if error.sqlstate == LEASE_LOST_SQLSTATE:
            raise LeaseLost(str(error.diag.message_primary)) from None
        raise
