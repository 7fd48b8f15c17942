"""One claimed run, as this worker holds it: its lease, the resume its first write
spends, the writes waiting to be sent, and the run's transitions.

The executor opens a session per claim (`async with RunSession(...)`) and ends
it with one transition: `pause`, `finish`, `fail` or `requeue`, each guarded
by the lease's epoch. LangGraph writes through `FencedSaver`, a thin adapter
that serialises and hands the rows to `session.writes`.

Every write is one statement calling a function of migration 0006 that
(1) checks and renews the lease at its epoch, (2) on the first write after a
resume spends the resume (the run waits for nothing; its approval is spent),
(3) writes LangGraph's rows, and (4) for a checkpoint of the run's own
namespace, mirrors the state into `orchestration_checkpoints`. A worker that
lost the run cannot write anything: the statement fails with `LeaseLost`.

The writes (`WriteBuffer`): LangGraph hands over a task's writes as soon as the
task ends, without waiting for them, and the checkpoint that ends the step
normally follows within a millisecond: sent in its statement, they cost no
round trip of their own. Writes still waiting after `LINGER` (a sibling task
still running) are sent on their own, by a task the buffer owns (a task
group: nothing outlives the session); a read sends them first; `keep()`
sends those of the tasks that finished when a sibling failed (the retry then
runs only the one that failed, as with LangGraph's own saver); `discard()`
drops the rest of a cancelled invocation once a send in flight is done; and
the pause or finish sends what is left with the run's new status, in one
round trip.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, LiteralString, Self

from psycopg.types.json import Jsonb

from engine.db.connections import Pool
from engine.db.queries import QUERIES
from engine.db.status import STATUS_PARAMS, Status
from engine.runtime.claims import Held, approval_id
from engine.runtime.lease import Lease, LeaseLost, pipelined_transaction
from engine.runtime.waits import Wait

log = logging.getLogger(__name__)

Blob = tuple[str, str, str, str, str, bytes | None]  # a row of checkpoint_blobs, as LangGraph's


@dataclass(frozen=True)
class WriteRow:
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
class CheckpointRow:
    """A checkpoint waiting to be sent: its row, its new blobs and its readable state."""

    ns: str
    id: str
    parent_id: str | None
    checkpoint: dict[str, Any]  # as stored: primitives inline, the rest in `blobs`
    metadata: dict[str, Any]
    blobs: list[Blob]
    state: str | None  # the mirror's JSON (None: a subgraph's, never mirrored)
    step: int | None

    @property
    def fields(self) -> list[object]:
        return [self.ns, self.id, self.parent_id, self.checkpoint, self.metadata]


@dataclass
class Resume:
    """What the run resumes with (the approval row, or provider events): spent,
    its approval consumed and `waiting_for` cleared, by the run's first write."""

    value: dict[str, Any] | None
    unspent: bool = field(init=False)

    def __post_init__(self) -> None:
        self.unspent = self.value is not None


