"""The provider clients over real HTTP: what they send, how they classify and retry failures."""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from providers.clients import ProviderClients
from providers.config import base_urls
from providers.errors import PermanentProviderError, RateLimited, RetryableProviderError
from providers.http import RetryPolicy, retry_after_hint
from providers.sandbox import SandboxConfig, serve
from providers.settings import ProviderSettings
from tests.scripted_http import Reply, ScriptedServer, closed_port_url

KIE_KEY = "kie-secret-key-123"
SHOTSTACK_KEY = "shotstack-secret-key-456"
UPLOAD_POST_KEY = "upload-post-secret-key-789"
T = TypeVar("T")
FAST = RetryPolicy(max_attempts=3, backoff=0.01, backoff_max=0.02)


def provider_settings(url: str, **overrides: Any) -> ProviderSettings:
    """All three providers "configured", pointing at `url`; no environment leaks in."""
    values: dict[str, Any] = {
        "kie_api_key": SecretStr(KIE_KEY),
        "kie_base_url": url,
        "shotstack_api_key": SecretStr(SHOTSTACK_KEY),
        "shotstack_base_url": url,
        "upload_post_api_key": SecretStr(UPLOAD_POST_KEY),
        "upload_post_base_url": url,
        "provider_timeout": 5.0,
        "provider_max_attempts": 5,
    }
    values.update(overrides)
    return ProviderSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def clients(server: ScriptedServer) -> AsyncIterator[ProviderClients]:
    async with ProviderClients(provider_settings(server.url), retry=FAST) as opened:
        yield opened


def kie_ok(data: dict[str, Any]) -> Reply:
    return Reply(200, {"code": 200, "msg": "success", "data": data})


# --- where each provider lives --------------------------------------------------------


def test_a_provider_without_a_key_talks_to_the_sandbox() -> None:
    settings = ProviderSettings(_env_file=None, sandbox_port=8123, shotstack_env="v1")  # type: ignore[call-arg]
    urls = base_urls(settings)
    assert urls.kie == "http://127.0.0.1:8123/kie"
    assert urls.shotstack == "http://127.0.0.1:8123/shotstack/edit/v1"
    assert urls.upload_post == "http://127.0.0.1:8123/upload-post"


def test_a_provider_with_a_key_talks_to_the_real_api_or_the_configured_url() -> None:
    settings = ProviderSettings(  # type: ignore[call-arg]
        _env_file=None,
        kie_api_key=SecretStr("k"),
        shotstack_api_key=SecretStr("s"),
        upload_post_api_key=SecretStr("u"),
        upload_post_base_url="https://proxy.example/up/",
    )
    urls = base_urls(settings)
    assert urls.kie == "https://api.kie.ai"
    assert urls.shotstack == "https://api.shotstack.io/edit/stage"
    assert urls.upload_post == "https://proxy.example/up"


