"""A run's life through the real daemon: gates, approvals however inserted, retries, cancel."""

import json
from pathlib import Path

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from engine.runtime import store
from tests.conftest import orchestrator
from tests.helpers import daemons, wait_for
from tests.stack import stack

Conn = AsyncConnection[DictRow]
RUN_STATUS = "SELECT status, error, result FROM runs WHERE run_id = %s"


def _status_is(status: str):  # type: ignore[no-untyped-def]
    return lambda rows: rows and rows[0]["status"] == status


async def test_production_happy_path_through_the_cli(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        s.daemon("w1")
        created = orchestrator(
            db_url,
            "runs",
            "create",
            "--project",
            "cats",
            "--brief",
            "Thirty seconds on why cats sit in boxes",
        )
        assert created.returncode == 0, created.stderr
        run_id = created.stdout.strip().splitlines()[-1]
        assert run_id.startswith("run_")

        await wait_for(conn, RUN_STATUS, (run_id,), until=_status_is("pending_workflow"))
        approved = orchestrator(
            db_url, "runs", "approve", run_id, "--gate", "workflow", "--approver", "ann"
        )
        assert approved.returncode == 0, approved.stderr
        await wait_for(conn, RUN_STATUS, (run_id,), until=_status_is("pending_publish"))
        approved = orchestrator(db_url, "runs", "approve", run_id, "--gate", "publish")
        assert approved.returncode == 0, approved.stderr
        await wait_for(conn, RUN_STATUS, (run_id,), until=_status_is("published"))
        # The daemon takes up each notification, and with no channel configured only
        # records it.
        await wait_for(
            conn,
            "SELECT status FROM artifacts WHERE run_id = %s AND type = 'notification'",
            (run_id,),
            until=lambda rows: [r["status"] for r in rows] == ["recorded"] * 3,
        )

    shown = orchestrator(db_url, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["run"]["status"] == "published"
    assert view["run"]["graph_version"] == "production-2"
    assert view["checkpoint"]["state"]["values"]["done"] == [
        "script_writer",
        "media",
        "editor",
        "publisher",
    ]
    made = [a for a in view["artifacts"] if a["type"] != "notification"]
    assert [a["type"] for a in made] == [
        "workflow_proposal",
        "script",
        "image",
        "render",
        "publication",
    ]
    # Recorded by the run's own status changes.
    notified = [a for a in view["artifacts"] if a["type"] == "notification"]
    assert [(a["metadata"]["event"], a["metadata"].get("gate"), a["status"]) for a in notified] == [
        ("gate", "workflow", "recorded"),
        ("gate", "publish", "recorded"),
        ("published", None, "recorded"),
    ]
    listed = json.loads(orchestrator(db_url, "runs", "list", "--json").stdout)
    assert [r["run_id"] for r in listed] == [run_id]
    approvals = await (
        await conn.execute("SELECT gate, approver, consumed_at FROM hitl_approvals ORDER BY id")
    ).fetchall()
    assert [(a["gate"], a["approver"]) for a in approvals] == [
        ("workflow", "ann"),
        ("publish", None),
    ]
    assert all(a["consumed_at"] is not None for a in approvals)


async def test_plain_sql_approval_resumes_the_run(db_url: str, conn: Conn, tmp_path: Path) -> None:
    run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    with daemons(db_url, tmp_path) as start:
        start("w1")
        await wait_for(conn, RUN_STATUS, (run["run_id"],), until=_status_is("pending_review"))
        # Exactly what an operator would type in psql.
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 'psql')",
            (run["run_id"],),
        )
        rows = await wait_for(conn, RUN_STATUS, (run["run_id"],), until=_status_is("published"))
    assert rows[0]["result"]["visited"] == ["n1", "n2", "n4", "n5"]
    assert rows[0]["result"]["decision"]["approver"] == "psql"


