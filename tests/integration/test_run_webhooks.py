"""Completion webhooks: a run's own URL hears of its gates and its end, POSTed signed
(Standard Webhooks) from the notifications' outbox; URLs into the daemons' own
network are refused at creation and again at delivery."""

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import SecretStr
from standardwebhooks import Webhook

from engine.db.connections import open_pool
from engine.runtime import store
from engine.runtime.channels import channels_from
from engine.runtime.notifications import Notifier
from engine.service.api import create_app
from engine.settings import Settings
from tests.app import app as test_app
from tests.helpers import wait_for
from tests.scripted_http import Reply, ScriptedServer

Conn = AsyncConnection[DictRow]
SECRET = "whsec_" + base64.b64encode(bytes(range(32, 64))).decode()
HOOK = "/hook"
DELIVERED = (
    "SELECT a.run_id, a.metadata ->> 'event' AS event, d.delivered_at, d.last_error"
    " FROM notification_deliveries d JOIN artifacts a ON a.id = d.artifact_id"
    " WHERE d.channel = 'run-webhook' ORDER BY d.id"
)


def _settings(**change: Any) -> Settings:
    values: dict[str, Any] = {
        "poll_interval": 0.05,
        "run_webhook_secret": SecretStr(SECRET),
        "run_webhook_allow_private": True,  # the receiver is on loopback
        "notify_backoff": 0.2,
        "notify_max_attempts": 2,
        "notify_timeout": 5,
    }
    return Settings(**(values | change))


@contextlib.asynccontextmanager
async def _api(db_url: str, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with open_pool(db_url, settings) as pool:
        app = create_app(test_app, test_app.configure(settings), url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c


@contextlib.asynccontextmanager
async def _sender(db_url: str, settings: Settings) -> AsyncIterator[None]:
    async with open_pool(db_url, settings) as pool:
        serving = asyncio.create_task(Notifier(pool, settings, channels_from(settings)).serve())
        try:
            yield
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving


async def _move(conn: Conn, run_id: str, status: str, **waiting: Any) -> None:
    await conn.execute(
        "UPDATE runs SET status = %s, waiting_for = %s::jsonb WHERE run_id = %s",
        (status, Jsonb(waiting) if waiting else None, run_id),
    )


async def test_a_runs_webhook_hears_its_gate_and_its_end_signed_once_each(
    db_url: str, conn: Conn, server: ScriptedServer
) -> None:
    server.standing = {HOOK: Reply(200)}
    settings = _settings()
    async with _api(db_url, settings) as api:
        created = await api.post("/runs", json={"project": "cats", "webhook": server.url + HOOK})
        assert created.status_code == 201, created.text
        plain = await api.post("/runs", json={"project": "cats"})
    run_id, other = created.json()["run_id"], plain.json()["run_id"]
    assert (await store.get_run(conn, run_id))["webhook_url"] == server.url + HOOK
    async with _sender(db_url, settings):
        for each in (run_id, other):
            await _move(conn, each, "pending_workflow", gate="workflow", pause_id=1)
            await _move(conn, each, "cancelled")
        rows = await wait_for(
            conn,
            DELIVERED,
            until=lambda rows: len(rows) == 2 and all(r["delivered_at"] for r in rows),
        )
    assert {(r["run_id"], r["event"]) for r in rows} == {(run_id, "gate"), (run_id, "cancelled")}
    verifier = Webhook(SECRET)
    bodies = [verifier.verify(call.body, call.headers) for call in server.calls]
    assert sorted(b["event"] for b in bodies) == ["cancelled", "gate"]
    assert {b["run_id"] for b in bodies} == {run_id}
    assert {call.headers["webhook-id"] for call in server.calls} == {
        f"{run_id}:notification:gate:1",
        f"{run_id}:notification:cancelled:0",
    }


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_an_internal_address_is_refused_at_creation(
    db_url: str, conn: Conn, url: str
) -> None:
    async with _api(db_url, _settings(run_webhook_allow_private=False)) as api:
        refused = await api.post("/runs", json={"project": "cats", "webhook": url})
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "webhook"
    assert "loopback, link-local or private" in refused.json()["error"]
    assert await store.list_runs(conn) == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/hook", "give an http:// or https:// URL"),
        ("https://user:pw@example.com/hook", "no credentials"),
        ("https://example.com/" + "a" * 2100, "at most 2048"),
        ("https://nowhere.invalid/hook", "does not resolve"),
    ],
)
async def test_a_bad_webhook_url_is_422_naming_it(
    db_url: str, conn: Conn, url: str, words: str
) -> None:
    async with _api(db_url, _settings(run_webhook_allow_private=False)) as api:
        refused = await api.post("/runs", json={"project": "cats", "webhook": url})
    assert refused.status_code == 422 and refused.json()["field"] == "webhook"
    assert words in refused.json()["error"]
    assert await store.list_runs(conn) == []


async def test_without_a_secret_no_run_carries_a_webhook(db_url: str) -> None:
    async with _api(db_url, _settings(run_webhook_secret=None)) as api:
        refused = await api.post(
            "/runs", json={"project": "cats", "webhook": "https://example.com"}
        )
    assert refused.status_code == 422
    assert "ORCHESTRATOR_RUN_WEBHOOK_SECRET" in refused.json()["error"]


async def test_an_internal_address_is_refused_again_at_delivery(
    db_url: str, conn: Conn, server: ScriptedServer
) -> None:
    server.standing = {HOOK: Reply(200)}
    run = await store.start_run(
        conn, project="cats", payload={}, workflow="ledger", webhook_url=server.url + HOOK
    )
    async with _sender(db_url, _settings(run_webhook_allow_private=False)):
        await _move(conn, run.run["run_id"], "cancelled")
        (row,) = await wait_for(
            conn, DELIVERED, until=lambda rows: bool(rows) and rows[0]["last_error"] is not None
        )
    assert "loopback, link-local or private" in row["last_error"]
    assert server.calls == []
