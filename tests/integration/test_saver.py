"""The fenced saver keeps LangGraph's contract, in fewer round trips than LangGraph's saver."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import START, StateGraph
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.connections import Pool, open_pool
from engine.db.queries import QUERIES
from engine.runtime import store
from engine.runtime.claims import CHECKPOINT_COLUMNS, Claim, claim_params
from engine.runtime.daemon import workflow_versions
from engine.runtime.executor import Executor
from engine.runtime.lease import Lease, LeaseLost
from engine.runtime.mirror import mirror_json
from engine.runtime.saver import FencedSaver
from engine.runtime.session import RunSession
from engine.runtime.workflow import Workflow
from engine.settings import Settings
from tests.graphs import ledger_workflow
from tests.helpers import in_process_daemon, wait_for
from tests.saver_graphs import hostile_workflow, nested_workflow, siblings_workflow

Conn = AsyncConnection[DictRow]
TTL = timedelta(minutes=1)
STATUS = "SELECT status FROM runs WHERE run_id = %s"


async def _take(conn: Conn, run_id: str) -> int:
    row = await (
        await conn.execute(
            "UPDATE runs SET status = 'running', lease_owner = 'test', "
            "lease_expires_at = NOW() + INTERVAL '1 minute', lease_epoch = lease_epoch + 1 "
            "WHERE run_id = %s RETURNING lease_epoch",
            (run_id,),
        )
    ).fetchone()
    assert row is not None
    return int(row["lease_epoch"])


def _config(run_id: str, **configurable: Any) -> Any:
    return {"configurable": {"thread_id": run_id, "checkpoint_ns": "", **configurable}}


@asynccontextmanager
async def _saver(pool: Pool, run_id: str, epoch: int) -> AsyncIterator[FencedSaver]:
    """The saver of a session holding `run_id` at `epoch`, as the executor makes one."""
    async with RunSession(pool, Lease(run_id, epoch, TTL)) as session:
        yield FencedSaver(session)


async def test_the_claim_reads_the_checkpoint_langgraph_would(db_url: str, conn: Conn) -> None:
    settings = Settings(max_attempts=1)
    workflows = {"ledger": ledger_workflow()}
    run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    run_id = run["run_id"]
    async with open_pool(db_url, settings) as pool:
        executor = Executor(pool, settings, workflows)
        epoch = await _take(conn, run_id)
        claim = Claim(run_id, "p", "ledger", run["payload"], epoch, resume=None, checkpoint=None)
        assert await executor.execute(claim) == "pending_review"
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, 'review')", (run_id,)
        )
        params = claim_params(1, "test", TTL, workflow_versions(workflows))
        cursor = await conn.execute(QUERIES["claim_runs"], params, binary=True)
        [row] = await cursor.fetchall()
        latest = {key: row[key] for key in CHECKPOINT_COLUMNS}

        lease = Lease(run_id, row["lease_epoch"], TTL)
        async with RunSession(pool, lease, resume=row["resume"], latest=latest) as session:
            claimed = await FencedSaver(session).aget_tuple(_config(run_id))
        read = await AsyncPostgresSaver(pool).aget_tuple(_config(run_id))
    assert claimed is not None and read is not None
    assert claimed.checkpoint == read.checkpoint
    assert claimed.metadata == read.metadata
    assert claimed.parent_config == read.parent_config
    assert claimed.pending_writes == read.pending_writes
    assert any(channel == "__interrupt__" for _, channel, _ in read.pending_writes or [])


class Fork(TypedDict, total=False):
    fast: str
    slow: str


async def test_a_tasks_writes_are_saved_while_a_sibling_task_still_runs(
    db_url: str, conn: Conn
) -> None:
    released = asyncio.Event()

    async def fast(state: Fork) -> dict[str, Any]:
        return {"fast": "done"}

    async def slow(state: Fork) -> dict[str, Any]:
        await released.wait()
        return {"slow": "done"}

    builder = StateGraph(Fork)
    builder.add_node("fast", fast)
    builder.add_node("slow", slow)
    builder.add_edge(START, "fast")
    builder.add_edge(START, "slow")
    fork = Workflow("fork", "fork-1", builder.compile())
    run = await store.create_run(conn, project="p", payload={}, workflow="fork")
    run_id = run["run_id"]
    settings = Settings(max_attempts=1)
    async with open_pool(db_url, settings) as pool:
        executor = Executor(pool, settings, {"fork": fork})
        epoch = await _take(conn, run_id)
        claim = Claim(run_id, "p", "fork", {}, epoch, resume=None, checkpoint=None)
        execution = asyncio.create_task(executor.execute(claim))
        try:
            # The fast task's write does not wait for the step's checkpoint,
            # which waits for the slow task.
            await wait_for(
                conn,
                "SELECT 1 FROM checkpoint_writes WHERE thread_id = %s AND channel = 'fast'",
                (run_id,),
                until=bool,
                within=10,
            )
            mirror = await (
                await conn.execute(
                    "SELECT step FROM orchestration_checkpoints WHERE run_id = %s", (run_id,)
                )
            ).fetchone()
            assert mirror is not None and mirror["step"] == 0  # the fork's step is not done
        finally:
            released.set()
        assert await execution == "published"
    result = await (
        await conn.execute("SELECT result FROM runs WHERE run_id = %s", (run_id,))
    ).fetchone()
    assert result is not None and result["result"] == {"fast": "done", "slow": "done"}


async def test_a_state_json_cannot_hold_is_mirrored_and_the_run_ends(
    db_url: str, conn: Conn
) -> None:
    settings = Settings(max_attempts=1, poll_interval=0.1)
    run = await store.create_run(conn, project="p", payload={}, workflow="hostile")
    async with in_process_daemon(db_url, settings, {"hostile": hostile_workflow()}):
        await wait_for(
            conn, STATUS, (run["run_id"],), until=lambda r: r[0]["status"] == "published"
        )
    # LangGraph's own reader finds the state exactly as the node returned it.
    async with AsyncPostgresSaver.from_conn_string(db_url) as langgraph:
        stored = await langgraph.aget_tuple(_config(run["run_id"]))
    assert stored is not None
    reply = stored.checkpoint["channel_values"]["reply"]
    assert reply["text"] == "a\x00b" and reply[("a", 1)] == 2
    mirror = await (
        await conn.execute(
            "SELECT state FROM orchestration_checkpoints WHERE run_id = %s", (run["run_id"],)
        )
    ).fetchone()
    assert mirror is not None
    assert mirror["state"]["values"] == {
        "reply": {"text": "a\ufffdb", "score": "nan", "best": "inf", "('a', 1)": 2},
        "line": "fine",
    }
    finished = await store.get_run(conn, run["run_id"])
    assert finished["result"]["reply"]["text"] == "a\ufffdb"


def test_the_mirror_holds_lone_surrogates_and_depth() -> None:
    deep: list[Any] = []
    for _ in range(2000):
        deep = [deep]
    text = mirror_json({"odd": "x\ud800y", "deep": deep, "pair": "\U0001f600"})
    value = json.loads(text)
    assert value["odd"] == "x\ufffdy" and value["pair"] == "\U0001f600"
    assert "nested deeper than 200 levels" in text


async def test_a_sibling_that_finished_is_not_run_again_when_its_neighbour_fails(
    db_url: str, conn: Conn
) -> None:
    """LangGraph hands the saver the finished task's writes; its own saver keeps
    them, so the retry runs only the task that failed. So must ours."""
    settings = Settings(max_attempts=3, retry_backoff=0.01, poll_interval=0.1)
    run = await store.create_run(conn, project="p", payload={}, workflow="siblings")
    async with in_process_daemon(db_url, settings, {"siblings": siblings_workflow()}):
        await wait_for(
            conn, STATUS, (run["run_id"],), until=lambda r: r[0]["status"] == "published"
        )
    executions = await (
        await conn.execute(
            "SELECT node, count(*) AS n FROM node_ledger WHERE run_id = %s GROUP BY node",
            (run["run_id"],),
        )
    ).fetchall()
    assert {row["node"]: row["n"] for row in executions} == {"a": 1, "b": 2}
    result = await store.get_run(conn, run["run_id"])
    assert sorted(result["result"]["seen"]) == ["a", "b"]


async def test_a_subgraph_checkpoint_leaves_the_runs_mirror_alone(db_url: str, conn: Conn) -> None:
    """The subgraph pauses after its own checkpoint: the mirror still shows the run's state."""
    settings = Settings(max_attempts=1)
    run = await store.create_run(conn, project="p", payload={"topic": "t"}, workflow="nested")
    run_id = run["run_id"]
    async with open_pool(db_url, settings) as pool:
        executor = Executor(pool, settings, {"nested": nested_workflow()})
        claim = Claim(run_id, "p", "nested", run["payload"], await _take(conn, run_id), None, None)
        assert await executor.execute(claim) == "pending_review"
    nested = await (
        await conn.execute(
            "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s AND checkpoint_ns <> ''",
            (run_id,),
        )
    ).fetchone()
    assert nested is not None and nested["n"] > 0, "the subgraph wrote no checkpoint"
    mirror = await (
        await conn.execute(
            "SELECT m.state, c.checkpoint_ns FROM orchestration_checkpoints m "
            "JOIN checkpoints c ON c.thread_id = m.run_id AND c.checkpoint_id = m.checkpoint_id "
            "WHERE m.run_id = %s",
            (run_id,),
        )
    ).fetchone()
    assert mirror is not None
    assert mirror["checkpoint_ns"] == ""
    assert mirror["state"]["values"] == {"topic": "t", "project": "p"}


