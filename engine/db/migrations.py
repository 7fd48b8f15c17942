"""Numbered up/down SQL migrations, applied one transaction each under an advisory lock."""

import logging
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.connections import connect
from engine.db.locks import advisory_lock
from engine.settings import Settings

log = logging.getLogger(__name__)

# Where the SQL comes from, the same way in a source checkout, an editable install
# and an installed wheel, whatever the current directory: package data of `engine`.
# The top-level `migrations/` folder stays the one copy that is edited (DESIGN.md);
# `engine/db/_migrations` is a relative symlink to it (`../../migrations`), which setuptools
# follows when it builds the wheel, so the files install as `engine/db/_migrations/*.sql`
# (pyproject.toml's package-data), and which a checkout or an editable install reads
# through directly. Chosen over the alternatives: `packages.find` cannot add a package
# that `package-dir` maps from elsewhere, an explicit package list would have to name
# every subpackage forever, and a custom build step copies files that an editable
# install then does not see. tests/deploy/test_packaging.py builds the wheel and runs
# `orchestrator migrate` from it in another folder.
MIGRATIONS: Traversable = files("engine.db") / "_migrations"
# The same folder as a resolved path on disk (pip always unpacks a wheel, so it is
# one): in a checkout, the top-level `migrations/`.
MIGRATIONS_DIR = Path(str(MIGRATIONS)).resolve()
_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>\w+)\.(?P<direction>up|down)\.sql$")
# Any constant will do, as long as every replica uses the same one.
_LOCK_KEY = 0x6F72636865737472

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS orchestrator_migrations (
    version    INT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
)"""


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: Traversable
    down: Traversable


def discover(directory: Traversable = MIGRATIONS) -> list[Migration]:
    found: dict[int, dict[str, Traversable]] = {}
    names: dict[int, str] = {}
    for entry in directory.iterdir():
        if match := _FILE.match(entry.name):
            version = int(match["version"])
            found.setdefault(version, {})[match["direction"]] = entry
            names[version] = match["name"]
    migrations = []
    for version in sorted(found):
        pair = found[version]
        if set(pair) != {"up", "down"}:
            raise MigrationError(f"migration {version:04d} needs both an up and a down file")
        migrations.append(Migration(version, names[version], pair["up"], pair["down"]))
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        raise MigrationError(f"migrations in {directory} are not numbered 1..N without gaps")
    return migrations


async def current_version(conn: AsyncConnection[DictRow]) -> int:
    await conn.execute(_VERSION_TABLE)
    row = await (
        await conn.execute("SELECT max(version) AS v FROM orchestrator_migrations")
    ).fetchone()
    return int(row["v"]) if row and row["v"] is not None else 0


async def migrate(url: str, settings: Settings, target: int | None = None) -> tuple[int, int]:
    """Bring the schema to `target` (default: newest) and set up LangGraph's tables.

    Replicas that migrate at once take turns (`advisory_lock`, which holds
    behind PgBouncer too). Returns (version before, version after).
    """
    migrations = discover()
    head = len(migrations)
    target = head if target is None else target
    if not 0 <= target <= head:
        raise MigrationError(f"--to must be between 0 and {head}, got {target}")
    async with (
        advisory_lock(url, settings, _LOCK_KEY, wait=True),
        await connect(url, settings) as conn,
    ):
        before = await current_version(conn)
        if before > head:
            raise MigrationError(f"database is at version {before}, newer than this code ({head})")
        steps = (
            migrations[before:target]
            if target >= before
            else list(reversed(migrations[target:before]))
        )
        upward = target >= before
        for migration in steps:
            await _apply(conn, migration, upward)
        # Imported here: LangGraph is slow to import and most commands never need it.
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        await AsyncPostgresSaver(conn).setup()
        return before, target


async def _apply(conn: AsyncConnection[DictRow], migration: Migration, upward: bool) -> None:
    sql = (migration.up if upward else migration.down).read_text(encoding="utf-8")
    async with conn.transaction():
        await conn.execute(sql)
        if upward:
            await conn.execute(
                "INSERT INTO orchestrator_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        else:
            await conn.execute(
                "DELETE FROM orchestrator_migrations WHERE version = %s", (migration.version,)
            )
    log.info(
        "migration applied",
        extra={
            "action": "migration_applied",
            "version": migration.version,
            "direction": "up" if upward else "down",
        },
    )
