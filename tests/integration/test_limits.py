"""Limits across daemons, in PostgreSQL: a provider's slots (taken under concurrency,
handed on in priority then age order, never leaked by a run that ends or a worker
that dies), its requests per period and its pause after a 429, and the claim's
limit of runs per project."""

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import pytest
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from engine.db.connections import open_pool
from engine.db.queries import QUERIES
from engine.runtime import limits, store
from engine.runtime.claims import claim_params, load_claims
from engine.runtime.executor import Executor
from engine.runtime.limits import Limits, Requests, requests_kept, wait_for_request
from engine.runtime.workflow import RunContext, Workflow
from engine.settings import ProviderLimit, Settings
from tests.graphs import record_node
from tests.helpers import claim

Conn = AsyncConnection[DictRow]
VERSIONS = {"workflows": ["slotted"], "versions": ["1"]}
X = "provider:x"


async def _limit(conn: Conn, **x: Any) -> None:
    """Provider `x` limited as `x` says (and, with `project`, every project)."""
    project = x.pop("project", None)
    await limits.apply(conn, Limits({"x": ProviderLimit(**x)}, project_concurrency=project))


async def _runs(conn: Conn, n: int, status: str = "running", **columns: Any) -> list[str]:
    """`n` runs of `slotted` in `status` (running ones held at epoch 1), oldest first."""
    tag = columns.get("tag", f"{columns.get('project', 'p')}_{status}")
    ids = [f"run_{tag}_{i:03d}" for i in range(n)]
    for offset, run_id in enumerate(ids):
        await conn.execute(
            "INSERT INTO runs (run_id, project, status, payload, workflow, priority, lease_epoch,"
            " lease_owner, lease_expires_at, waiting_for, created_at) VALUES (%s, %s, %s, '{}',"
            " 'slotted', %s, 1, %s, %s, %s, NOW() - %s * INTERVAL '1 second')",
            (
                run_id,
                columns.get("project", "p"),
                status,
                columns.get("priority", 0),
                "w" if status == "running" else None,
                datetime.now(UTC) + timedelta(seconds=30) if status == "running" else None,
                Jsonb(columns["waiting_for"]) if "waiting_for" in columns else None,
                n - offset,
            ),
        )
    return ids


async def _take(conn: Conn, run_id: str, key: str = "job") -> bool:
    row = await (
        await conn.execute(QUERIES["take_slot"], {"limit": X, "run_id": run_id, "key": key})
    ).fetchone()
    assert row is not None
    return bool(row["taken"])


async def _park(conn: Conn, run_id: str, key: str = "job") -> None:
    """Park a running run for a slot, as `pause_run` does."""
    await conn.execute(
        "UPDATE runs SET status = 'waiting_limit', wake_at = NULL, lease_owner = NULL,"
        " waiting_for = %s WHERE run_id = %s",
        (Jsonb({"limit": X, "key": key}), run_id),
    )


async def _held(conn: Conn) -> list[str]:
    rows = await (
        await conn.execute("SELECT run_id FROM flow_slots WHERE limit_name = %s ORDER BY 1", (X,))
    ).fetchall()
    return [row["run_id"] for row in rows]


async def _granted(conn: Conn) -> list[str]:
    rows = await (
        await conn.execute(
            "SELECT run_id FROM runs WHERE status = 'waiting_limit' AND wake_at IS NOT NULL"
            " ORDER BY run_id"
        )
    ).fetchall()
    return [row["run_id"] for row in rows]


@pytest.fixture
async def connections(db_url: str) -> AsyncIterator[list[Conn]]:
    """Twenty connections, as many daemons' takes at once."""
    opened = [
        await AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row)
        for _ in range(20)
    ]
    try:
        yield opened
    finally:
        for each in opened:
            await each.close()


async def test_concurrent_takes_get_no_more_slots_than_the_limit(
    conn: Conn, connections: list[Conn]
) -> None:
    await _limit(conn, concurrent=3)
    runs = await _runs(conn, 20)
    taken = await asyncio.gather(*(_take(c, r) for c, r in zip(connections, runs, strict=True)))
    assert sum(taken) == 3
    assert len(await _held(conn)) == 3
    # A run asking again for a job it holds has it, full or not; another job does not.
    holder = next(r for r, t in zip(runs, taken, strict=True) if t)
    assert await _take(conn, holder) and not await _take(conn, holder, "another job")


