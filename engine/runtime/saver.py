"""LangGraph's checkpointer interface over a run's session: `FencedSaver`.

One saver per claimed run. It serialises what LangGraph hands it into the
rows `AsyncPostgresSaver.aput` and `aput_writes` would write, in the same
tables and encodings, so LangGraph reads them back unchanged, and hands them
to the run's session, whose write buffer sends them fenced by the lease
(`engine.runtime.session`). What differs from LangGraph's saver is the round trips:
LangGraph's sends a pipelined transaction of one statement per row and
serialises in a worker thread; here values are serialised in place (a
checkpoint's blobs are small next to a thread hop) and a step's rows go in one
statement.

It keeps LangGraph's contract where the round trips could bend it: a read
first sends the writes still waiting, so it sees them; only the run's own
namespace (`checkpoint_ns == ""`) is mirrored, so a subgraph's checkpoint
never replaces the run's readable state; and every method that writes or
deletes is fenced by the lease (`aput`, `aput_writes`, `adelete_thread`,
`aprune`) or refused with `NotImplementedError` (`adelete_for_runs` and
`acopy_thread`, which touch threads no lease holds; `setup`, the engine's
migrations own the schema; the synchronous methods: the engine runs graphs
with `ainvoke`). The saver holds one run: naming another thread is a
`ValueError`, for reads too (nothing in the engine reads another run through
a run's saver; one that did would be a bug).
"""

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, NoReturn, cast

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.postgres.base import PRUNE_STRATEGIES, _keep_latest
from langgraph.checkpoint.serde.types import _DeltaSnapshot

from engine.db.queries import QUERIES
from engine.runtime.lease import lease_lost_on_fence
from engine.runtime.mirror import mirror_json
from engine.runtime.retry import Unloadable
from engine.runtime.session import CheckpointRow, RunSession, WriteRow


def state_view(checkpoint: Checkpoint) -> dict[str, Any]:
    """The user-visible channels of a checkpoint, as JSON-compatible values."""
    view: dict[str, Any] = json.loads(state_json(checkpoint))
    return view


def state_json(checkpoint: Checkpoint) -> str:
    """`state_view(checkpoint)` as JSON text (what `orchestration_checkpoints` keeps):
    whatever the state holds, JSON that JSONB accepts (`engine.runtime.mirror`)."""
    values = {
        key: value
        for key, value in checkpoint["channel_values"].items()
        if not key.startswith(("__", "branch:"))
    }
    return mirror_json({"values": values})