async def test_reads_see_the_writes_still_waiting_to_be_sent(db_url: str, conn: Conn) -> None:
    run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    run_id = run["run_id"]
    settings = Settings()
    async with open_pool(db_url, settings) as pool:
        async with _saver(pool, run_id, await _take(conn, run_id)) as saver:
            saver.session.writes.LINGER = 60.0  # nothing is sent in the background meanwhile
            checkpoint: Any = {
                "v": 4,
                "id": "1ef00000-0000-6000-8000-000000000001",
                "ts": "2026-01-01T00:00:00+00:00",
                "channel_values": {},
                "channel_versions": {},
                "versions_seen": {},
                "updated_channels": None,
            }
            stored = await saver.aput(_config(run_id), checkpoint, {"source": "loop"}, {})
            await saver.aput_writes(stored, [("note", "kept")], "task-1")
            got = await saver.aget_tuple(stored)
            assert got is not None and got.pending_writes == [("task-1", "note", "kept")]
            listed = [t async for t in saver.alist(_config(run_id))]
            assert [t.pending_writes for t in listed] == [[("task-1", "note", "kept")]]


async def test_discarding_waits_for_a_send_in_flight(db_url: str, conn: Conn) -> None:
    """A discard returns only once nothing of the invocation is still being written."""
    run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    run_id = run["run_id"]
    settings = Settings()
    async with (
        open_pool(db_url, settings) as pool,
        await AsyncConnection.connect(db_url) as locker,
        _saver(pool, run_id, await _take(conn, run_id)) as saver,
    ):
        # The send's fence waits for this row lock: the send stays in flight.
        await locker.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
        config = _config(run_id, checkpoint_id="1ef00000-0000-6000-8000-000000000001")
        await saver.aput_writes(config, [("note", "sent")], "task-1")
        await wait_for(
            conn,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            ("%orchestrator_put%",),
            until=bool,
        )
        discarding = asyncio.create_task(saver.session.writes.discard())
        for _ in range(20):  # loop turns, not time: the discard reaches its wait on the send
            await asyncio.sleep(0)
        assert not discarding.done()
        await locker.commit()  # the lock goes: the send completes, then the discard
        await discarding
        written = await (
            await conn.execute(
                "SELECT count(*) AS n FROM checkpoint_writes WHERE thread_id = %s", (run_id,)
            )
        ).fetchone()
    assert written == {"n": 1}


