"""Is a provider's callback authentic? One verifier per provider, for the webhook ingress.

The ingress stores every delivery whatever the verdict; only `valid` and
`verified_by_fetch` events may advance a run. Each verdict also names the
delivery id the ingress dedupes on and the provider's job id it matches runs by.

- kie.ai signs `taskId + "." + timestamp` (not the body), so even a valid
  callback only says "look at this task": the persona fetches the task before
  trusting result URLs. kie.ai sends no delivery id; `taskId:timestamp` stands in.
- upload-post signs `timestamp + "." + raw body` and names each delivery.
- Shotstack signs nothing: the render is fetched back with our key, and only
  that answer counts. It is fetched only when a live run knows the render id
  (the ingress's `known`): a forged callback never makes us call Shotstack.

An invalid verdict carries no delivery id, so a forged event can never take the
dedupe slot of the genuine delivery that follows it.
"""

import base64
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
from pydantic import SecretStr

from providers.config import has_key
from providers.errors import ProviderError
from providers.http import RetryPolicy, dig
from providers.settings import ProviderSettings
from providers.shotstack import ShotstackClient

TOLERANCE_SECONDS = 300.0
# Shotstack retries a callback unless it is answered within 10 s: fetch quickly, or give up.
SHOTSTACK_FETCH_TIMEOUT = 5.0
SHOTSTACK_FETCH_RETRY = RetryPolicy(max_attempts=2, backoff=0.2, backoff_max=0.5, hint_max=0.5)
# Shotstack ids are UUIDs; anything else is not worth a request carrying our key.
RENDER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")

SignatureStatus = Literal["valid", "invalid", "unsigned", "verified_by_fetch"]
Headers = Mapping[str, str]


@dataclass(frozen=True)
class Verification:
    """The verdict on one delivery; `reason` says why it is invalid and never holds a secret."""

    status: SignatureStatus
    delivery_id: str | None = None
    job_id: str | None = None
    reason: str | None = None

    @property
    def trusted(self) -> bool:
        """Whether this event may advance a run."""
        return self.status in ("valid", "verified_by_fetch")


KnownJob = Callable[[str], Awaitable[bool]]


class Verifier(Protocol):
    """`known(job_id)`, given by the ingress: whether a live run waits on that job."""

    def __call__(
        self, headers: Headers, body: bytes, *, known: KnownJob | None = None
    ) -> Awaitable[Verification]: ...


def verify_kie(
    headers: Headers,
    body: bytes,
    *,
    secret: SecretStr | None,
    now: Callable[[], float] = time.time,
) -> Verification:
    """`X-Webhook-Signature` = base64(HMAC-SHA256(secret, taskId + "." + X-Webhook-Timestamp))."""
    payload = _json_object(body)
    if isinstance(payload, Verification):
        return payload
    task_id = _first_text(
        payload, ("data", "taskId"), ("data", "task_id"), ("taskId",), ("task_id",)
    )
    lowered = _lowered(headers)
    timestamp = lowered.get("x-webhook-timestamp")
    if secret is None or not has_key(secret):
        delivery_id = f"{task_id}:{timestamp}" if task_id and timestamp else task_id
        return Verification("unsigned", delivery_id=delivery_id, job_id=task_id)
    if task_id is None:
        return _invalid("no taskId in the body", job_id=None)
    signature = lowered.get("x-webhook-signature")
    if not timestamp or not signature:
        return _invalid("missing X-Webhook-Timestamp or X-Webhook-Signature", task_id)
    mac = hmac.new(
        secret.get_secret_value().encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256
    )
    expected = base64.b64encode(mac.digest())
    return _check(expected, signature.strip(), timestamp, now, f"{task_id}:{timestamp}", task_id)


def verify_upload_post(
    headers: Headers,
    body: bytes,
    *,
    secret: SecretStr | None,
    now: Callable[[], float] = time.time,
) -> Verification:
    """`X-Upload-Post-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`."""
    payload = _json_object(body)
    if isinstance(payload, Verification):
        return payload
    job_id = _first_text(
        payload, ("job_id",), ("request_id",), ("data", "job_id"), ("data", "request_id")
    )
    lowered = _lowered(headers)
    delivery_id = lowered.get("x-upload-post-delivery") or None
    if secret is None or not has_key(secret):
        return Verification("unsigned", delivery_id=delivery_id, job_id=job_id)
    timestamp = lowered.get("x-upload-post-timestamp")
    signature = lowered.get("x-upload-post-signature", "").strip()
    if not timestamp or not signature:
        return _invalid("missing X-Upload-Post-Timestamp or X-Upload-Post-Signature", job_id)
    scheme, _, digest = signature.partition("=")
    if scheme.lower() != "sha256" or not digest:
        return _invalid("signature is not sha256=<hex>", job_id)
    signed = timestamp.encode() + b"." + body
    expected = hmac.new(secret.get_secret_value().encode(), signed, hashlib.sha256).hexdigest()
    return _check(expected.encode(), digest.lower(), timestamp, now, delivery_id, job_id)


