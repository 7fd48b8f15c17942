"""Where the database is (a URL, or the embedded server) and the connection pool."""

import json
from contextvars import ContextVar
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from engine.db import embedded
from engine.settings import Settings

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]

# Set while a value is read only to be shown (the API's requests): JSON that
# Python cannot decode (nested past its recursion limit, which only plain SQL
# can store) then reads as a marker instead of failing the page. Everywhere
# else (the daemon) it fails, and the run that holds it fails alone.
SHOWING = ContextVar("showing", default=False)


def _loads(data: bytes | bytearray | memoryview | str) -> Any:
    try:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except RecursionError:
        if not SHOWING.get():
            raise
        return {"unreadable": f"JSON of {len(data)} bytes nested too deep to decode"}


set_json_loads(_loads)


def database_url(settings: Settings) -> str:
    """The configured URL, else the embedded server's, started if it is not running."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded.start(settings.data_dir)


def listen_url(settings: Settings, url: str) -> str:
    """Where LISTEN connects: `ORCHESTRATOR_LISTEN_URL` when set (the server itself,
    when `url` is a transaction pooler's, through which LISTEN hears nothing), else `url`."""
    if settings.listen_url is not None:
        return settings.listen_url.get_secret_value()
    return url


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
