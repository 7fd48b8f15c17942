"""An approval answers exactly one question: concurrent approvals over SQL and HTTP.

Each trial pauses a run at its gate with the real daemon, then sends twenty
approvals for it at the same moment; exactly one may be accepted, every other
refused at insert time naming the run, the gate and the approval already
waiting. An approval can never answer a later pause of the same run.
"""

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from engine.runtime import store
from tests.helpers import daemons, wait_for
from tests.stack import stack

Conn = AsyncConnection[DictRow]
TRIALS = 20
RACERS = 20
PAUSED = "SELECT run_id, status, waiting_for FROM runs ORDER BY run_id"
INSERT = "INSERT INTO hitl_approvals (run_id, gate, approver, decision) VALUES (%s, %s, %s, %s)"


async def _paused_runs(db_url: str, conn: Conn, tmp_path: Path, count: int) -> list[str]:
    """`count` ledger runs paused at their review gate by a daemon that then stops."""
    for _ in range(count):
        await store.create_run(conn, project="p", payload={}, workflow="ledger")
    with daemons(db_url, tmp_path) as start:
        daemon = start("w1")
        rows = await wait_for(
            conn, PAUSED, until=lambda rows: all(r["status"] == "pending_review" for r in rows)
        )
        assert daemon.terminate() == 0
    return [r["run_id"] for r in rows]


async def _race_sql(racers: list[Conn], run_id: str, isolation: str) -> list[str | None]:
    """Every session inserts its approval at once; None where it was accepted."""
    ready = asyncio.Barrier(len(racers))

    async def one(i: int, session: Conn) -> str | None:
        await session.execute(f"BEGIN ISOLATION LEVEL {isolation}")
        await session.execute("SELECT 1")  # the snapshot of RR is taken here, before the race
        await ready.wait()
        try:
            await session.execute(INSERT, (run_id, "review", f"racer-{i}", "approved"))
            await session.execute("COMMIT")
        except psycopg.errors.IntegrityError as refused:
            await session.execute("ROLLBACK")
            # Under REPEATABLE READ the trigger's snapshot predates the winner's
            # commit: the unique index refuses, naming the run and the pause.
            return f"{refused.diag.message_primary} {refused.diag.message_detail or ''}"
        return None

    return await asyncio.gather(*(one(i, s) for i, s in enumerate(racers)))


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ"])
async def test_of_twenty_concurrent_sql_approvals_exactly_one_is_accepted(
    db_url: str, conn: Conn, tmp_path: Path, isolation: str
) -> None:
    trials = TRIALS if isolation == "READ COMMITTED" else 5
    runs = await _paused_runs(db_url, conn, tmp_path, trials)
    racers = [
        await AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row)
        for _ in range(RACERS)
    ]
    try:
        outcomes = [await _race_sql(racers, run_id, isolation) for run_id in runs]
    finally:
        for racer in racers:
            await racer.close()
    accepted = [sum(o is None for o in outcome) for outcome in outcomes]
    assert accepted == [1] * trials
    for run_id, outcome in zip(runs, outcomes, strict=True):
        for message in (o for o in outcome if o is not None):
            assert message.startswith(f"approval refused: run {run_id} already has ") or (
                message.startswith(
                    'duplicate key value violates unique constraint "hitl_approvals_one_per_pause"'
                )
                and f"(run_id, pause_id)=({run_id}, " in message
            ), message
    if isolation == "READ COMMITTED":
        # The trigger's own words, naming the approval that got there first.
        winner = await (
            await conn.execute(
                "SELECT id, approver FROM hitl_approvals WHERE run_id = %s", (runs[0],)
            )
        ).fetchone()
        assert winner is not None
        assert Counter(o for o in outcomes[0] if o is not None) == {
            f"approval refused: run {runs[0]} already has approval {winner['id']} "
            f"(approved by {winner['approver']}) waiting at gate review ": RACERS - 1
        }

    # Each run passes its gate once, on the one approval, and nothing is left waiting.
    with daemons(db_url, tmp_path) as start:
        start("w2")
        await wait_for(
            conn, PAUSED, until=lambda rows: all(r["status"] == "published" for r in rows)
        )
    passed = await (
        await conn.execute(
            "SELECT run_id, count(*) AS n FROM node_ledger WHERE node = 'n4' GROUP BY 1"
        )
    ).fetchall()
    assert {r["run_id"]: r["n"] for r in passed} == dict.fromkeys(runs, 1)
    left = await (
        await conn.execute("SELECT count(*) AS n FROM hitl_approvals WHERE consumed_at IS NULL")
    ).fetchone()
    assert left == {"n": 0}