async def test_rejection_returns_to_brendan_and_an_edited_workflow_runs(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    run = await store.create_run(
        conn, project="p", payload={"brief": "dogs"}, workflow="production"
    )
    run_id = run["run_id"]
    async with stack(db_url, tmp_path) as s:
        s.daemon("w1")
        await wait_for(conn, RUN_STATUS, (run_id,), until=_status_is("pending_workflow"))
        await store.approve(conn, run_id, gate="workflow", rejected=True, comment="skip media")
        proposals = await wait_for(
            conn,
            "SELECT metadata FROM artifacts WHERE run_id = %s AND type = 'workflow_proposal' "
            "ORDER BY id",
            (run_id,),
            until=lambda rows: len(rows) == 2,
        )
        assert proposals[1]["metadata"]["workflow"] == ["script_writer", "editor", "publisher"]
        await wait_for(conn, RUN_STATUS, (run_id,), until=_status_is("pending_workflow"))
        # An edit that cannot work is sent back to the approver, with the reason.
        await store.approve(
            conn, run_id, gate="workflow", payload={"workflow": ["script_writer", "publisher"]}
        )
        waiting = await wait_for(
            conn,
            "SELECT waiting_for FROM runs WHERE run_id = %s AND status = 'pending_workflow'",
            (run_id,),
            until=lambda rows: bool(rows) and "problem" in (rows[0]["waiting_for"] or {}),
        )
        assert waiting[0]["waiting_for"]["problem"] == (
            "workflow: the publisher needs the editor's video before it"
        )
        await store.approve(
            conn,
            run_id,
            gate="workflow",
            payload={"workflow": ["script_writer", "editor", "publisher"]},
        )
        await wait_for(conn, RUN_STATUS, (run_id,), until=_status_is("pending_publish"))
        await store.approve(conn, run_id, gate="publish")
        rows = await wait_for(conn, RUN_STATUS, (run_id,), until=_status_is("published"))
    assert rows[0]["result"]["done"] == ["script_writer", "editor", "publisher"]
    assert rows[0]["result"]["feedback"] == ["skip media"]


async def test_node_errors_are_retried_then_fail_and_retry_resumes(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    flaky = await store.create_run(conn, project="p", payload={"fail_times": 2}, workflow="ledger")
    broken = await store.create_run(conn, project="p", payload={"fail_times": 4}, workflow="ledger")
    with daemons(db_url, tmp_path) as start:
        start("w1", max_attempts=3)
        await wait_for(conn, RUN_STATUS, (flaky["run_id"],), until=_status_is("pending_review"))
        rows = await wait_for(conn, RUN_STATUS, (broken["run_id"],), until=_status_is("failed"))
        assert rows[0]["error"]["type"] == "RuntimeError"
        assert "fails on purpose" in rows[0]["error"]["message"]

        retried = orchestrator(db_url, "runs", "retry", broken["run_id"])
        assert retried.returncode == 0, retried.stderr
        await wait_for(conn, RUN_STATUS, (broken["run_id"],), until=_status_is("pending_review"))
    ledger = await (
        await conn.execute("SELECT run_id, node, count(*) AS n FROM node_ledger GROUP BY 1, 2")
    ).fetchall()
    counts = {(r["run_id"], r["node"]): r["n"] for r in ledger}
    # n1 completed before the failures and is never run again; n2 ran until it passed.
    assert counts[(flaky["run_id"], "n1")] == 1
    assert counts[(flaky["run_id"], "n2")] == 3
    assert counts[(broken["run_id"], "n1")] == 1
    assert counts[(broken["run_id"], "n2")] == 5


async def test_cancel_stops_a_waiting_run_and_refuses_a_second_time(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    with daemons(db_url, tmp_path) as start:
        start("w1")
        await wait_for(conn, RUN_STATUS, (run["run_id"],), until=_status_is("pending_review"))
    first = orchestrator(db_url, "runs", "cancel", run["run_id"])
    assert first.returncode == 0, first.stderr
    second = orchestrator(db_url, "runs", "cancel", run["run_id"])
    assert second.returncode == 1
    assert second.stderr.strip() == f"error: run {run['run_id']} is cancelled: it has already ended"
    row = await (await conn.execute(RUN_STATUS, (run["run_id"],))).fetchone()
    assert row is not None and row["status"] == "cancelled"


async def test_a_run_inserted_with_plain_sql_starts_from_its_payload(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow) "
        "VALUES ('run_fromsql00001', 'p', 'queued', %s, 'ledger')",
        (Jsonb({"node_delay": 0}),),
    )
    with daemons(db_url, tmp_path) as start:
        start("w1")
        await wait_for(conn, RUN_STATUS, ("run_fromsql00001",), until=_status_is("pending_review"))


async def test_work_announced_while_every_slot_is_busy_starts_when_a_slot_frees(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    # One slot and a poll too slow to matter: only the NOTIFY that arrived while
    # the slot was busy can start the second run once the first one pauses.
    busy = await store.create_run(conn, project="p", payload={"node_delay": 0.5}, workflow="ledger")
    with daemons(db_url, tmp_path) as start:
        start("w1", concurrency=1, poll_interval=300)
        await wait_for(conn, RUN_STATUS, (busy["run_id"],), until=_status_is("running"))
        announced = await store.create_run(
            conn, project="p", payload={"node_delay": 0}, workflow="ledger"
        )
        await wait_for(conn, RUN_STATUS, (busy["run_id"],), until=_status_is("pending_review"))
        await wait_for(
            conn, RUN_STATUS, (announced["run_id"],), until=_status_is("pending_review"), within=20
        )