class FencedSaver(AsyncPostgresSaver):
    def __init__(self, session: RunSession) -> None:
        super().__init__(session.pool)
        self.session = session
        self._writes = session.writes
        self._unread = True  # the claim's read of the latest checkpoint is not used yet

    # Reads: they see what waits to be sent.

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The run's latest checkpoint as the claim read it, the first time it is
        asked for (the lease keeps anyone else from writing a newer one); any
        other read, or a later one, from the database. State that cannot be
        decoded raises `Unloadable`: every attempt would read the same bytes."""
        self._own(config["configurable"]["thread_id"])
        await self._writes.send()
        try:
            return await self._read_tuple(config)
        except psycopg.Error:
            raise  # the database, not the run (an outage is retried)
        except Exception as error:
            raise Unloadable(error) from error

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        self._own(config["configurable"]["thread_id"] if config else None)
        await self._writes.send()
        async for found in super().alist(config, filter=filter, before=before, limit=limit):
            yield found

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        self._own(config["configurable"]["thread_id"])
        await self._writes.send()
        return await super().aget_delta_channel_history(config=config, channels=channels)

    async def _read_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        asks_latest = (
            config["configurable"].get("checkpoint_ns", "") == ""
            and get_checkpoint_id(config) is None
        )
        latest = self.session.latest
        if asks_latest and self._unread and not self.session.wrote:
            self._unread = False
            if latest is None:
                return None
            if latest["checkpoint"]["v"] >= 4:  # older ones need LangGraph's migration
                return await self._load_checkpoint_tuple(latest)
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

    # Writes: serialised here, sent fenced by the session.

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id, checkpoint_ns = configurable["thread_id"], configurable["checkpoint_ns"]
        self._own(thread_id)
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
        self._writes.add_checkpoint(
            CheckpointRow(
                ns=checkpoint_ns,
                id=checkpoint["id"],
                parent_id=configurable.get("checkpoint_id"),
                checkpoint=cast(dict[str, Any], stored),
                metadata=dict(get_serializable_checkpoint_metadata(config, metadata)),
                blobs=self._dump_blobs(
                    thread_id,
                    checkpoint_ns,
                    blob_values,
                    {k: v for k, v in new_versions.items() if k in blob_values},
                ),
                # Only the run's own state is mirrored, never a subgraph's.
                state=state_json(checkpoint) if checkpoint_ns == "" else None,
                step=metadata.get("step"),
            )
        )
        # A fresh run's input checkpoint holds nothing `runs.payload` does not:
        # it goes with the first step's. Were the worker to die first, the run
        # would start over from its payload, as it would have anyway.
        if not (self.session.fresh and metadata.get("source") == "input"):
            await self._writes.send()
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
        """Queue a task's writes to go with the checkpoint that ends their step
        (LangGraph does not wait for them; `engine.runtime.session` says when they go)."""
        configurable = config["configurable"]
        self._own(configurable["thread_id"])
        # Writes to LangGraph's special channels replace earlier ones at their
        # index; others never do (LangGraph's upsert and insert statements).
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        self._writes.add_writes(
            [
                WriteRow(*row[1:], replace=replace)
                for row in self._dump_writes(
                    configurable["thread_id"],
                    configurable["checkpoint_ns"],
                    configurable["checkpoint_id"],
                    task_id,
                    task_path,
                    writes,
                )
            ]
        )

    # Deletes: fenced, and only the run's own rows.

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete the run's LangGraph rows, fenced: a worker that lost the run
        deletes nothing (`LeaseLost`)."""
        self._own(thread_id)
        await self._writes.discard()
        lease = self.session.lease
        async with self._writes.lock, lease.transaction(self.session.pool) as conn:
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
                await conn.execute(QUERIES[f"delete_{table}"], {"run_id": lease.run_id})

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """LangGraph's prune of the run's history, fenced by the lease."""
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(f"Unknown prune strategy: {strategy!r}")
        for thread_id in thread_ids:
            self._own(thread_id)
        if not thread_ids:
            return
        lease = self.session.lease
        if strategy == "delete":
            await self.adelete_thread(lease.run_id)
            return
        await self._writes.send()  # what waits is history to prune too
        async with (
            self._writes.lock,
            self.session.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(binary=True) as cursor,
        ):
            # LangGraph's statements, the fence right after the first, which
            # sets the transaction's isolation and so must come first.
            statements = _keep_latest(lease.run_id)
            sql, args, _ = next(statements)
            await cursor.execute(sql, args, prepare=False)
            with lease_lost_on_fence():
                await cursor.execute(QUERIES["fence"], lease.params)
            rows: list[Any] = []
            while True:
                try:
                    sql, args, fetch = statements.send(rows)
                except StopIteration:
                    return
                await cursor.execute(sql, args, prepare=False)
                rows = await cursor.fetchall() if fetch else []

    # Refused: what no run's lease can fence, and the synchronous interface.

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        raise NotImplementedError(
            "FencedSaver holds one run: deleting by LangGraph run id would touch other "
            "threads, which its lease does not fence"
        )

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        raise NotImplementedError(
            "FencedSaver holds one run: a copy would write a thread no lease holds"
        )

    async def setup(self) -> None:
        raise NotImplementedError("FencedSaver writes no schema: the engine's migrations do")

    def put(self, *args: Any, **kwargs: Any) -> NoReturn:
        _synchronous("put")

    def put_writes(self, *args: Any, **kwargs: Any) -> NoReturn:
        _synchronous("put_writes")

    def delete_thread(self, *args: Any, **kwargs: Any) -> NoReturn:
        _synchronous("delete_thread")

    def delete_for_runs(self, *args: Any, **kwargs: Any) -> NoReturn:
        _synchronous("delete_for_runs")

    def copy_thread(self, *args: Any, **kwargs: Any) -> NoReturn:
        _synchronous("copy_thread")

    def prune(self, *args: Any, **kwargs: Any) -> NoReturn:
        _synchronous("prune")

    def _own(self, thread_id: object) -> None:
        if str(thread_id) != self.session.run_id:
            raise ValueError(f"FencedSaver holds run {self.session.run_id}, not {thread_id!r}")


def _synchronous(method: str) -> NoReturn:
    raise NotImplementedError(
        f"FencedSaver is asynchronous: call a{method}() (the engine runs graphs with ainvoke)"
    )
