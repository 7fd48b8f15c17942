"""The schema: the approval guard, migrations up/down/up, the seed's queries, the claim plan."""

import re
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from engine.db.migrations import discover, migrate
from engine.db.queries import QUERIES
from engine.db.status import Status
from engine.runtime import store
from engine.runtime.claims import claim_params
from engine.settings import Settings
from tests.conftest import ROOT
from tests.helpers import table_checksums

Conn = AsyncConnection[DictRow]
TABLES = ("runs", "orchestration_checkpoints", "artifacts", "webhook_events", "hitl_approvals")


async def _snapshot(conn: Conn) -> dict[str, Any]:
    return await table_checksums(conn)


async def _set_status(conn: Conn, run_id: str, status: str) -> None:
    await conn.execute("UPDATE runs SET status = %s WHERE run_id = %s", (status, run_id))


@pytest.mark.parametrize(
    ("run_id", "gate", "status", "message"),
    [
        (
            "run_missing00000",
            "workflow",
            None,
            "approval refused: run run_missing00000 does not exist (gate workflow)",
        ),
        (
            None,
            "publish",
            "pending_workflow",
            "approval refused: run {run} is not waiting at gate publish "
            "(status is pending_workflow)",
        ),
        (
            None,
            "workflow",
            "running",
            "approval refused: run {run} is not waiting at gate workflow (status is running)",
        ),
        (
            None,
            "workflow",
            "published",
            "approval refused: run {run} is not waiting at gate workflow (status is published)",
        ),
    ],
)
async def test_bad_approvals_are_refused_by_the_trigger_and_write_nothing(
    conn: Conn, run_id: str | None, gate: str, status: str | None, message: str
) -> None:
    run = await store.create_run(conn, project="p", payload={}, workflow="production")
    if status is not None:
        await _set_status(conn, run["run_id"], status)
    target = run_id or run["run_id"]
    before = await _snapshot(conn)
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, %s, 'x')",
            (target, gate),
        )
    assert refused.value.diag.message_primary == message.format(run=run["run_id"])
    assert await _snapshot(conn) == before


async def test_a_second_approval_for_the_same_gate_is_refused(conn: Conn) -> None:
    run = await store.create_run(conn, project="p", payload={}, workflow="production")
    await _set_status(conn, run["run_id"], "pending_workflow")
    first = await store.approve(conn, run["run_id"], gate="workflow", approver="ann")
    before = await _snapshot(conn)
    with pytest.raises(store.Refused) as refused:
        await store.approve(conn, run["run_id"], gate="workflow", rejected=True)
    assert str(refused.value) == (
        f"approval refused: run {run['run_id']} already has approval {first['id']} "
        "(approved by ann) waiting at gate workflow"
    )
    assert await _snapshot(conn) == before


async def _paused(conn: Conn, gate: str, pause_id: int) -> str:
    """A run paused at `gate`, as `pause_run` leaves it, at pause `pause_id` (written by
    hand: the schema may be older than the code's insert)."""
    run_id = store.new_run_id()
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, waiting_for, workflow) "
        "VALUES (%s, 'p', %s, %s, 'production')",
        (run_id, f"pending_{gate}", Jsonb({"gate": gate, "pause_id": pause_id})),
    )
    return run_id


async def _approval(conn: Conn, approval_id: int) -> dict[str, Any]:
    row = await (
        await conn.execute(
            "SELECT pause_id, consumed_at, voided_at, void_reason FROM hitl_approvals "
            "WHERE id = %s",
            (approval_id,),
        )
    ).fetchone()
    assert row is not None
    return dict(row)


