"""Webhook ingress: store every delivery first, verified and deduped, then wake the run."""

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb

from engine.database import Pool
from engine.sql import QUERIES
from engine.store import InvalidInput, storable

ADVANCING = frozenset({"valid", "verified_by_fetch"})
# Never stored: credentials a misconfigured provider (or an attacker) might send.
_UNSTORED_HEADERS = frozenset({"authorization", "cookie", "x-api-key"})


class Verification(Protocol):
    """What a provider's verifier (in `providers.webhooks`) says about a delivery."""

    @property
    def status(self) -> str: ...
    @property
    def delivery_id(self) -> str | None: ...
    @property
    def job_id(self) -> str | None: ...


Verifier = Callable[[Mapping[str, str], bytes], Awaitable[Verification]]


def error(status_code: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status_code)


def webhook_router(pool: Pool, verifiers: Mapping[str, Verifier]) -> APIRouter:
    router = APIRouter()

    @router.post("/webhooks/{provider}", status_code=202)
    async def receive(provider: str, request: Request) -> JSONResponse:
        verify = verifiers.get(provider)
        if verify is None:
            known = ", ".join(sorted(verifiers))
            return error(404, f"unknown provider {provider!r} (known: {known})", "provider")
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _UNSTORED_HEADERS}
        try:
            payload = storable(json.loads(body), "body")
        except (json.JSONDecodeError, UnicodeDecodeError, InvalidInput) as exc:
            await _store(pool, provider, "invalid", None, None, headers, None, body)
            return error(400, f"body is not storable JSON: {exc}", "body")
        verification = await verify(request.headers, body)
        stored = await _store(
            pool,
            provider,
            verification.status,
            verification.delivery_id,
            verification.job_id,
            headers,
            payload,
            None,
        )
        if stored is None:
            return JSONResponse({"status": "duplicate"}, status_code=200)
        return JSONResponse(
            {
                "id": stored["id"],
                "signature_status": stored["signature_status"],
                "run_id": stored["run_id"],
            },
            status_code=202,
        )

    return router


async def _store(
    pool: Pool,
    provider: str,
    status: str,
    delivery_id: str | None,
    job_id: str | None,
    headers: dict[str, str],
    payload: object,
    raw_body: bytes | None,
) -> dict[str, Any] | None:
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            QUERIES["insert_webhook_event"],
            {
                "provider": provider,
                "signature_status": status,
                "delivery_id": delivery_id,
                "headers": Jsonb(headers),
                "payload": Jsonb(payload) if payload is not None else None,
                "raw_body": raw_body,
                "job_id": job_id,
            },
        )
        row = await cursor.fetchone()
        if row is not None and row["run_id"] is not None and row["signature_status"] in ADVANCING:
            await conn.execute(QUERIES["notify_event"], {"run_id": row["run_id"]})
    return dict(row) if row else None
