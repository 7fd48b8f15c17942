"""The fenced saver writes what LangGraph's own saver would, in fewer round trips."""

import asyncio
import json
import operator
from collections import Counter
from datetime import timedelta
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import START, StateGraph
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine import store
from engine.daemon import CHECKPOINT_COLUMNS, claim_params, workflow_versions
from engine.database import open_pool
from engine.executor import Claim, Executor
from engine.lease import Lease, LeaseLost
from engine.mirror import mirror_json
from engine.saver import FencedSaver
from engine.settings import Settings
from engine.sql import QUERIES
from engine.workflow import Workflow, load_workflows
from tests.conftest import WORKFLOWS
from tests.helpers import wait_for

Conn = AsyncConnection[DictRow]


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


async def test_the_claim_reads_the_checkpoint_langgraph_would(db_url: str, conn: Conn) -> None:
    settings = Settings(workflows=WORKFLOWS)
    workflows = load_workflows(settings.workflows)
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
        params = claim_params(1, "test", timedelta(minutes=1), workflow_versions(workflows))
        cursor = await conn.execute(QUERIES["claim_runs"], params, binary=True)
        [row] = await cursor.fetchall()
        latest = {key: row[key] for key in CHECKPOINT_COLUMNS}
        config: Any = {"configurable": {"thread_id": run_id, "checkpoint_ns": ""}}

        lease = Lease(run_id, row["lease_epoch"], timedelta(minutes=1))
        claimed = await FencedSaver(
            pool, lease, resuming=True, approval_id=None, latest=latest
        ).aget_tuple(config)
        read = await AsyncPostgresSaver(pool).aget_tuple(config)
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
    settings = Settings(workflows={})
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


class HostileState(TypedDict, total=False):
    reply: dict[Any, Any]
    line: str


def _hostile(state: HostileState) -> HostileState:
    # What an LLM or a tool may hand back, which LangGraph's serde stores fine.
    return {
        "reply": {"text": "a\x00b", "score": float("nan"), "best": float("inf"), ("a", 1): 2},
        "line": "fine",
    }


async def test_a_state_json_cannot_hold_is_mirrored_and_the_run_ends(
    db_url: str, conn: Conn
) -> None:
    builder = StateGraph(HostileState)
    builder.add_node("hostile", _hostile)
    builder.add_edge(START, "hostile")
    workflow = Workflow("hostile", "1", builder.compile())
    settings = Settings(workflows=WORKFLOWS, max_attempts=1)
    run = await store.create_run(conn, project="p", payload={}, workflow="hostile")
    async with open_pool(db_url, settings) as pool:
        executor = Executor(pool, settings, {"hostile": workflow})
        epoch = await _take(conn, run["run_id"])
        claim = Claim(run["run_id"], "p", "hostile", {}, epoch, resume=None, checkpoint=None)
        assert await executor.execute(claim) == "published"
        # LangGraph's own reader finds the state exactly as the node returned it.
        async with AsyncPostgresSaver.from_conn_string(db_url) as langgraph:
            config: Any = {"configurable": {"thread_id": run["run_id"], "checkpoint_ns": ""}}
            stored = await langgraph.aget_tuple(config)
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


def test_the_mirror_holds_lone_surrogates_and_depth() -> None:
    deep: list[Any] = []
    for _ in range(2000):
        deep = [deep]
    text = mirror_json({"odd": "x\ud800y", "deep": deep, "pair": "\U0001f600"})
    value = json.loads(text)
    assert value["odd"] == "x\ufffdy" and value["pair"] == "\U0001f600"
    assert "nested deeper than 200 levels" in text


class SiblingState(TypedDict, total=False):
    seen: Annotated[list[str], operator.add]


def _siblings(counts: Counter[str]) -> Workflow:
    """`a` and `b` in one superstep: `a` ends at once, `b` fails once a moment later."""

    async def a(state: SiblingState) -> SiblingState:
        counts["a"] += 1
        return {"seen": ["a"]}

    async def b(state: SiblingState) -> SiblingState:
        counts["b"] += 1
        await asyncio.sleep(0.002)  # within the saver's linger after `a` ended
        if counts["b"] == 1:
            raise RuntimeError("b fails once")
        return {"seen": ["b"]}

    builder = StateGraph(SiblingState)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    return Workflow("siblings", "1", builder.compile())


async def test_a_sibling_that_finished_is_not_run_again_when_its_neighbour_fails(
    db_url: str, conn: Conn
) -> None:
    """LangGraph hands the saver the finished task's writes; its own saver keeps
    them, so the retry runs only the task that failed. So must ours."""
    counts: Counter[str] = Counter()
    settings = Settings(workflows=WORKFLOWS, max_attempts=3, retry_backoff=0.01)
    run = await store.create_run(conn, project="p", payload={}, workflow="siblings")
    async with open_pool(db_url, settings) as pool:
        executor = Executor(pool, settings, {"siblings": _siblings(counts)})
        epoch = await _take(conn, run["run_id"])
        claim = Claim(run["run_id"], "p", "siblings", {}, epoch, resume=None, checkpoint=None)
        assert await executor.execute(claim) == "published"
    assert counts == {"a": 1, "b": 2}
    result = await store.get_run(conn, run["run_id"])
    assert sorted(result["result"]["seen"]) == ["a", "b"]


async def test_deleting_the_thread_is_fenced(db_url: str, conn: Conn) -> None:
    """A worker that lost its run deletes none of its history; the holder may."""
    settings = Settings(workflows=WORKFLOWS)
    workflows = load_workflows(settings.workflows)
    run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    run_id = run["run_id"]
    count = "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s"
    async with open_pool(db_url, settings) as pool:
        executor = Executor(pool, settings, workflows)
        epoch = await _take(conn, run_id)
        claim = Claim(run_id, "p", "ledger", run["payload"], epoch, resume=None, checkpoint=None)
        assert await executor.execute(claim) == "pending_review"
        kept = await (await conn.execute(count, (run_id,))).fetchone()
        assert kept is not None and kept["n"] > 0

        def saver(at: int) -> FencedSaver:
            lease = Lease(run_id, at, timedelta(minutes=1))
            return FencedSaver(pool, lease, resuming=False, approval_id=None, latest=None)

        holder = await _take(conn, run_id)  # another worker took the run over
        with pytest.raises(LeaseLost):
            await saver(epoch).adelete_thread(run_id)
        assert await (await conn.execute(count, (run_id,))).fetchone() == kept
        with pytest.raises(ValueError, match="not 'run_other'"):
            await saver(holder).adelete_thread("run_other")
        await saver(holder).adelete_thread(run_id)
    assert await (await conn.execute(count, (run_id,))).fetchone() == {"n": 0}
