"""Webhook verification: signatures built with each provider's documented algorithm."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from providers.http import RetryPolicy
from providers.settings import ProviderSettings
from providers.shotstack import ShotstackClient
from providers.webhooks import (
    Verification,
    verifiers,
    verify_kie,
    verify_shotstack,
    verify_upload_post,
)
from tests.scripted_http import Reply, ScriptedServer

KIE_SECRET = "kie-webhook-secret"
UPLOAD_POST_SECRET = "upload-post-webhook-secret"
KIE_KEY = SecretStr(KIE_SECRET)
UPLOAD_POST_KEY = SecretStr(UPLOAD_POST_SECRET)
NOW = 1_700_000_000
KIE_BODY = json.dumps({"code": 200, "msg": "ok", "data": {"taskId": "task-7", "info": {}}}).encode()
UPLOAD_BODY = json.dumps(
    {"event": "upload_completed", "job_id": "job-3", "platform": "tiktok", "result": {}}
).encode()


def kie_headers(
    task_id: str = "task-7", timestamp: int = NOW, secret: str = KIE_SECRET
) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256)
    return {
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Signature": base64.b64encode(mac.digest()).decode(),
    }


def upload_headers(
    body: bytes = UPLOAD_BODY, timestamp: int = NOW, secret: str = UPLOAD_POST_SECRET
) -> dict[str, str]:
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return {
        "X-Upload-Post-Timestamp": str(timestamp),
        "X-Upload-Post-Signature": f"sha256={digest}",
        "X-Upload-Post-Delivery": "delivery-1",
    }


def kie(
    headers: dict[str, str],
    body: bytes = KIE_BODY,
    *,
    at: float = NOW,
    secret: SecretStr | None = KIE_KEY,
) -> Verification:
    return verify_kie(headers, body, secret=secret, now=lambda: at)


def upload_post(
    headers: dict[str, str],
    body: bytes = UPLOAD_BODY,
    *,
    at: float = NOW,
    secret: SecretStr | None = UPLOAD_POST_KEY,
) -> Verification:
    return verify_upload_post(headers, body, secret=secret, now=lambda: at)


def assert_no_secret(verification: Verification) -> None:
    for secret in (KIE_SECRET, UPLOAD_POST_SECRET):
        assert secret not in repr(verification)


# --- kie.ai ---------------------------------------------------------------------------


def test_kie_valid_signature() -> None:
    assert kie(kie_headers()) == Verification("valid", delivery_id=f"task-7:{NOW}", job_id="task-7")


@pytest.mark.parametrize(
    "payload",
    [
        {"data": {"taskId": "task-7"}},
        {"data": {"task_id": "task-7"}},
        {"taskId": "task-7"},
        {"task_id": "task-7"},
    ],
)
def test_kie_task_id_is_read_wherever_kie_puts_it(payload: dict[str, Any]) -> None:
    verification = kie(kie_headers(), json.dumps(payload).encode())
    assert (verification.status, verification.job_id) == ("valid", "task-7")


def test_kie_header_names_are_case_insensitive() -> None:
    headers = {key.lower(): value for key, value in kie_headers().items()}
    assert kie(headers).status == "valid"
    headers = {key.upper(): value for key, value in kie_headers().items()}
    assert kie(headers).status == "valid"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (kie_headers(secret="another-secret"), "signature does not match"),
        (kie_headers(task_id="task-8"), "signature does not match"),  # signed for another task
        ({**kie_headers(), "X-Webhook-Timestamp": str(NOW + 1)}, "signature does not match"),
        (kie_headers(timestamp=NOW - 301), "timestamp is more than 300 s away from now"),
        (kie_headers(timestamp=NOW + 301), "timestamp is more than 300 s away from now"),
        ({"X-Webhook-Timestamp": str(NOW)}, "missing X-Webhook-Timestamp or X-Webhook-Signature"),
        ({}, "missing X-Webhook-Timestamp or X-Webhook-Signature"),
        ({**kie_headers(), "X-Webhook-Timestamp": "nan"}, "timestamp is not a number"),
    ],
)
def test_kie_invalid_signatures(headers: dict[str, str], reason: str) -> None:
    verification = kie(headers)
    assert verification == Verification("invalid", job_id="task-7", reason=reason)
    assert_no_secret(verification)


def test_kie_tolerance_is_five_minutes_either_way() -> None:
    assert kie(kie_headers(timestamp=NOW - 300)).status == "valid"
    assert kie(kie_headers(timestamp=NOW + 300)).status == "valid"


def test_kie_without_a_secret_is_unsigned() -> None:
    assert kie(kie_headers(), secret=None) == Verification(
        "unsigned", delivery_id=f"task-7:{NOW}", job_id="task-7"
    )
    assert kie({}, secret=SecretStr("")).delivery_id == "task-7"


@pytest.mark.parametrize("secret", [KIE_KEY, None])
@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"{not json", "body is not valid JSON"), (b"[1, 2]", "body is not a JSON object")],
)
def test_kie_malformed_json_is_invalid(secret: SecretStr | None, body: bytes, reason: str) -> None:
    assert kie(kie_headers(), body, secret=secret) == Verification("invalid", reason=reason)


def test_kie_body_without_a_task_id_is_invalid() -> None:
    verification = kie(kie_headers(), b'{"code": 200, "data": {}}')
    assert (verification.status, verification.reason) == ("invalid", "no taskId in the body")


# --- upload-post ----------------------------------------------------------------------


def test_upload_post_valid_signature() -> None:
    assert upload_post(upload_headers()) == Verification(
        "valid", delivery_id="delivery-1", job_id="job-3"
    )


def test_upload_post_reads_request_id_when_there_is_no_job_id() -> None:
    body = json.dumps({"event": "upload_completed", "request_id": "run_1:publish"}).encode()
    assert upload_post(upload_headers(body), body).job_id == "run_1:publish"


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (upload_headers(), UPLOAD_BODY.replace(b"tiktok", b"tiktak"), "signature does not match"),
        (upload_headers(secret="another"), UPLOAD_BODY, "signature does not match"),
        (
            upload_headers(timestamp=NOW - 301),
            UPLOAD_BODY,
            "timestamp is more than 300 s away from now",
        ),
        (
            upload_headers(timestamp=NOW + 301),
            UPLOAD_BODY,
            "timestamp is more than 300 s away from now",
        ),
        (
            {**upload_headers(), "X-Upload-Post-Signature": "md5=abc"},
            UPLOAD_BODY,
            "signature is not sha256=<hex>",
        ),
        (
            {"X-Upload-Post-Delivery": "delivery-1"},
            UPLOAD_BODY,
            "missing X-Upload-Post-Timestamp or X-Upload-Post-Signature",
        ),
    ],
)
def test_upload_post_invalid_signatures(headers: dict[str, str], body: bytes, reason: str) -> None:
    verification = upload_post(headers, body)
    assert verification == Verification("invalid", job_id="job-3", reason=reason)
    assert_no_secret(verification)


def test_upload_post_signature_hex_is_case_insensitive_and_headers_too() -> None:
    headers = {key.lower(): value.upper() for key, value in upload_headers().items()}
    headers["x-upload-post-signature"] = "sha256=" + headers["x-upload-post-signature"][7:]
    assert upload_post(headers).status == "valid"


def test_upload_post_without_a_secret_is_unsigned() -> None:
    assert upload_post({"X-Upload-Post-Delivery": "d-9"}, secret=None) == Verification(
        "unsigned", delivery_id="d-9", job_id="job-3"
    )


def test_upload_post_malformed_json_is_invalid() -> None:
    body = b"\xff not json"
    assert upload_post(upload_headers(body), body) == Verification(
        "invalid", reason="body is not valid JSON"
    )


# --- Shotstack: verified by fetching the render back -----------------------------------


def shotstack_settings(url: str) -> ProviderSettings:
    return ProviderSettings(  # type: ignore[call-arg]
        _env_file=None,
        shotstack_api_key=SecretStr("shotstack-key"),
        shotstack_base_url=url,
        kie_webhook_secret=KIE_KEY,
        upload_post_webhook_secret=UPLOAD_POST_KEY,
    )


@pytest.fixture
async def shotstack(server: ScriptedServer) -> AsyncIterator[ShotstackClient]:
    async with httpx.AsyncClient() as http:
        retry = RetryPolicy(max_attempts=1)
        yield ShotstackClient(http, shotstack_settings(server.url), retry=retry)


def render_callback(render_id: str = "4fa3b2c1-0000-4000-8000-000000000001", **extra: Any) -> bytes:
    body = {"type": "edit", "action": "render", "id": render_id, "status": "done", **extra}
    return json.dumps(body).encode()


async def test_shotstack_callback_is_verified_by_fetching_the_render(
    server: ScriptedServer, shotstack: ShotstackClient
) -> None:
    render_id = "4fa3b2c1-0000-4000-8000-000000000001"
    server.script(Reply(200, {"success": True, "response": {"id": render_id, "status": "done"}}))
    verification = await verify_shotstack(render_callback(), shotstack)
    assert verification == Verification(
        "verified_by_fetch", delivery_id=f"{render_id}:done", job_id=render_id
    )
    (call,) = server.calls
    assert (call.path, call.headers["x-api-key"]) == (f"/render/{render_id}", "shotstack-key")


async def test_a_serve_callback_is_verified_by_its_render(
    server: ScriptedServer, shotstack: ShotstackClient
) -> None:
    server.script(Reply(200, {"success": True, "response": {"id": "r-1", "status": "done"}}))
    body = json.dumps({"type": "serve", "action": "copy", "id": "asset-9", "render": "r-1"})
    verification = await verify_shotstack(body.encode(), shotstack)
    assert (verification.status, verification.delivery_id) == ("verified_by_fetch", "r-1:done")
    assert server.calls[0].path == "/render/r-1"


async def test_an_unknown_render_is_invalid(
    server: ScriptedServer, shotstack: ShotstackClient
) -> None:
    server.script(Reply(404, {"success": False, "message": "Render not found"}))
    verification = await verify_shotstack(render_callback("r-404"), shotstack)
    assert verification == Verification("invalid", job_id="r-404", reason="render not found")


async def test_a_failed_fetch_is_invalid(
    server: ScriptedServer, shotstack: ShotstackClient
) -> None:
    server.script(Reply(500, {"message": "down"}))
    verification = await verify_shotstack(render_callback("r-5"), shotstack)
    assert verification.status == "invalid"
    assert verification.reason == "fetch failed: shotstack getRender failed (500): down"


@pytest.mark.parametrize(
    "body",
    [b"not json", render_callback("../../admin"), json.dumps({"type": "edit"}).encode()],
)
async def test_a_shotstack_body_without_a_usable_render_id_is_invalid_unfetched(
    server: ScriptedServer, shotstack: ShotstackClient, body: bytes
) -> None:
    verification = await verify_shotstack(body, shotstack)
    assert verification.status == "invalid"
    assert server.calls == []


# --- the ingress's entry point ---------------------------------------------------------


async def test_verifiers_use_the_secrets_and_keys_from_settings(server: ScriptedServer) -> None:
    checks = verifiers(shotstack_settings(server.url))
    assert set(checks) == {"kie", "shotstack", "upload-post"}
    kie_verdict = await checks["kie"](kie_headers(timestamp=int(time.time())), KIE_BODY)
    assert kie_verdict.status == "valid" and kie_verdict.trusted
    upload_verdict = await checks["upload-post"](
        upload_headers(timestamp=int(time.time())), UPLOAD_BODY
    )
    assert upload_verdict.status == "valid"
    server.script(Reply(200, {"success": True, "response": {"id": "r-2", "status": "failed"}}))
    shotstack_verdict = await checks["shotstack"]({}, render_callback("r-2"))
    assert shotstack_verdict == Verification(
        "verified_by_fetch", delivery_id="r-2:failed", job_id="r-2"
    )


async def test_verifiers_without_secrets_report_unsigned() -> None:
    checks = verifiers(ProviderSettings(_env_file=None))  # type: ignore[call-arg]
    verdict = await checks["kie"](kie_headers(), KIE_BODY)
    assert verdict.status == "unsigned" and not verdict.trusted
    assert (await checks["upload-post"]({}, UPLOAD_BODY)).status == "unsigned"
