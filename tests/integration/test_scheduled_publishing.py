"""Scheduled publishing: the publish gate's `publish_at`, posted by upload-post at that
time (`scheduled_date`) or, for a platform it cannot schedule, by the run itself after
a durable sleep; refused at approval when it is not a time the post could go out at.

The production graph runs in-process on a daemon, against the sandbox providers in
this event loop; approvals go through the HTTP API.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.connections import open_pool
from engine.runtime import store
from engine.runtime.daemon import Daemon
from engine.service.api import create_app
from engine.settings import Settings
from personas.graph import PRODUCTION
from providers.upload_post import schedule_text
from tests.app import app as test_app
from tests.helpers import sandbox_serving, wait_for

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status, wake_at, waiting_for, error, result FROM runs WHERE run_id = %s"
PUBLICATION = "SELECT * FROM artifacts WHERE run_id = %s AND type = 'publication'"
UPLOAD_POST = {"Authorization": "Apikey sandbox"}
NEW_YORK = timezone(timedelta(hours=-5))
LOOPBACK = "http://127.0.0.1:8000"  # with no token the API serves loopback only


@dataclass(frozen=True)
class Production:
    api: httpx.AsyncClient
    sandbox: httpx.AsyncClient

    async def uploads(self, run_id: str) -> list[dict[str, Any]]:
        answer = await self.sandbox.get(
            "/_sandbox/calls", params={"run_id": run_id, "operation": "upload"}
        )
        calls: list[dict[str, Any]] = answer.json()
        return calls

    async def upload_status(self, request_id: str) -> dict[str, Any]:
        answer = await self.sandbox.get(
            "/upload-post/api/uploadposts/status",
            params={"request_id": request_id},
            headers=UPLOAD_POST,
        )
        status: dict[str, Any] = answer.json()
        return status


@asynccontextmanager
async def production(db_url: str) -> AsyncIterator[Production]:
    """A daemon running the production graph, the API, the sandbox providers."""
    settings = Settings(poll_interval=0.2, max_attempts=1, health_port=0)
    async with sandbox_serving() as providers:
        # No webhooks reach an in-process run: it asks the providers every 0.2 s instead.
        quick = providers.model_copy(update={"provider_poll_interval": 0.2})
        config = test_app.configure(settings).replaced(quick)
        async with (
            open_pool(db_url, settings) as pool,
            PRODUCTION.opened(config) as workflow,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{providers.sandbox_port}") as sandbox,
        ):
            api = create_app(test_app, config, url=db_url, pool=pool)
            stop = asyncio.Event()
            serving = asyncio.create_task(
                Daemon(db_url, pool, settings, {workflow.name: workflow}).serve(stop)
            )
            try:
                transport = httpx.ASGITransport(app=api, client=("127.0.0.1", 4711))
                async with httpx.AsyncClient(transport=transport, base_url=LOOPBACK) as client:
                    yield Production(client, sandbox)
            finally:
                stop.set()
                await serving


def _status_is(status: str) -> Any:
    def check(rows: list[dict[str, Any]]) -> bool:
        if rows and rows[0]["status"] == "failed":
            raise AssertionError(f"run failed: {rows[0]['error']}")
        return bool(rows) and rows[0]["status"] == status

    return check


async def _at_publish_gate(p: Production, conn: Conn, platforms: list[str]) -> str:
    """A run of the production graph on `platforms`, approved up to the publish gate."""
    created = await p.api.post(
        "/runs", json={"project": "cats", "brief": "boxes", "payload": {"platforms": platforms}}
    )
    assert created.status_code == 201, created.text
    run_id: str = created.json()["run_id"]
    await wait_for(conn, STATUS, (run_id,), until=_status_is("pending_workflow"))
    approved = await p.api.post(f"/runs/{run_id}/approvals", json={"gate": "workflow"})
    assert approved.status_code == 201, approved.text
    await wait_for(conn, STATUS, (run_id,), until=_status_is("pending_publish"))
    return run_id


async def _approve_publish(p: Production, run_id: str, publish_at: datetime) -> None:
    approved = await p.api.post(
        f"/runs/{run_id}/approvals",
        json={"gate": "publish", "payload": {"publish_at": publish_at.isoformat()}},
    )
    assert approved.status_code == 201, approved.text


async def test_a_schedulable_platform_gets_scheduled_date_and_the_run_ends_at_once(
    db_url: str, conn: Conn
) -> None:
    async with production(db_url) as p:
        run_id = await _at_publish_gate(p, conn, ["tiktok", "youtube"])
        # Given with an offset: upload-post is sent the same instant in UTC.
        publish_at = (datetime.now(UTC) + timedelta(hours=2)).astimezone(NEW_YORK)
        await _approve_publish(p, run_id, publish_at)
        # Published long before its time: the run does not wait for the post.
        (run,) = await wait_for(conn, STATUS, (run_id,), until=_status_is("published"))
        (artifact,) = await (await conn.execute(PUBLICATION, (run_id,))).fetchall()
        held = await p.upload_status(artifact["provider_job_id"])
        uploads = await p.uploads(run_id)

    sent = schedule_text(publish_at)
    assert sent.endswith("Z") and datetime.fromisoformat(sent) >= publish_at
    assert (held["status"], held["scheduled_date"]) == ("pending", sent)
    assert [call["status_code"] for call in uploads] == [202]
    assert artifact["status"] == "done" and artifact["url"] is None
    assert artifact["metadata"]["status"] == "scheduled"
    assert artifact["metadata"]["scheduled_for"] == sent
    publication = run["result"]["publication"]
    assert (publication["status"], publication["scheduled_for"]) == ("scheduled", sent)
    assert run["result"]["publish_at"] == publish_at.astimezone(UTC).isoformat()


@pytest.mark.parametrize(
    "platforms",
    [
        # reddit is not among the platforms upload-post schedules; tiktok is, but one
        # platform that cannot be scheduled holds the whole post.
        ["tiktok", "reddit"],
        # Two seconds' notice is too little to trust to upload-post: the run waits.
        ["tiktok"],
    ],
)
async def test_a_post_upload_post_cannot_schedule_waits_in_the_run_then_posts_once(
    db_url: str, conn: Conn, platforms: list[str]
) -> None:
    async with production(db_url) as p:
        run_id = await _at_publish_gate(p, conn, platforms)
        publish_at = datetime.now(UTC) + timedelta(seconds=2)
        await _approve_publish(p, run_id, publish_at)
        (asleep,) = await wait_for(conn, STATUS, (run_id,), until=_status_is("waiting_timer"))
        assert asleep["wake_at"] == publish_at
        assert asleep["waiting_for"]["timer"] == publish_at.isoformat()
        assert await p.uploads(run_id) == []  # nothing posted while it sleeps
        (run,) = await wait_for(conn, STATUS, (run_id,), until=_status_is("published"))
        uploads = await p.uploads(run_id)
        (artifact,) = await (await conn.execute(PUBLICATION, (run_id,))).fetchall()
        posted = await p.upload_status(artifact["provider_job_id"])

    (upload,) = uploads
    assert datetime.fromisoformat(upload["at"]) >= publish_at, "posted before its time"
    assert upload["status_code"] == 200
    assert "scheduled_date" not in posted, "posted at once after the sleep, not scheduled"
    assert {result["platform"] for result in posted["results"]} == set(platforms)
    assert run["result"]["publication"]["status"] == "completed"
    assert run["result"]["scheduled_for"] is None


async def test_a_publish_at_already_past_posts_at_once(db_url: str, conn: Conn) -> None:
    async with production(db_url) as p:
        run_id = await _at_publish_gate(p, conn, ["tiktok"])
        await _approve_publish(p, run_id, datetime.now(UTC) - timedelta(minutes=5))
        (run,) = await wait_for(conn, STATUS, (run_id,), until=_status_is("published"))
        (artifact,) = await (await conn.execute(PUBLICATION, (run_id,))).fetchall()
        posted = await p.upload_status(artifact["provider_job_id"])

    assert "scheduled_date" not in posted
    assert run["result"]["publication"]["status"] == "completed"


async def test_a_publish_at_the_gate_refuses_from_plain_sql_asks_again_saying_why(
    db_url: str, conn: Conn
) -> None:
    async with production(db_url) as p:
        run_id = await _at_publish_gate(p, conn, ["tiktok"])
        # Plain SQL skips the API's check: the gate itself refuses the time and asks again.
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver, payload)"
            " VALUES (%s, 'publish', 'ann', '{\"publish_at\": \"2026-12-03T09:00:00\"}')",
            (run_id,),
        )
        (run,) = await wait_for(
            conn,
            STATUS,
            (run_id,),
            until=lambda rows: (
                rows[0]["status"] == "pending_publish"
                and "problem" in (rows[0]["waiting_for"] or {})
            ),
        )
        assert await p.uploads(run_id) == []
    assert run["waiting_for"]["problem"] == (
        "publish_at: 2026-12-03T09:00:00 has no UTC offset; give one "
        "(e.g. 2027-06-01T09:00:00+02:00)"
    )


@pytest.mark.parametrize(
    ("publish_at", "message"),
    [
        ("2026-12-03T09:00:00", "has no UTC offset"),
        ("tomorrow at nine", "is not an ISO 8601 time"),
        (1764748800, "give an ISO 8601 time such as"),
        ((datetime.now(UTC) - timedelta(hours=2)).isoformat(), "is more than an hour ago"),
        ((datetime.now(UTC) + timedelta(days=400)).isoformat(), "is more than 365 days away"),
    ],
    ids=["no-offset", "not-a-time", "a-number", "long-past", "too-far-ahead"],  # stable ids
)
async def test_a_bad_publish_at_is_refused_at_approval_and_nothing_is_written(
    db_url: str, conn: Conn, publish_at: object, message: str
) -> None:
    run = await store.create_run(conn, project="p", payload={}, workflow="production")
    await conn.execute(
        "UPDATE runs SET status = 'pending_publish' WHERE run_id = %s", (run["run_id"],)
    )
    settings = Settings()
    async with open_pool(db_url, settings) as pool:
        api = create_app(test_app, test_app.configure(settings), url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=api, client=("127.0.0.1", 4711))
        async with httpx.AsyncClient(transport=transport, base_url=LOOPBACK) as client:
            refused = await client.post(
                f"/runs/{run['run_id']}/approvals",
                json={"gate": "publish", "payload": {"publish_at": publish_at}},
            )
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "payload.publish_at"
    assert refused.json()["error"].startswith("payload.publish_at: ")
    assert message in refused.json()["error"]
    rows = await (await conn.execute("SELECT count(*) AS n FROM hitl_approvals")).fetchone()
    assert rows == {"n": 0}