async def test_a_released_slot_goes_to_the_parked_runs_by_priority_then_age(conn: Conn) -> None:
    await _limit(conn, concurrent=1)
    (holder,) = await _runs(conn, 1)
    assert await _take(conn, holder)
    # Ages by creation: low_old two hours ago, high_old one, high_new now.
    low_old, high_old, high_new = [
        (await _runs(conn, 1, "running", project=name, priority=priority))[0]
        for name, priority in (("a", 0), ("b", 5), ("c", 5))
    ]
    for run_id, age in ((low_old, "2 hours"), (high_old, "1 hour")):
        await conn.execute(
            "UPDATE runs SET created_at = NOW() - %s::interval WHERE run_id = %s", (age, run_id)
        )
    for run_id in (low_old, high_new, high_old):
        assert not await _take(conn, run_id)
        await _park(conn, run_id)
    assert await _granted(conn) == []

    order: list[str] = []
    for released in (holder, high_old, high_new):
        await conn.execute(QUERIES["release_slot"], {"limit": X, "run_id": released, "key": "job"})
        (granted,) = set(await _granted(conn)) - set(order)
        order.append(granted)
        assert await _held(conn) == [granted]
        # Handed its slot and due: the claim resumes it, saying why.
        (claimed,) = await claim(conn, VERSIONS)
        assert claimed.run_id == granted and claimed.resume is not None
        assert claimed.resume["limit"] == X
    assert order == [high_old, high_new, low_old]


async def test_a_run_parking_just_after_a_slot_freed_gets_it_at_once(conn: Conn) -> None:
    await _limit(conn, concurrent=1)
    holder, late = await _runs(conn, 2)
    assert await _take(conn, holder) and not await _take(conn, late)
    # The slot frees between the step's ask and its pause: no wake-up may be lost.
    await conn.execute(QUERIES["release_slot"], {"limit": X, "run_id": holder, "key": "job"})
    await _park(conn, late)
    assert await _granted(conn) == [late] and await _held(conn) == [late]


async def test_a_run_that_ends_gives_its_slots_back_and_a_dead_worker_leaks_none(
    conn: Conn,
) -> None:
    await _limit(conn, concurrent=2)
    crashed, cancelled, parked = await _runs(conn, 3)
    assert await _take(conn, crashed) and await _take(conn, cancelled)
    assert not await _take(conn, parked)
    await _park(conn, parked)
    # The worker of `crashed` dies mid-step: its lease runs out, and whoever takes
    # the run over asks for the same job's slot again, and has it: still 2 held.
    await conn.execute(
        "UPDATE runs SET lease_expires_at = NOW() - INTERVAL '1 second' WHERE run_id = %s",
        (crashed,),
    )
    (taken_over,) = await claim(conn, VERSIONS)
    assert taken_over.run_id == crashed
    assert await _take(conn, crashed) and await _held(conn) == [crashed, cancelled]
    # A run that ends (cancelled here) frees its slot: the parked run gets it.
    await conn.execute(QUERIES["cancel_run"], {"run_ids": [cancelled], "cancelled": "cancelled"})
    assert await _held(conn) == [crashed, parked] and await _granted(conn) == [parked]
    # A slot of a run that ended behind the triggers' back does not count either.
    await conn.execute("SET session_replication_role = replica")
    await conn.execute("UPDATE runs SET status = 'failed' WHERE run_id = %s", (crashed,))
    await conn.execute("SET session_replication_role = DEFAULT")
    (fresh,) = await _runs(conn, 1, project="q")
    assert await _take(conn, fresh)


async def test_raising_a_limit_hands_the_new_slots_to_the_parked_runs(conn: Conn) -> None:
    await _limit(conn, concurrent=1)
    holder, *waiting = await _runs(conn, 4)
    assert await _take(conn, holder)
    for run_id in waiting:
        assert not await _take(conn, run_id)
        await _park(conn, run_id)
    await _limit(conn, concurrent=3)  # a daemon started with a higher limit
    assert len(await _granted(conn)) == 2 and len(await _held(conn)) == 3
    await limits.apply(conn, Limits())  # and one with none: everyone goes
    assert len(await _granted(conn)) == 3