async def test_every_write_is_fenced_or_refused(db_url: str, conn: Conn) -> None:
    """A worker that lost its run deletes or prunes none of its history; the holder may.
    What the saver cannot fence, it refuses, and it touches no other run."""
    settings = Settings(max_attempts=1)
    workflows = {"ledger": ledger_workflow()}
    run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    run_id = run["run_id"]
    count = "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s"
    async with open_pool(db_url, settings) as pool:
        executor = Executor(pool, settings, workflows)
        epoch = await _take(conn, run_id)
        claim = Claim(run_id, "p", "ledger", run["payload"], epoch, resume=None, checkpoint=None)
        assert await executor.execute(claim) == "pending_review"
        kept = await (await conn.execute(count, (run_id,))).fetchone()
        assert kept is not None and kept["n"] > 1

        holder = await _take(conn, run_id)  # another worker took the run over
        async with _saver(pool, run_id, epoch) as lost:
            with pytest.raises(LeaseLost):
                await lost.adelete_thread(run_id)
            with pytest.raises(LeaseLost):
                await lost.aprune([run_id], strategy="keep_latest")
            with pytest.raises(LeaseLost):
                await lost.aprune([run_id], strategy="delete")
        assert await (await conn.execute(count, (run_id,))).fetchone() == kept

        async with _saver(pool, run_id, holder) as saver:
            other = "run_other"
            with pytest.raises(ValueError, match="not 'run_other'"):
                await saver.adelete_thread(other)
            with pytest.raises(ValueError, match="not 'run_other'"):
                await saver.aprune([other])
            with pytest.raises(ValueError, match="not 'run_other'"):
                await saver.aget_tuple(_config(other))
            with pytest.raises(ValueError, match="not 'run_other'"):
                await saver.aput_writes(_config(other, checkpoint_id="x"), [("c", 1)], "t")
            with pytest.raises(NotImplementedError, match="FencedSaver"):
                await saver.adelete_for_runs([run_id])
            with pytest.raises(NotImplementedError, match="FencedSaver"):
                await saver.acopy_thread(run_id, other)
            with pytest.raises(NotImplementedError, match="FencedSaver"):
                await saver.setup()
            synchronous: list[Callable[[], object]] = [
                lambda: saver.put(_config(run_id), {}, {}, {}),
                lambda: saver.put_writes(_config(run_id), [], "t"),
                lambda: saver.delete_thread(run_id),
                lambda: saver.prune([run_id]),
                lambda: saver.delete_for_runs([run_id]),
                lambda: saver.copy_thread(run_id, other),
            ]
            for call in synchronous:
                with pytest.raises(NotImplementedError, match="FencedSaver"):
                    call()

            await saver.aprune([run_id], strategy="keep_latest")
            assert await (await conn.execute(count, (run_id,))).fetchone() == {"n": 1}
            await saver.adelete_thread(run_id)
    assert await (await conn.execute(count, (run_id,))).fetchone() == {"n": 0}
