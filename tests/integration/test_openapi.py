"""The API documents itself: `/docs` works with no network beyond the API, every
operation has a summary and its refusals, and the answers are what the models say."""

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import SecretStr, TypeAdapter

from engine.db.connections import Pool, open_pool
from engine.service import answers
from engine.service.api import create_app
from engine.settings import Settings
from tests.app import app as test_app

Conn = AsyncConnection[DictRow]
TOKEN = "docs-token-for-the-openapi-tests-0123456789"
REFUSAL = {"$ref": "#/components/schemas/Refusal"}
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def served(db_url: str, pool: Pool | None = None) -> FastAPI:
    settings = Settings(api_token=SecretStr(TOKEN))
    return create_app(test_app, test_app.configure(settings), url=db_url, pool=pool)


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with open_pool(db_url, Settings()) as pool:
        app = served(db_url, pool)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as c:
            yield c


async def test_the_docs_page_loads_everything_from_the_api_itself(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert not re.search(r"https?:|//", page.text)  # nothing from anywhere else
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(referenced) == [
        "/docs/assets/favicon.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    ]
    for path in referenced:
        asset = await client.get(path)
        assert asset.status_code == 200, path
        assert asset.headers["content-type"].startswith(ASSET_TYPES[path[path.rindex(".") :]])
        assert asset.headers["x-content-type-options"] == "nosniff"
        unchanged = await client.get(path, headers={"If-None-Match": asset.headers["etag"]})
        assert unchanged.status_code == 304, path
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    assert policy["script-src"].startswith("'self' 'sha256-")
    assert (policy["style-src"], policy["img-src"], policy["connect-src"]) == (
        "'self'",
        "'self' data:",
        "'self'",
    )
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    missing = await client.get("/docs/assets/nothing.js")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    # Behind the same guard as the page.
    assert (await client.get(referenced[0], headers={"Authorization": ""})).status_code == 401


async def test_every_operation_has_a_summary_and_documents_its_refusals(
    db_url: str, client: httpx.AsyncClient
) -> None:
    # FastAPI's default summary is the function's name, title-cased: each route says more.
    documented = [r for r in served(db_url).routes if isinstance(r, APIRoute)]
    assert [r.path for r in documented if r.include_in_schema and not r.summary] == []
    document = (await client.get("/openapi.json")).json()
    operations = [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) >= 20
    for method, path, operation in operations:
        where = f"{method} {path}"
        refusals = {code: r for code, r in operation["responses"].items() if code[0] == "4"}
        for code, response in refusals.items():
            assert response["content"]["application/json"]["schema"] == REFUSAL, (where, code)
        if path not in ("/healthz", "/readyz"):
            assert {"403", "422"} <= set(refusals), where
        if not path.startswith(("/healthz", "/readyz", "/webhooks/")):
            assert "401" in refusals and "429" in refusals, where
        if method in ("POST", "DELETE") and not path.startswith("/webhooks/"):
            assert {"401", "403", "422"} <= set(refusals), where
        if "{run_id}" in path or "{schedule_id}" in path:
            assert "404" in refusals, where
    shown = document["components"]["schemas"]["Refusal"]
    assert shown["required"] == ["error"]
    assert set(shown["properties"]) == {"error", "field", "detail"}
    approvals = document["paths"]["/runs/{run_id}/approvals"]["post"]["responses"]
    assert approvals["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Approval"
    }


def fits(model: Any, body: Any) -> None:
    """`body` has every field `model` requires (each documented without a default is
    always there), of its type."""
    TypeAdapter(model).validate_python(body)


async def test_the_answers_are_what_the_documented_models_say(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    async def answer(method: str, path: str, model: Any, **sent: Any) -> Any:
        response = await client.request(method, path, **sent)
        assert response.status_code < 300, response.text
        fits(model, response.json())
        return response.json()

    run = await answer("POST", "/runs", answers.ShownRun, json={"project": "cats"})
    await answer("GET", "/runs", list[answers.Run])
    await answer("GET", f"/runs/{run['run_id']}", answers.RunView)
    await conn.execute(
        "UPDATE runs SET status = 'pending_workflow' WHERE run_id = %s", (run["run_id"],)
    )
    await answer(
        "POST", f"/runs/{run['run_id']}/approvals", answers.Approval, json={"gate": "workflow"}
    )
    await answer("POST", f"/runs/{run['run_id']}/cancel", answers.Run)
    await answer("POST", "/runs/cancel", answers.BulkResult, json={"project": "cats"})
    await answer("POST", "/runs/retry", answers.BulkResult, json={"dry_run": True})
    schedule = await answer(
        "POST",
        "/schedules",
        answers.Schedule,
        json={"cron": "0 9 * * *", "timezone": "Europe/Berlin", "project": "cats"},
    )
    at = f"/schedules/{schedule['schedule_id']}"
    await answer("GET", "/schedules", list[answers.Schedule])
    await answer("GET", at, answers.Schedule)
    await answer("POST", f"{at}/pause", answers.Schedule)
    await answer("POST", f"{at}/resume", answers.Schedule)
    span = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-03T00:00:00Z"}
    backfilled = await answer("POST", f"{at}/backfill", answers.Backfill, json=span)
    assert len(backfilled["created"]) == 2
    await answer("GET", "/healthz", answers.Health)
    await answer("GET", "/readyz", answers.Ready)
    refused = await client.get("/runs", params={"status": "bogus"})
    assert refused.status_code == 422
    answers.Refusal.model_validate(refused.json(), strict=True)