async def _wait_for(conn: Conn) -> float:
    row = await (await conn.execute(QUERIES["take_request"], {"limit": X})).fetchone()
    assert row is not None
    return float(row["wait"])


async def test_no_more_requests_than_the_window_allows_whoever_asks(
    conn: Conn, connections: list[Conn]
) -> None:
    await _limit(conn, requests=5, per="2s")
    waits = await asyncio.gather(*(_wait_for(c) for c in connections))
    assert sorted(waits)[:5] == [0.0] * 5
    # The others wait until the oldest of the five leaves the 2 s window.
    assert all(0 < wait <= 2 for wait in sorted(waits)[5:]), waits


async def test_a_429_pauses_every_workers_requests_until_its_reset(conn: Conn, db_url: str) -> None:
    settings = Settings()
    async with open_pool(db_url, settings) as pool:
        told, other = Requests(pool, "told"), Requests(pool, "other")
        await told.record_pause("x", 1.0)  # no limit configured: the pause holds all the same
        row = await (
            await conn.execute("SELECT * FROM flow_limits WHERE name = %s", (X,))
        ).fetchone()
        assert row is not None and row["paused_by"] == "told"
        assert 0.5 < await _wait_for(conn) <= 1.0
        started = time.monotonic()
        with requests_kept(other):
            await wait_for_request("x")  # another worker's next request waits out the pause
        assert time.monotonic() - started >= 0.5
        assert await _wait_for(conn) == 0.0


async def _claimed(conn: Conn, limit: int = 10) -> list[str]:
    cursor = await conn.execute(
        QUERIES["claim_runs"],
        claim_params(limit, "tester", timedelta(seconds=30), VERSIONS),
        binary=True,
    )
    claims, unloadable = await load_claims(cursor)
    assert unloadable == []
    return sorted(c.run_id for c in claims)


async def _parked_for_room(conn: Conn) -> dict[str, str | None]:
    """The runs parked for room in their project: their limit, and whether handed it."""
    rows = await (
        await conn.execute(
            "SELECT run_id, waiting_for ->> 'limit' AS room, wake_at FROM runs"
            " WHERE status = 'waiting_limit' ORDER BY run_id"
        )
    ).fetchall()
    return {r["run_id"]: r["room"] + (" (handed room)" if r["wake_at"] else "") for r in rows}


async def _sized(conn: Conn) -> None:
    """Finished runs enough for the claim's plan to be the one a real database gets,
    which sets the claim's runs running in the claim's order (test_schema checks it)."""
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow) "
        "SELECT 'run_done_' || i, 'old', 'published', '{}', 'slotted' "
        "FROM generate_series(1, 5000) i"
    )
    await conn.execute("ANALYZE runs")


async def test_the_claim_sets_no_more_runs_of_a_project_running_than_its_limit(
    conn: Conn,
) -> None:
    await _sized(conn)
    await _limit(conn, project=2)
    (busy,) = await _runs(conn, 1, project="busy")
    busy_queued = await _runs(conn, 3, "queued", project="busy")
    quiet_queued = await _runs(conn, 3, "queued", project="quiet")
    # An approved gate of the busy project: started work, taken before its new runs.
    (gate,) = await _runs(conn, 1, "pending_review", project="busy", waiting_for={"gate": "review"})
    await conn.execute(
        "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 't')", (gate,)
    )
    # busy: 1 running, room for 1; quiet: room for 2. The queued runs beyond that are
    # parked for room: out of the queue, so no later claim walks past them.
    assert await _claimed(conn) == sorted([gate, *quiet_queued[:2]])
    assert await _parked_for_room(conn) == {
        **{run_id: "project:busy" for run_id in busy_queued},
        quiet_queued[2]: "project:quiet",
    }
    assert await _claimed(conn) == []
    # A takeover adds no run executing: a dead worker's run of a full project is taken.
    await conn.execute(
        "UPDATE runs SET lease_expires_at = NOW() - INTERVAL '1 second' WHERE run_id = %s", (busy,)
    )
    assert await _claimed(conn) == [busy]
    # A run that stops executing hands its room to the project's best parked run,
    # which the claim starts from its payload, as any new run.
    await conn.execute("UPDATE runs SET status = 'published' WHERE run_id = %s", (busy,))
    assert (await _parked_for_room(conn))[busy_queued[0]] == "project:busy (handed room)"
    (started,) = await claim(conn, VERSIONS)
    assert started.run_id == busy_queued[0]
    assert (started.resume, started.checkpoint, started.payload) == (None, None, {})
    assert (await store.get_run(conn, started.run_id))["waiting_for"] is None