async def test_an_approval_records_the_pause_it_answers_and_no_other(conn: Conn) -> None:
    run_id = await _paused(conn, "workflow", 7)
    before = await _snapshot(conn)
    with pytest.raises(store.Refused) as refused:
        await store.approve(conn, run_id, gate="workflow", pause_id=6)
    assert str(refused.value) == (
        f"approval refused: run {run_id} at gate workflow waits at pause 7, not at pause 6 "
        "(that question was already answered or withdrawn)"
    )
    assert await _snapshot(conn) == before
    named = await store.approve(conn, run_id, gate="workflow", pause_id=7)
    assert named["pause_id"] == 7
    other = await _paused(conn, "publish", 3)
    # A plain INSERT that names no pause answers the one the run waits at.
    await conn.execute("INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, 'publish')", (other,))
    row = await (
        await conn.execute("SELECT pause_id FROM hitl_approvals WHERE run_id = %s", (other,))
    ).fetchone()
    assert row == {"pause_id": 3}


@pytest.mark.parametrize(
    ("leave", "now"),
    [
        ("UPDATE runs SET status = 'cancelled' WHERE run_id = %(run)s", "cancelled"),
        ("UPDATE runs SET status = 'failed' WHERE run_id = %(run)s", "failed"),
        ("UPDATE runs SET status = 'queued' WHERE run_id = %(run)s", "queued"),
        (
            'UPDATE runs SET waiting_for = \'{"gate": "workflow", "pause_id": 8}\' '
            "WHERE run_id = %(run)s",
            "pending_workflow",
        ),
    ],
)
async def test_a_run_leaving_its_pause_voids_the_approval_no_worker_took(
    conn: Conn, leave: Any, now: str
) -> None:
    run_id = await _paused(conn, "workflow", 7)
    sent = await store.approve(conn, run_id, gate="workflow")
    await conn.execute(leave, {"run": run_id})
    voided = await _approval(conn, sent["id"])
    assert voided["voided_at"] is not None and voided["consumed_at"] == voided["voided_at"]
    assert voided["void_reason"] == f"voided: run {run_id} left pause 7 unanswered (now {now})"
    # The void answers nothing and blocks nothing: the next pause takes a new approval.
    await conn.execute(
        "UPDATE runs SET status = 'pending_workflow', "
        'waiting_for = \'{"gate": "workflow", "pause_id": 9}\' WHERE run_id = %s',
        (run_id,),
    )
    again = await store.approve(conn, run_id, gate="workflow")
    assert (await _approval(conn, again["id"]))["voided_at"] is None


async def test_a_claim_taking_the_approval_up_does_not_void_it(conn: Conn) -> None:
    run_id = await _paused(conn, "workflow", 7)
    sent = await store.approve(conn, run_id, gate="workflow")
    claimed = await (
        await conn.execute(
            QUERIES["claim_runs"],
            claim_params(
                4, "w1", timedelta(seconds=30), {"workflows": ["production"], "versions": ["v"]}
            ),
        )
    ).fetchall()
    assert [(c["run_id"], c["resume"]["id"]) for c in claimed] == [(run_id, sent["id"])]
    assert (await _approval(conn, sent["id"]))["voided_at"] is None


async def _fill(conn: Conn, run_id: str = "run_abc123") -> None:
    """One row in every table, the run named as in the seed's examples."""
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, created_at) "
        "VALUES (%s, 'p', 'queued', '{}', NOW() - INTERVAL '1 hour')",
        (run_id,),
    )
    await conn.execute(
        "INSERT INTO orchestration_checkpoints (run_id, state) VALUES (%s, %s)",
        (run_id, Jsonb({"values": {"brief": "b"}})),
    )
    await conn.execute(
        "INSERT INTO artifacts (run_id, type, persona, idempotency_key) "
        "VALUES (%s, 'script', 'script_writer', %s)",
        (run_id, f"{run_id}:script"),
    )
    await conn.execute(
        "INSERT INTO webhook_events (provider, signature_status, delivery_id, payload) "
        "VALUES ('kie', 'valid', 'd1', '{}')"
    )
    await conn.execute(
        "UPDATE runs SET status = 'pending_workflow', "
        'waiting_for = \'{"gate": "workflow", "pause_id": 0}\' WHERE run_id = %s',
        (run_id,),
    )
    await store.approve(conn, run_id, gate="workflow", approver="ann", approver_ip="10.0.0.1")


