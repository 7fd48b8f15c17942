"""A LangGraph checkpoint saver for one run, fenced by the run's lease.

Every write is one statement calling a function of migration 0006 that
(1) checks and renews the worker's lease at its epoch, (2) on the first write
after a resume marks the resume consumed (the run waits for nothing; its
approval is spent), (3) writes LangGraph's rows, and (4) for a checkpoint,
mirrors the state into `orchestration_checkpoints`. A worker that lost the run
cannot write anything: the statement fails with `LeaseLost`. Reads are
LangGraph's own, but decode in place (see `_load_checkpoint_tuple`).

The rows are the ones `AsyncPostgresSaver.aput` and `aput_writes` write, in the
same tables and encodings, so LangGraph reads them back unchanged; what differs
is the round trips. LangGraph's saver sends a pipelined transaction of one
statement per row, and serialises in a worker thread; here the values are
serialised in place (a checkpoint's blobs are small next to a thread hop) and
sent in one statement: the rows' fields as one JSON document, their blobs as
arrays.

One saver per running run: writes take turns on its lock, so they commit in
the order LangGraph makes them.
"""

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, LiteralString, cast

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg.types.json import Jsonb

from engine.database import Pool
from engine.lease import Lease, LeaseLost, pipelined_transaction
from engine.mirror import mirror_json
from engine.retry import Unloadable
from engine.sql import QUERIES


def state_view(checkpoint: Checkpoint) -> dict[str, Any]:
    """The user-visible channels of a checkpoint, as JSON-compatible values."""
    view: dict[str, Any] = json.loads(state_json(checkpoint))
    return view


def state_json(checkpoint: Checkpoint) -> str:
    """`state_view(checkpoint)` as JSON text (what `orchestration_checkpoints` keeps):
    whatever the state holds, JSON that JSONB accepts (`engine.mirror`)."""
    values = {
        key: value
        for key, value in checkpoint["channel_values"].items()
        if not key.startswith(("__", "branch:"))
    }
    return mirror_json({"values": values})


@dataclass(frozen=True)
class _Write:
    """One row of `checkpoint_writes`, waiting to be sent."""

    ns: str
    checkpoint_id: str
    task_id: str
    task_path: str
    idx: int
    channel: str
    type: str
    blob: bytes | None
    replace: bool  # a write to a special channel replaces the row at its index

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.ns, self.checkpoint_id, self.task_id, self.idx

    @property
    def fields(self) -> list[object]:
        """All but the blob, in the order `orchestrator_put()` reads them."""
        return [
            self.ns,
            self.checkpoint_id,
            self.task_id,
            self.task_path,
            self.idx,
            self.channel,
            self.type,
            self.replace,
        ]


@dataclass(frozen=True)
class _Checkpoint:
    """A checkpoint waiting to be sent: its row, its new blobs and its readable state."""

    ns: str
    id: str
    parent_id: str | None
    checkpoint: Checkpoint  # as stored: primitives inline, the rest in `blobs`
    metadata: dict[str, Any]
    blobs: list[tuple[str, str, str, str, str, bytes | None]]  # LangGraph's blob rows
    state: str
    step: int | None


