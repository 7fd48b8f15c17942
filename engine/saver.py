"""A LangGraph checkpoint saver for one run, fenced by the run's lease.

Every checkpoint write runs in one transaction that (1) checks and renews the
worker's lease at its epoch, (2) on the first write after a resume marks the
resume consumed (the run waits for nothing; its approval is spent), (3) writes
LangGraph's rows, and (4) for a checkpoint, mirrors the state into
`orchestration_checkpoints`. A worker that lost the run
cannot write anything: the transaction fails with `LeaseLost`.

One saver per running run: `AsyncPostgresSaver` serialises its calls with a
lock, so a saver shared by concurrent runs would make them take turns.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from engine.database import Pool
from engine.lease import Lease
from engine.sql import QUERIES

# The checkpoint being written by the current task, for `_cursor` to mirror.
_checkpoint_in_flight: ContextVar[tuple[Checkpoint, CheckpointMetadata] | None] = ContextVar(
    "checkpoint_in_flight", default=None
)


def state_view(checkpoint: Checkpoint) -> dict[str, Any]:
    """The user-visible channels of a checkpoint, as JSON-compatible values."""
    values = {
        key: value
        for key, value in checkpoint["channel_values"].items()
        if not key.startswith(("__", "branch:"))
    }
    return {"values": json.loads(json.dumps(values, default=_jsonable))}


def _jsonable(value: object) -> object:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return repr(value)


class FencedSaver(AsyncPostgresSaver):
    def __init__(
        self, pool: Pool, lease: Lease, *, resuming: bool, approval_id: int | None
    ) -> None:
        super().__init__(pool)
        self._pool = pool
        self._lease = lease
        self._resuming = resuming
        self._approval_id = approval_id
        self.wrote = False

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        token = _checkpoint_in_flight.set((checkpoint, metadata))
        try:
            return await super().aput(config, checkpoint, metadata, new_versions)
        finally:
            _checkpoint_in_flight.reset(token)

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        if not pipeline:  # reads
            async with super()._cursor() as cur:
                yield cur
            return
        async with (
            self.lock,
            self._lease.transaction(self._pool) as conn,
            conn.cursor(binary=True, row_factory=dict_row) as cur,
        ):
            if self._resuming:
                await cur.execute(
                    QUERIES["consume_resume"],
                    {"run_id": self._lease.run_id, "approval_id": self._approval_id},
                )
            yield cur
            if (in_flight := _checkpoint_in_flight.get()) is not None:
                checkpoint, metadata = in_flight
                await cur.execute(
                    QUERIES["upsert_checkpoint_view"],
                    {
                        "run_id": self._lease.run_id,
                        "state": Jsonb(state_view(checkpoint)),
                        "checkpoint_id": checkpoint["id"],
                        "step": metadata.get("step"),
                    },
                )
        self._resuming = False
        self.wrote = True
