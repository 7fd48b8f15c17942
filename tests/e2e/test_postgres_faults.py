"""PostgreSQL restarts under a working daemon and API: nothing lost, work resumes."""

import time
from pathlib import Path

import httpx
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from engine.runtime import store
from tests.conftest import Postgres
from tests.helpers import wait_for
from tests.stack import stack

ALL = "SELECT run_id, status FROM runs"


async def _until_ready(client: httpx.AsyncClient, url: str, status: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (await client.get(url)).status_code != status:
        assert time.monotonic() < deadline, f"{url} never answered {status}"


async def test_daemon_and_api_ride_out_a_postgres_restart(
    db_url: str, postgres: Postgres, tmp_path: Path
) -> None:
    async with await AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        run_ids = [
            (await store.create_run(c, project="p", payload={"node_delay": 2}, workflow="ledger"))[
                "run_id"
            ]
            for _ in range(4)
        ]

    # A long poll interval: after the restart only a re-established LISTEN
    # wakes the daemon in time for the approvals below.
    async with stack(db_url, tmp_path, poll_interval=60, lease_ttl=3) as s:
        daemon = s.daemon("survivor")
        async with await AsyncConnection.connect(
            db_url, autocommit=True, row_factory=dict_row
        ) as c:
            await wait_for(
                c, "SELECT 1 FROM node_ledger WHERE epoch = 1 AND node = 'n2'", until=bool
            )
        postgres.stop()
        try:
            await _until_ready(s.http, f"{s.api}/readyz", 503, within=10)
        finally:
            postgres.start()
        restarted = time.monotonic()
        async with await AsyncConnection.connect(
            db_url, autocommit=True, row_factory=dict_row
        ) as c:
            # The runs were mid-node through the outage: a checkpoint proves they resumed.
            await wait_for(
                c,
                "SELECT 1 FROM orchestration_checkpoints "
                "WHERE updated_at > pg_postmaster_start_time()",
                until=bool,
                within=30,
            )
            resumed = time.monotonic() - restarted
            print(f"first checkpoint {resumed:.2f} s after PostgreSQL came back")
            rows = await wait_for(
                c,
                ALL,
                until=lambda rows: all(r["status"] == "pending_review" for r in rows),
                within=60,
            )
            await _until_ready(s.http, f"{s.api}/readyz", 200, within=30)
            await c.execute(
                "INSERT INTO hitl_approvals (run_id, gate) SELECT run_id, 'review' FROM runs"
            )
            await wait_for(
                c, ALL, until=lambda rows: all(r["status"] == "published" for r in rows), within=20
            )
            visited = await (await c.execute("SELECT result FROM runs")).fetchall()
        assert daemon.process.poll() is None and s.processes["api"].process.poll() is None
    assert sorted(r["run_id"] for r in rows) == sorted(run_ids)
    assert all(v["result"]["visited"] == ["n1", "n2", "n4", "n5"] for v in visited)
    assert "listener lost its connection" in daemon.log()


async def test_connections_dropped_mid_step_are_replaced(
    db_url: str, admin_url: str, tmp_path: Path
) -> None:
    async with await AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        for _ in range(3):
            await store.create_run(c, project="p", payload={"node_delay": 1}, workflow="ledger")
        async with stack(db_url, tmp_path, lease_ttl=3) as s:
            daemon = s.daemon("survivor")
            await wait_for(c, "SELECT 1 FROM node_ledger WHERE node = 'n1'", until=bool)
            dbname = str(c.info.dbname)
            async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
                # Every connection of the daemon and the API, LISTEN included, cut at once.
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> %s",
                    (dbname, c.info.backend_pid),
                )
            await wait_for(
                c,
                ALL,
                until=lambda rows: all(r["status"] == "pending_review" for r in rows),
                within=30,
            )
            await c.execute(
                "INSERT INTO hitl_approvals (run_id, gate) SELECT run_id, 'review' FROM runs"
            )
            await wait_for(
                c, ALL, until=lambda rows: all(r["status"] == "published" for r in rows), within=30
            )
            await _until_ready(s.http, f"{s.api}/readyz", 200, within=10)
            assert daemon.process.poll() is None
