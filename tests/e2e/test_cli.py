"""The CLI's contract: one clear line and exit 2 for bad arguments, 1 for a missing run."""

import json

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.conftest import orchestrator

Conn = AsyncConnection[DictRow]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "create"], "error: Missing option '--project'."),
        (
            ["runs", "create", "--project", "Bad Slug!"],
            "error: project: 'Bad Slug!' is not a slug",
        ),
        (
            ["runs", "create", "--project", "p", "--payload", "{nope"],
            "error: --payload: not valid JSON",
        ),
        (
            ["runs", "create", "--project", "p", "--payload", "[1, 2]"],
            "error: --payload: must be a JSON object, got list",
        ),
        (
            ["runs", "create", "--project", "p", "--workflow", "nope"],
            "error: --workflow: no workflow named 'nope'",
        ),
        (
            ["runs", "create", "--project", "p", "--not-before", "2026-12-03T09:00:00"],
            "error: --not-before: 2026-12-03T09:00:00 has no UTC offset",
        ),
        (
            ["runs", "create", "--project", "p", "--not-before", "next tuesday"],
            "error: --not-before: 'next tuesday' is not an ISO 8601 time",
        ),
        (
            ["runs", "create", "--project", "p", "--not-before", "9999-01-01T00:00:00Z"],
            "error: --not-before: 9999-01-01T00:00:00+00:00 is more than 3660 days away",
        ),
        (["runs", "approve", "run_x", "--pause", "-1"], "error: Invalid value for '--pause'"),
        (["runs", "list", "--limit", "0"], "error: Invalid value for '--limit'"),
        (["daemon", "--concurrency", "0"], "error: Invalid value for '--concurrency'"),
        (["migrate", "--to", "99"], "error: --to must be between 0 and"),
        (["runs", "frobnicate"], "error: No such command 'frobnicate'."),
        (
            ["runs", "list", "--status", "bogus"],
            "error: --status: 'bogus' is not a status; one of queued, running, "
            "waiting_provider, waiting_timer, waiting_limit, pending_workflow, pending_publish",
        ),
        (["runs", "list", "--status", "pending_nowhere"], "error: --status: 'pending_nowhere'"),
    ],
)
async def test_bad_arguments_exit_2_with_one_line_and_change_nothing(
    db_url: str, conn: Conn, args: list[str], message: str
) -> None:
    result = orchestrator(db_url, *args)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(message), result.stderr
    count = await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()
    assert count is not None and count["n"] == 0


@pytest.mark.parametrize("command", [["show"], ["cancel"], ["retry"], ["history"], ["fork"]])
def test_a_missing_run_exits_1_naming_it(db_url: str, command: list[str]) -> None:
    result = orchestrator(db_url, "runs", *command, "run_doesnotexist")
    assert result.returncode == 1
    assert result.stderr == "error: run run_doesnotexist not found\n"


async def test_an_approval_the_trigger_refuses_exits_1_with_its_message(
    db_url: str, conn: Conn
) -> None:
    run = await store.create_run(conn, project="p", payload={}, workflow="production")
    result = orchestrator(db_url, "runs", "approve", run["run_id"], "--gate", "workflow")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: approval refused: run {run['run_id']} is not waiting at gate workflow "
        "(status is queued)\n"
    )
    result = orchestrator(db_url, "runs", "approve", "run_nope", "--gate", "workflow")
    assert (result.returncode, result.stderr) == (1, "error: run run_nope not found\n")


async def test_a_bad_publish_at_exits_2_naming_it_and_writes_nothing(
    db_url: str, conn: Conn
) -> None:
    run = await store.create_run(conn, project="p", payload={}, workflow="production")
    await conn.execute(
        "UPDATE runs SET status = 'pending_publish' WHERE run_id = %s", (run["run_id"],)
    )
    payload = json.dumps({"publish_at": "2026-12-03T09:00:00"})
    result = orchestrator(
        db_url, "runs", "approve", run["run_id"], "--gate", "publish", "--payload", payload
    )
    assert result.returncode == 2, result
    assert result.stderr == (
        "error: payload.publish_at: Value error, publish_at: 2026-12-03T09:00:00 has no UTC "
        "offset; give one (e.g. 2027-06-01T09:00:00+02:00)\n"
    )
    count = await (await conn.execute("SELECT count(*) AS n FROM hitl_approvals")).fetchone()
    assert count == {"n": 0}


def test_create_prints_the_run_id_last_and_list_shows_it(db_url: str) -> None:
    created = orchestrator(db_url, "runs", "create", "--project", "p", "--brief", "b")
    assert created.returncode == 0, created.stderr
    run_id = created.stdout.splitlines()[-1]
    listed = orchestrator(db_url, "runs", "list", "--status", "queued")
    assert run_id in listed.stdout
    shown = orchestrator(db_url, "runs", "show", run_id)
    assert "queued" in shown.stdout and '"brief": "b"' in shown.stdout


