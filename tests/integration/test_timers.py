"""Durable timers: a graph's sleep and a run's delayed start hold nothing while they
wait, no claim takes them before their time, and the claim takes them after it."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine import sleep
from engine.db.connections import Pool, open_pool
from engine.runtime import store
from engine.runtime.claims import Claim
from engine.runtime.daemon import Daemon
from engine.runtime.executor import Executor
from engine.runtime.workflow import RunContext, Workflow
from engine.settings import Settings
from tests.graphs import record_node
from tests.helpers import claim, wait_for

Conn = AsyncConnection[DictRow]
VERSIONS = {"workflows": ["timed"], "versions": ["1"]}


class Timed(TypedDict, total=False):
    project: str
    nap: float
    due: str
    woke: str


async def _before(state: Timed, runtime: Runtime[RunContext]) -> dict[str, Any]:
    await record_node("before", runtime)
    return {"due": (datetime.now(UTC) + timedelta(seconds=state.get("nap", 3600))).isoformat()}


async def _nap(state: Timed, runtime: Runtime[RunContext]) -> dict[str, Any]:
    # Work before the sleep in the same node: it runs again on waking (the documented rule).
    await record_node("nap-start", runtime)
    woke = sleep(until=datetime.fromisoformat(state["due"]))
    await record_node("nap-end", runtime)
    return {"woke": woke.isoformat()}


async def _after(state: Timed, runtime: Runtime[RunContext]) -> dict[str, Any]:
    await record_node("after", runtime)
    return {}


def _timed() -> Workflow:
    builder = StateGraph(Timed, context_schema=RunContext)
    builder.add_node("before", _before)
    builder.add_node("nap", _nap)
    builder.add_node("after", _after)
    builder.add_edge(START, "before")
    builder.add_edge("before", "nap")
    builder.add_edge("nap", "after")
    return Workflow("timed", "1", builder.compile())


async def _claim(conn: Conn) -> list[Claim]:
    return await claim(conn, VERSIONS)


async def _claim_when_due(conn: Conn, within: float = 10.0) -> list[Claim]:
    return await claim(conn, VERSIONS, within=within)


async def _park(db_url: str, conn: Conn, nap: float) -> dict[str, Any]:
    """A run of `timed`, executed by hand up to its sleep; its row."""
    run = await store.create_run(conn, project="p", payload={"nap": nap}, workflow="timed")
    (claim,) = await _claim(conn)
    settings = Settings(max_attempts=1)
    async with open_pool(db_url, settings) as pool:
        assert await Executor(pool, settings, {"timed": _timed()}).execute(claim) == "waiting_timer"
    return await store.get_run(conn, run["run_id"])


async def test_a_sleeping_run_holds_no_lease_and_waits_for_its_due_time(
    db_url: str, conn: Conn
) -> None:
    run = await _park(db_url, conn, nap=3600)
    assert run["status"] == "waiting_timer"
    assert run["lease_owner"] is None and run["lease_expires_at"] is None
    due = run["wake_at"]
    assert timedelta(minutes=59) < due - datetime.now(UTC) <= timedelta(hours=1)
    assert run["waiting_for"] == {"timer": due.isoformat(), "pause_id": 1}
    assert store.due_at(run) == due
    assert await _claim(conn) == []


async def test_the_claim_takes_a_sleeping_run_once_due_with_the_time_it_woke(
    db_url: str, conn: Conn
) -> None:
    run = await _park(db_url, conn, nap=1.0)
    assert await _claim(conn) == []  # not yet due
    (claim,) = await _claim_when_due(conn)
    assert claim.run_id == run["run_id"] and claim.checkpoint is not None
    assert claim.resume is not None and claim.resume["timer"] == run["wake_at"].isoformat()
    assert datetime.fromisoformat(claim.resume["woke_at"]) >= run["wake_at"]
    assert await _claim(conn) == []  # claimed once


async def test_a_delayed_run_is_claimed_only_from_its_time_and_starts_from_its_payload(
    conn: Conn,
) -> None:
    not_before = datetime.now(UTC) + timedelta(seconds=1)
    run = await store.create_run(
        conn, project="p", payload={"nap": 1}, workflow="timed", not_before=not_before
    )
    assert run["status"] == "waiting_timer" and run["wake_at"] == not_before
    assert run["waiting_for"] == {"not_before": not_before.isoformat()}
    assert await _claim(conn) == []
    (claim,) = await _claim_when_due(conn)
    assert datetime.now(UTC) >= not_before
    assert (claim.resume, claim.checkpoint, claim.payload) == (None, None, {"nap": 1})
    assert (await store.get_run(conn, run["run_id"]))["waiting_for"] is None


async def test_a_not_before_already_past_queues_the_run_at_once(conn: Conn) -> None:
    run = await store.create_run(
        conn,
        project="p",
        payload={},
        workflow="timed",
        not_before=datetime.now(UTC) - timedelta(minutes=1),
    )
    assert (run["status"], run["wake_at"], run["waiting_for"]) == ("queued", None, None)
    assert [claim.run_id for claim in await _claim(conn)] == [run["run_id"]]


@asynccontextmanager
async def _daemon(
    db_url: str, pool: Pool, settings: Settings, workflow: Workflow
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    serving = asyncio.create_task(Daemon(db_url, pool, settings, {"timed": workflow}).serve(stop))
    try:
        yield
    finally:
        stop.set()
        await serving


async def test_the_daemon_wakes_for_the_timer_not_the_poll_and_repeats_only_the_sleeping_node(
    db_url: str, conn: Conn
) -> None:
    # A poll every 30 s: finishing within seconds means the daemon woke for the timer.
    settings = Settings(poll_interval=30, max_attempts=1, health_port=0)
    runs = [
        (await store.create_run(conn, project="p", payload={"nap": nap}, workflow="timed"))[
            "run_id"
        ]
        for nap in (0.5, 1.5)
    ]
    async with open_pool(db_url, settings) as pool, _daemon(db_url, pool, settings, _timed()):
        rows = await wait_for(
            conn,
            "SELECT run_id, status, result FROM runs ORDER BY run_id",
            until=lambda rows: all(row["status"] == "published" for row in rows),
            within=10,
        )
    for row in rows:
        lateness = datetime.fromisoformat(row["result"]["woke"]) - datetime.fromisoformat(
            row["result"]["due"]
        )
        assert timedelta(0) <= lateness < timedelta(seconds=1), lateness
    executions = await (
        await conn.execute(
            "SELECT run_id, node, count(*) AS n FROM node_ledger GROUP BY 1, 2 ORDER BY 1, 2"
        )
    ).fetchall()
    counts = {(row["run_id"], row["node"]): row["n"] for row in executions}
    for run_id in runs:
        # Earlier nodes and the rest of the sleeping node run once; the lines of the
        # sleeping node before its sleep() run once more, on waking.
        nodes = ("before", "nap-start", "nap-end", "after")
        assert [counts.get((run_id, node)) for node in nodes] == [1, 2, 1, 1], run_id


async def test_a_node_that_sleeps_twice_passes_the_first_sleep_on_its_second_waking(
    db_url: str, conn: Conn
) -> None:
    async def twice(state: Timed, runtime: Runtime[RunContext]) -> dict[str, Any]:
        first = sleep(timedelta(seconds=0.3))
        await record_node("between", runtime)
        second = sleep(timedelta(seconds=0.3))
        await record_node("end", runtime)
        return {"due": first.isoformat(), "woke": second.isoformat()}

    builder = StateGraph(Timed, context_schema=RunContext)
    builder.add_node("twice", twice)
    builder.add_edge(START, "twice")
    workflow = Workflow("timed", "1", builder.compile())
    settings = Settings(poll_interval=30, max_attempts=1, health_port=0)
    run = await store.create_run(conn, project="p", payload={}, workflow="timed")
    async with open_pool(db_url, settings) as pool, _daemon(db_url, pool, settings, workflow):
        (row,) = await wait_for(
            conn,
            "SELECT status, result FROM runs",
            until=lambda rows: rows[0]["status"] in ("published", "failed"),
            within=10,
        )
    assert row["status"] == "published", row
    first, second = (datetime.fromisoformat(row["result"][k]) for k in ("due", "woke"))
    assert second - first >= timedelta(seconds=0.3)
    counts = await (
        await conn.execute(
            "SELECT node, count(*) AS n FROM node_ledger WHERE run_id = %s GROUP BY node",
            (run["run_id"],),
        )
    ).fetchall()
    # The lines between the sleeps ran on each waking; those after the last, once.
    assert {c["node"]: c["n"] for c in counts} == {"between": 2, "end": 1}