async def test_a_resume_the_project_has_no_room_for_waits_where_it_is(conn: Conn) -> None:
    await _sized(conn)
    await _limit(conn, project=2)
    await _runs(conn, 1)
    (vip,) = await _runs(conn, 1, "queued", priority=9)
    # Its project has room for one as the claim reads it: the new run, first in the
    # claim's order, takes it; the approved gate, next, waits with its approval.
    (gate,) = await _runs(conn, 1, "pending_review", waiting_for={"gate": "review"})
    await conn.execute(
        "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 't')", (gate,)
    )
    assert await _claimed(conn) == [vip]
    waiting = await store.get_run(conn, gate)
    assert (waiting["status"], waiting["waiting_for"]) == ("pending_review", {"gate": "review"})
    approval = await (
        await conn.execute(
            "SELECT consumed_at, voided_at FROM hitl_approvals WHERE run_id = %s", (gate,)
        )
    ).fetchone()
    assert approval == {"consumed_at": None, "voided_at": None}


async def test_a_full_projects_runs_get_room_by_priority_then_age(conn: Conn) -> None:
    await _sized(conn)
    await _limit(conn, project=1)
    (holder,) = await _runs(conn, 1)
    low_old, high_old, high_new = [
        (await _runs(conn, 1, "queued", tag=tag, priority=priority))[0]
        for tag, priority in (("low_old", 0), ("high_old", 5), ("high_new", 5))
    ]
    for run_id, age in ((low_old, "2 hours"), (high_old, "1 hour")):
        await conn.execute(
            "UPDATE runs SET created_at = NOW() - %s::interval WHERE run_id = %s", (age, run_id)
        )
    assert await _claimed(conn) == []  # the project is full: all three are parked
    order = []
    for stopping in (holder, high_old, high_new):
        await conn.execute("UPDATE runs SET status = 'published' WHERE run_id = %s", (stopping,))
        (started,) = await _claimed(conn)
        order.append(started)
    assert order == [high_old, high_new, low_old]


async def test_the_project_limit_holds_between_claims_at_the_same_time(
    conn: Conn, approver_conn: Conn
) -> None:
    await _limit(conn, project=1)
    first, second = await _runs(conn, 2, "queued")
    async with approver_conn.transaction():
        # One daemon's claim, not yet committed, takes the project's one place...
        cursor = await approver_conn.execute(
            QUERIES["claim_runs"],
            claim_params(1, "other", timedelta(seconds=30), VERSIONS),
            binary=True,
        )
        assert [c.run_id for c in (await load_claims(cursor))[0]] == [first]
        # ...another's, at the same moment, reads the project as empty, yet does not
        # set its run running.
        assert await _claimed(conn) == []
    assert await _claimed(conn) == []  # now it reads it full: the run is parked
    assert await _parked_for_room(conn) == {second: "project:p"}


class Slotted(TypedDict, total=False):
    project: str


async def _work(state: Slotted, runtime: Runtime[RunContext]) -> dict[str, Any]:
    await runtime.context.limits.slot("x", "job")  # first: a parked node runs again
    await record_node("work", runtime)
    return {}


def _review(state: Slotted) -> dict[str, Any]:
    interrupt({"gate": "review"})  # the job "in flight" while the run waits here
    return {}


async def _done(state: Slotted, runtime: Runtime[RunContext]) -> dict[str, Any]:
    await runtime.context.limits.release("x", "job")
    await record_node("done", runtime)
    return {}


def _slotted() -> Workflow:
    builder = StateGraph(Slotted, context_schema=RunContext)
    builder.add_node("work", _work)
    builder.add_node("review", _review)
    builder.add_node("done", _done)
    builder.add_edge(START, "work")
    builder.add_edge("work", "review")
    builder.add_edge("review", "done")
    return Workflow("slotted", "1", builder.compile())