async def test_of_twenty_concurrent_http_approvals_exactly_one_is_accepted(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    runs = await _paused_runs(db_url, conn, tmp_path, TRIALS)
    limits = httpx.Limits(max_connections=RACERS, max_keepalive_connections=RACERS)
    async with (
        stack(db_url, tmp_path, pool_size=RACERS) as s,
        httpx.AsyncClient(base_url=s.api, limits=limits, timeout=30) as http,
    ):

        async def race(run_id: str) -> list[httpx.Response]:
            return await asyncio.gather(
                *(
                    http.post(
                        f"/runs/{run_id}/approvals",
                        json={"gate": "review", "approver": f"racer-{i}"},
                    )
                    for i in range(RACERS)
                )
            )

        trials = [await race(run_id) for run_id in runs]
    codes = [Counter(r.status_code for r in responses) for responses in trials]
    assert codes == [{201: 1, 409: RACERS - 1}] * TRIALS
    for run_id, responses in zip(runs, trials, strict=True):
        for refused in (r for r in responses if r.status_code == 409):
            assert refused.json()["error"].startswith(
                f"approval refused: run {run_id} already has approval "
            )


async def _blocked_inserts(conn: Conn) -> int:
    row = await (
        await conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO hitl_approvals%%'"
        )
    ).fetchone()
    assert row is not None
    return int(row["n"])


async def test_a_rejection_raced_by_approvals_never_lets_one_approve_the_next_proposal(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    """The issue's case: a rejection and approvals sent together; after Brendan's
    next proposal, none of the approvals may answer it."""
    run = await store.create_run(
        conn, project="cats", payload={"brief": "boxes"}, workflow="production"
    )
    run_id = run["run_id"]
    status = "SELECT status, waiting_for FROM runs WHERE run_id = %s"
    with daemons(db_url, tmp_path) as start:
        start("w1")
        first = await wait_for(
            conn, status, (run_id,), until=lambda rows: rows[0]["status"] == "pending_workflow"
        )
        asked = first[0]["waiting_for"]

        rejecting = await AsyncConnection.connect(db_url, row_factory=dict_row)
        racers = [
            await AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row)
            for _ in range(RACERS - 1)
        ]
        try:
            # The rejection is written first and holds its transaction open while
            # the approvals arrive: they must wait for it and then be refused.
            await rejecting.execute(
                INSERT + " RETURNING id", (run_id, "workflow", "ann", "rejected")
            )

            async def approve(session: Conn) -> str | None:
                try:
                    await session.execute(INSERT, (run_id, "workflow", "bob", "approved"))
                except psycopg.errors.IntegrityError as refused:
                    return str(refused.diag.message_primary)
                return None

            racing = [asyncio.ensure_future(approve(s)) for s in racers]
            await _until(lambda: _settled(racing, conn))
            await rejecting.commit()
            outcomes = await asyncio.gather(*racing)
        finally:
            await rejecting.close()
            for racer in racers:
                await racer.close()
        assert outcomes.count(None) == 0, outcomes

        # Brendan takes the feedback and proposes again: a new pause, answered by no one.
        again = await wait_for(
            conn,
            status,
            (run_id,),
            until=lambda rows: (
                rows[0]["status"] == "pending_workflow"
                and rows[0]["waiting_for"]["pause_id"] != asked["pause_id"]
            ),
        )
    waiting = await (
        await conn.execute(
            "SELECT id FROM hitl_approvals WHERE run_id = %s AND consumed_at IS NULL", (run_id,)
        )
    ).fetchall()
    assert waiting == []
    # An approver still looking at the first proposal cannot approve the second.
    with pytest.raises(store.Refused) as stale:
        await store.approve(conn, run_id, gate="workflow", pause_id=asked["pause_id"])
    assert str(stale.value) == (
        f"approval refused: run {run_id} at gate workflow waits at pause "
        f"{again[0]['waiting_for']['pause_id']}, not at pause {asked['pause_id']} "
        "(that question was already answered or withdrawn)"
    )


async def _settled(racing: Sequence["asyncio.Future[Any]"], conn: Conn) -> bool:
    """Every approval is either waiting for the rejection's lock or already answered."""
    done = sum(task.done() for task in racing)
    return done + await _blocked_inserts(conn) == len(racing)


async def _until(check: Any, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
