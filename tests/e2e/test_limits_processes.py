"""Limits across real daemons: three daemons at concurrency 16 keep kie.ai's jobs in
flight within its limit, and a 429 one of them gets stops every daemon's calls.

The sandbox counts the jobs in flight (submitted, not finished) and logs each call;
the workflow gate is approved by a trigger, so each run goes through the media step
(kie.ai) and the editor's (Shotstack) to the publish gate.
"""

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from tests.conftest import orchestrator
from tests.helpers import daemons, wait_for
from tests.stack import Stack, stack

Conn = AsyncConnection[DictRow]
AUTO_APPROVE_WORKFLOW = """
CREATE FUNCTION approve_workflow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (NEW.run_id, 'workflow', 'e2e');
    RETURN NULL;
END $$;
CREATE TRIGGER approve_workflow AFTER UPDATE OF status ON runs
    FOR EACH ROW WHEN (NEW.status = 'pending_workflow') EXECUTE FUNCTION approve_workflow();
"""
DAEMONS = ("w1", "w2", "w3")


async def _start(s: Stack, conn: Conn) -> None:
    await conn.execute(AUTO_APPROVE_WORKFLOW)
    for worker in DAEMONS:
        s.daemon(worker, concurrency=16)


async def _create(conn: Conn, first: int, count: int) -> None:
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow) "
        "SELECT 'run_lim_' || i, 'cats', 'queued', '{\"brief\": \"Why cats sit in boxes\"}', "
        "'production' FROM generate_series(%s::int, %s::int) i",
        (first, first + count - 1),
    )


async def _all_at_the_publish_gate(conn: Conn, runs: int) -> None:
    def done(rows: list[dict[str, object]]) -> bool:
        failed = [row for row in rows if row["status"] == "failed"]
        assert not failed, failed
        return sum(1 for row in rows if row["status"] == "pending_publish") == runs

    await wait_for(conn, "SELECT run_id, status, error FROM runs", until=done, within=60)


