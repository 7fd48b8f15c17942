"""Workers: each daemon's heartbeat row, and the live runs no live worker can take,
flagged in the API, the console's runs list, the run page and the workers page."""

import os
import re
import socket
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow

from engine.db.queries import QUERIES
from engine.db.status import Status
from engine.runtime import store, workers
from engine.runtime.daemon import workflow_versions
from engine.settings import Settings
from tests.graphs import ledger_workflow
from tests.helpers import in_process_daemon, wait_for
from tests.integration.test_console import console, text

Conn = AsyncConnection[DictRow]
# Beats every 0.2 s: a test sees a second beat quickly.
SETTINGS = Settings(worker_id="w-ledger", poll_interval=0.1, lease_ttl=0.6, max_attempts=1)
ROW = "SELECT *, live_until > NOW() AS live FROM workers"


def daemon(db_url: str) -> AbstractAsyncContextManager[None]:
    """A daemon in this process serving the ledger graph, stopped cleanly at the end."""
    return in_process_daemon(db_url, SETTINGS, {"ledger": ledger_workflow()})


async def _run(conn: Conn, workflow: str, **columns: Any) -> str:
    run = await store.create_run(conn, project="cats", payload={}, workflow=workflow)
    for column, value in columns.items():
        change = sql.SQL("UPDATE runs SET {} = %s WHERE run_id = %s").format(sql.Identifier(column))
        await conn.execute(change, (value, run["run_id"]))
    return str(run["run_id"])


async def test_a_daemon_keeps_its_row_while_it_runs_and_takes_it_away_when_it_stops(
    db_url: str, conn: Conn
) -> None:
    async with daemon(db_url):
        [first] = await wait_for(conn, ROW, until=lambda rows: len(rows) == 1)
        assert first["worker_id"] == "w-ledger" and first["live"]
        assert (first["host"], first["pid"]) == (socket.gethostname(), os.getpid())
        assert first["version"] == workers.package_version() != "unknown"
        assert first["workflows"] == {"ledger": "ledger-1"}
        assert (first["concurrency"], first["runs_held"]) == (SETTINGS.concurrency, 0)
        # Each heartbeat renews it; the start stays.
        [later] = await wait_for(
            conn, ROW, until=lambda rows: rows[0]["last_seen"] > first["last_seen"]
        )
        assert later["started_at"] == first["started_at"]
        assert later["live_until"] - later["last_seen"] == timedelta(seconds=1.2)
    assert await (await conn.execute(ROW)).fetchall() == []


async def test_a_beat_counts_the_runs_held_and_a_start_forgets_workers_gone_a_day(
    conn: Conn,
) -> None:
    held = await _run(conn, "ledger", status=Status.RUNNING, lease_epoch=4)
    await conn.execute(
        "INSERT INTO workers (worker_id, host, pid, version, workflows, concurrency, "
        "last_seen, live_until) VALUES "
        "('gone-long', 'h', 1, '0.1', '{}', 1, NOW() - interval '2 days', "
        "NOW() - interval '25 hours'), "
        "('gone-now', 'h', 2, '0.1', '{}', 1, NOW() - interval '1 minute', "
        "NOW() - interval '1 second')"
    )
    versions = workflow_versions({"ledger": ledger_workflow()})

    async def beat(starting: bool) -> list[str]:
        params = {
            **workers.beat_params(SETTINGS, versions),
            "starting": starting,
            "run_ids": [held],
            "epochs": [4],
            "lease_ttl": timedelta(seconds=30),
            "running": Status.RUNNING,
        }
        cursor = await conn.execute(QUERIES["heartbeat"], params)
        return [row["run_id"] for row in await cursor.fetchall()]

    assert await beat(starting=False) == [held]
    names = [w["worker_id"] for w in await workers.list_workers(conn)]
    assert names == ["w-ledger", "gone-now", "gone-long"]  # live first, then the latest seen
    assert await beat(starting=True) == [held]
    listed = {w["worker_id"]: w for w in await workers.list_workers(conn)}
    assert set(listed) == {"w-ledger", "gone-now"}
    assert listed["w-ledger"]["runs_held"] == 1 and listed["w-ledger"]["live"]
    assert not listed["gone-now"]["live"] and listed["gone-now"]["seen"].endswith(" ago")