async def test_without_a_key_the_sandbox_placeholder_key_is_sent(server: ScriptedServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    settings = ProviderSettings(_env_file=None, sandbox_port=port)  # type: ignore[call-arg]
    server.script(kie_ok({"taskId": "t"}))
    async with ProviderClients(settings, retry=FAST) as sandboxed:
        await sandboxed.kie.create_task("m", {}, idempotency_key="k")
    assert server.calls[0].path == "/kie/api/v1/jobs/createTask"
    assert server.calls[0].headers["authorization"] == "Bearer sandbox"


# --- retries and error classification -------------------------------------------------


async def test_retryable_answers_are_retried_until_success(server: ScriptedServer) -> None:
    """429, 455 and 5xx heal by themselves; every attempt carries the same keys."""
    now = {"Retry-After": "0"}
    server.script(
        Reply(429, {"code": 429, "msg": "slow down"}, now),
        Reply(455, {"code": 455, "msg": "maintenance"}, now),
        Reply(500, {"code": 500, "msg": "oops"}, now),
        kie_ok({"taskId": "task-1"}),
    )
    async with ProviderClients(provider_settings(server.url)) as from_settings:
        task_id = await from_settings.kie.create_task(
            "flux-kontext",
            {"prompt": "a cat in a box"},
            callback_url="https://hooks.example/kie",
            idempotency_key="run_1:images:0",
            run_id="run_1",
        )
    assert task_id == "task-1"
    assert len(server.calls) == 4
    for call in server.calls:
        assert call.method == "POST"
        assert call.path == "/api/v1/jobs/createTask"
        assert call.headers["idempotency-key"] == "run_1:images:0"
        assert call.headers["x-orchestrator-run-id"] == "run_1"
        assert call.headers["authorization"] == f"Bearer {KIE_KEY}"
        assert json.loads(call.body) == {
            "model": "flux-kontext",
            "input": {"prompt": "a cat in a box"},
            "callBackUrl": "https://hooks.example/kie",
        }


async def test_retries_stop_at_provider_max_attempts(server: ScriptedServer) -> None:
    server.script(*[Reply(503, {"message": "busy"}, {"Retry-After": "0"})] * 5)
    settings = provider_settings(server.url, provider_max_attempts=3)
    async with ProviderClients(settings) as limited:
        with pytest.raises(RetryableProviderError) as raised:
            await limited.shotstack.render({"timeline": {}}, idempotency_key="k")
    assert len(server.calls) == 3
    assert raised.value.status_code == 503
    assert str(raised.value) == "shotstack render failed (503): busy"


@pytest.mark.parametrize("status", [400, 401, 402, 404, 422, 505])
@pytest.mark.parametrize("where", ["http", "body"])
async def test_permanent_errors_fail_at_once_with_the_providers_message(
    server: ScriptedServer, clients: ProviderClients, status: int, where: str
) -> None:
    """kie.ai may put the status in a 200 body's `code`: it counts the same."""
    body = {"code": status, "msg": "prompt is required", "data": None}
    server.script(Reply(status if where == "http" else 200, body))
    with pytest.raises(PermanentProviderError) as raised:
        await clients.kie.create_task("m", {}, idempotency_key="k")
    assert len(server.calls) == 1
    assert raised.value.status_code == status
    assert raised.value.retryable is False
    assert str(raised.value) == f"kie createTask failed ({status}): prompt is required"


async def test_a_kie_body_code_455_is_retried(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    server.script(Reply(200, {"code": 455, "msg": "maintenance"}), kie_ok({"taskId": "t2"}))
    assert await clients.kie.create_task("m", {}, idempotency_key="k") == "t2"
    assert len(server.calls) == 2


async def test_an_upload_post_hard_cap_is_not_retried(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    reset = int(time.time()) + 3600
    server.script(
        Reply(
            429,
            {"message": "daily limit reached", "violations": [{"type": "hard_cap"}]},
            {"X-RateLimit-Reset": str(reset), "X-RateLimit-Remaining": "0"},
        )
    )
    with pytest.raises(RateLimited) as raised:
        await clients.upload_post.upload(
            user="u", platforms=["tiktok"], video_url="https://v", title="t", request_id="r1"
        )
    assert len(server.calls) == 1
    assert raised.value.hard_cap is True
    assert raised.value.retryable is False
    assert raised.value.retry_after is not None and 3500 < raised.value.retry_after <= 3600
    assert str(raised.value) == "upload-post upload failed (429): daily limit reached"


async def test_a_soft_rate_limit_waits_as_long_as_the_provider_asks(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    server.script(
        Reply(
            429, {"message": "slow down", "violations": [{"type": "burst"}]}, {"Retry-After": "0.3"}
        ),
        Reply(200, {"success": True, "results": {}}),
    )
    await clients.upload_post.upload(
        user="u", platforms=["x"], video_url="https://v", title="t", request_id="r2"
    )
    first, second = server.calls
    assert second.received_at - first.received_at >= 0.25


NOW = 1_700_000_000


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"X-RateLimit-Reset": "12"}, 12.0),  # seconds from now
        ({"X-RateLimit-Reset": str(NOW + 45)}, 45.0),  # a Unix time
        ({"X-RateLimit-Reset": str((NOW + 45) * 1000)}, 45.0),  # a Unix time in milliseconds
        ({"X-RateLimit-Reset": str(NOW - 10)}, 0.0),  # already past
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_reset_hints_are_read_as_seconds_from_now(
    headers: dict[str, str], expected: float | None
) -> None:
    assert retry_after_hint(headers, now=lambda: float(NOW)) == expected


async def test_a_hint_is_capped_so_one_call_never_sleeps_long(server: ScriptedServer) -> None:
    server.script(
        Reply(429, {"message": "later"}, {"Retry-After": "3600"}), kie_ok({"taskId": "t"})
    )
    capped = RetryPolicy(max_attempts=2, hint_max=0.05)
    async with ProviderClients(provider_settings(server.url), retry=capped) as clients:
        assert await clients.kie.create_task("m", {}, idempotency_key="k") == "t"


async def test_a_timeout_is_retryable_without_a_status(server: ScriptedServer) -> None:
    server.script(Reply(delay=0.3), Reply(delay=0.3))
    settings = provider_settings(server.url, provider_timeout=0.05, provider_max_attempts=2)
    retry = RetryPolicy(max_attempts=settings.provider_max_attempts, backoff=0.01)
    async with ProviderClients(settings, retry=retry) as slow:
        with pytest.raises(RetryableProviderError) as raised:
            await slow.shotstack.get_render("r")
    assert raised.value.status_code is None
    assert str(raised.value).startswith("shotstack getRender failed: timed out")
    assert len(server.calls) == 2


async def test_a_refused_connection_is_retryable_without_a_status() -> None:
    async with ProviderClients(provider_settings(closed_port_url()), retry=FAST) as offline:
        with pytest.raises(RetryableProviderError) as raised:
            await offline.upload_post.status("r")
    assert raised.value.status_code is None
    assert "connection failed" in raised.value.message


async def test_secrets_appear_in_no_error_repr_or_log(
    server: ScriptedServer, clients: ProviderClients, caplog: pytest.LogCaptureFixture
) -> None:
    """Even a provider that echoes our key back cannot leak it through an error."""
    echo = {"message": f"key {UPLOAD_POST_KEY} rejected"}
    server.script(Reply(500, echo, {"Retry-After": "0"}), Reply(401, echo))
    with caplog.at_level(logging.DEBUG), pytest.raises(PermanentProviderError) as raised:
        await clients.upload_post.status("r")
    assert raised.value.message == "key ********** rejected"
    logged = [str(vars(record)) for record in caplog.records]
    assert any("provider_retry" in line for line in logged)
    shown = [str(raised.value), repr(raised.value), repr(clients), *logged]
    for key in (KIE_KEY, SHOTSTACK_KEY, UPLOAD_POST_KEY):
        assert not any(key in text for text in shown)


# --- kie.ai ---------------------------------------------------------------------------


async def test_kie_record_info_reads_the_result_json_string(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    result_json = json.dumps({"resultUrls": ["https://cdn.example/a.png"]})
    server.script(
        kie_ok({"taskId": "t1", "state": "generating", "resultJson": ""}),
        kie_ok({"taskId": "t1", "state": "success", "resultJson": result_json}),
        kie_ok({"taskId": "t1", "state": "fail", "failCode": 501, "failMsg": "nsfw"}),
    )
    running = await clients.kie.record_info("t1")
    assert (running.state, running.done, running.result_urls) == ("generating", False, ())
    succeeded = await clients.kie.record_info("t1", run_id="run_9")
    assert succeeded.succeeded and succeeded.result_urls == ("https://cdn.example/a.png",)
    failed = await clients.kie.record_info("t1")
    assert failed.done and not failed.succeeded
    assert (failed.fail_code, failed.fail_msg) == ("501", "nsfw")
    assert server.calls[0].path == "/api/v1/jobs/recordInfo"
    assert server.calls[0].query == {"taskId": "t1"}
    assert server.calls[1].headers["x-orchestrator-run-id"] == "run_9"


@pytest.mark.parametrize(
    ("flag", "state"),
    [(None, "waiting"), (0, "generating"), (1, "success"), (2, "fail"), (3, "fail")],
)
async def test_veo_success_flag_maps_to_the_common_states(
    server: ScriptedServer, clients: ProviderClients, flag: int | None, state: str
) -> None:
    urls = ["https://cdn.example/v.mp4"] if flag == 1 else None
    server.script(
        kie_ok({"taskId": "v1", "successFlag": flag, "response": {"resultUrls": urls}}),
        kie_ok({"taskId": "v1"}),
    )
    task = await clients.kie.veo_record_info("v1")
    assert task.state == state
    assert task.result_urls == (tuple(urls) if urls else ())
    assert server.calls[0].path == "/api/v1/veo/record-info"


async def test_veo_generate_sends_the_veo_fields(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    server.script(kie_ok({"taskId": "v2"}))
    task_id = await clients.kie.veo_generate(
        "a cat", image_urls=["https://i/1.png"], callback_url="https://cb", idempotency_key="k"
    )
    assert task_id == "v2"
    assert server.calls[0].path == "/api/v1/veo/generate"
    assert json.loads(server.calls[0].body) == {
        "prompt": "a cat",
        "model": "veo3_fast",
        "aspectRatio": "16:9",
        "imageUrls": ["https://i/1.png"],
        "callBackUrl": "https://cb",
    }


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("GENERATING", "generating"),
        ("SUCCESS", "success"),
        ("CREATE_TASK_FAILED", "fail"),
        ("GENERATE_FAILED", "fail"),
    ],
)
async def test_gpt4o_image_status_maps_to_the_common_states(
    server: ScriptedServer, clients: ProviderClients, status: str, state: str
) -> None:
    server.script(
        kie_ok({"taskId": "i1"}),
        kie_ok({"taskId": "i1", "status": status, "response": {"resultUrls": ["https://i"]}}),
    )
    assert await clients.kie.gpt4o_image_generate("a cat", idempotency_key="k") == "i1"
    task = await clients.kie.gpt4o_image_record_info("i1")
    assert task.state == state
    assert json.loads(server.calls[0].body) == {"prompt": "a cat", "size": "1:1"}
    assert server.calls[1].path == "/api/v1/gpt4o-image/record-info"


async def test_a_kie_answer_without_a_task_id_fails_clearly(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    server.script(kie_ok({}))
    with pytest.raises(PermanentProviderError, match=r"kie createTask failed: answer has no"):
        await clients.kie.create_task("m", {}, idempotency_key="k")


# --- Shotstack ------------------------------------------------------------------------


async def test_shotstack_render_then_get_render(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    server.script(
        Reply(
            201,
            {"success": True, "response": {"message": "Render Successfully Queued", "id": "r-1"}},
        ),
        Reply(200, {"success": True, "response": {"id": "r-1", "status": "rendering"}}),
        Reply(
            200,
            {
                "success": True,
                "response": {"id": "r-1", "status": "done", "url": "https://s/v.mp4"},
            },
        ),
    )
    edit = {"timeline": {"tracks": []}, "output": {"format": "mp4", "resolution": "sd"}}
    assert await clients.shotstack.render(edit, idempotency_key="k", run_id="run_2") == "r-1"
    rendering = await clients.shotstack.get_render("r-1")
    assert (rendering.status, rendering.done) == ("rendering", False)
    done = await clients.shotstack.get_render("r-1")
    assert done.succeeded and done.url == "https://s/v.mp4"
    submit, poll, _ = server.calls
    assert (submit.method, submit.path, poll.path) == ("POST", "/render", "/render/r-1")
    assert submit.headers["x-api-key"] == SHOTSTACK_KEY
    assert submit.headers["idempotency-key"] == "k"
    assert json.loads(submit.body) == edit


# --- upload-post ----------------------------------------------------------------------


async def test_upload_post_sends_a_multipart_form_and_reports_each_platform(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    server.script(
        Reply(
            200,
            {
                "success": True,
                "results": {
                    "tiktok": {"success": True, "publish_id": "p-1", "url": "https://t/1"},
                    "instagram": {"success": False, "error": "aspect ratio not allowed"},
                },
            },
        )
    )
    upload = await clients.upload_post.upload(
        user="cats",
        platforms=["tiktok", "instagram"],
        video_url="https://cdn.example/v.mp4",
        title="Why cats sit in boxes",
        description="They just do.",
        request_id="run_3:publish",
        run_id="run_3",
    )
    (call,) = server.calls
    assert call.path == "/api/upload"
    assert call.form == [
        ("user", "cats"),
        ("platform[]", "tiktok"),
        ("platform[]", "instagram"),
        ("video", "https://cdn.example/v.mp4"),
        ("title", "Why cats sit in boxes"),
        ("description", "They just do."),
        ("request_id", "run_3:publish"),
        ("async_upload", "true"),
    ]
    assert call.headers["authorization"] == f"Apikey {UPLOAD_POST_KEY}"
    assert call.headers["x-request-id"] == "run_3:publish"
    assert call.headers["idempotency-key"] == "run_3:publish"
    by_platform = {result.platform: result for result in upload.results}
    assert by_platform["tiktok"].success and by_platform["tiktok"].publish_id == "p-1"
    assert not by_platform["instagram"].success
    assert by_platform["instagram"].error == "aspect ratio not allowed"


async def test_a_scheduled_upload_sends_scheduled_date_in_utc_never_early(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    # upload-post's answer to a scheduled upload: 202, a scheduler job, no results yet.
    accepted = {"success": True, "job_id": "scheduler_1", "scheduled_date": "…"}
    server.script(Reply(202, accepted), Reply(202, accepted))
    paris = timezone(timedelta(hours=1))
    for moment in (
        datetime(2026, 12, 3, 9, 0, 0, tzinfo=paris),
        datetime(2026, 12, 3, 9, 0, 0, 1, tzinfo=paris),  # a microsecond past: the next second
    ):
        upload = await clients.upload_post.upload(
            user="cats",
            platforms=["tiktok"],
            video_url="https://cdn.example/v.mp4",
            title="t",
            request_id="run_5:publish",
            scheduled_date=moment,
        )
        assert upload.success and upload.results == ()
    sent = [dict(call.form)["scheduled_date"] for call in server.calls]
    assert sent == ["2026-12-03T08:00:00Z", "2026-12-03T08:00:01Z"]
    with pytest.raises(ValueError, match="has no UTC offset"):
        await clients.upload_post.upload(
            user="cats",
            platforms=["tiktok"],
            video_url="v",
            title="t",
            request_id="r",
            scheduled_date=datetime(2026, 12, 3, 9),
        )
    assert len(server.calls) == 2, "a naive time is never sent"


async def test_upload_post_status_by_request_id(
    server: ScriptedServer, clients: ProviderClients
) -> None:
    server.script(
        Reply(200, {"status": "not_found"}),
        Reply(
            200,
            {
                "status": "completed",
                "results": [{"platform": "tiktok", "success": True, "post_id": 42}],
            },
        ),
    )
    missing = await clients.upload_post.status("run_4:publish")
    assert not missing.exists and not missing.done
    completed = await clients.upload_post.status("run_4:publish")
    assert completed.succeeded
    assert completed.results[0].platform == "tiktok"
    assert completed.results[0].post_id == "42"
    assert server.calls[0].query == {"request_id": "run_4:publish"}
    assert server.calls[0].path == "/api/uploadposts/status"


# --- round trips against the sandbox provider server ----------------------------------


@dataclass(frozen=True)
class Sandbox:
    clients: ProviderClients
    control: httpx.AsyncClient  # the sandbox's own `/_sandbox` endpoints

    async def calls(self, provider: str) -> list[dict[str, Any]]:
        answer = await self.control.get("/_sandbox/calls", params={"provider": provider})
        calls: list[dict[str, Any]] = answer.raise_for_status().json()
        return calls

    async def fault(self, **fault: Any) -> None:
        (await self.control.post("/_sandbox/faults", json=fault)).raise_for_status()


async def poll(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 5.0
) -> T:
    """Ask until `done` holds; fail with the last answer at the deadline."""
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {within}s: {value!r}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The sandbox on a free port, and clients that reach it because no key is configured."""
    url = closed_port_url()
    port = int(url.rsplit(":", 1)[1])
    serving = asyncio.create_task(serve(SandboxConfig(job_latency=0.05), "127.0.0.1", port))
    try:
        async with httpx.AsyncClient(base_url=url) as control:

            async def answers() -> bool:
                try:
                    await control.get("/_sandbox/calls")
                except httpx.TransportError:
                    return False
                return True

            await poll(answers, bool)
            settings = ProviderSettings(_env_file=None, sandbox_port=port)  # type: ignore[call-arg]
            async with ProviderClients(settings, retry=FAST) as clients:
                yield Sandbox(clients, control)
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def test_kie_round_trip_through_the_sandbox(sandbox: Sandbox) -> None:
    """A maintenance answer on submit is retried under the same idempotency key."""
    kie = sandbox.clients.kie
    await sandbox.fault(provider="kie", operation="createTask", status_code=455, retry_after=0)
    task_id = await kie.create_task(
        "flux-kontext", {"prompt": "a cat"}, idempotency_key="run_k:media:0", run_id="run_k"
    )
    task = await poll(lambda: kie.record_info(task_id), lambda task: task.done)
    assert task.succeeded and task.result_urls
    submits = [call for call in await sandbox.calls("kie") if call["operation"] == "createTask"]
    assert [call["status_code"] for call in submits] == [455, 200]
    assert {(call["idempotency_key"], call["run_id"]) for call in submits} == {
        ("run_k:media:0", "run_k")
    }


async def test_shotstack_round_trip_through_the_sandbox(sandbox: Sandbox) -> None:
    shotstack = sandbox.clients.shotstack
    clip = {"asset": {"type": "video", "src": "https://cdn.example/a.mp4"}, "start": 0, "length": 2}
    edit = {
        "timeline": {"tracks": [{"clips": [clip]}]},
        "output": {"format": "mp4", "resolution": "sd"},
    }
    render_id = await shotstack.render(edit, idempotency_key="run_s:render:0", run_id="run_s")
    render = await poll(lambda: shotstack.get_render(render_id), lambda render: render.done)
    assert render.succeeded and render.url
    (submit, *_) = await sandbox.calls("shotstack")
    assert (submit["idempotency_key"], submit["run_id"]) == ("run_s:render:0", "run_s")


async def test_upload_post_round_trip_through_the_sandbox(sandbox: Sandbox) -> None:
    upload_post = sandbox.clients.upload_post
    assert not (await upload_post.status("run_u:publish")).exists
    await upload_post.upload(
        user="cats",
        platforms=["tiktok", "instagram"],
        video_url="https://cdn.example/v.mp4",
        title="Why cats sit in boxes",
        request_id="run_u:publish",
        run_id="run_u",
    )
    status = await poll(lambda: upload_post.status("run_u:publish"), lambda status: status.done)
    assert status.succeeded
    assert {result.platform for result in status.results} == {"tiktok", "instagram"}
    await sandbox.fault(provider="upload-post", operation="upload", status_code=429, hard_cap=True)
    with pytest.raises(RateLimited) as raised:
        await upload_post.upload(
            user="cats", platforms=["x"], video_url="https://v", title="t", request_id="r-2"
        )
    assert raised.value.hard_cap and raised.value.retry_after
    uploads = [call for call in await sandbox.calls("upload-post") if call["operation"] == "upload"]
    assert [call["idempotency_key"] for call in uploads] == ["run_u:publish", "r-2"]
