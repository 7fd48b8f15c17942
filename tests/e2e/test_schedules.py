"""Schedules fired by real daemons: one run per fire time across three daemons and a
SIGKILL, overlap `skip` against a slow run, and the CLI's refusals."""

import itertools
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import schedules
from engine.runtime.schedule_times import Timing
from tests.conftest import orchestrator
from tests.helpers import Rows, daemons, wait_for

Conn = AsyncConnection[DictRow]
FIRED = (
    "SELECT schedule_fire_time AS at, created_at, status, updated_at FROM runs "
    "WHERE schedule_id = %s ORDER BY schedule_fire_time"
)


def _count_at_least(n: int) -> Callable[[Rows], bool]:
    return lambda rows: len(rows) >= n


async def test_three_daemons_and_a_sigkill_fire_each_time_exactly_once(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    created = orchestrator(
        db_url,
        "schedules",
        "create",
        "--cron",
        "* * * * * */2",
        "--timezone",
        "Europe/Berlin",
        "--project",
        "clock",
        "--workflow",
        "ledger",
        "--payload",
        '{"node_delay": 0}',
        "--overlap",
        "allow",
    )
    assert created.returncode == 0, created.stderr
    sid = created.stdout.strip().splitlines()[-1]
    with daemons(db_url, tmp_path) as start:
        doomed = start("d1")
        start("d2")
        start("d3")
        await wait_for(conn, FIRED, (sid,), until=_count_at_least(4))
        doomed.kill()
        killed_at = time.time()
        await wait_for(conn, FIRED, (sid,), until=_count_at_least(9), within=30)
        paused = orchestrator(db_url, "schedules", "pause", sid)
        assert paused.returncode == 0, paused.stderr
    rows = await wait_for(conn, FIRED, (sid,), until=bool)
    times = [row["at"] for row in rows]
    # Exactly one run per fire time, and none missing, across the kill.
    assert len(set(times)) == len(times)
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(seconds=2)] * (
        len(times) - 1
    )
    assert times[-1].timestamp() > killed_at + 4, "nothing fired after the SIGKILL"
    # Fired at the fire time, not at some later poll.
    lateness = sorted((row["created_at"] - row["at"]).total_seconds() for row in rows)
    assert lateness[len(lateness) // 2] < 0.5, lateness
    shown = orchestrator(db_url, "runs", "list", "--project", "clock", "--json")
    assert shown.returncode == 0 and shown.stdout.count('"run_id"') == len(times)


async def test_overlap_skip_starts_nothing_while_a_slow_run_lives(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    timing = Timing.parse(cron="* * * * * *", timezone="UTC", overlap="skip")
    schedule = await schedules.create_schedule(
        conn, timing=timing, project="slow", workflow="ledger", payload={"node_delay": 0.5}
    )
    sid = schedule["schedule_id"]
    with daemons(db_url, tmp_path) as start:
        start("d1")
        first = (await wait_for(conn, FIRED, (sid,), until=bool))[0]["at"]
        # The run works slowly, then waits at its gate: fire times pass, none starts.
        await wait_for(
            conn,
            "SELECT next_fire_at, (SELECT status FROM runs WHERE schedule_id = s.schedule_id "
            "LIMIT 1) FROM schedules s WHERE schedule_id = %s",
            (sid,),
            until=lambda rows: (
                rows[0]["status"] == "pending_review"
                and rows[0]["next_fire_at"] > first + timedelta(seconds=2)
            ),
        )
        assert [row["at"] for row in await wait_for(conn, FIRED, (sid,), until=bool)] == [first]
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver) "
            "SELECT run_id, 'review', 'bot' FROM runs WHERE schedule_id = %s",
            (sid,),
        )
        rows = await wait_for(conn, FIRED, (sid,), until=_count_at_least(2))
    ended = rows[0]["updated_at"]
    assert rows[0]["status"] == "published"
    assert rows[1]["at"] >= ended - timedelta(seconds=1), "started before the live run ended"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--cron", "0 25 * * *"), "--cron"),
        (("--timezone", "Berlin"), "--timezone"),
        (("--overlap", "queue"), "--overlap"),
        (("--catchup", "1 hour"), "--catchup"),
        (("--workflow", "nope"), "--workflow"),
    ],
)
def test_cli_refuses_bad_options_naming_them(
    db_url: str, args: tuple[str, ...], option: str
) -> None:
    good = {"--cron": "0 9 * * MON-FRI", "--timezone": "Europe/Berlin", "--project": "cats"}
    given = {**good, **dict(zip(args[::2], args[1::2], strict=True))}
    result = orchestrator(db_url, "schedules", "create", *(x for kv in given.items() for x in kv))
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"error: {option}: ") and result.stderr.count("\n") == 1


def test_cli_unknown_schedule_and_bad_backfill_range(db_url: str) -> None:
    missing = orchestrator(db_url, "schedules", "pause", "sch_nope")
    assert (missing.returncode, missing.stderr) == (1, "error: schedule sch_nope not found\n")
    naive = orchestrator(
        db_url, "schedules", "backfill", "sch_nope", "--from", "2026-12-01T09:00", "--to", "now"
    )
    assert naive.returncode == 2 and naive.stderr.startswith("error: --from: "), naive
