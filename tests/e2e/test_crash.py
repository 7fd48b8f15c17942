"""Crashes and shutdowns: SIGKILL loses nothing, SIGTERM drains, two daemons never collide.

Each runs twice (`route`): on the database straight, and with the daemons behind
PgBouncer in transaction mode (docs/operations.md#behind-pgbouncer)."""

import asyncio
from pathlib import Path

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.helpers import daemons, wait_for
from tests.pgbouncer import Route

Conn = AsyncConnection[DictRow]
NODES = ("n1", "n2", "n4", "n5")


async def _approve_whatever_waits(conn: Conn, stop: asyncio.Event) -> None:
    """Approve, with plain SQL, every run that reaches the review gate."""
    while not stop.is_set():
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver) "
            "SELECT run_id, 'review', 'bot' FROM runs r WHERE status = 'pending_review' "
            "AND NOT EXISTS (SELECT 1 FROM hitl_approvals a "
            "                WHERE a.run_id = r.run_id AND a.consumed_at IS NULL)"
        )
        await asyncio.sleep(0.02)


async def _executions(conn: Conn) -> dict[tuple[str, str], int]:
    rows = await (
        await conn.execute("SELECT run_id, node, count(*) AS n FROM node_ledger GROUP BY 1, 2")
    ).fetchall()
    return {(r["run_id"], r["node"]): r["n"] for r in rows}


async def _create(conn: Conn, count: int, delay: float) -> list[str]:
    return [
        (
            await store.create_run(
                conn, project="p", payload={"node_delay": delay}, workflow="ledger"
            )
        )["run_id"]
        for _ in range(count)
    ]


def _all_published(rows: list[dict[str, object]]) -> bool:
    return bool(rows) and all(row["status"] == "published" for row in rows)


ALL_RUNS = "SELECT run_id, status FROM runs"


async def test_sigkill_mid_graph_loses_nothing_and_repeats_no_completed_node(
    route: Route, conn: Conn, approver_conn: Conn, tmp_path: Path
) -> None:
    concurrency = 4
    run_ids = await _create(conn, 8, delay=0.3)
    stop = asyncio.Event()
    approver = asyncio.create_task(_approve_whatever_waits(approver_conn, stop))
    try:
        with daemons(route.url, tmp_path, **route.settings) as start:
            first = start("doomed", concurrency=concurrency, lease_ttl=2)
            # Kill once nodes are being executed on both sides of the gate.
            await wait_for(
                conn,
                "SELECT count(*) AS n FROM node_ledger WHERE node IN ('n4', 'n5')",
                until=lambda rows: rows[0]["n"] >= 2,
            )
            first.kill()
            in_flight = await (
                await conn.execute("SELECT count(*) AS n FROM runs WHERE status = 'running'")
            ).fetchone()
            assert in_flight is not None and in_flight["n"] > 0, "nothing was mid-graph"
            start("heir", concurrency=concurrency, lease_ttl=2)
            await wait_for(conn, ALL_RUNS, until=_all_published, within=60)
    finally:
        stop.set()
        await approver

    executions = await _executions(conn)
    for run_id in run_ids:
        assert all(executions.get((run_id, node), 0) >= 1 for node in NODES), run_id
        repeated = [node for node in NODES if executions.get((run_id, node), 0) > 1]
        # Only the node that was in flight when the daemon died may run again.
        assert len(repeated) <= 1, (run_id, repeated)
        for node in repeated:
            assert executions[(run_id, node)] == 2
    repeats = sum(n - 1 for n in executions.values())
    assert repeats <= concurrency


async def test_sigterm_drains_and_exits_zero_leaving_no_live_lease(
    route: Route, conn: Conn, tmp_path: Path
) -> None:
    await _create(conn, 6, delay=0.5)
    with daemons(route.url, tmp_path, **route.settings) as start:
        daemon = start("graceful", concurrency=3, shutdown_grace=0.2)
        await wait_for(
            conn,
            "SELECT count(*) AS n FROM runs WHERE status = 'running'",
            until=lambda rows: rows[0]["n"] >= 1,
        )
        assert daemon.terminate() == 0, daemon.log()
        assert "daemon stopped" in daemon.log()
    live = await (
        await conn.execute(
            "SELECT run_id FROM runs WHERE status = 'running' AND lease_expires_at > NOW()"
        )
    ).fetchall()
    assert live == []
    # Whatever it gave back, a new daemon takes over at once (no lease to wait out).
    with daemons(route.url, tmp_path, **route.settings) as start:
        start("next", lease_ttl=600)
        await wait_for(
            conn,
            ALL_RUNS,
            until=lambda rows: all(r["status"] == "pending_review" for r in rows),
        )


async def test_two_daemons_never_execute_the_same_node_of_a_run_twice(
    route: Route, conn: Conn, approver_conn: Conn, tmp_path: Path
) -> None:
    run_ids = await _create(conn, 16, delay=0.05)
    stop = asyncio.Event()
    approver = asyncio.create_task(_approve_whatever_waits(approver_conn, stop))
    try:
        with daemons(route.url, tmp_path, **route.settings) as start:
            pair = [start("a", concurrency=4), start("b", concurrency=4)]
            await wait_for(conn, ALL_RUNS, until=_all_published, within=60)
            assert all("run claimed" in daemon.log() for daemon in pair), "one daemon idled"
    finally:
        stop.set()
        await approver
    executions = await _executions(conn)
    assert executions == {(run_id, node): 1 for run_id in run_ids for node in NODES}
    owners = await (
        await conn.execute("SELECT DISTINCT lease_owner FROM runs WHERE lease_owner IS NOT NULL")
    ).fetchall()
    assert owners == []