async def _statuses(conn: Conn, ids: list[str]) -> list[str]:
    rows = await (
        await conn.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (ids,))
    ).fetchall()
    return [{r["run_id"]: r["status"] for r in rows}[run_id] for run_id in ids]


async def test_a_step_over_its_limit_parks_and_resumes_when_handed_a_slot(
    db_url: str, conn: Conn
) -> None:
    await _limit(conn, concurrent=1)
    ids = [
        (await store.create_run(conn, project="p", payload={}, workflow="slotted"))["run_id"]
        for _ in range(3)
    ]
    async with open_pool(db_url, Settings()) as pool:
        executor = Executor(pool, Settings(max_attempts=1), {"slotted": _slotted()})

        async def execute() -> list[str | None]:
            return [await executor.execute(c) for c in await claim(conn, VERSIONS)]

        # The oldest takes the slot and waits at its gate, the job in flight; the
        # others park for the slot, holding no worker.
        assert await execute() == ["pending_review", "waiting_limit", "waiting_limit"]
        parked = await store.get_run(conn, ids[1])
        assert parked["waiting_for"] == {"limit": X, "key": "job", "pause_id": 1}
        assert parked["lease_owner"] is None and parked["wake_at"] is None
        for holder, heir in ((ids[0], ids[1]), (ids[1], ids[2]), (ids[2], None)):
            await conn.execute(
                "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 't')",
                (holder,),
            )
            assert await execute() == ["published"]  # its last node gives the slot back
            if heir is not None:  # handed to the next parked run, which goes on
                assert await execute() == ["pending_review"]
                assert await _held(conn) == [heir]
    assert await _statuses(conn, ids) == ["published"] * 3
    rows = await (
        await conn.execute(
            "SELECT run_id, node, count(*) AS n FROM node_ledger GROUP BY 1, 2 ORDER BY 1, 2"
        )
    ).fetchall()
    # Each node's work ran once per run: a parked node stops before its work.
    assert [(r["run_id"], r["node"], r["n"]) for r in rows] == [
        (run_id, node, 1) for run_id in sorted(ids) for node in ("done", "work")
    ]
    assert await _held(conn) == []


async def _calls_x(state: Slotted, runtime: Runtime[RunContext]) -> dict[str, Any]:
    await wait_for_request("x")  # as a provider client does before each request
    await record_node("call", runtime)
    return {}


async def test_a_long_pause_of_a_providers_requests_parks_the_run_until_it_ends(
    db_url: str, conn: Conn
) -> None:
    builder = StateGraph(Slotted, context_schema=RunContext)
    builder.add_node("call", _calls_x)
    builder.add_edge(START, "call")
    calling = Workflow("slotted", "1", builder.compile())
    run = await store.create_run(conn, project="p", payload={}, workflow="slotted")
    async with open_pool(db_url, Settings()) as pool:
        await Requests(pool, "told").record_pause("x", 600)  # longer than a worker waits
        executor = Executor(pool, Settings(max_attempts=1), {"slotted": calling})
        (first,) = await claim(conn, VERSIONS)
        assert await executor.execute(first) == "waiting_limit"  # no worker held meanwhile
        parked = await store.get_run(conn, run["run_id"])
        assert parked["waiting_for"]["limit"] == X and "until" in parked["waiting_for"]
        assert timedelta(minutes=9) < parked["wake_at"] - datetime.now(UTC) <= timedelta(minutes=10)
        assert store.due_at(parked) == parked["wake_at"]
        # The pause ends early (say, an operator lifted it): the run is due at its wake_at.
        await conn.execute("UPDATE flow_limits SET paused_until = NULL")
        await conn.execute("UPDATE runs SET wake_at = NOW() WHERE run_id = %s", (run["run_id"],))
        (resumed,) = await claim(conn, VERSIONS)
        assert resumed.resume is not None and resumed.resume["limit"] == X
        assert await executor.execute(resumed) == "published"
    rows = await (await conn.execute("SELECT node FROM node_ledger")).fetchall()
    assert [row["node"] for row in rows] == ["call"]  # the request went once, after the pause
