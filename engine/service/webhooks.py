"""Webhook ingress: store every delivery first, verified and deduped, then wake the run.

What a stranger can make it do is bounded: deliveries per provider per second
(`webhook_rate`, 429 past it), bytes per delivery (`webhook_max_bytes`: larger
bodies are refused with 413 and not stored), and requests that carry our keys
(a verifier that fetches asks `known` first). Stored deliveries are pruned
with the runs (`engine.runtime.retention`).
"""

import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from psycopg.types.json import Jsonb

from engine.db.connections import Pool
from engine.db.queries import QUERIES
from engine.runtime.holdable import Unholdable, parse_json
from engine.runtime.workflow import CALLBACK_KEY
from engine.service.answers import GUARDED, Delivery, Refusal, refusals
from engine.service.refusals import error
from engine.settings import Settings
from engine.verifiers import Verifier

ADVANCING = frozenset({"valid", "verified_by_fetch"})
# Never stored: credentials a misconfigured provider (or an attacker) might send.
_UNSTORED_HEADERS = frozenset({"authorization", "cookie", "x-api-key"})
RAW_CHUNK = 256 * 1024
MAX_CALLBACK_KEY = 300


class RateLimit:
    """A token bucket per provider: `burst` deliveries at once, `rate` per second after.

    Per API process: with N replicas a provider may send N times as many.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # provider -> (tokens, at)

    def retry_after(self, provider: str) -> int | None:
        """None when a delivery may pass now (and take a token); else seconds to wait."""
        now = self.clock()
        tokens, at = self._buckets.get(provider, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[provider] = (tokens - 1, now)
            return None
        self._buckets[provider] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.rate))


def webhook_router(pool: Pool, verifiers: Mapping[str, Verifier], settings: Settings) -> APIRouter:
    router = APIRouter()
    limit = RateLimit(settings.webhook_rate, settings.webhook_burst)
    max_bytes = settings.webhook_max_bytes

    @router.post(
        "/webhooks/{provider}",
        status_code=202,
        summary="Receive a provider's webhook delivery (stored, then verified)",
        response_model=Delivery,
        responses={
            200: {"model": Delivery, "description": "A delivery already stored: duplicate"},
            400: {"model": Refusal, "description": "The body is not storable JSON (it is kept)"},
            **refusals(403, 404, 413, 422, 429, 503),
        },
    )
    async def receive(provider: str, request: Request) -> JSONResponse:
        verify = verifiers.get(provider)
        if verify is None:
            names = ", ".join(sorted(verifiers))
            return error(404, f"unknown provider {provider!r} (known: {names})", "provider")
        if (wait := limit.retry_after(provider)) is not None:
            refused = error(429, f"too many deliveries from {provider}; retry later", "provider")
            refused.headers["Retry-After"] = str(wait)
            return refused
        body = await _body(request, max_bytes)
        if body is None:
            return error(413, f"a delivery is stored up to {max_bytes} bytes", "body")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _UNSTORED_HEADERS}
        try:
            payload = parse_json(body)
        except Unholdable as exc:
            await _store(pool, provider, "invalid", None, None, headers, None, body)
            return error(400, f"body is not storable JSON: {exc}", exc.field)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            await _store(pool, provider, "invalid", None, None, headers, None, body)
            return error(400, f"body is not storable JSON: {exc}", "body")

        # Our callback URLs carry the job's idempotency key (`RunContext.callback_url`);
        # a longer one is none of ours.
        callback_key = request.query_params.get(CALLBACK_KEY)
        if callback_key is not None and len(callback_key) > MAX_CALLBACK_KEY:
            callback_key = None

        async def known(job_id: str) -> bool:
            async with pool.connection() as conn:
                params = {"provider": provider, "job_id": job_id, "callback_key": callback_key}
                row = await (await conn.execute(QUERIES["webhook_job_known"], params)).fetchone()
            return bool(row and row["known"])

        verification = await verify(request.headers, body, known=known)
        stored = await _store(
            pool,
            provider,
            verification.status,
            verification.delivery_id,
            verification.job_id,
            headers,
            payload,
            None,
            hashlib.sha256(body).digest() if verification.status == "valid" else None,
            callback_key,
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

    @router.get(
        "/runs/{run_id}/webhook-events/{event_id}/raw",
        summary="A stored webhook delivery's bytes, as received",
        response_class=Response,
        responses={
            200: {"description": "The bytes", "content": {"application/octet-stream": {}}},
            **refusals(*GUARDED, 404),
        },
    )
    async def raw(run_id: str, event_id: int) -> Response:
        """The bytes as stored, streamed a slice at a time: never rendered, never whole."""
        first = await _slice(pool, run_id, event_id, 0)
        if first is None:
            return error(404, f"run {run_id} has no webhook event {event_id}", "event_id")
        chunk, size = first

        async def chunks() -> AsyncIterator[bytes]:
            yield chunk
            offset = len(chunk)
            while offset < size:
                piece = await _slice(pool, run_id, event_id, offset)
                if piece is None or not piece[0]:
                    return  # pruned meanwhile
                yield piece[0]
                offset += len(piece[0])

        return StreamingResponse(
            chunks(),
            media_type="application/octet-stream",
            headers={
                "Content-Length": str(size),
                "Content-Disposition": f'attachment; filename="webhook-event-{event_id}.json"',
                "X-Content-Type-Options": "nosniff",
            },
        )

    return router


async def _body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None past `max_bytes` (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _slice(pool: Pool, run_id: str, event_id: int, offset: int) -> tuple[bytes, int] | None:
    params = {"run_id": run_id, "event_id": event_id, "offset": offset, "length": RAW_CHUNK}
    async with pool.connection() as conn:
        row = await (await conn.execute(QUERIES["webhook_event_raw"], params)).fetchone()
    if row is None or row["size"] is None:
        return None
    return bytes(row["chunk"]), int(row["size"])


async def _store(
    pool: Pool,
    provider: str,
    status: str,
    delivery_id: str | None,
    job_id: str | None,
    headers: dict[str, str],
    payload: object,
    raw_body: bytes | None,
    body_sha256: bytes | None = None,
    callback_key: str | None = None,
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
                "body_sha256": body_sha256,
                "callback_key": callback_key,
            },
        )
        row = await cursor.fetchone()
        if row is not None and row["run_id"] is not None and row["signature_status"] in ADVANCING:
            await conn.execute(QUERIES["notify_event"], {"run_id": row["run_id"]})
    return dict(row) if row else None
