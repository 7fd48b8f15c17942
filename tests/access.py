"""What the access tests share: the API in-process as a client at a given address, and
a run waiting at a gate."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from engine.db.connections import open_pool
from engine.runtime import store
from engine.service.api import create_app
from engine.settings import Settings
from tests.app import app as test_app

Conn = AsyncConnection[DictRow]
TOKEN = "bootstrap-token-for-the-access-tests-0123456789"


@asynccontextmanager
async def api(
    db_url: str, *, peer: str = "203.0.113.7", base: str = "http://api.example", **settings: object
) -> AsyncIterator[httpx.AsyncClient]:
    chosen = Settings(**settings)  # type: ignore[arg-type]
    async with open_pool(db_url, chosen) as pool:
        app = create_app(test_app, test_app.configure(chosen), url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=app, client=(peer, 4711))
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            yield client


async def waiting_run(conn: Conn) -> str:
    run = await store.create_run(conn, project="cats", payload={}, workflow="production")
    await conn.execute(
        "UPDATE runs SET status = 'pending_workflow', waiting_for = %s WHERE run_id = %s",
        (Jsonb({"gate": "workflow", "pause_id": 1}), run["run_id"]),
    )
    return str(run["run_id"])