async def verify_shotstack(
    body: bytes, client: ShotstackClient, known: KnownJob | None = None
) -> Verification:
    """Fetch the render the callback names; only what Shotstack tells us directly counts.

    A `serve`/`copy` callback names the hosted asset in `id` and the render in
    `render`. Its delivery id `render:status` equals the render callback's, so
    it is deduped away: only the render's outcome matters to a run.
    """
    payload = _json_object(body)
    if isinstance(payload, Verification):
        return payload
    render_id = _first_text(payload, ("render",) if payload.get("type") == "serve" else ("id",))
    if render_id is None or not RENDER_ID.fullmatch(render_id):
        return _invalid("no render id in the body", job_id=None)
    if known is not None and not await known(render_id):
        return _invalid("no live run knows this render", render_id)
    try:
        render = await client.get_render(render_id)
    except ProviderError as exc:
        reason = "render not found" if exc.status_code == 404 else f"fetch failed: {exc}"
        return _invalid(reason, render_id)
    return Verification(
        "verified_by_fetch", delivery_id=f"{render_id}:{render.status}", job_id=render_id
    )


def verifiers(settings: ProviderSettings) -> dict[str, Verifier]:
    """The ingress's verifiers by provider name, loaded as `providers.webhooks:verifiers`."""

    async def kie(headers: Headers, body: bytes, *, known: KnownJob | None = None) -> Verification:
        return verify_kie(headers, body, secret=settings.kie_webhook_secret)

    async def upload_post(
        headers: Headers, body: bytes, *, known: KnownJob | None = None
    ) -> Verification:
        return verify_upload_post(headers, body, secret=settings.upload_post_webhook_secret)

    async def shotstack(
        headers: Headers, body: bytes, *, known: KnownJob | None = None
    ) -> Verification:
        timeout = min(settings.provider_timeout, SHOTSTACK_FETCH_TIMEOUT)
        async with httpx.AsyncClient(timeout=timeout) as http:
            client = ShotstackClient(http, settings, retry=SHOTSTACK_FETCH_RETRY)
            return await verify_shotstack(body, client, known)

    return {"kie": kie, "shotstack": shotstack, "upload-post": upload_post}


def _json_object(body: bytes) -> dict[str, Any] | Verification:
    """The payload, or the invalid verdict for a body that cannot be read."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _invalid("body is not valid JSON", job_id=None)
    if not isinstance(payload, dict):
        return _invalid("body is not a JSON object", job_id=None)
    return payload


def _check(
    expected: bytes,
    signature: str,
    timestamp: str,
    now: Callable[[], float],
    delivery_id: str | None,
    job_id: str | None,
) -> Verification:
    """Constant-time signature compare, then the replay window, in either direction."""
    try:
        sent_at = float(timestamp)
    except ValueError:
        sent_at = math.nan
    if not math.isfinite(sent_at):
        return _invalid("timestamp is not a number", job_id)
    if not hmac.compare_digest(expected, signature.encode()):
        return _invalid("signature does not match", job_id)
    if abs(now() - sent_at) > TOLERANCE_SECONDS:
        return _invalid(f"timestamp is more than {TOLERANCE_SECONDS:.0f} s away from now", job_id)
    return Verification("valid", delivery_id=delivery_id, job_id=job_id)


def _invalid(reason: str, job_id: str | None) -> Verification:
    return Verification("invalid", delivery_id=None, job_id=job_id, reason=reason)


def _lowered(headers: Headers) -> dict[str, str]:
    """Case-insensitive lookups for any mapping (a plain dict from a test, Starlette's headers)."""
    return {key.lower(): value for key, value in headers.items()}


def _first_text(payload: Mapping[str, Any], *paths: tuple[str, ...]) -> str | None:
    for path in paths:
        value = dig(payload, *path)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None
