"""The sandbox provider server over real HTTP: each provider's round trip, the call
log, faults, how jobs end, and webhooks received and verified by a real endpoint."""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from engine.service.serving import serve_http
from providers.sandbox import SandboxConfig, serve

KIE = {"Authorization": "Bearer test-key"}
SHOTSTACK = {"x-api-key": "test-key"}
UPLOAD_POST = {"Authorization": "Apikey test-key"}
LATENCY = 0.1
EDIT = {
    "timeline": {
        "tracks": [{"clips": [{"asset": {"type": "video", "src": "x"}, "start": 0, "length": 4}]}]
    },
    "output": {"format": "mp4", "resolution": "sd"},
}

T = TypeVar("T")
Json = dict[str, Any]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(start: Callable[[int], Coroutine[Any, Any, None]]) -> AsyncIterator[str]:
    """Serve on a free loopback port until the block ends; yield the base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = asyncio.create_task(start(port))
    try:
        async with httpx.AsyncClient() as probe:
            await poll(lambda: reachable(probe, base), lambda up: up or server.done())
        if server.done():
            await server  # raises why it stopped
        yield base
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


async def reachable(client: httpx.AsyncClient, base: str) -> bool:
    try:
        await client.get(f"{base}/docs")
    except httpx.ConnectError:
        return False
    return True


@contextlib.asynccontextmanager
async def sandbox(config: SandboxConfig) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serving(lambda port: serve(config, port=port)) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with sandbox(SandboxConfig(job_latency=LATENCY)) as client:
        yield client


async def poll(
    fetch: Callable[[], Awaitable[T]], until: Callable[[T], bool], within: float = 5.0
) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s; last: {value!r}")
        await asyncio.sleep(0.02)


def upload_form(
    request_id: str | None, *platforms: str, scheduled_date: str | None = None
) -> list[tuple[str, tuple[None, bytes]]]:
    """The multipart fields as our client sends them (a repeated `platform[]`)."""
    fields = [("user", "ann"), ("video", "https://example.com/v.mp4"), ("title", "Cats")]
    fields += [("platform[]", platform) for platform in platforms]
    if request_id is not None:
        fields.append(("request_id", request_id))
    if scheduled_date is not None:
        fields.append(("scheduled_date", scheduled_date))
    return [(name, (None, value.encode())) for name, value in fields]


async def get_json(client: httpx.AsyncClient, url: str, **kwargs: Any) -> Json:
    response = await client.get(url, **kwargs)
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


async def kie_submit(client: httpx.AsyncClient, path: str, body: Json) -> str:
    response = await client.post(f"/kie/api/v1/{path}", json=body, headers=KIE)
    assert response.status_code == 200, response.text
    assert response.json()["code"] == 200
    task_id: str = response.json()["data"]["taskId"]
    return task_id


async def kie_record(client: httpx.AsyncClient, path: str, task_id: str) -> Json:
    body = await get_json(client, f"/kie/api/v1/{path}", params={"taskId": task_id}, headers=KIE)
    data: Json = body["data"]
    return data


async def render(client: httpx.AsyncClient, edit: Json = EDIT) -> str:
    response = await client.post("/shotstack/edit/stage/render", json=edit, headers=SHOTSTACK)
    assert response.status_code == 201, response.text
    assert response.json()["response"]["message"] == "Render Successfully Queued"
    render_id: str = response.json()["response"]["id"]
    return render_id


async def render_status(client: httpx.AsyncClient, render_id: str) -> Json:
    body = await get_json(client, f"/shotstack/edit/stage/render/{render_id}", headers=SHOTSTACK)
    response: Json = body["response"]
    return response


async def upload_status(client: httpx.AsyncClient, request_id: str) -> Json:
    return await get_json(
        client,
        "/upload-post/api/uploadposts/status",
        params={"request_id": request_id},
        headers=UPLOAD_POST,
    )


async def test_kie_market_task_round_trip(client: httpx.AsyncClient) -> None:
    task_id = await kie_submit(
        client, "jobs/createTask", {"model": "flux-kontext", "input": {"prompt": "a cat"}}
    )

    data = await poll(
        lambda: kie_record(client, "jobs/recordInfo", task_id), lambda d: d["state"] == "success"
    )

    assert data["taskId"] == task_id and data["model"] == "flux-kontext"
    (url,) = json.loads(data["resultJson"])["resultUrls"]
    image = await client.get(url)
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")


async def test_kie_veo_and_gpt4o_image_round_trips(client: httpx.AsyncClient) -> None:
    veo_id = await kie_submit(
        client, "veo/generate", {"prompt": "a cat", "model": "veo3", "aspectRatio": "9:16"}
    )
    image_id = await kie_submit(
        client, "gpt4o-image/generate", {"prompt": "a cat", "size": "1:1", "nVariants": 2}
    )

    veo = await poll(
        lambda: kie_record(client, "veo/record-info", veo_id), lambda d: d["successFlag"] != 0
    )
    image = await poll(
        lambda: kie_record(client, "gpt4o-image/record-info", image_id),
        lambda d: d["status"] != "GENERATING",
    )

    assert veo["successFlag"] == 1
    assert veo["response"]["resolution"] == "720p" and veo["response"]["originUrls"]
    (video_url,) = veo["response"]["resultUrls"]
    assert (await client.get(video_url)).headers["content-type"] == "video/mp4"
    assert image["status"] == "SUCCESS" and image["successFlag"] == 1
    assert len(image["response"]["resultUrls"]) == 2


async def test_kie_refusals_carry_their_code(client: httpx.AsyncClient) -> None:
    unauthorized = await client.post(
        "/kie/api/v1/jobs/createTask", json={"model": "m", "input": {}}
    )
    no_prompt = await client.post("/kie/api/v1/veo/generate", json={"model": "veo3"}, headers=KIE)
    veo_id = await kie_submit(client, "veo/generate", {"prompt": "a cat"})
    wrong_api = await client.get(
        "/kie/api/v1/jobs/recordInfo", params={"taskId": veo_id}, headers=KIE
    )

    assert (unauthorized.status_code, unauthorized.json()["code"]) == (401, 401)
    assert (no_prompt.status_code, no_prompt.json()["code"]) == (422, 422)
    assert "prompt" in no_prompt.json()["msg"]
    assert (wrong_api.status_code, wrong_api.json()["code"]) == (404, 404)


async def test_shotstack_render_round_trip(client: httpx.AsyncClient) -> None:
    render_id = await render(client)

    done = await poll(
        lambda: render_status(client, render_id), lambda r: r["status"] in ("done", "failed")
    )

    assert done["status"] == "done" and done["id"] == render_id and done["duration"] == 4
    assert (await client.get(done["url"])).headers["content-type"] == "video/mp4"
    other_env = await client.get(f"/shotstack/edit/v1/render/{render_id}", headers=SHOTSTACK)
    assert other_env.status_code == 404
    no_tracks = await client.post(
        "/shotstack/edit/stage/render",
        json={"timeline": {}, "output": {"format": "mp4"}},
        headers=SHOTSTACK,
    )
    assert no_tracks.status_code == 400
    assert no_tracks.json()["response"]["error"] == "validation_error"
    no_key = await client.post("/shotstack/edit/stage/render", json=EDIT)
    assert no_key.status_code == 401


async def test_upload_post_round_trip(client: httpx.AsyncClient) -> None:
    assert (await upload_status(client, "never-sent"))["status"] == "not_found"

    response = await client.post(
        "/upload-post/api/upload",
        files=upload_form("req-1", "tiktok", "instagram"),
        headers=UPLOAD_POST,
    )
    again = await client.post(
        "/upload-post/api/upload",
        files=upload_form("req-1", "tiktok", "instagram"),
        headers=UPLOAD_POST,
    )
    status = await poll(
        lambda: upload_status(client, "req-1"), lambda s: s["status"] in ("completed", "failed")
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] and body["request_id"] == "req-1"
    assert set(body["results"]) == {"tiktok", "instagram"}
    assert all(result["success"] and result["post_id"] for result in body["results"].values())
    assert again.json() == body, "the same request_id answers the same upload"
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(
        response.headers
    )
    assert status["status"] == "completed"
    assert {result["platform"]: result["post_id"] for result in status["results"]} == {
        platform: result["post_id"] for platform, result in body["results"].items()
    }


def utc_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_scheduled_upload_is_held_until_its_date_then_posted(
    client: httpx.AsyncClient,
) -> None:
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    response = await client.post(
        "/upload-post/api/upload",
        files=upload_form("req-s", "tiktok", scheduled_date=due.isoformat()),
        headers=UPLOAD_POST,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["success"] and body["job_id"] and body["scheduled_date"] == due.isoformat()
    held = await upload_status(client, "req-s")
    assert (held["status"], held["scheduled_date"]) == ("pending", due.isoformat())
    posted = await poll(lambda: upload_status(client, "req-s"), lambda s: s["status"] != "pending")
    assert datetime.now(UTC) >= due
    # Asked while the post goes out, or after: it is never `pending` again.
    assert posted["status"] in ("in_progress", "completed")
    done = await poll(lambda: upload_status(client, "req-s"), lambda s: s["status"] == "completed")
    assert [result["platform"] for result in done["results"]] == ["tiktok"]


@pytest.mark.parametrize(
    ("scheduled_date", "message"),
    [
        ("next tuesday", "scheduled_date must be an ISO-8601 date/time"),
        (utc_text(datetime.now(UTC) - timedelta(minutes=1)), "must be in the future"),
        (utc_text(datetime.now(UTC) + timedelta(days=366)), "is more than 365 days ahead"),
    ],
    ids=["not-a-date", "past", "too-far-ahead"],  # the same at every collection
)
async def test_a_bad_scheduled_date_is_refused_and_posts_nothing(
    client: httpx.AsyncClient, scheduled_date: str, message: str
) -> None:
    response = await client.post(
        "/upload-post/api/upload",
        files=upload_form("req-bad", "tiktok", scheduled_date=scheduled_date),
        headers=UPLOAD_POST,
    )
    assert response.status_code == 400
    assert response.json()["success"] is False and message in response.json()["message"]
    assert (await upload_status(client, "req-bad"))["status"] == "not_found"


async def test_the_call_log_records_keys_and_run_ids(client: httpx.AsyncClient) -> None:
    await client.post(
        "/kie/api/v1/jobs/createTask",
        json={"model": "m", "input": {}},
        headers={**KIE, "Idempotency-Key": "key-kie", "X-Orchestrator-Run-Id": "run-1"},
    )
    await client.post(
        "/shotstack/edit/stage/render",
        json=EDIT,
        headers={**SHOTSTACK, "Idempotency-Key": "key-render", "X-Orchestrator-Run-Id": "run-2"},
    )
    await client.post(
        "/upload-post/api/upload",
        files=upload_form("req-7", "youtube"),
        headers={**UPLOAD_POST, "X-Orchestrator-Run-Id": "run-1"},
    )
    await client.post("/kie/api/v1/veo/generate", json={}, headers=KIE)

    calls = (await client.get("/_sandbox/calls")).json()
    run_1 = (await client.get("/_sandbox/calls", params={"run_id": "run-1"})).json()
    renders = (
        await client.get("/_sandbox/calls", params={"provider": "shotstack", "operation": "render"})
    ).json()

    assert [(c["provider"], c["operation"], c["status_code"]) for c in calls] == [
        ("kie", "createTask", 200),
        ("shotstack", "render", 201),
        ("upload-post", "upload", 200),
        ("kie", "veo_generate", 422),
    ]
    assert [(c["operation"], c["idempotency_key"]) for c in run_1] == [
        ("createTask", "key-kie"),
        ("upload", "req-7"),
    ]
    assert [(c["idempotency_key"], c["run_id"], c["method"], c["path"]) for c in renders] == [
        ("key-render", "run-2", "POST", "/shotstack/edit/stage/render")
    ]
    assert (await client.delete("/_sandbox/calls")).status_code == 204
    assert (await client.get("/_sandbox/calls")).json() == []


async def test_a_429_fault_answers_in_each_providers_style(client: httpx.AsyncClient) -> None:
    async def fault(**spec: Any) -> None:
        response = await client.post("/_sandbox/faults", json=spec)
        assert response.status_code == 201, response.text

    await fault(provider="kie", operation="createTask", status_code=429, times=2, retry_after=0.5)
    await fault(provider="shotstack", operation="render", status_code=429)
    await fault(
        provider="upload-post", operation="upload", status_code=429, retry_after=30, hard_cap=True
    )

    kie = [
        await client.post(
            "/kie/api/v1/jobs/createTask", json={"model": "m", "input": {}}, headers=KIE
        )
        for _ in range(3)
    ]
    shotstack = await client.post("/shotstack/edit/stage/render", json=EDIT, headers=SHOTSTACK)
    upload = await client.post(
        "/upload-post/api/upload", files=upload_form("req-9", "x"), headers=UPLOAD_POST
    )

    assert [r.status_code for r in kie] == [429, 429, 200]
    assert kie[0].json()["code"] == 429 and kie[0].headers["retry-after"] == "0.5"
    assert (
        shotstack.status_code == 429 and shotstack.json()["response"]["error"] == "rate_limit_error"
    )
    assert shotstack.headers["retry-after"] == "1"
    assert upload.status_code == 429
    assert upload.json()["violations"] == [
        {"type": "hard_cap", "message": "daily posting cap reached"}
    ]
    assert upload.headers["retry-after"] == "30" and upload.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(upload.headers["x-ratelimit-reset"]) - time.time() <= 31
    recorded = (await client.get("/_sandbox/calls", params={"operation": "createTask"})).json()
    assert [c["status_code"] for c in recorded] == [429, 429, 200]
    assert (await upload_status(client, "req-9"))["status"] == "not_found", (
        "a refused upload posts nothing"
    )

    unknown = await client.post(
        "/_sandbox/faults", json={"provider": "kie", "operation": "nope", "status_code": 500}
    )
    assert unknown.status_code == 422
    await fault(provider="shotstack", operation="render", status_code=500)
    assert (await client.delete("/_sandbox/faults")).status_code == 204
    assert (
        await client.post("/shotstack/edit/stage/render", json=EDIT, headers=SHOTSTACK)
    ).status_code == 201


async def test_never_finish_then_fail_jobs(client: httpx.AsyncClient) -> None:
    # With no latency a job is due at once, so each status below is final when read.
    settings = await client.post("/_sandbox/config", json={"job_latency": 0, "never_finish": True})
    assert settings.json() == {
        "job_latency": 0,
        "never_finish": True,
        "fail_jobs": False,
        "response_delay": 0,
    }
    stuck_task = await kie_submit(client, "jobs/createTask", {"model": "m", "input": {}})
    stuck_render = await render(client)
    await client.post(
        "/upload-post/api/upload", files=upload_form("stuck", "tiktok"), headers=UPLOAD_POST
    )

    await client.post("/_sandbox/config", json={"never_finish": False, "fail_jobs": True})
    failed_task = await kie_submit(client, "jobs/createTask", {"model": "m", "input": {}})
    failed_veo = await kie_submit(client, "veo/generate", {"prompt": "a cat"})
    failed_render = await render(client)
    failed_upload = await client.post(
        "/upload-post/api/upload", files=upload_form("doomed", "tiktok"), headers=UPLOAD_POST
    )

    assert (await kie_record(client, "jobs/recordInfo", stuck_task))["state"] == "generating"
    assert (await render_status(client, stuck_render))["status"] == "rendering"
    assert (await upload_status(client, "stuck"))["status"] == "in_progress"

    task = await kie_record(client, "jobs/recordInfo", failed_task)
    assert (
        task["state"] == "fail"
        and task["failCode"]
        and task["failMsg"]
        and task["resultJson"] is None
    )
    assert (await kie_record(client, "veo/record-info", failed_veo))["successFlag"] == 2
    rendered = await render_status(client, failed_render)
    assert rendered["status"] == "failed" and rendered["error"] and rendered["url"] is None
    assert failed_upload.json()["results"]["tiktok"]["success"] is False
    status = await upload_status(client, "doomed")
    assert status["status"] == "failed" and status["results"][0]["error"]


async def test_webhooks_are_signed_as_each_provider_signs_them() -> None:
    received: asyncio.Queue[tuple[str, httpx.Headers, bytes]] = asyncio.Queue()
    receiver = FastAPI()

    @receiver.post("/hooks/{provider}")
    async def hook(provider: str, request: Request) -> Json:
        received.put_nowait((provider, httpx.Headers(request.headers), await request.body()))
        return {"ok": True}

    async with serving(lambda port: serve_http(receiver, "127.0.0.1", port)) as hooks:
        config = SandboxConfig(
            kie_webhook_secret="kie-secret",
            upload_post_webhook_secret="upload-secret",
            upload_post_webhook_url=f"{hooks}/hooks/upload-post",
            job_latency=LATENCY,
        )
        async with sandbox(config) as client:
            veo_id = await kie_submit(
                client, "veo/generate", {"prompt": "a cat", "callBackUrl": f"{hooks}/hooks/kie"}
            )
            render_id = await render(client, {**EDIT, "callback": f"{hooks}/hooks/shotstack"})
            await client.post(
                "/upload-post/api/upload",
                files=upload_form("req-5", "tiktok", "youtube"),
                headers=UPLOAD_POST,
            )
            deliveries = [await asyncio.wait_for(received.get(), timeout=5) for _ in range(4)]

    by_provider: dict[str, list[tuple[httpx.Headers, bytes]]] = {}
    for provider, headers, body in deliveries:
        by_provider.setdefault(provider, []).append((headers, body))

    [(kie_headers, kie_body)] = by_provider["kie"]
    timestamp = kie_headers["x-webhook-timestamp"]
    expected = hmac.new(b"kie-secret", f"{veo_id}.{timestamp}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(base64.b64decode(kie_headers["x-webhook-signature"]), expected)
    assert abs(time.time() - int(timestamp)) < 300
    callback = json.loads(kie_body)
    assert callback["code"] == 200 and callback["data"]["taskId"] == veo_id
    assert callback["data"]["info"]["resultUrls"]

    [(shotstack_headers, shotstack_body)] = by_provider["shotstack"]
    assert not any("signature" in name for name in shotstack_headers)
    rendered = json.loads(shotstack_body)
    assert (rendered["type"], rendered["action"]) == ("edit", "render")
    assert (rendered["id"], rendered["status"], rendered["error"]) == (render_id, "done", None)
    assert rendered["url"].endswith(".mp4") and rendered["completed"]

    uploads = by_provider["upload-post"]
    for headers, body in uploads:
        signed = headers["x-upload-post-timestamp"].encode() + b"." + body
        expected_hex = hmac.new(b"upload-secret", signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-upload-post-signature"], f"sha256={expected_hex}")
    events = [json.loads(body) for _, body in uploads]
    assert {event["platform"] for event in events} == {"tiktok", "youtube"}
    assert all(
        event["event"] == "upload_completed" and event["job_id"] == "req-5" for event in events
    )
    assert all(event["result"]["success"] and event["result"]["post_id"] for event in events)
    assert len({headers["x-upload-post-delivery"] for headers, _ in uploads}) == 2


async def test_a_failing_webhook_is_tried_as_often_as_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[float] = []
    receiver = FastAPI()

    @receiver.post("/broken")
    async def broken() -> Response:
        attempts.append(time.monotonic())
        return Response(status_code=500)

    async def abandoned() -> bool:
        return any(
            getattr(record, "action", None) == "webhook_abandoned" for record in caplog.records
        )

    with caplog.at_level(logging.WARNING, logger="providers.sandbox.webhooks"):
        async with serving(lambda port: serve_http(receiver, "127.0.0.1", port)) as hooks:
            config = SandboxConfig(job_latency=0, webhook_attempts=4, webhook_retry_delay=0.01)
            async with sandbox(config) as client:
                await render(client, {**EDIT, "callback": f"{hooks}/broken"})
                await poll(abandoned, bool)

    assert len(attempts) == 4


async def test_it_counts_the_most_jobs_in_flight_at_once_per_provider(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/_sandbox/jobs")).json() == {}
    await client.post("/_sandbox/config", json={"job_latency": 1})
    for _ in range(3):  # within a second of each other: all three in flight at once
        await kie_submit(client, "jobs/createTask", {"model": "m", "input": {}})
    await render(client)
    jobs = (await client.get("/_sandbox/jobs")).json()
    assert jobs["kie"]["submitted"] == 3 and jobs["kie"]["most_in_flight"] == 3
    assert jobs["shotstack"] == {"submitted": 1, "in_flight": 1, "most_in_flight": 1}
    # Once they are done, none is in flight; the most stays what it was.
    done = await poll(
        lambda: get_json(client, "/_sandbox/jobs"), lambda j: j["kie"]["in_flight"] == 0
    )
    await kie_submit(client, "jobs/createTask", {"model": "m", "input": {}})
    assert done["kie"]["most_in_flight"] == 3
    assert (await get_json(client, "/_sandbox/jobs"))["kie"]["most_in_flight"] == 3


async def test_a_fault_naming_no_operation_answers_the_providers_next_call(
    client: httpx.AsyncClient,
) -> None:
    task_id = await kie_submit(client, "jobs/createTask", {"model": "m", "input": {}})
    spec = {"provider": "kie", "status_code": 429, "retry_after": 3}
    assert (await client.post("/_sandbox/faults", json=spec)).status_code == 201
    status = await client.get(
        "/kie/api/v1/jobs/recordInfo", params={"taskId": task_id}, headers=KIE
    )
    assert status.status_code == 429 and status.headers["retry-after"] == "3"
    assert (await kie_record(client, "jobs/recordInfo", task_id))["taskId"] == task_id