class FencedSaver(AsyncPostgresSaver):
    # How long a task's writes wait for the checkpoint that ends their step.
    LINGER = 0.01

    def __init__(
        self,
        pool: Pool,
        lease: Lease,
        *,
        resuming: bool,
        approval_id: int | None,
        latest: dict[str, Any] | None,
    ) -> None:
        super().__init__(pool)
        self._pool = pool
        self.lease = lease
        self._resuming = resuming
        self._approval_id = approval_id
        # The run's latest checkpoint row (None: it has none), read by the claim
        # and not yet asked for.
        self._latest = latest
        self._unread = True
        self._fresh = latest is None and not resuming  # a run not begun yet
        self._writes: list[_Write] = []
        self._checkpoints: list[_Checkpoint] = []
        self._linger: asyncio.TimerHandle | None = None
        self._background: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None  # of a background send
        self.wrote = False

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The run's latest checkpoint as the claim read it, the first time it is
        asked for (the lease keeps anyone else from writing a newer one); any
        other read, or a later one, from the database. State that cannot be
        decoded raises `Unloadable`: every attempt would read the same bytes."""
        try:
            return await self._read_tuple(config)
        except psycopg.Error:
            raise  # the database, not the run (an outage is retried)
        except Exception as error:
            raise Unloadable(error) from error

    async def _read_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        asks_latest = (
            config["configurable"].get("checkpoint_ns", "") == ""
            and get_checkpoint_id(config) is None
        )
        if asks_latest and self._unread:
            self._unread = False
            if self._latest is None:
                return None
            if self._latest["checkpoint"]["v"] >= 4:  # older ones need LangGraph's migration
                return await self._load_checkpoint_tuple(self._latest)
        return await super().aget_tuple(config)

    async def _load_checkpoint_tuple(self, value: dict[str, Any]) -> CheckpointTuple:
        """LangGraph's own, but decoding the pending writes in place rather than
        in a worker thread: a step's writes are a few small blobs, and the hop
        to the thread and back cost more than decoding them (on a resume, it is
        on the way from the approval to the next node)."""
        at = {"thread_id": value["thread_id"], "checkpoint_ns": value["checkpoint_ns"]}
        checkpoint, parent_id = value["checkpoint"], value["parent_checkpoint_id"]
        return CheckpointTuple(
            {"configurable": {**at, "checkpoint_id": value["checkpoint_id"]}},
            cast(
                Checkpoint,
                {
                    **checkpoint,
                    "channel_values": {
                        **(checkpoint.get("channel_values") or {}),
                        **self._load_blobs(value["channel_values"]),
                    },
                },
            ),
            value["metadata"],
            {"configurable": {**at, "checkpoint_id": parent_id}} if parent_id else None,
            self._load_writes(value["pending_writes"]),
        )

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id, checkpoint_ns = configurable["thread_id"], configurable["checkpoint_ns"]
        # As LangGraph's saver stores them: primitives inline in the checkpoint,
        # everything else (and delta snapshots) as versioned blobs.
        stored = checkpoint.copy()
        stored["channel_values"] = inline = dict(checkpoint["channel_values"])
        blob_values = {}
        for channel, value in checkpoint["channel_values"].items():
            if isinstance(value, _DeltaSnapshot):
                blob_values[channel] = inline.pop(channel)
                inline[channel] = True
            elif not (value is None or isinstance(value, (str, int, float, bool))):
                blob_values[channel] = inline.pop(channel)
        blobs = self._dump_blobs(
            thread_id,
            checkpoint_ns,
            blob_values,
            {k: v for k, v in new_versions.items() if k in blob_values},
        )
        self._checkpoints.append(
            _Checkpoint(
                ns=checkpoint_ns,
                id=checkpoint["id"],
                parent_id=configurable.get("checkpoint_id"),
                checkpoint=stored,
                metadata=dict(get_serializable_checkpoint_metadata(config, metadata)),
                blobs=blobs,
                state=state_json(checkpoint),
                step=metadata.get("step"),
            )
        )
        # A fresh run's input checkpoint holds nothing `runs.payload` does not:
        # it goes with the first step's. Were the worker to die first, the run
        # would start over from its payload, as it would have anyway.
        if not (self._fresh and metadata.get("source") == "input"):
            await self._send()
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Queue a task's writes to go with the checkpoint that ends their step.

        LangGraph does not wait for a task's writes (with `durability="sync"`
        it waits for each checkpoint), and the checkpoint normally follows
        within a millisecond: sent in its statement, the writes cost no round
        trip of their own. Writes still waiting after `LINGER` (a sibling
        task still running) are sent on their own; `settle()` sends the ones
        no checkpoint follows (an interrupt's) with the run's new status, and
        `discard()` drops those of a failed invocation.
        """
        configurable = config["configurable"]
        # Writes to LangGraph's special channels replace earlier ones at their
        # index; others never do (LangGraph's upsert and insert statements).
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        for row in self._dump_writes(
            configurable["thread_id"],
            configurable["checkpoint_ns"],
            configurable["checkpoint_id"],
            task_id,
            task_path,
            writes,
        ):
            self._writes.append(_Write(*row[1:], replace=replace))
        if self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.LINGER, self._send_soon)

    async def settle(self, query: LiteralString, params: dict[str, object]) -> int:
        """Write the run's status change (`query`, guarded by its own epoch
        condition) and, in the same transaction, the writes still waiting, such
        as the interrupt's that paused the run: one round trip. The rows `query`
        changed."""
        async with self.lock:
            writes, checkpoints = self._take()
            if not (writes or checkpoints):
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(query, params)
                return cursor.rowcount
            # The put fences itself: the transaction needs no fence of its own.
            async with pipelined_transaction(self._pool) as conn:
                put = self._put_params(writes, checkpoints, flush=True)  # a status change
                await conn.execute(QUERIES["put"], put)
                cursor = await conn.execute(query, params)
            self._sent()
            return cursor.rowcount

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete the run's LangGraph rows, fenced: a worker that lost the run
        deletes nothing (`LeaseLost`). This saver holds one run: no other thread."""
        if str(thread_id) != self.lease.run_id:
            raise ValueError(f"this saver holds run {self.lease.run_id}, not {thread_id!r}")
        async with self.lock, self.lease.transaction(self._pool) as conn:
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
                await conn.execute(QUERIES[f"delete_{table}"], {"run_id": self.lease.run_id})
        self.discard()

    async def keep(self) -> None:
        """Send what waits after an invocation failed: LangGraph handed the saver
        the writes of the tasks that finished (and the failed one's error), as
        its own saver would have stored them, so the retry runs only what
        failed. Unsent (the database is out), they are dropped: those tasks run
        again, as after a worker crash. Losing the run (`LeaseLost`) is raised."""
        try:
            await self._send()
        except LeaseLost:
            self.discard()
            raise
        except Exception:
            self.discard()

    def discard(self) -> None:
        """Forget writes not yet sent: those of an invocation cancelled, which
        the database never saw (the retry starts from what it holds)."""
        self._cancel_linger()
        self._writes.clear()
        self._checkpoints.clear()
        self._failure = None

    def _send_soon(self) -> None:
        self._linger = None
        self._background = asyncio.get_running_loop().create_task(self._send_in_background())

    async def _send_in_background(self) -> None:
        try:
            await self._send()
        except Exception as error:  # raised to LangGraph by the next write
            self._failure = error

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _take(self) -> tuple[list[_Write], list[_Checkpoint]]:
        """What waits to be sent, one write per key; raise what a background send raised."""
        if (failure := self._failure) is not None:
            self._failure = None
            raise failure
        self._cancel_linger()
        writes, self._writes = _one_row_per_key(self._writes), []
        checkpoints, self._checkpoints = self._checkpoints, []
        return writes, checkpoints

    async def _send(self) -> None:
        async with self.lock:
            writes, checkpoints = self._take()
            if writes or checkpoints:
                # A task's writes alone need not wait for the WAL flush: the
                # checkpoint that follows them commits synchronously, and were
                # the server to crash first, the task would run again, as after
                # a worker crash mid-task. A checkpoint must wait for it.
                put = self._put_params(writes, checkpoints, flush=bool(checkpoints))
                await self.lease.execute(self._pool, QUERIES["put"], put)
                self._sent()

    def _put_params(
        self, writes: list[_Write], checkpoints: list[_Checkpoint], *, flush: bool
    ) -> dict[str, object]:
        """`put`'s parameters; `flush`: its commit waits for the WAL flush."""
        blobs = [blob for c in checkpoints for blob in c.blobs]
        newest = checkpoints[-1] if checkpoints else None
        return {
            **self.lease.params,
            "consume": self._resuming,
            "approval_id": self._approval_id,
            "thread_id": self.lease.run_id,
            # The rows' fields in one document, their blobs beside it (migration 0006).
            "rows": Jsonb(
                {
                    "writes": [w.fields for w in writes],
                    "checkpoints": [
                        [c.ns, c.id, c.parent_id, c.checkpoint, c.metadata] for c in checkpoints
                    ],
                    "blobs": [list(blob[1:5]) for blob in blobs],
                }
            ),
            "write_blobs": [w.blob for w in writes],
            "blob_values": [blob[5] for blob in blobs],
            "state": newest.state if newest else None,
            "step": newest.step if newest else None,
            "flush": flush,
        }

    def _sent(self) -> None:
        self._resuming = False
        self.wrote = True


def _one_row_per_key(writes: list[_Write]) -> list[_Write]:
    """One statement may not write a row twice: of rows with the same key, the
    last replacing one wins, else the first (what the inserts in turn would leave)."""
    rows: dict[tuple[str, str, str, int], _Write] = {}
    for write in writes:
        if write.replace or write.key not in rows:
            rows[write.key] = write
    return list(rows.values())
