"""End to end over real HTTP: API, daemon, sandbox providers and their signed webhooks.

Webhooks, not the timer, wake runs here: the poll fallback is set to a minute.
"""

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from tests.helpers import wait_for
from tests.stack import Stack, stack

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status, error FROM runs WHERE run_id = %s"
JOB_RECORDED = (
    "SELECT 1 FROM artifacts WHERE run_id = %s AND persona = %s AND provider_job_id IS NOT NULL"
)


def _status_is(status: str) -> Any:
    def check(rows: list[dict[str, Any]]) -> bool:
        if rows and rows[0]["status"] == "failed":
            raise AssertionError(f"run failed: {rows[0]['error']}")
        return bool(rows) and rows[0]["status"] == status

    return check


async def _approve(s: Stack, conn: Conn, run_id: str, gate: str) -> None:
    await wait_for(conn, STATUS, (run_id,), until=_status_is(f"pending_{gate}"), within=60)
    response = await s.http.post(
        f"{s.api}/runs/{run_id}/approvals", json={"gate": gate, "approver": "e2e"}
    )
    assert response.status_code == 201, response.text


async def _create(s: Stack) -> str:
    response = await s.http.post(
        f"{s.api}/runs", json={"project": "cats", "brief": "Why cats sit in boxes"}
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def _calls(s: Stack, run_id: str, operation: str) -> int:
    return len(await s.sandbox_calls(run_id=run_id, operation=operation))


async def test_a_run_goes_from_brief_to_published_through_the_providers(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        s.daemon("w1")
        run_id = await _create(s)
        await _approve(s, conn, run_id, "workflow")
        await _approve(s, conn, run_id, "publish")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("published"), within=60)
        shown = (await s.http.get(f"{s.api}/runs/{run_id}")).json()
        for operation in ("gpt4o_image_generate", "render", "upload"):
            assert await _calls(s, run_id, operation) == 1, operation

    artifacts = {a["type"]: a for a in shown["artifacts"] if a["type"] != "notification"}
    assert list(artifacts) == ["workflow_proposal", "script", "image", "render", "publication"]
    # Two gates and the publish, each told once (docs/time.md#notifications).
    events = [a["metadata"]["event"] for a in shown["artifacts"] if a["type"] == "notification"]
    assert events == ["gate", "gate", "published"]
    for kind, provider in (
        ("image", "kie"),
        ("render", "shotstack"),
        ("publication", "upload-post"),
    ):
        assert artifacts[kind]["provider"] == provider
        assert artifacts[kind]["status"] == "done"
        assert artifacts[kind]["url"], kind
        assert artifacts[kind]["provider_job_id"], kind
    assert shown["run"]["result"]["publication"]["status"] == "completed"
    events = await (
        await conn.execute(
            "SELECT provider, signature_status, processed_at FROM webhook_events "
            "WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
    ).fetchall()
    statuses = {(e["provider"], e["signature_status"]) for e in events}
    assert statuses == {
        ("kie", "valid"),
        ("shotstack", "verified_by_fetch"),
        ("upload-post", "valid"),
    }


@pytest.mark.parametrize(
    ("gate", "persona", "operation", "most_submits"),
    [
        # kie.ai and Shotstack cannot look a job up by our key, but their callback
        # names it: a call cut off mid-flight waits for it and adopts the job.
        ("workflow", "media", "gpt4o_image_generate", 1),
        ("workflow", "editor", "render", 1),
        # upload-post can: a publish cut off mid-flight is found, never posted twice.
        ("publish", "publisher", "upload", 1),
    ],
)
async def test_sigkill_during_a_provider_call_never_posts_twice(
    db_url: str,
    conn: Conn,
    tmp_path: Path,
    gate: str,
    persona: str,
    operation: str,
    most_submits: int,
) -> None:
    async with stack(db_url, tmp_path, lease_ttl=2) as s:
        first = s.daemon("doomed")
        run_id = await _create(s)
        if gate == "publish":
            await _approve(s, conn, run_id, "workflow")
        await wait_for(conn, STATUS, (run_id,), until=_status_is(f"pending_{gate}"), within=60)
        # The provider acts on the call, then holds the answer back: kill the caller then.
        await s.configure_sandbox(response_delay=5)
        await _approve(s, conn, run_id, gate)
        await s.wait_for_call(run_id, operation)
        first.kill()
        await s.configure_sandbox(response_delay=0)
        s.daemon("heir")
        if gate == "workflow":
            await _approve(s, conn, run_id, "publish")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("published"), within=60)
        assert 1 <= await _calls(s, run_id, operation) <= most_submits
        assert await _calls(s, run_id, "upload") == 1


@pytest.mark.parametrize(
    ("persona", "operation"),
    [("media", "gpt4o_image_generate"), ("editor", "render"), ("publisher", "upload")],
)
async def test_sigkill_after_a_provider_call_reuses_the_recorded_job(
    db_url: str, conn: Conn, tmp_path: Path, persona: str, operation: str
) -> None:
    async with stack(db_url, tmp_path, lease_ttl=2) as s:
        first = s.daemon("doomed")
        run_id = await _create(s)
        await _approve(s, conn, run_id, "workflow")
        if persona == "publisher":
            await _approve(s, conn, run_id, "publish")
        await wait_for(conn, JOB_RECORDED, (run_id, persona), until=bool, within=60)
        first.kill()
        s.daemon("heir")
        if persona != "publisher":
            await _approve(s, conn, run_id, "publish")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("published"), within=60)
        assert await _calls(s, run_id, operation) == 1
        assert await _calls(s, run_id, "upload") == 1


