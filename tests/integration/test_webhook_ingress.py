"""Webhook ingress: every delivery stored, only authentic ones wake their run, once."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from engine.db.connections import open_pool
from engine.db.queries import QUERIES
from engine.db.status import Status
from engine.runtime.claims import claim_params
from engine.service.api import create_app
from engine.settings import Settings
from providers.settings import ProviderSettings
from tests.app import app

Conn = AsyncConnection[DictRow]
SECRET = "kie-secret"
RUN_ID = "run_waitingforkie"
TASK_ID = "task-123"


@pytest.fixture
async def waiting_run(conn: Conn) -> None:
    """A run paused for kie.ai task TASK_ID, its timer far in the future."""
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, waiting_for, wake_at) "
        "VALUES (%s, 'p', 'waiting_provider', '{}', %s, NOW() + INTERVAL '1 hour')",
        (RUN_ID, Jsonb({"provider": "kie", "job_id": TASK_ID})),
    )
    await conn.execute(
        "INSERT INTO artifacts (run_id, type, provider, persona, provider_job_id, status) "
        "VALUES (%s, 'image', 'kie', 'media', %s, 'submitted')",
        (RUN_ID, TASK_ID),
    )


async def _client(db_url: str, secret: str | None) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(max_body_bytes=64 * 1024)
    config = app.configure(settings).replaced(
        ProviderSettings(kie_webhook_secret=SecretStr(secret) if secret else None)
    )
    async with open_pool(db_url, settings) as pool:
        api = create_app(app, config, url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(db_url, SECRET):
        yield c


@pytest.fixture
async def unsigned_client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(db_url, None):
        yield c


def _kie(task_id: str = TASK_ID, *, at: float | None = None, key: str = SECRET) -> dict[str, Any]:
    timestamp = str(int(at if at is not None else time.time()))
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return {
        "content": json.dumps(
            {"code": 200, "msg": "ok", "data": {"taskId": task_id, "info": {"result_urls": []}}}
        ),
        "headers": {
            "Content-Type": "application/json",
            "X-Webhook-Timestamp": timestamp,
            "X-Webhook-Signature": base64.b64encode(digest).decode(),
        },
    }


async def _claimable(conn: Conn) -> list[str]:
    """Run the daemon's own claim: which runs would a worker take now?"""
    rows = await (
        await conn.execute(
            QUERIES["claim_runs"],
            claim_params(
                10,
                "probe",
                timedelta(seconds=30),
                {
                    "workflows": ["production"],
                    "versions": ["production-2"],
                },
            ),
        )
    ).fetchall()
    return [row["run_id"] for row in rows]


async def _events(conn: Conn) -> list[dict[str, Any]]:
    rows = await (
        await conn.execute(
            "SELECT signature_status, delivery_id, run_id, raw_body IS NOT NULL AS raw "
            "FROM webhook_events ORDER BY id"
        )
    ).fetchall()
    return [dict(r) for r in rows]


async def test_a_signed_delivery_wakes_its_run_once(
    client: httpx.AsyncClient, conn: Conn, waiting_run: None
) -> None:
    delivery = _kie()
    first = await client.post("/webhooks/kie", **delivery)
    assert first.status_code == 202, first.text
    assert first.json()["signature_status"] == "valid"
    assert first.json()["run_id"] == RUN_ID
    replay = await client.post("/webhooks/kie", **delivery)
    assert replay.status_code == 200 and replay.json() == {"status": "duplicate"}
    assert len(await _events(conn)) == 1
    assert await _claimable(conn) == [RUN_ID]


@pytest.mark.parametrize(
    "forge",
    [
        lambda: _kie(key="not-the-secret"),
        lambda: _kie(at=time.time() - 301),
        lambda: {**_kie(), "headers": {"Content-Type": "application/json"}},
        lambda: {**_kie(), "headers": {**_kie()["headers"], "X-Webhook-Signature": "AAAA"}},
    ],
    ids=["wrong-key", "stale", "unsigned-headers", "garbage-signature"],
)
async def test_a_forged_delivery_is_stored_invalid_and_wakes_nothing(
    client: httpx.AsyncClient, conn: Conn, waiting_run: None, forge: Any
) -> None:
    response = await client.post("/webhooks/kie", **forge())
    assert response.status_code == 202
    assert response.json()["signature_status"] == "invalid"
    assert [e["signature_status"] for e in await _events(conn)] == ["invalid"]
    assert await _claimable(conn) == []


async def test_with_no_secret_configured_deliveries_are_unsigned_and_wake_nothing(
    unsigned_client: httpx.AsyncClient, conn: Conn, waiting_run: None
) -> None:
    response = await unsigned_client.post("/webhooks/kie", **_kie())
    assert response.json()["signature_status"] == "unsigned"
    assert await _claimable(conn) == []


async def test_malformed_json_is_400_and_stored_raw(client: httpx.AsyncClient, conn: Conn) -> None:
    response = await client.post(
        "/webhooks/kie", content=b'{"data": {"taskId": ', headers={"X-Webhook-Timestamp": "1"}
    )
    assert response.status_code == 400 and response.json()["field"] == "body"
    assert await _events(conn) == [
        {"signature_status": "invalid", "delivery_id": None, "run_id": None, "raw": True}
    ]


async def test_oversized_and_unknown_provider_deliveries_store_nothing(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    huge = await client.post("/webhooks/kie", content=b"{" + b" " * 70_000 + b"}")
    assert huge.status_code == 413
    unknown = await client.post("/webhooks/acme", json={})
    assert unknown.status_code == 404
    assert await _events(conn) == []


async def test_an_event_that_beats_its_job_id_is_adopted_when_the_run_pauses(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, lease_epoch, lease_owner) "
        "VALUES (%s, 'p', 'running', '{}', 1, 'w')",
        (RUN_ID,),
    )
    early = await client.post("/webhooks/kie", **_kie())
    assert early.json()["run_id"] is None
    await conn.execute(
        QUERIES["pause_run"],
        {
            "run_id": RUN_ID,
            "epoch": 1,
            "running": Status.RUNNING,
            "status": Status.WAITING_PROVIDER,
            "graph_version": "v",
            "waiting_for": Jsonb({"provider": "kie", "job_id": TASK_ID}),
            "wake_at": None,
            "trace_context": None,
        },
    )
    assert [e["run_id"] for e in await _events(conn)] == [RUN_ID]
    assert await _claimable(conn) == [RUN_ID]
