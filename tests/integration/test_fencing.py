"""A worker that lost its lease writes nothing more: no checkpoint, artifact or status."""

import asyncio
from datetime import timedelta

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.connections import open_pool
from engine.runtime import store
from engine.runtime.claims import Claim
from engine.runtime.executor import Executor
from engine.runtime.lease import Lease, LeaseLost
from engine.runtime.session import RunSession
from engine.runtime.workflow import RunContext
from engine.settings import Settings
from tests.graphs import ledger_workflow
from tests.helpers import wait_for

Conn = AsyncConnection[DictRow]


async def _claim_as(conn: Conn, run_id: str, worker: str) -> int:
    row = await (
        await conn.execute(
            "UPDATE runs SET status = 'running', lease_owner = %s, "
            "lease_expires_at = NOW() + INTERVAL '1 minute', lease_epoch = lease_epoch + 1 "
            "WHERE run_id = %s RETURNING lease_epoch",
            (worker, run_id),
        )
    ).fetchone()
    assert row is not None
    return int(row["lease_epoch"])


async def _counts(conn: Conn, run_id: str) -> dict[str, object]:
    row = await (
        await conn.execute(
            "SELECT (SELECT count(*) FROM checkpoints WHERE thread_id = %(r)s) AS checkpoints,"
            " (SELECT count(*) FROM checkpoint_writes WHERE thread_id = %(r)s) AS writes,"
            " (SELECT step FROM orchestration_checkpoints WHERE run_id = %(r)s) AS step,"
            " (SELECT count(*) FROM artifacts WHERE run_id = %(r)s) AS artifacts,"
            " (SELECT status || ':' || lease_owner FROM runs WHERE run_id = %(r)s) AS holder",
            {"r": run_id},
        )
    ).fetchone()
    assert row is not None
    return dict(row)


async def test_a_worker_whose_lease_was_taken_mid_node_writes_nothing_after(
    db_url: str, conn: Conn
) -> None:
    settings = Settings(max_attempts=1)
    run = await store.create_run(conn, project="p", payload={"node_delay": 0.5}, workflow="ledger")
    run_id = run["run_id"]
    epoch = await _claim_as(conn, run_id, "zombie")
    async with open_pool(db_url, settings) as pool:
        executor = Executor(pool, settings, {"ledger": ledger_workflow()})
        claim = Claim(run_id, "p", "ledger", run["payload"], epoch, resume=None, checkpoint=None)
        execution = asyncio.create_task(executor.execute(claim))
        # While n1 sleeps, another worker takes the run over.
        await wait_for(conn, "SELECT 1 FROM node_ledger WHERE run_id = %s", (run_id,), until=bool)
        await _claim_as(conn, run_id, "thief")
        before = await _counts(conn, run_id)
        await execution
        assert await _counts(conn, run_id) == before
        assert before["holder"] == "running:thief"
        executed = await (
            await conn.execute("SELECT node FROM node_ledger WHERE run_id = %s", (run_id,))
        ).fetchall()
        assert [row["node"] for row in executed] == ["n1"]

        context = RunContext("p", RunSession(pool, Lease(run_id, epoch, timedelta(seconds=30))))
        with pytest.raises(LeaseLost, match=f"run {run_id} is no longer held at epoch {epoch}"):
            await context.record_artifact("script", key="late")
        assert await _counts(conn, run_id) == before
