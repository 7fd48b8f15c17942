"""Settings from the environment, and the schema check that guards a rolling upgrade."""

from pathlib import Path

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.migrations import migrate
from engine.settings import Settings
from tests.conftest import orchestrator
from tests.helpers import daemons, wait_for_log

Conn = AsyncConnection[DictRow]


@pytest.mark.parametrize("value", ["", "None", "none"])
def test_an_empty_prepare_threshold_turns_prepared_statements_off(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_PREPARE_THRESHOLD", value)
    assert Settings().prepare_threshold is None


async def test_a_daemon_refuses_an_older_schema_and_runs_on_a_newer_one(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    await migrate(db_url, Settings(), 1)
    refused = orchestrator(db_url, "daemon")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: database schema is at version 1, this code needs")
    await migrate(db_url, Settings())
    # The next release's additive migration is applied: this code keeps running.
    await conn.execute("INSERT INTO orchestrator_migrations (version, name) VALUES (99, 'next')")
    with daemons(db_url, tmp_path) as start:
        daemon = start("old-code")
        await wait_for_log(daemon, "daemon started")
        assert daemon.terminate() == 0