class WriteBuffer:
    """The run's writes on their way to the database (see the module)."""

    # How long a task's writes wait for the checkpoint that ends their step.
    LINGER = 0.01

    def __init__(self, pool: Pool, lease: Lease, resume: Resume) -> None:
        self._pool = pool
        self._lease = lease
        self._resume = resume
        # Sends take turns on it, so they commit in the order LangGraph made
        # the writes; so does anything that must not run between two (a delete).
        self.lock = asyncio.Lock()
        self._writes: list[WriteRow] = []
        self._checkpoints: list[CheckpointRow] = []
        self._linger: asyncio.TimerHandle | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None  # of a background send
        self.wrote = False  # anything was written for this session

    async def __aenter__(self) -> Self:
        tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._tasks = tasks
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Wait for a send in flight and drop what was never sent, as a crash would."""
        tasks, self._tasks = self._tasks, None
        try:
            await self.discard()
        finally:
            if tasks is not None:  # its sends are done: it ends without an error of its own
                await tasks.__aexit__(None, None, None)

    def add_checkpoint(self, row: CheckpointRow) -> None:
        self._checkpoints.append(row)

    def add_writes(self, rows: list[WriteRow]) -> None:
        """Queue a task's writes; sent with the next checkpoint or read, or after `LINGER`."""
        if self._tasks is None:
            raise RuntimeError("enter the run's session (`async with`) before writing")
        self._writes.extend(rows)
        if self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.LINGER, self._send_soon)

    async def send(self) -> None:
        """Send what waits now (after a send in flight); raise what a background send raised."""
        async with self.lock:
            writes, checkpoints = self._take()
            if writes or checkpoints:
                # A task's writes alone need not wait for the WAL flush: the
                # checkpoint that follows them commits synchronously, and were
                # the server to crash first, the task would run again, as after
                # a worker crash mid-task. A checkpoint must wait for it.
                query, params = self._put(writes, checkpoints, flush=bool(checkpoints))
                await self._lease.execute(self._pool, query, params)
                self._sent()

    async def keep(self) -> None:
        """Send what waits after an invocation failed: the writes of the tasks that
        finished (and the failed one's error), as LangGraph's own saver stores them.
        Unsent (the database is out), they are dropped: those tasks run again, as
        after a worker crash. Losing the run (`LeaseLost`) is raised."""
        try:
            await self.send()
        except LeaseLost:
            await self.discard()
            raise
        except Exception:
            await self.discard()

    async def discard(self) -> None:
        """Forget writes not yet sent (an invocation cancelled, which the database
        never saw: the retry starts from what it holds), once a send in flight is
        done: nothing of the invocation is written after this returns."""
        self._cancel_linger()
        self._writes.clear()
        self._checkpoints.clear()
        if self._sending:
            await asyncio.wait(self._sending)  # they raise nothing: see _send_in_background
        self._failure = None

    async def settle(self, query: LiteralString, params: dict[str, object]) -> int:
        """Run `query` (a status change guarded by its own epoch condition) with, in
        the same transaction, the writes still waiting (an interrupt's): one round
        trip. The rows `query` changed."""
        async with self.lock:
            writes, checkpoints = self._take()
            if not (writes or checkpoints):
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(query, params)
                return cursor.rowcount
            # The put fences itself: the transaction needs no fence of its own.
            async with pipelined_transaction(self._pool) as conn:
                await conn.execute(*self._put(writes, checkpoints, flush=True))
                cursor = await conn.execute(query, params)
            self._sent()
            return cursor.rowcount

    def _send_soon(self) -> None:
        self._linger = None
        if self._tasks is not None:
            task = self._tasks.create_task(self._send_in_background())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_in_background(self) -> None:
        try:
            await self.send()
        except Exception as error:  # raised to LangGraph by its next write or read
            self._failure = error

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _take(self) -> tuple[list[WriteRow], list[CheckpointRow]]:
        """What waits, one row per key; raise what a background send raised."""
        if (failure := self._failure) is not None:
            self._failure = None
            raise failure
        self._cancel_linger()
        writes, self._writes = _one_row_per_key(self._writes), []
        checkpoints = list({(c.ns, c.id): c for c in self._checkpoints}.values())
        self._checkpoints = []
        return writes, checkpoints

    def _put(
        self, writes: list[WriteRow], checkpoints: list[CheckpointRow], *, flush: bool
    ) -> tuple[LiteralString, dict[str, object]]:
        """The statement that writes these rows, and its parameters (`flush`: its
        commit waits for the WAL flush). A subgraph's checkpoints go in beside
        the run's own (`put_nested`), so that only the run's newest is mirrored."""
        own = [c for c in checkpoints if c.ns == ""]
        blobs = [blob for c in own for blob in c.blobs]
        newest = own[-1] if own else None
        params: dict[str, object] = {
            **self._lease.params,
            "consume": self._resume.unspent,
            "approval_id": approval_id(self._resume.value),
            "thread_id": self._lease.run_id,
            # The rows' fields in one document, their blobs beside it (migration 0006).
            "rows": Jsonb(
                {
                    "writes": [w.fields for w in writes],
                    "checkpoints": [c.fields for c in own],
                    "blobs": [list(blob[1:5]) for blob in blobs],
                }
            ),
            "write_blobs": [w.blob for w in writes],
            "blob_values": [blob[5] for blob in blobs],
            "state": newest.state if newest else None,
            "step": newest.step if newest else None,
            "flush": flush,
        }
        nested = [c for c in checkpoints if c.ns != ""]
        if not nested:
            return QUERIES["put"], params
        nested_blobs = [blob for c in nested for blob in c.blobs]
        params["nested"] = Jsonb(
            {
                "checkpoints": [c.fields for c in nested],
                "blobs": [list(blob[1:5]) for blob in nested_blobs],
            }
        )
        params["nested_blob_values"] = [blob[5] for blob in nested_blobs]
        return QUERIES["put_nested"], params

    def _sent(self) -> None:
        self._resume.unspent = False
        self.wrote = True