def test_db_url_prints_the_configured_database(db_url: str) -> None:
    result = orchestrator(db_url, "db", "url")
    assert result.returncode == 0
    assert result.stdout.strip() == db_url


def test_a_bad_setting_exits_2_naming_the_variable(db_url: str) -> None:
    result = orchestrator(db_url, "daemon", concurrency="many")
    assert result.returncode == 2
    assert result.stderr.startswith("error: setting ORCHESTRATOR_CONCURRENCY: Input should be")
    assert result.stderr.count("\n") == 1


async def test_list_stuck_shows_old_live_runs_oldest_first(db_url: str, conn: Conn) -> None:
    for run_id, status, age in [
        ("run_stuckgate001", "pending_publish", "3 hours"),
        ("run_stuckrunning", "running", "1 hour"),
        ("run_freshrunning", "running", "1 minute"),
        ("run_oldpublished", "published", "5 hours"),
        ("run_oldqueued001", "queued", "5 hours"),
    ]:
        await conn.execute(
            "INSERT INTO runs (run_id, project, status, payload, created_at) "
            "VALUES (%s, 'p', %s, '{}', NOW() - %s::interval)",
            (run_id, status, age),
        )
    result = orchestrator(db_url, "runs", "list", "--stuck", "--older-than", "30m", "--json")
    assert result.returncode == 0, result.stderr
    stuck = json.loads(result.stdout)
    assert [r["run_id"] for r in stuck] == ["run_stuckgate001", "run_stuckrunning"]
    assert 179 < stuck[0]["minutes_running"] < 182
    bad = orchestrator(db_url, "runs", "list", "--stuck", "--older-than", "soon")
    assert bad.returncode == 2
    assert bad.stderr == ("error: --older-than: 'soon' is not a duration like 45s, 30m, 2h or 7d\n")


def test_a_delayed_run_waits_for_its_timer_and_show_says_when_it_is_due(db_url: str) -> None:
    created = orchestrator(
        db_url, "runs", "create", "--project", "p", "--not-before", "2036-12-03T09:00:00+01:00"
    )
    assert created.returncode == 0, created.stderr
    run_id = created.stdout.splitlines()[-1]
    shown = orchestrator(db_url, "runs", "show", run_id)
    assert "waiting_timer" in shown.stdout, shown.stdout
    assert "due_at" in shown.stdout and "2036-12-03T08:00:00+00:00" in shown.stdout, shown.stdout
    as_json = json.loads(orchestrator(db_url, "runs", "show", run_id, "--json").stdout)
    # As it was asked for, in its own offset.
    assert as_json["run"]["waiting_for"] == {"not_before": "2036-12-03T09:00:00+01:00"}


def test_create_with_a_key_twice_prints_the_same_run_and_a_clash_exits_2(db_url: str) -> None:
    command = ["runs", "create", "--project", "p", "--brief", "b", "--key", "nightly-1"]
    first = orchestrator(db_url, *command)
    assert first.returncode == 0, first.stderr
    again = orchestrator(db_url, *command)
    assert again.returncode == 0, again.stderr
    run_id = first.stdout.splitlines()[-1]
    assert again.stdout.splitlines() == [
        "--key 'nightly-1' already started this run (status queued)",
        run_id,
    ]
    clash = orchestrator(
        db_url, "runs", "create", "--project", "p", "--brief", "c", "--key", "nightly-1"
    )
    assert clash.returncode == 2
    assert clash.stderr == (
        f"error: --key: 'nightly-1' already started run {run_id} of project 'p' "
        "with a different request\n"
    )


async def test_bulk_cancel_counts_first_and_refuses_an_unknown_status(
    db_url: str, conn: Conn
) -> None:
    runs = [
        (await store.create_run(conn, project="p", payload={}, workflow="production"))["run_id"]
        for _ in range(3)
    ]
    dry = orchestrator(db_url, "runs", "cancel", "--status", "queued", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "would cancel 3 runs"
    assert sorted(line.strip() for line in dry.stdout.splitlines()[1:]) == sorted(runs)
    unconfirmed = orchestrator(db_url, "runs", "cancel", "--status", "queued")  # stdin: none
    assert unconfirmed.returncode == 1
    bogus = orchestrator(db_url, "runs", "cancel", "--status", "bogus")
    assert bogus.returncode == 2 and len(bogus.stderr.splitlines()) == 1
    assert "--status: 'bogus' is not a status" in bogus.stderr
    both = orchestrator(db_url, "runs", "cancel", runs[0], "--project", "p")
    assert both.returncode == 2
    statuses = await (await conn.execute("SELECT DISTINCT status FROM runs")).fetchall()
    assert [row["status"] for row in statuses] == ["queued"]
    done = orchestrator(db_url, "runs", "cancel", "--project", "p", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cancelled 3 of 3 runs"
