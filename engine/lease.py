"""Fencing: a write on behalf of a run commits only while its worker still holds the run."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.database import Pool
from engine.sql import QUERIES

# Raised by the orchestrator_fence() SQL function (migration 0001).
LEASE_LOST_SQLSTATE = "OR001"


class LeaseLost(Exception):
    """This worker no longer holds the run: another claimed it, or it was cancelled."""


@dataclass(frozen=True)
class Lease:
    run_id: str
    epoch: int
    ttl: timedelta

    @asynccontextmanager
    async def transaction(self, pool: Pool) -> AsyncIterator[AsyncConnection[DictRow]]:
        """A pipelined transaction that starts by renewing this lease, or fails with LeaseLost.

        Pipelined, the whole transaction costs about one round trip; the fence's
        failure then surfaces at the first sync, and aborts everything after it.
        """
        try:
            async with pool.connection() as conn, conn.pipeline(), conn.transaction():
                await conn.execute(
                    QUERIES["fence"],
                    {"run_id": self.run_id, "epoch": self.epoch, "lease_ttl": self.ttl},
                )
                yield conn
        except psycopg.Error as error:
            if error.sqlstate == LEASE_LOST_SQLSTATE:
                raise LeaseLost(str(error.diag.message_primary)) from None
            raise
