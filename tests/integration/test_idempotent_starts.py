"""Idempotent starts: a client retrying `POST /runs` with its key gets the run it
created, never a second one; the key reused for another request is refused."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.connections import open_pool
from engine.runtime import store
from engine.service.api import create_app
from engine.settings import Settings
from tests.app import app as test_app

Conn = AsyncConnection[DictRow]
BODY = {"project": "cats", "brief": "boxes", "idempotency_key": "req-42"}


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(pool_size=20)
    async with open_pool(db_url, settings) as pool:
        app = create_app(test_app, test_app.configure(settings), url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c


async def _runs(conn: Conn) -> list[dict[str, object]]:
    rows = await (await conn.execute("SELECT run_id, idempotency_key FROM runs")).fetchall()
    return [dict(row) for row in rows]


async def test_fifty_concurrent_posts_with_one_key_create_one_run(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    answers = await asyncio.gather(*(client.post("/runs", json=BODY) for _ in range(50)))
    assert Counter(a.status_code for a in answers) == {201: 1, 200: 49}
    (run,) = await _runs(conn)
    assert {a.json()["run_id"] for a in answers} == {run["run_id"]}
    assert run["idempotency_key"] == "req-42"


async def test_a_retry_gets_the_same_body_and_200(client: httpx.AsyncClient) -> None:
    first = await client.post("/runs", json=BODY)
    again = await client.post("/runs", json=BODY)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()


@pytest.mark.parametrize(
    "change",
    [{"brief": "dogs"}, {"priority": 5}, {"not_before": "2030-01-01T00:00:00+00:00"}],
)
async def test_the_key_reused_for_another_request_is_409_naming_it(
    client: httpx.AsyncClient, conn: Conn, change: dict[str, object]
) -> None:
    first = await client.post("/runs", json=BODY)
    refused = await client.post("/runs", json={**BODY, **change})
    assert refused.status_code == 409
    assert refused.json()["field"] == "idempotency_key"
    assert refused.json()["error"] == (
        f"idempotency_key: 'req-42' already started run {first.json()['run_id']} "
        "of project 'cats' with a different request"
    )
    assert len(await _runs(conn)) == 1


async def test_keys_are_per_project_and_runs_without_one_are_never_deduplicated(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    assert (await client.post("/runs", json=BODY)).status_code == 201
    assert (await client.post("/runs", json={**BODY, "project": "dogs"})).status_code == 201
    plain = {"project": "cats", "brief": "boxes"}
    assert [(await client.post("/runs", json=plain)).status_code for _ in range(2)] == [201, 201]
    assert len(await _runs(conn)) == 4


@pytest.mark.parametrize("key", ["", "k" * 201, "tab\there"])
async def test_a_bad_key_is_422_naming_it(client: httpx.AsyncClient, conn: Conn, key: str) -> None:
    refused = await client.post("/runs", json={**BODY, "idempotency_key": key})
    assert refused.status_code == 422
    assert refused.json()["field"] == "idempotency_key"
    assert await _runs(conn) == []


async def test_plain_sql_holds_the_same_line(conn: Conn) -> None:
    await store.start_run(
        conn, project="cats", payload={}, workflow="production", idempotency_key="k"
    )
    with pytest.raises(psycopg.errors.UniqueViolation, match="runs_idempotency"):
        await conn.execute(
            "INSERT INTO runs (run_id, project, status, idempotency_key) "
            "VALUES ('run_by_psql', 'cats', 'queued', 'k')"
        )
