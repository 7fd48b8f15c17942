"""Behind PgBouncer in transaction mode (docs/operations.md#behind-pgbouncer): the API,
LISTEN on its own direct URL or polling, migrations and prune taking turns.
The crash suite runs through it too (tests/e2e/test_crash.py)."""

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection, sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow

from engine.db.connections import connect
from engine.db.migrations import discover
from engine.db.queries import QUERIES
from engine.runtime import store
from engine.runtime.daemon import CHANNELS
from engine.runtime.retention import LOCK_KEY as PRUNE_LOCK
from engine.settings import Settings
from tests.conftest import ROOT, orchestrator, orchestrator_env
from tests.helpers import Rows, daemons, start_api, wait_for
from tests.pgbouncer import Bouncer

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status FROM runs WHERE run_id = %s"
# A poll this long proves a wake-up that comes sooner came by NOTIFY.
SLOW_POLL = 30
RUNS = 24


def _is(status: str) -> Callable[[Rows], bool]:
    return lambda rows: rows == [{"status": status}]


def _all(status: str) -> Callable[[Rows], bool]:
    return lambda rows: [row["status"] for row in rows] == [status] * RUNS


async def test_prepared_statements_break_behind_pgbouncer_and_the_setting_turns_them_off(
    bouncer: Bouncer, db_url: str
) -> None:
    """Why `ORCHESTRATOR_PREPARE_THRESHOLD=` is needed: two clients whose statements
    share a server connection name their prepared statements alike (`_pg3_0`), and a
    client's next statement may reach a server connection that never prepared it."""

    async def failures(settings: Settings) -> list[str]:
        seen = []
        url = bouncer.url(db_url)
        async with await connect(url, settings) as a, await connect(url, settings) as b:
            for _ in range(10):
                for conn in (a, b):
                    try:
                        await conn.execute(QUERIES["next_timer"])
                    except psycopg.errors.DatabaseError as error:
                        seen.append(str(error))
        return seen

    prepared = await failures(Settings(prepare_threshold=5))
    assert prepared and all("prepared statement" in text for text in prepared), prepared
    assert await failures(Settings(prepare_threshold=None)) == []


async def test_the_api_and_a_daemon_behind_pgbouncer_take_runs_to_the_end(
    bouncer: Bouncer, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    """Enough requests at once that each of the API's connections runs its
    statements past the prepare threshold (with it left at 5, some fail)."""
    route = bouncer.route(db_url)
    api, base = start_api(route.url, tmp_path, pool_size=4, **route.settings)
    all_runs = "SELECT status FROM runs"
    try:
        with daemons(route.url, tmp_path, **route.settings) as start:
            start("behind")
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:

                async def each(method: str, paths: list[str], body: object = None) -> list[Any]:
                    sent = [http.request(method, path, json=body) for path in paths]
                    answers = await asyncio.gather(*sent)
                    assert all(r.is_success for r in answers), [r.text for r in answers]
                    return [r.json() for r in answers]

                new = {"project": "p", "workflow": "ledger", "payload": {}}
                created = await each("POST", ["/runs"] * RUNS, new)
                run_ids = [run["run_id"] for run in created]
                await wait_for(conn, all_runs, until=_all("pending_review"))
                shown = await each("GET", [f"/runs/{run_id}" for run_id in run_ids])
                assert {view["run"]["status"] for view in shown} == {"pending_review"}
                paths = [f"/runs/{run_id}/approvals" for run_id in run_ids]
                await each("POST", paths, {"gate": "review"})
                await wait_for(conn, all_runs, until=_all("published"))
                listed = await each("GET", ["/runs?status=published"])
                assert len(listed[0]) == RUNS
    finally:
        api.close()
    assert "Traceback" not in api.log(), api.log()


async def test_behind_pgbouncer_a_daemon_hears_notify_on_the_listen_url(
    bouncer: Bouncer, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    route = bouncer.route(db_url)
    with daemons(route.url, tmp_path, **route.settings) as start:
        start("listener", poll_interval=SLOW_POLL)
        await wait_for(
            conn,
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            (f"LISTEN {CHANNELS[-1]}",),
            until=bool,
        )
        # The first run may be claimed by the claim that follows LISTEN; once it
        # waits at its gate the daemon sleeps until a NOTIFY or the slow poll.
        first = await store.create_run(conn, project="p", payload={}, workflow="ledger")
        await wait_for(conn, STATUS, (first["run_id"],), until=_is("pending_review"))
        second = await store.create_run(conn, project="p", payload={}, workflow="ledger")
        await wait_for(
            conn, STATUS, (second["run_id"],), until=_is("pending_review"), within=SLOW_POLL / 3
        )


async def test_behind_pgbouncer_without_a_listen_url_a_daemon_polls(
    bouncer: Bouncer, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    url = bouncer.url(db_url)
    with daemons(url, tmp_path, prepare_threshold="", listen="false") as start:
        start("poller")
        run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
        await wait_for(conn, STATUS, (run["run_id"],), until=_is("pending_review"))
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, 'review')", (run["run_id"],)
        )
        await wait_for(conn, STATUS, (run["run_id"],), until=_is("published"))


@pytest.fixture
def empty_db(admin_url: str) -> Iterator[str]:
    name = f"orch_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(admin_url, dbname=name)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.parametrize("through", ["direct", "pgbouncer"])
def test_replicas_migrating_a_new_database_at_once_take_turns(
    request: pytest.FixtureRequest, through: str, empty_db: str
) -> None:
    """Three replicas migrate at once: each migration and LangGraph's setup are
    applied once, and every one exits 0. (Waiting for the lock inside a statement,
    a replica's snapshot made the holder's CREATE INDEX CONCURRENTLY wait for it:
    a deadlock, even straight to the server.)"""
    url = empty_db
    if through == "pgbouncer":
        url = request.getfixturevalue("bouncer").url(empty_db)
    env = orchestrator_env(url, prepare_threshold="")
    migrating = [
        subprocess.Popen(
            [sys.executable, "-m", "engine", "migrate"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        outputs = [process.communicate(timeout=120)[0] for process in migrating]
    finally:
        for process in migrating:
            if process.poll() is None:  # hung: a deadlock
                process.kill()
                process.communicate()
    assert [process.returncode for process in migrating] == [0, 0, 0], outputs
    head = len(discover())
    assert sorted(output.strip().splitlines()[-1] for output in outputs) == [
        f"schema at version {head} (was 0)",
        f"schema at version {head} (was {head})",
        f"schema at version {head} (was {head})",
    ]
    with psycopg.connect(empty_db) as direct:
        applied = direct.execute("SELECT count(*) FROM orchestrator_migrations").fetchone()
        assert applied == (head,)


async def test_prune_through_pgbouncer_skips_while_another_prunes(
    bouncer: Bouncer, db_url: str, conn: Conn
) -> None:
    url = bouncer.url(db_url)
    async with conn.transaction():  # another replica's prune, as it holds the lock
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK,))
        busy = orchestrator(url, "prune", prepare_threshold="")
    assert busy.returncode == 1
    assert busy.stderr.strip() == (
        "error: another prune is running; try again when it has finished"
    )
    done = orchestrator(url, "prune", prepare_threshold="")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pruned history of 0 runs, deleted 0 runs"
    # It left no lock behind on a server connection that now serves others.
    held = await (
        await conn.execute(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    ).fetchone()
    assert held == {"n": 0}
