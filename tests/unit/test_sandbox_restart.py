"""A sandbox started again on its state file answers for what it accepted: jobs and
their results, scheduled posts, the call log, and the webhooks that were still due.
(tests/e2e/test_e2e_providers.py SIGKILLs the sandbox process under a run.)"""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request

from engine.service.serving import serve_http
from providers.sandbox import SandboxConfig
from tests.unit.test_sandbox import (
    EDIT,
    UPLOAD_POST,
    kie_record,
    kie_submit,
    poll,
    render,
    render_status,
    sandbox,
    serving,
    upload_form,
    upload_status,
)


def job_of(provider: str, body: bytes) -> str:
    """Which job a webhook is about."""
    payload = json.loads(body)
    if provider == "kie":
        task_id: str = payload["data"]["taskId"]
        return task_id
    job_id: str = payload["id"] if provider == "shotstack" else payload["request_id"]
    return job_id


async def test_a_restarted_sandbox_answers_for_its_jobs_and_sends_the_webhooks_due(
    tmp_path: Path,
) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    receiver = FastAPI()

    @receiver.post("/hooks/{provider}")
    async def hook(provider: str, request: Request) -> dict[str, bool]:
        received.put_nowait(job_of(provider, await request.body()))
        return {"ok": True}

    async with serving(lambda port: serve_http(receiver, "127.0.0.1", port)) as hooks:
        config = SandboxConfig(
            kie_webhook_secret="kie-secret",
            upload_post_webhook_url=f"{hooks}/hooks/upload-post",
            job_latency=0,
            state_file=tmp_path / "data" / "sandbox.sqlite3",
        )
        async with sandbox(config) as first:
            early = await render(first, {**EDIT, "callback": f"{hooks}/hooks/shotstack"})
            assert await asyncio.wait_for(received.get(), timeout=5) == early
            # Due after the restart: the first sandbox stops before any of these is done.
            await first.post("/_sandbox/config", json={"job_latency": 1.5})
            veo_id = await kie_submit(
                first, "veo/generate", {"prompt": "a cat", "callBackUrl": f"{hooks}/hooks/kie"}
            )
            render_id = await render(first, {**EDIT, "callback": f"{hooks}/hooks/shotstack"})
            await first.post(
                "/upload-post/api/upload", files=upload_form("now", "tiktok"), headers=UPLOAD_POST
            )
            due = datetime.now(UTC) + timedelta(seconds=2)
            scheduled = await first.post(
                "/upload-post/api/upload",
                files=upload_form("later", "youtube", scheduled_date=due.isoformat()),
                headers=UPLOAD_POST,
            )
            assert scheduled.status_code == 202, scheduled.text
            calls_before = (await first.get("/_sandbox/calls")).json()
            assert (await kie_record(first, "veo/record-info", veo_id))["successFlag"] == 0
        assert received.empty()

        async with sandbox(config) as again:
            veo = await poll(
                lambda: kie_record(again, "veo/record-info", veo_id),
                lambda d: d["successFlag"] != 0,
            )
            rendered = await poll(
                lambda: render_status(again, render_id), lambda r: r["status"] in ("done", "failed")
            )
            now = await poll(
                lambda: upload_status(again, "now"), lambda s: s["status"] == "completed"
            )
            webhooks = [await asyncio.wait_for(received.get(), timeout=10) for _ in range(4)]
            posted = await poll(
                lambda: upload_status(again, "later"), lambda s: s["status"] == "completed"
            )
            (video_url,) = veo["response"]["resultUrls"]
            video = await again.get(urlsplit(video_url).path)
            calls_after = (await again.get("/_sandbox/calls")).json()

    assert veo["successFlag"] == 1 and rendered["status"] == "done"
    assert [result["platform"] for result in now["results"]] == ["tiktok"]
    assert [result["platform"] for result in posted["results"]] == ["youtube"]
    assert sorted(webhooks) == sorted([veo_id, render_id, "now", "later"])
    assert early not in webhooks, "a webhook sent before the restart is not sent again"
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert calls_after[: len(calls_before)] == calls_before, "the call log outlives the restart"