async def test_migrations_up_down_up_keep_every_row(conn: Conn, db_url: str) -> None:
    head = len(discover())
    await _fill(conn)
    before = await _snapshot(conn)
    assert await migrate(db_url, Settings(), 1) == (head, 1)
    assert await migrate(db_url, Settings()) == (1, head)
    # The down migration drops webhook_events.run_id (it was NULL): rows are intact.
    assert await _snapshot(conn) == before
    columns = await (
        await conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'webhook_events' AND column_name = 'run_id'"
        )
    ).fetchall()
    assert len(columns) == 1


async def test_all_downs_then_all_ups_rebuild_the_schema(conn: Conn, db_url: str) -> None:
    head = len(discover())
    assert await migrate(db_url, Settings(), 0) == (head, 0)
    tables = await (
        await conn.execute(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = ANY(%s)",
            (list(TABLES),),
        )
    ).fetchone()
    assert tables is not None and tables["n"] == 0
    assert await migrate(db_url, Settings()) == (0, head)
    await _fill(conn)


async def test_migrate_refuses_an_unknown_target(conn: Conn, db_url: str) -> None:
    from engine.db.migrations import MigrationError

    with pytest.raises(MigrationError, match="--to must be between 0 and"):
        await migrate(db_url, Settings(), 99)


def _seed_queries() -> list[str]:
    text = (ROOT / "docs" / "run-state-and-checkpoints.md").read_text()
    statements = []
    for block in re.findall(r"```sql\n(.*?)```", text, re.S):
        if "CREATE TABLE" in block:
            continue
        statements += [s.strip() for s in block.split(";") if s.strip().strip("-").strip()]
    return statements


def test_the_seed_document_has_the_operator_queries() -> None:
    assert len(_seed_queries()) == 6


@pytest.mark.parametrize("query", _seed_queries())
async def test_the_seed_queries_run_unchanged(conn: Conn, query: str) -> None:
    await _fill(conn)
    await conn.execute("UPDATE runs SET status = 'running'")
    rows = await (await conn.execute(query)).fetchall()
    assert rows, query


def test_statuses_in_sql_match_the_engine() -> None:
    """The claim and its partial indexes name statuses literally (a partial index
    is used only for a constant); they must be the engine's."""
    sql = QUERIES["claim_runs"] + QUERIES["next_timer"]
    for migration in ("*_claim_order", "*_timers", "*_limits"):
        sql += next((ROOT / "migrations").glob(f"{migration}.up.sql")).read_text()
    literals = set(re.findall(r"\bstatus = '(\w+)'", sql))
    assert literals == {
        Status.QUEUED,
        Status.RUNNING,
        Status.WAITING_PROVIDER,
        Status.WAITING_TIMER,
        Status.WAITING_LIMIT,
    }


async def _claim_plan_over(conn: Conn, status: str, wake_in: timedelta | None = None) -> str:
    """The claim's `EXPLAIN` once `runs` holds 20,000 runs in `status` (due in `wake_in`)."""
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow, wake_at) "
        "SELECT 'run_' || i, 'p', %s, '{}', 'production', NOW() + %s "
        "FROM generate_series(1, 20000) i",
        (status, wake_in),
    )
    await conn.execute("ANALYZE runs")
    versions = {"workflows": ["production"], "versions": ["production-2"]}
    plan = await (
        await conn.execute(
            "EXPLAIN " + QUERIES["claim_runs"],
            claim_params(4, "w", timedelta(seconds=30), versions),
        )
    ).fetchall()
    return "\n".join(row["QUERY PLAN"] for row in plan)


async def test_the_claim_reads_no_finished_run(conn: Conn) -> None:
    text = await _claim_plan_over(conn, "published")
    assert "Seq Scan on runs" not in text, text