async def test_three_daemons_never_have_more_kie_jobs_in_flight_than_its_limit(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    limits = json.dumps({"kie": {"concurrent": 3}})
    async with stack(db_url, tmp_path, provider_limits=limits) as s:
        # Each job takes a second: unlimited, 48 slots would have dozens in flight.
        await s.configure_sandbox(job_latency=1.0)
        await _start(s, conn)
        await _create(conn, 1, 30)
        await _all_at_the_publish_gate(conn, 30)
        jobs = (await s.http.get(f"{s.sandbox}/_sandbox/jobs")).json()
    print(f"\nkie jobs in flight at once, at most: {jobs['kie']['most_in_flight']} (limit 3)")
    assert jobs["kie"]["submitted"] == 30
    assert jobs["kie"]["most_in_flight"] == 3  # reached, never passed
    held = await (await conn.execute("SELECT count(*) AS n FROM flow_slots")).fetchone()
    assert held is not None and held["n"] == 0  # every job collected gave its slot back


async def test_a_429_one_daemon_gets_stops_every_daemons_calls_until_its_reset(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        await _start(s, conn)
        await _create(conn, 1, 10)
        deadline = time.monotonic() + 60
        while len(await s.sandbox_calls(provider="kie")) < 3:
            assert time.monotonic() < deadline, "no kie call"
            await asyncio.sleep(0.02)
        # The next call to kie.ai, whichever daemon sends it, is told to come back in 3 s,
        # while twenty more runs come to want kie.ai.
        fault = {"provider": "kie", "status_code": 429, "retry_after": 3}
        (await s.http.post(f"{s.sandbox}/_sandbox/faults", json=fault)).raise_for_status()
        await _create(conn, 11, 20)
        await _all_at_the_publish_gate(conn, 30)
        calls = await s.sandbox_calls(provider="kie")
    (refused,) = [call for call in calls if call["status_code"] == 429]
    told_at = datetime.fromisoformat(refused["at"])
    paused = await (
        await conn.execute(
            "SELECT paused_by, paused_until FROM flow_limits WHERE name = 'provider:kie'"
        )
    ).fetchone()
    assert paused is not None and paused["paused_by"] in DAEMONS
    reset = paused["paused_until"]
    recorded = reset - timedelta(seconds=3)  # when the told daemon wrote the pause
    assert told_at <= recorded

    def between(start: datetime, end: datetime) -> list[dict[str, object]]:
        return [c for c in calls if start < datetime.fromisoformat(c["at"]) < end]

    # A request let through just before the pause was written may still be on its
    # way: 0.1 s of grace. Every request asked for after it waits until the reset.
    during = between(recorded + timedelta(seconds=0.1), reset)
    print(
        f"\n429 to {paused['paused_by']}, written {(recorded - told_at).total_seconds():.3f} s "
        f"later; kie calls from any daemon during the pause: {len(during)} "
        f"(between the 429 and its record: {len(between(told_at, recorded))})"
    )
    assert during == []
    # It was not for want of asking: runs created after the 429 came to kie.ai during
    # the pause, and sent their jobs once it was over.
    later = {f"run_lim_{i}" for i in range(11, 31)}
    waited = {
        c["run_id"]
        for c in calls
        if c["run_id"] in later and datetime.fromisoformat(c["at"]) >= reset
    }
    print(f"runs created after the 429 whose job went after the reset: {len(waited)} of 20")
    assert waited


AUTO_APPROVE_REVIEW = AUTO_APPROVE_WORKFLOW.replace("workflow", "review")


async def test_three_daemons_never_run_more_of_a_project_at_once_than_its_limit(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    await conn.execute(AUTO_APPROVE_REVIEW)
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow) "
        "SELECT 'run_proj_' || i, CASE WHEN i % 2 = 0 THEN 'cats' ELSE 'dogs' END, 'queued', "
        "'{\"node_delay\": 0.3}', 'ledger' FROM generate_series(1, 20) i"
    )
    most: dict[str, int] = {}

    def sampled(rows: list[dict[str, object]]) -> bool:
        for row in rows:
            if row["status"] == "running":
                project, running = str(row["project"]), int(str(row["n"]))
                most[project] = max(most.get(project, 0), running)
        return sum(int(str(r["n"])) for r in rows if r["status"] == "published") == 20

    with daemons(db_url, tmp_path) as start:
        for worker in DAEMONS:
            start(worker, concurrency=16, project_concurrency=2)
        # Sampled every 20 ms while they work: a project over its limit for as long as
        # one node takes (0.3 s) would be seen.
        await wait_for(
            conn,
            "SELECT project, status, count(*) AS n FROM runs GROUP BY 1, 2",
            until=sampled,
            within=60,
        )
    print(f"\nruns of one project executing at once, at most: {most} (limit 2)")
    assert most == {"cats": 2, "dogs": 2}


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("provider_limits", "nope", "ORCHESTRATOR_PROVIDER_LIMITS: not JSON"),
        (
            "provider_limits",
            '{"kie": {"requests": 20}}',
            "ORCHESTRATOR_PROVIDER_LIMITS (kie): requests and per go together",
        ),
        (
            "provider_limits",
            '{"kie": {"concurrent": 0}}',
            "ORCHESTRATOR_PROVIDER_LIMITS (kie.concurrent): Input should be greater than 0",
        ),
        (
            "provider_limits",
            '{"kie": {"requests": 1, "per": "0s"}}',
            "ORCHESTRATOR_PROVIDER_LIMITS (kie): per must be longer than 0s",
        ),
        (
            "provider_limits",
            '{"kie": {"concurency": 3}}',
            "ORCHESTRATOR_PROVIDER_LIMITS (kie.concurency): Extra inputs are not permitted",
        ),
        ("project_concurrency", "0", "ORCHESTRATOR_PROJECT_CONCURRENCY: Input should be greater"),
    ],
)
def test_a_bad_limit_setting_stops_the_daemon_in_one_line(
    db_url: str, setting: str, value: str, message: str
) -> None:
    refused = orchestrator(db_url, "daemon", **{setting: value})
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith(f"error: setting {message}"), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
