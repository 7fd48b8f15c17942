"""Retention: finished runs keep their latest checkpoint; whole runs go on request."""

from pathlib import Path

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.conftest import orchestrator
from tests.helpers import daemons, wait_for

Conn = AsyncConnection[DictRow]
CHECKPOINTS = "SELECT thread_id, count(*) AS n FROM checkpoints GROUP BY thread_id"


async def _finished_runs(conn: Conn, tmp_path: Path, db_url: str, count: int) -> list[str]:
    run_ids = [
        (await store.create_run(conn, project="p", payload={}, workflow="ledger"))["run_id"]
        for _ in range(count)
    ]
    with daemons(db_url, tmp_path) as start:
        start("w1")
        await wait_for(
            conn,
            "SELECT status FROM runs",
            until=lambda rows: all(r["status"] == "pending_review" for r in rows),
        )
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate) SELECT run_id, 'review' FROM runs"
        )
        await wait_for(
            conn,
            "SELECT status FROM runs",
            until=lambda rows: all(r["status"] == "published" for r in rows),
        )
    return run_ids


async def test_prune_keeps_the_latest_checkpoint_of_old_finished_runs(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    old, recent = await _finished_runs(conn, tmp_path, db_url, 2)
    await conn.execute(
        "UPDATE runs SET updated_at = NOW() - INTERVAL '40 days' WHERE run_id = %s", (old,)
    )
    before = {r["thread_id"]: r["n"] for r in await (await conn.execute(CHECKPOINTS)).fetchall()}
    assert before[old] > 1 and before[recent] > 1

    result = orchestrator(db_url, "prune", "--older-than", "30d")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pruned history of 1 runs, deleted 0 runs"
    after = {r["thread_id"]: r["n"] for r in await (await conn.execute(CHECKPOINTS)).fetchall()}
    assert after == {old: 1, recent: before[recent]}
    shown = orchestrator(db_url, "runs", "show", old, "--json")
    assert shown.returncode == 0 and '"published"' in shown.stdout

    result = orchestrator(db_url, "prune", "--older-than", "30d", "--delete-runs")
    assert result.stdout.strip() == "pruned history of 0 runs, deleted 1 runs"
    runs = await (await conn.execute("SELECT run_id FROM runs")).fetchall()
    assert [r["run_id"] for r in runs] == [recent]
    after = {r["thread_id"]: r["n"] for r in await (await conn.execute(CHECKPOINTS)).fetchall()}
    assert after == {recent: before[recent]}


async def test_the_daemon_prunes_on_a_schedule(db_url: str, conn: Conn, tmp_path: Path) -> None:
    (old,) = await _finished_runs(conn, tmp_path, db_url, 1)
    await conn.execute("UPDATE runs SET updated_at = NOW() - INTERVAL '40 days'")
    with daemons(db_url, tmp_path) as start:
        start("janitor", prune_interval=0.2, prune_older_than_days=30)
        await wait_for(conn, CHECKPOINTS, until=lambda rows: rows == [{"thread_id": old, "n": 1}])


def test_prune_refuses_a_bad_age(db_url: str) -> None:
    result = orchestrator(db_url, "prune", "--older-than", "a while")
    assert result.returncode == 2
    assert result.stderr == (
        "error: --older-than: 'a while' is not a duration like 45s, 30m, 2h or 7d\n"
    )
