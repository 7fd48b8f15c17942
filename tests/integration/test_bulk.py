"""Bulk cancel and retry over HTTP: by status, project and age, counted first (a dry
run changes nothing), each run checked again as it changes; bad filters are 422."""

from collections.abc import AsyncIterator

import httpx
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.connections import open_pool
from engine.runtime import store
from engine.service.api import create_app
from engine.settings import Settings
from tests.app import app as test_app

Conn = AsyncConnection[DictRow]


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings()
    async with open_pool(db_url, settings) as pool:
        app = create_app(test_app, test_app.configure(settings), url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c


async def _run(conn: Conn, project: str, status: str, age_hours: float = 0) -> str:
    run = await store.create_run(conn, project=project, payload={}, workflow="production")
    await conn.execute(
        "UPDATE runs SET status = %s, created_at = NOW() - %s * INTERVAL '1 hour' "
        "WHERE run_id = %s",
        (status, age_hours, run["run_id"]),
    )
    return str(run["run_id"])


async def _statuses(conn: Conn) -> dict[str, str]:
    rows = await (await conn.execute("SELECT run_id, status FROM runs")).fetchall()
    return {row["run_id"]: row["status"] for row in rows}


async def test_cancel_by_status_project_and_age_counts_first_then_cancels(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    old = [await _run(conn, "cats", "queued", age_hours=3) for _ in range(3)]
    young = await _run(conn, "cats", "queued", age_hours=1)
    other = await _run(conn, "dogs", "queued", age_hours=3)
    waiting = await _run(conn, "cats", "pending_workflow", age_hours=3)
    before = await _statuses(conn)
    selection = {"status": "queued", "project": "cats", "older_than": "2h"}
    dry = await client.post("/runs/cancel", json={**selection, "dry_run": True})
    assert dry.status_code == 200
    assert dry.json() == {
        "matched": 3,
        "changed": 0,
        "dry_run": True,
        "limited": False,
        "run_ids": old,
    }
    assert await _statuses(conn) == before
    done = await client.post("/runs/cancel", json=selection)
    assert done.json()["matched"] == 3 and done.json()["changed"] == 3
    after = await _statuses(conn)
    assert [after[r] for r in old] == ["cancelled"] * 3
    assert (after[young], after[other], after[waiting]) == ("queued", "queued", "pending_workflow")
    # Without a status: every live run of the project, never one that has ended.
    rest = await client.post("/runs/cancel", json={"project": "cats"})
    assert rest.json()["matched"] == 2 and set(rest.json()["run_ids"]) == {young, waiting}


async def test_retry_takes_only_failed_runs(client: httpx.AsyncClient, conn: Conn) -> None:
    failed = [await _run(conn, "cats", "failed") for _ in range(2)]
    await _run(conn, "cats", "published")
    done = await client.post("/runs/retry", json={"project": "cats"})
    assert done.json()["changed"] == 2 and sorted(done.json()["run_ids"]) == sorted(failed)
    statuses = await _statuses(conn)
    assert sorted(statuses.values()) == ["published", "queued", "queued"]


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("/runs/cancel", {"status": "bogus"}, "status", "'bogus' is not a status; one of"),
        ("/runs/cancel", {"status": "published"}, "status", "published runs have ended"),
        ("/runs/cancel", {}, "status", "give a status, a project or an age"),
        ("/runs/cancel", {"project": "Not A Slug"}, "project", "is not a slug"),
        ("/runs/cancel", {"older_than": "two hours"}, "older_than", "is not a duration"),
        ("/runs/retry", {"status": "queued"}, "status", "only failed runs can be retried"),
        ("/runs/cancel", {"status": "pending_nowhere"}, "status", "is not a status"),
    ],
)
async def test_bad_filters_are_422_naming_the_field_and_change_nothing(
    client: httpx.AsyncClient, conn: Conn, path: str, body: dict[str, str], field: str, words: str
) -> None:
    run_id = await _run(conn, "cats", "queued")
    refused = await client.post(path, json=body)
    assert refused.status_code == 422
    assert refused.json()["field"] == field and words in refused.json()["error"]
    assert await _statuses(conn) == {run_id: "queued"}
