"""Durable sleep across a crash: 100 runs sleep 3 s, their daemon is SIGKILLed while
they sleep, and another daemon wakes every one once, on time."""

import statistics
from datetime import datetime
from pathlib import Path

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.helpers import daemons, wait_for

Conn = AsyncConnection[DictRow]
RUNS, NAP = 100, 3.0


async def test_a_hundred_sleeping_runs_survive_sigkill_and_wake_once_each(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    run_ids = [
        (await store.create_run(conn, project="p", payload={"nap": NAP}, workflow="sleeper"))[
            "run_id"
        ]
        for _ in range(RUNS)
    ]
    with daemons(db_url, tmp_path) as start:
        doomed = start("doomed", concurrency=50)
        await wait_for(
            conn,
            "SELECT count(*) AS n FROM runs WHERE status = 'waiting_timer'",
            until=lambda rows: rows[0]["n"] == RUNS,
            within=60,
        )
        doomed.kill()
        # Asleep, they hold no lease: nothing waits for one to expire.
        held = await (
            await conn.execute("SELECT count(*) AS n FROM runs WHERE lease_owner IS NOT NULL")
        ).fetchone()
        assert held == {"n": 0}
        start("heir", concurrency=50)
        rows = await wait_for(
            conn,
            "SELECT run_id, status, result FROM runs",
            until=lambda rows: all(row["status"] == "published" for row in rows),
            within=60,
        )
    assert sorted(row["run_id"] for row in rows) == sorted(run_ids)
    executions = await (
        await conn.execute("SELECT run_id, node, count(*) AS n FROM node_ledger GROUP BY 1, 2")
    ).fetchall()
    counts = {(row["run_id"], row["node"]): row["n"] for row in executions}
    for run_id in run_ids:
        assert [counts.get((run_id, node)) for node in ("before", "nap", "after")] == [1, 1, 1]
    late = sorted(
        (
            datetime.fromisoformat(row["result"]["woke"])
            - datetime.fromisoformat(row["result"]["due"])
        ).total_seconds()
        for row in rows
    )
    assert late[0] >= 0, late  # none woke early
    p50, p99 = statistics.quantiles(late, n=100)[49], statistics.quantiles(late, n=100)[98]
    print(f"lateness after the due time: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