@pytest.mark.parametrize(
    ("persona", "operation"), [("media", "gpt4o_image_generate"), ("editor", "render")]
)
async def test_a_sandbox_killed_while_a_run_waits_on_its_job_finishes_it_after_a_restart(
    db_url: str, conn: Conn, tmp_path: Path, persona: str, operation: str
) -> None:
    async with stack(db_url, tmp_path) as s:
        s.daemon("w1")
        # Jobs take long enough that the run is still waiting when the sandbox dies.
        await s.configure_sandbox(job_latency=4)
        run_id = await _create(s)
        await _approve(s, conn, run_id, "workflow")
        await wait_for(conn, JOB_RECORDED, (run_id, persona), until=bool, within=60)
        await s.restart_sandbox()
        # Its callback, due after the restart, wakes the run (the poll is a minute away).
        await _approve(s, conn, run_id, "publish")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("published"), within=60)
        assert await _calls(s, run_id, operation) == 1, "the call log outlives the restart"
        shown = (await s.http.get(f"{s.api}/runs/{run_id}")).json()
        [image] = [a for a in shown["artifacts"] if a["type"] == "image"]
        picture = await s.http.get(image["url"])

    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).size == (640, 360)


async def test_without_webhooks_the_poll_fallback_finishes_the_run(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    # No secrets: kie and upload-post deliveries are unsigned and wake nothing.
    async with stack(
        db_url,
        tmp_path,
        kie_webhook_secret="",
        upload_post_webhook_secret="",
        provider_poll_interval=0.3,
    ) as s:
        s.daemon("w1")
        run_id = await _create(s)
        await _approve(s, conn, run_id, "workflow")
        await _approve(s, conn, run_id, "publish")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("published"), within=60)
        assert await _calls(s, run_id, "upload_status") >= 1
    kie = await (
        await conn.execute(
            "SELECT DISTINCT signature_status FROM webhook_events WHERE provider = 'kie'"
        )
    ).fetchall()
    assert [row["signature_status"] for row in kie] == ["unsigned"]


async def test_a_job_that_never_finishes_fails_the_run_after_the_policy_timeout(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path, provider_job_timeout=1, provider_poll_interval=0.2) as s:
        s.daemon("w1")
        await s.configure_sandbox(never_finish=True)
        run_id = await _create(s)
        await _approve(s, conn, run_id, "workflow")
        rows = await wait_for(
            conn, STATUS, (run_id,), until=lambda r: r[0]["status"] == "failed", within=60
        )
    assert rows[0]["error"]["type"] == "ProviderJobTimeout"
    assert "unfinished after" in rows[0]["error"]["message"]


