"""Settings from the environment, and the schema check that guards a rolling upgrade.

A bad setting stops every command the same way, wherever it is read (the engine's
settings, the App's, the `.env` file): one line naming the variable, exit 2.
"""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.migrations import migrate
from engine.settings import Settings
from tests.conftest import ROOT, orchestrator, orchestrator_env
from tests.helpers import daemons, wait_for_log

Conn = AsyncConnection[DictRow]

# Every entry point; each reads the engine's settings before it does anything.
COMMANDS = [
    ["up"],
    ["daemon"],
    ["api"],
    ["service", "sandbox"],
    ["services"],
    ["migrate"],
    ["db", "url"],
    ["prune"],
    ["runs", "list"],
    ["runs", "create", "--project", "p", "--brief", "b"],
    ["tokens", "list"],
    ["schedules", "list"],
]
# Those that also read the App's settings (they load the App: its workflows or gates).
APP_COMMANDS = [
    ["up"],
    ["daemon"],
    ["api"],
    ["service", "sandbox"],
    ["services"],
    ["runs", "create", "--project", "p", "--brief", "b"],
    ["runs", "list", "--status", "queued"],
    ["runs", "cancel", "--status", "queued", "--dry-run"],
]
ENV_FILE = "ORCHESTRATOR_LOG_LEVEL=INFO\n"  # a good first line: the bad one is line 2


def refusals(
    db_url: str, commands: list[list[str]], cwd: Path, **settings: str
) -> list[tuple[list[str], subprocess.CompletedProcess[str]]]:
    """Each command run to its end with `settings`, from `cwd` (its `.env`), four at once."""

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine", *command],
            env=orchestrator_env(db_url, **settings),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
        )

    with ThreadPoolExecutor(4) as pool:
        return list(zip(commands, pool.map(run, commands), strict=True))


def assert_one_line(
    results: list[tuple[list[str], subprocess.CompletedProcess[str]]], line: str
) -> None:
    for command, result in results:
        assert (result.returncode, result.stderr.splitlines()[-1:]) == (2, [line]), (
            command,
            result.stderr,
        )
        assert result.stderr.count("\n") == 1, (command, result.stderr)


@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        (
            "concurrency",
            "abc",
            "error: setting ORCHESTRATOR_CONCURRENCY: "
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            # pydantic-settings decodes a list setting as JSON before pydantic sees it
            "trusted_proxies",
            "proxy.example",
            "error: setting ORCHESTRATOR_TRUSTED_PROXIES: not JSON (Expecting value: line 1 "
            'column 1 (char 0)); this setting takes JSON, e.g. ["a", "b"]',
        ),
        (
            "database_url",
            "postgresql://ann:s3cret@db:5432/x?=",
            "error: setting ORCHESTRATOR_DATABASE_URL: "
            "not a PostgreSQL URL (postgresql://user@host:5432/db) or key=value string",
        ),
    ],
)
async def test_a_bad_engine_setting_stops_every_command_with_one_line(
    db_url: str, conn: Conn, tmp_path: Path, setting: str, value: str, line: str
) -> None:
    results = refusals(db_url, COMMANDS, tmp_path, **{setting: value})
    assert_one_line(results, line)
    assert not any(value in result.stderr for _, result in results)  # a URL's password
    count = await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()
    assert count is not None and count["n"] == 0


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            'ORCHESTRATOR_API_TOKEN="an-unclosed-quote\n',
            "error: setting file .env, line 2: not NAME=value "
            "(a quote left open, or a line that is not a setting or a # comment)",
        ),
        (
            "ORCHESTRATOR_ALLOWED_HOSTS=a.example,b.example\n",
            "error: setting ORCHESTRATOR_ALLOWED_HOSTS (in the .env file): not JSON (Expecting "
            'value: line 1 column 1 (char 0)); this setting takes JSON, e.g. ["a", "b"]',
        ),
    ],
)
def test_a_bad_env_file_line_stops_every_command_without_showing_it(
    db_url: str, tmp_path: Path, text: str, line: str
) -> None:
    (tmp_path / ".env").write_text(ENV_FILE + text)
    results = refusals(db_url, COMMANDS, tmp_path)
    assert_one_line(results, line)
    assert not any("an-unclosed-quote" in result.stderr for _, result in results)


@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        (
            "workflow_gate_deadline",
            "2 hours",
            "error: setting ORCHESTRATOR_WORKFLOW_GATE_DEADLINE: "
            "duration: '2 hours' is not a duration like 45s, 30m, 2h or 7d",
        ),
        (
            "chat_model_kwargs",
            '{"temperature": 0.2',
            "error: setting ORCHESTRATOR_CHAT_MODEL_KWARGS: not JSON: Expecting ',' delimiter: "
            "line 1 column 20 (char 19)",
        ),
        (
            "upload_post_schedulable_platforms",
            "tiktok,reddit",
            "error: setting ORCHESTRATOR_UPLOAD_POST_SCHEDULABLE_PLATFORMS: not JSON (Expecting "
            'value: line 1 column 1 (char 0)); this setting takes JSON, e.g. ["a", "b"]',
        ),
    ],
)
def test_a_bad_app_setting_stops_every_command_that_loads_the_app(
    db_url: str, tmp_path: Path, setting: str, value: str, line: str
) -> None:
    assert_one_line(refusals(db_url, APP_COMMANDS, tmp_path, **{setting: value}), line)


def test_make_run_stops_with_the_same_line(db_url: str, tmp_path: Path) -> None:
    """`make run` is `orchestrator up` in the project's venv (here: the one running the
    tests, its install taken as done)."""
    stamp = tmp_path / "installed"
    make = ["make", "--no-print-directory", "run", f"VENV={sys.prefix}", f"STAMP={stamp}"]
    result = subprocess.run(
        [*make, "-o", str(stamp)],
        env=orchestrator_env(db_url, trusted_proxies="10.0.0.0/8"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith(
        "error: setting ORCHESTRATOR_TRUSTED_PROXIES: not JSON"
    ), result.stderr


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