class RunSession:
    """A claimed run, from its claim to the transition that lets go of it."""

    def __init__(
        self,
        pool: Pool,
        lease: Lease,
        *,
        resume: dict[str, Any] | None = None,
        latest: dict[str, Any] | None = None,
    ) -> None:
        self.pool = pool
        self.lease = lease
        self.resume = Resume(resume)
        # The run's latest checkpoint as the claim read it (LangGraph's row shape;
        # None: it has none).
        self.latest = latest
        self.writes = WriteBuffer(pool, lease, self.resume)

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    @property
    def fresh(self) -> bool:
        """Not begun: no checkpoint, nothing to resume with."""
        return self.latest is None and self.resume.value is None

    @property
    def wrote(self) -> bool:
        """Anything was written: the checkpoint holds the input (or the resume value)."""
        return self.writes.wrote

    async def __aenter__(self) -> Self:
        await self.writes.__aenter__()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.writes.__aexit__(kind, error, traceback)

    async def pause(self, wait: Wait, *, trace_context: Jsonb | None = None) -> bool:
        """Wait for `wait`, holding no lease, with the interrupt's writes. False when
        the run changed hands first (here and below)."""
        return await self._settle(
            "pause_run",
            status=wait.status,
            waiting_for=Jsonb(wait.to_json()),
            wake_at=wait.wake_at,
            trace_context=trace_context,
        )

    async def finish(self, result: dict[str, Any], *, trace_context: Jsonb | None = None) -> bool:
        return await self._settle(
            "finish_run", status=Status.PUBLISHED, result=Jsonb(result), trace_context=trace_context
        )

    async def fail(
        self, error: dict[str, Any], *, attempt: int, trace_context: Jsonb | None = None
    ) -> bool:
        return await change_status(
            self.pool,
            self.lease,
            "fail_run",
            status=Status.FAILED,
            error=Jsonb(error),
            attempt=attempt,
            trace_context=trace_context,
        )

    async def requeue(self) -> bool:
        """Hand the run back unfinished (graceful shutdown): any worker may claim it."""
        return await change_status(self.pool, self.lease, "requeue_run")

    async def _settle(self, query: str, **params: object) -> bool:
        params = {"run_id": self.run_id, "epoch": self.lease.epoch, **STATUS_PARAMS, **params}
        try:
            changed = await self.writes.settle(QUERIES[query], params)
        except LeaseLost:
            changed = 0
        return _changed(changed, self.lease, query)


async def change_status(pool: Pool, run: Held, query: str, **params: object) -> bool:
    """Run status change `query`, guarded by `run`'s epoch; False when the run changed
    hands first. (Also for a run no session holds: one the claim could not load.)"""
    params = {"run_id": run.run_id, "epoch": run.epoch, **STATUS_PARAMS, **params}
    async with pool.connection() as conn:
        changed = (await conn.execute(QUERIES[query], params)).rowcount
    return _changed(changed, run, query)


def _changed(rows: int, run: Held, query: str) -> bool:
    if rows == 0:
        log.warning(
            "run changed hands before its status could be written",
            extra={"action": "lease_lost", "run_id": run.run_id, "query": query},
        )
        return False
    return True


def _one_row_per_key(writes: list[WriteRow]) -> list[WriteRow]:
    """One statement may not write a row twice: of rows with the same key, the
    last replacing one wins, else the first (what the inserts in turn would leave)."""
    rows: dict[tuple[str, str, str, int], WriteRow] = {}
    for write in writes:
        if write.replace or write.key not in rows:
            rows[write.key] = write
    return list(rows.values())