async def test_a_provider_refusal_fails_the_step_with_the_providers_message(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        s.daemon("w1")
        fault = {
            "provider": "kie",
            "operation": "gpt4o_image_generate",
            "status_code": 402,
            "times": 100,
        }
        (await s.http.post(f"{s.sandbox}/_sandbox/faults", json=fault)).raise_for_status()
        run_id = await _create(s)
        await _approve(s, conn, run_id, "workflow")
        rows = await wait_for(
            conn, STATUS, (run_id,), until=lambda r: r[0]["status"] == "failed", within=60
        )
        # 402 is not retryable: one call per attempt of the step.
        assert await _calls(s, run_id, "gpt4o_image_generate") == 3
    assert rows[0]["error"]["type"] == "PermanentProviderError"
    assert "(402)" in rows[0]["error"]["message"]


async def test_a_publish_nobody_can_confirm_waits_at_the_reconcile_gate(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path, lease_ttl=2) as s:
        first = s.daemon("doomed")
        run_id = await _create(s)
        await _approve(s, conn, run_id, "workflow")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("pending_publish"), within=60)
        await s.configure_sandbox(response_delay=5)
        await _approve(s, conn, run_id, "publish")
        await s.wait_for_call(run_id, "upload")
        first.kill()
        await s.configure_sandbox(response_delay=0)
        # upload-post's status API is down: the heir cannot tell whether it posted.
        fault = {
            "provider": "upload-post",
            "operation": "upload_status",
            "status_code": 503,
            "times": 1000,
            "retry_after": 0,
        }
        (await s.http.post(f"{s.sandbox}/_sandbox/faults", json=fault)).raise_for_status()
        s.daemon("heir")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("pending_reconcile"), within=60)
        assert await _calls(s, run_id, "upload") == 1
        (await s.http.delete(f"{s.sandbox}/_sandbox/faults")).raise_for_status()
        # A person checked: the post is out there. Do not post again.
        response = await s.http.post(
            f"{s.api}/runs/{run_id}/approvals",
            json={"gate": "reconcile", "decision": "rejected", "comment": "it is live"},
        )
        assert response.status_code == 201, response.text
        await wait_for(conn, STATUS, (run_id,), until=_status_is("published"), within=60)
        assert await _calls(s, run_id, "upload") == 1


async def test_a_publish_held_until_its_time_posts_once_across_kills_in_and_after_the_sleep(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path, lease_ttl=2) as s:
        sleeper = s.daemon("sleeper")
        # upload-post cannot schedule reddit: the run itself sleeps until publish_at.
        response = await s.http.post(
            f"{s.api}/runs",
            json={"project": "cats", "brief": "boxes", "payload": {"platforms": ["reddit"]}},
        )
        assert response.status_code == 201, response.text
        run_id = response.json()["run_id"]
        await _approve(s, conn, run_id, "workflow")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("pending_publish"), within=60)
        publish_at = datetime.now(UTC) + timedelta(seconds=4)
        response = await s.http.post(
            f"{s.api}/runs/{run_id}/approvals",
            json={"gate": "publish", "payload": {"publish_at": publish_at.isoformat()}},
        )
        assert response.status_code == 201, response.text
        await wait_for(conn, STATUS, (run_id,), until=_status_is("waiting_timer"), within=60)
        sleeper.kill()  # killed during the sleep
        # The next daemon wakes the run at its time and posts; it dies before the answer.
        await s.configure_sandbox(response_delay=5)
        waker = s.daemon("waker")
        await s.wait_for_call(run_id, "upload")
        waker.kill()
        await s.configure_sandbox(response_delay=0)
        s.daemon("heir")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("published"), within=60)
        (upload,) = await s.sandbox_calls(run_id=run_id, operation="upload")
    assert datetime.fromisoformat(upload["at"]) >= publish_at, "posted before its time"
