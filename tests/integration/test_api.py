"""The HTTP API: runs and approvals, its errors, auth and limits."""

from collections.abc import AsyncIterator

import httpx
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import SecretStr

from engine.db.connections import open_pool
from engine.db.status import statuses
from engine.runtime import store
from engine.service.api import create_app
from engine.settings import Settings
from tests.app import app as test_app

Conn = AsyncConnection[DictRow]
TOKEN = "s3cret-token-for-the-api-tests-0123456789"


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(api_token=SecretStr(TOKEN), max_body_bytes=4096)
    async with open_pool(db_url, settings) as pool:
        app = create_app(test_app, test_app.configure(settings), url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as c:
            yield c


async def test_create_list_show_approve_cancel(client: httpx.AsyncClient, conn: Conn) -> None:
    created = await client.post("/runs", json={"project": "cats", "brief": "boxes"})
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["status"] == "queued" and run["payload"] == {"brief": "boxes"}

    listed = await client.get("/runs", params={"project": "cats"})
    assert [r["run_id"] for r in listed.json()] == [run["run_id"]]
    shown = (await client.get(f"/runs/{run['run_id']}")).json()
    assert shown == {"run": shown["run"], "checkpoint": None, "artifacts": [], "approvals": []}

    await conn.execute(
        "UPDATE runs SET status = 'pending_workflow' WHERE run_id = %s", (run["run_id"],)
    )
    # An edit the gate declares it refuses is never written (it used to say "approved").
    refused = await client.post(
        f"/runs/{run['run_id']}/approvals",
        json={"gate": "workflow", "payload": {"workflow": ["publisher"]}},
    )
    assert refused.status_code == 422
    assert refused.json()["field"] == "payload.workflow"
    assert "the publisher needs the editor's video before it" in refused.json()["error"]
    approved = await client.post(
        f"/runs/{run['run_id']}/approvals",
        json={"gate": "workflow", "payload": {"workflow": ["script_writer"]}},
    )
    assert approved.status_code == 201, approved.text
    row = await (
        await conn.execute("SELECT approver, approver_ip, payload FROM hitl_approvals")
    ).fetchone()
    # The approver is the identity that sent it: the bootstrap token is `admin`.
    assert row == {
        "approver": "admin",
        "approver_ip": "203.0.113.7",
        "payload": {"workflow": ["script_writer"]},
    }

    again = await client.post(f"/runs/{run['run_id']}/approvals", json={"gate": "workflow"})
    assert again.status_code == 409
    assert "already has approval " in again.json()["error"]

    cancelled = await client.post(f"/runs/{run['run_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await client.post(f"/runs/{run['run_id']}/cancel")).status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "project"),
        ({"project": "Not A Slug"}, "project"),
        ({"project": "p; DROP TABLE runs; --"}, "project"),
        ({"project": "p", "payload": [1]}, "payload"),
        ({"project": "p", "brief": 7}, "brief"),
        ({"project": "p", "priority": "high"}, "priority"),
        ({"project": "p", "priority": False}, "priority"),
        ({"project": "p", "priority": 2.0}, "priority"),
        ({"project": "p", "surprise": True}, "surprise"),
        ({"project": "p", "workflow": "nope"}, "workflow"),
        ({"project": "p", "not_before": "2026-12-03T09:00:00"}, "not_before"),
        ({"project": "p", "not_before": "soon"}, "not_before"),
        ({"project": "p", "not_before": 1764748800}, "not_before"),
        ({"project": "p", "not_before": "9999-01-01T00:00:00Z"}, "not_before"),
    ],
)
async def test_bad_run_bodies_get_422_naming_the_field_and_write_nothing(
    client: httpx.AsyncClient, conn: Conn, body: dict[str, object], field: str
) -> None:
    response = await client.post("/runs", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(f"{field}: ")
    count = await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()
    assert count == {"n": 0}


async def test_a_delayed_run_waits_for_its_timer_and_says_when_it_is_due(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/runs", json={"project": "cats", "not_before": "2036-12-03T09:00:00+01:00"}
    )
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["status"] == "waiting_timer"
    assert run["due_at"] == run["wake_at"] == "2036-12-03T08:00:00+00:00"
    shown = (await client.get(f"/runs/{run['run_id']}")).json()["run"]
    assert shown["due_at"] == "2036-12-03T08:00:00+00:00"
    past = await client.post("/runs", json={"project": "cats", "not_before": "2020-01-01T00:00Z"})
    assert past.json()["status"] == "queued" and past.json()["due_at"] is None


async def test_an_unknown_status_filter_is_refused_naming_the_known_ones(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    await store.create_run(conn, project="p", payload={}, workflow="production")
    refused = await client.get("/runs", params={"status": "bogus"})
    assert refused.status_code == 422
    known = ", ".join(statuses(test_app.gate_names()))
    assert refused.json() == {
        "error": f"status: 'bogus' is not a status; one of {known}",
        "field": "status",
    }
    assert "pending_workflow, pending_publish" in known
    for status, found in [("queued", 1), ("pending_publish", 0), ("cancelled", 0)]:
        listed = await client.get("/runs", params={"status": status})
        assert listed.status_code == 200 and len(listed.json()) == found, status


async def test_approval_errors(client: httpx.AsyncClient, conn: Conn) -> None:
    missing = await client.post("/runs/run_nope/approvals", json={"gate": "workflow"})
    assert missing.status_code == 404 and missing.json()["error"] == "run run_nope not found"
    run = await store.create_run(conn, project="p", payload={}, workflow="production")
    not_waiting = await client.post(f"/runs/{run['run_id']}/approvals", json={"gate": "workflow"})
    assert not_waiting.status_code == 409
    assert not_waiting.json()["error"] == (
        f"approval refused: run {run['run_id']} is not waiting at gate workflow (status is queued)"
    )
    bad_gate = await client.post(f"/runs/{run['run_id']}/approvals", json={"gate": "Work Flow"})
    assert bad_gate.status_code == 422 and bad_gate.json()["field"] == "gate"
    bad_decision = await client.post(
        f"/runs/{run['run_id']}/approvals", json={"gate": "workflow", "decision": "maybe"}
    )
    assert bad_decision.status_code == 422 and bad_decision.json()["field"] == "decision"


async def test_writes_and_reads_need_the_bearer_token(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": ""}):
        response = await client.post("/runs", json={"project": "p"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["field"] == "authorization"
        assert TOKEN not in response.text
    assert (await client.get("/runs", headers={"Authorization": ""})).status_code == 401
    count = await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()
    assert count == {"n": 0}


async def test_oversized_and_malformed_bodies(client: httpx.AsyncClient, conn: Conn) -> None:
    huge = await client.post("/runs", json={"project": "p", "brief": "x" * 10_000})
    assert huge.status_code == 413 and huge.json()["field"] == "body"
    broken = await client.post(
        "/runs", content=b'{"project": "p"', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422
    invalid_utf8 = await client.post(
        "/runs", content=b'{"project": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    assert invalid_utf8.status_code == 400 and invalid_utf8.json()["field"] == "body"
    count = await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()
    assert count == {"n": 0}


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


async def test_unknown_webhook_provider_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/webhooks/acme", json={})
    assert response.status_code == 404 and response.json()["field"] == "provider"