async def test_the_claim_walks_the_queue_index_instead_of_sorting_the_queue(conn: Conn) -> None:
    text = await _claim_plan_over(conn, "queued")
    new_runs = text.split("CTE fresh")[1].split("\n  CTE ")[0]
    assert "runs_queued" in new_runs, text
    assert "Sort" not in new_runs, text  # it stops after the runs it takes
    assert "Seq Scan on runs" not in text, text


async def test_the_claim_reads_no_run_parked_at_a_gate(conn: Conn) -> None:
    # Started work is found from what gives it work (approvals, providers,
    # leases), so runs waiting at a gate with no approval cost the claim nothing.
    text = await _claim_plan_over(conn, "pending_review")
    assert "Seq Scan on runs" not in text, text
    # The candidates' rows are fetched by key, not found by walking the runs.
    assert re.search(r"Index Scan using runs_pkey on runs r\s", text), text


async def test_the_claim_reads_no_run_whose_timer_is_not_due(conn: Conn) -> None:
    # Due timers come from their index (migration 0011), which the claim enters at
    # NOW(): runs still sleeping, however many, are never read.
    text = await _claim_plan_over(conn, Status.WAITING_TIMER, timedelta(hours=1))
    assert "Seq Scan on runs" not in text, text
    assert re.search(r"Index (Only )?Scan using runs_timers on runs", text), text


async def test_the_claim_reads_no_run_parked_at_a_limit(conn: Conn) -> None:
    # Parked runs are due once handed a slot (wake_at set): the claim reads the due
    # ones from their index, as it reads due timers.
    text = await _claim_plan_over(conn, Status.WAITING_LIMIT)
    assert "Seq Scan on runs" not in text, text
    assert re.search(r"Index (Only )?Scan using runs_limit_due on runs", text), text


async def test_the_claim_sets_its_runs_running_in_its_own_order(conn: Conn) -> None:
    # The project limit's trigger decides run by run, in the order the update visits
    # them: the claim's (priority, then age), as long as the update walks the claim's
    # runs and fetches each by key.
    await conn.execute("INSERT INTO flow_limits (name, concurrent) VALUES ('project:*', 2)")
    text = await _claim_plan_over(conn, Status.QUEUED)
    update = text.split("CTE claimed")[1].split("\n  CTE ")[0]
    assert re.search(
        r"Update on runs \w+ .*\n\s+->  Nested Loop .*\n\s+->  Subquery Scan on taken", update
    ), update
    assert "Index Scan using runs_pkey" in update, update


async def test_migration_0008_binds_each_paused_run_to_one_approval(
    conn: Conn, db_url: str
) -> None:
    """Runs paused before 0008 keep their oldest waiting approval; the rest, which
    the old trigger's race let in, are voided; so are those of runs that left."""
    head = len(discover())
    await migrate(db_url, Settings(), 7)
    paused = await _paused(conn, "workflow", 0)
    await conn.execute(
        'UPDATE runs SET waiting_for = \'{"gate": "workflow"}\', lease_epoch = 4 WHERE run_id = %s',
        (paused,),
    )
    left = await _paused(conn, "publish", 0)
    # What the race of the old trigger left behind: several waiting approvals per run.
    await conn.execute("ALTER TABLE hitl_approvals DISABLE TRIGGER hitl_approvals_check")
    for run_id, gate in ((paused, "workflow"), (paused, "workflow"), (left, "publish")):
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, %s)", (run_id, gate)
        )
    await conn.execute("ALTER TABLE hitl_approvals ENABLE TRIGGER hitl_approvals_check")
    await _set_status(conn, left, "cancelled")
    await migrate(db_url, Settings(), head)
    rows = await (
        await conn.execute(
            "SELECT run_id, pause_id, voided_at IS NOT NULL AS voided, consumed_at IS NOT NULL "
            "AS consumed FROM hitl_approvals ORDER BY id"
        )
    ).fetchall()
    assert [tuple(r.values()) for r in rows] == [
        (paused, 4, False, False),
        (paused, None, True, True),
        (left, None, True, True),
    ]
    run = await store.get_run(conn, paused)
    assert run["waiting_for"] == {"gate": "workflow", "pause_id": 4}