async def test_runs_no_live_worker_can_take_are_flagged_everywhere_and_served_ones_are_not(
    db_url: str, conn: Conn
) -> None:
    ended = await _run(conn, "chaos", status=Status.PUBLISHED)
    no_workflow = await _run(conn, "chaos")
    old_version = await _run(conn, "ledger", status="pending_review", graph_version="ledger-0")
    async with daemon(db_url), console(db_url) as client:
        served = await _run(conn, "ledger")
        await wait_for(
            conn,
            "SELECT status FROM runs WHERE run_id = %s",
            (served,),
            until=lambda rows: rows[0]["status"] == "pending_review",
        )
        why = {
            no_workflow: "no live worker runs chaos",
            old_version: "no live worker runs ledger at version ledger-0",
        }

        listed = (await client.get("/runs")).json()
        assert {run["run_id"]: run["unrunnable"] for run in listed} == {
            ended: None,
            no_workflow: why[no_workflow],
            old_version: why[old_version],
            served: None,
        }
        for run_id in (served, old_version):
            shown = (await client.get(f"/runs/{run_id}")).json()["run"]
            assert shown["unrunnable"] == why.get(run_id)

        overview = (await client.get("/workers")).json()
        assert [w["worker_id"] for w in overview["workers"]] == ["w-ledger"]
        assert overview["workers"][0]["workflows"] == {"ledger": "ledger-1"}
        assert overview["workers"][0]["live"] is True
        assert overview["unrunnable"] == [
            {"workflow": "chaos", "graph_version": None, "runs": 1, "reason": why[no_workflow]},
            {
                "workflow": "ledger",
                "graph_version": "ledger-0",
                "runs": 1,
                "reason": why[old_version],
            },
        ]

        page = (await client.get("/console/runs")).text
        rows = dict(re.findall(r'<tr id="row-(run_\w+)">(.*?)</tr>', page, re.S))
        assert why[no_workflow] in text(rows[no_workflow])
        assert why[old_version] in text(rows[old_version])
        assert "unrunnable" not in rows[served] and "unrunnable" not in rows[ended]
        assert why[old_version] in text((await client.get(f"/console/runs/{old_version}")).text)
        served_page = text((await client.get(f"/console/runs/{served}")).text)
        assert "no live worker" not in served_page

        for path in ("/console/workers", "/console/workers/live"):
            response = await client.get(path)
            assert response.status_code == 200
            workers_page = text(response.text)
            assert "w-ledger" in workers_page and "ledger ledger-1" in workers_page
            assert "Runs no live worker can take 2" in workers_page
            assert f'href="/console/runs/{no_workflow}"' in response.text
            assert f'href="/console/runs/{old_version}"' in response.text
            assert f'href="/console/runs/{served}"' not in response.text
        nav = (await client.get("/console/workers")).text
        assert '<a href="/console/workers" aria-current="page">Workers</a>' in nav

    # The daemon stopped cleanly: no live worker runs anything now.
    async with console(db_url) as client:
        overview = (await client.get("/workers")).json()
        assert overview["workers"] == []
        shown = (await client.get(f"/runs/{served}")).json()["run"]
        assert shown["unrunnable"] == "no live worker runs ledger at version ledger-1"
        empty = text((await client.get("/console/workers")).text)
        assert "No daemon has reported" in empty


async def test_a_gone_worker_is_listed_as_gone_and_serves_nothing(db_url: str, conn: Conn) -> None:
    queued = await _run(conn, "ledger")
    await conn.execute(
        "INSERT INTO workers (worker_id, host, pid, version, workflows, concurrency, "
        "last_seen, live_until) VALUES ('killed', 'h', 7, '0.1', '{\"ledger\": \"ledger-1\"}', "
        "4, NOW() - interval '10 seconds', NOW() - interval '1 second')"
    )
    async with console(db_url) as client:
        [worker] = (await client.get("/workers")).json()["workers"]
        assert worker["worker_id"] == "killed" and worker["live"] is False
        assert worker["seen"] in ("10 s ago", "11 s ago")
        shown = (await client.get(f"/runs/{queued}")).json()["run"]
        assert shown["unrunnable"] == "no live worker runs ledger"
        page = await client.get("/console/workers")
    assert re.search(r'<tr id="worker-killed" class="gone">', page.text)
    assert "0 live, 1 gone" in text(page.text)


async def test_finding_the_unrunnable_runs_reads_no_finished_run(conn: Conn) -> None:
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow) "
        "SELECT 'run_' || i, 'p', 'published', '{}', 'production' FROM generate_series(1, 20000) i"
    )
    await conn.execute("ANALYZE runs")
    for query, params in (("unrunnable_kinds", {}), ("unrunnable_runs", {"limit": 50})):
        cursor = await conn.execute("EXPLAIN " + QUERIES[query], params)
        plan = "\n".join(row["QUERY PLAN"] for row in await cursor.fetchall())
        assert "Seq Scan on runs" not in plan, plan
