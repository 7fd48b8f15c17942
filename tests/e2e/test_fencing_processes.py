"""Fencing against real daemon processes frozen with SIGSTOP past their lease (the
in-process checks are in tests/integration/test_fencing.py)."""

from pathlib import Path

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.helpers import daemons, table_checksums, wait_for, wait_for_log
from tests.stack import stack

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status FROM runs WHERE run_id = %s"


async def test_a_daemon_stopped_past_its_lease_writes_nothing_when_it_wakes(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    run = await store.create_run(conn, project="p", payload={"node_delay": 2}, workflow="ledger")
    run_id = run["run_id"]
    with daemons(db_url, tmp_path) as start:
        frozen = start("frozen", lease_ttl=1)
        await wait_for(conn, "SELECT 1 FROM node_ledger WHERE run_id = %s", (run_id,), until=bool)
        frozen.pause()  # SIGSTOP mid-node, holding the lease
        start("heir", lease_ttl=1)
        await wait_for(conn, STATUS, (run_id,), until=lambda r: r[0]["status"] == "pending_review")
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, 'review')", (run_id,)
        )
        await wait_for(conn, STATUS, (run_id,), until=lambda r: r[0]["status"] == "published")
        before = await table_checksums(conn)
        frozen.resume()  # SIGCONT: it finishes its node and tries to checkpoint
        await wait_for_log(frozen, "lease lost")
        ledger = await (
            await conn.execute("SELECT node, epoch FROM node_ledger ORDER BY id")
        ).fetchall()
    assert await table_checksums(conn) == before
    # The frozen daemon ran n1 at epoch 1; everything after is the heir's.
    assert [(r["node"], r["epoch"]) for r in ledger] == [
        ("n1", 1),
        ("n1", 2),
        ("n2", 2),
        ("n4", 3),
        ("n5", 3),
    ]


async def test_a_daemon_stopped_mid_provider_call_makes_no_call_or_write_when_it_wakes(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path, lease_ttl=1) as s:
        frozen = s.daemon("frozen")
        created = await s.http.post(f"{s.api}/runs", json={"project": "p", "brief": "b"})
        run_id = created.json()["run_id"]
        await wait_for(
            conn, STATUS, (run_id,), until=lambda r: r[0]["status"] == "pending_workflow"
        )
        await s.configure_sandbox(response_delay=4)
        await s.http.post(f"{s.api}/runs/{run_id}/approvals", json={"gate": "workflow"})
        await s.wait_for_call(run_id, "gpt4o_image_generate")
        frozen.pause()  # SIGSTOP while its request is with kie.ai
        await s.configure_sandbox(response_delay=0)
        s.daemon("heir")
        await wait_for(
            conn, STATUS, (run_id,), until=lambda r: r[0]["status"] == "pending_publish", within=60
        )
        await s.http.post(f"{s.api}/runs/{run_id}/approvals", json={"gate": "publish"})
        await wait_for(
            conn, STATUS, (run_id,), until=lambda r: r[0]["status"] == "published", within=60
        )
        calls, before = len(await s.sandbox_calls()), await table_checksums(conn)
        frozen.resume()  # its answer is waiting in the socket buffer
        await wait_for_log(frozen, "lease lost")
        assert len(await s.sandbox_calls()) == calls
        assert await table_checksums(conn) == before
