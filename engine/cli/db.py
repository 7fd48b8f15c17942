"""`orchestrator db ...`: the database the orchestrator uses, and the embedded server's life."""

import os
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from engine.cli.common import UsageFailure, db_app, print_json
from engine.db import embedded
from engine.db.connections import database_url
from engine.settings import Settings, read

# `db status`'s exit code when nothing answers: `systemctl status`'s (LSB's
# "program is not running"), apart from 1 (refused) and 2 (bad usage).
NOT_RUNNING = 3
PROBE_TIMEOUT = 5  # seconds a probe of the server may take to connect
# What of a connection string is shown: where, which database, as whom; never a secret.
SHOWN = ("host", "hostaddr", "port", "dbname", "user")
URL_VARIABLES = ("ORCHESTRATOR_DATABASE_URL", "DATABASE_URL")  # the settings' order


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (starting the embedded server if that is the one in use)."""
    print(database_url(read(Settings)))


@db_app.command("status")
def db_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Which database the settings name, and whether it answers (exit 3 if not)."""
    settings = read(Settings)
    if settings.database_url is not None:
        found = _external(settings.database_url.get_secret_value())
    else:
        found = _embedded(settings.data_dir)
    if as_json:
        print_json(found)
    else:
        _print(found)
    if not found["answers"]:
        raise SystemExit(NOT_RUNNING)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server, cleanly (an external one: exit 2)."""
    settings = read(Settings)
    if settings.database_url is not None:
        raise UsageFailure(
            f"{url_variable()} names an external server: 'db stop' stops only the embedded "
            "one (stop that server with its own tools)"
        )
    where = embedded.pgdata(settings.data_dir)
    stopped = embedded.stop(settings.data_dir)
    if stopped is None:
        print(f"the embedded server is not running (data directory {where})")
    else:
        print(f"stopped the embedded server (pid {stopped.pid}, data directory {where})")


def _embedded(data_dir: Path) -> dict[str, Any]:
    where = embedded.pgdata(data_dir)
    server = embedded.running(data_dir)
    found: dict[str, Any] = {
        "database": "embedded",
        "running": server is not None,
        "answers": False,
        "state": "not running",
        "data_dir": str(where),
        "url": None,
        "pid": None,
        "started_at": None,
        "size_bytes": embedded.size(data_dir) if where.is_dir() else None,
        "error": None,
    }
    if server is None:
        created = (where / "PG_VERSION").is_file()
        found["state"] += (
            " (the next command that needs the database starts it)"
            if created
            else " (not created yet: the first command that needs the database creates it)"
        )
        return found
    answer, error = _probe(server.url)
    found.update(
        answers=answer is not None,
        state="running" if answer is not None else f"{server.state}, not answering",
        url=server.url,
        pid=server.pid,
        started_at=server.started_at.isoformat(timespec="seconds"),
        error=error,
    )
    return found


def _external(url: str) -> dict[str, Any]:
    answer, error = _probe(url)
    return {
        "database": "external",
        "setting": url_variable(),
        "server": server_of(url),
        "answers": answer is not None,
        "state": "answering" if answer is not None else "not answering",
        "version": answer["version"] if answer else None,
        "size_bytes": answer["size"] if answer else None,
        "error": error,
    }


def _probe(url: str) -> tuple[dict[str, Any] | None, str | None]:
    """The server's version and the database's size, or why it does not answer."""
    try:
        with psycopg.connect(
            url, autocommit=True, connect_timeout=PROBE_TIMEOUT, row_factory=dict_row
        ) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version') AS version, "
                "pg_database_size(current_database()) AS size"
            ).fetchone()
    except psycopg.Error as error:
        return None, " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return row, None


def _print(found: dict[str, Any]) -> None:
    if found["database"] == "embedded":
        lines = {
            "database": "embedded PostgreSQL (DATABASE_URL is unset)",
            "state": found["state"],
            "data directory": found["data_dir"],
            "url": found["url"],
            "pid": found["pid"],
            "started": found["started_at"],
        }
    else:
        lines = {
            "database": f"external server ({found['setting']})",
            "state": found["state"],
            "server": found["server"],
            "version": found["version"],
        }
    lines["size"] = _size(found["size_bytes"])
    lines["error"] = found["error"]
    for label, value in lines.items():
        if value is not None:
            print(f"{label + ':':<16}{value}")


def _size(size: int | None) -> str | None:
    if size is None:
        return None
    for power, unit in ((3, "GB"), (2, "MB"), (1, "kB")):
        if size >= 1024**power:
            return f"{size / 1024**power:.1f} {unit}"
    return f"{size} bytes"


def server_of(url: str) -> str:
    """Where `url` connects, to which database, as whom: never its password."""
    parts = conninfo_to_dict(url)
    return make_conninfo("", **{key: parts[key] for key in SHOWN if key in parts})


def url_variable() -> str:
    """The variable the database URL was read from (a `.env` file's, when none is set)."""
    return next((name for name in URL_VARIABLES if os.environ.get(name)), "DATABASE_URL (.env)")
