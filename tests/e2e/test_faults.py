"""Faults a daemon must survive: a slow provider at shutdown, a failed provider job
retried by an operator, and a run it cannot even load."""

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from providers.clients import ProviderClients
from tests.conftest import orchestrator
from tests.helpers import DaemonProcess, daemons, wait_for, wait_for_log
from tests.scripted_http import Reply, ScriptedServer
from tests.stack import Stack, stack
from tests.unit.test_provider_clients import FAST, provider_settings

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status, error FROM runs WHERE run_id = %s"
GRACE = 2.0


def _status_is(status: str) -> Any:
    def check(rows: list[dict[str, Any]]) -> bool:
        if rows and rows[0]["status"] == "failed" != status:
            raise AssertionError(f"run failed: {rows[0]['error']}")
        return bool(rows) and rows[0]["status"] == status

    return check


async def _create(s: Stack) -> str:
    response = await s.http.post(f"{s.api}/runs", json={"project": "cats", "brief": "Boxes"})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def _approve(s: Stack, conn: Conn, run_id: str, gate: str) -> None:
    await wait_for(conn, STATUS, (run_id,), until=_status_is(f"pending_{gate}"), within=60)
    response = await s.http.post(f"{s.api}/runs/{run_id}/approvals", json={"gate": gate})
    assert response.status_code == 201, response.text


async def _exit_code(daemon: DaemonProcess, within: float) -> int:
    """The daemon's exit code; fails if it is still running after `within` seconds."""
    deadline = time.monotonic() + within
    while (code := daemon.process.poll()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{daemon.name} still running after {within}s: {daemon.log()}")
        await asyncio.sleep(0.05)
    return code


async def _stuck_in_a_provider_call(
    s: Stack, conn: Conn, **daemon_settings: object
) -> tuple[DaemonProcess, str]:
    """A daemon whose run waits on a kie.ai call that answers in 30 s."""
    daemon = s.daemon("w1", **daemon_settings)
    run_id = await _create(s)
    await wait_for(conn, STATUS, (run_id,), until=_status_is("pending_workflow"), within=60)
    await s.configure_sandbox(response_delay=30)
    await _approve(s, conn, run_id, "workflow")
    await s.wait_for_call(run_id, "gpt4o_image_generate")
    return daemon, run_id


async def test_sigterm_cancels_a_step_stuck_in_a_provider_call_after_the_grace(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        daemon, run_id = await _stuck_in_a_provider_call(s, conn, shutdown_grace=GRACE)
        daemon.process.send_signal(signal.SIGTERM)
        assert await _exit_code(daemon, within=GRACE + 5) == 0, daemon.log()
        # Cancelled, not retried: the provider was called once.
        assert len(await s.sandbox_calls(run_id=run_id, operation="gpt4o_image_generate")) == 1
    rows = await wait_for(conn, STATUS, (run_id,), until=bool)
    assert rows[0]["status"] == "queued", daemon.log()
    assert "step failed; retrying" not in daemon.log()
    assert "run released" in daemon.log()


async def test_a_second_signal_exits_at_once_leaving_the_run_to_its_lease(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        daemon, run_id = await _stuck_in_a_provider_call(s, conn, shutdown_grace=120)
        daemon.process.send_signal(signal.SIGTERM)
        await wait_for_log(daemon, "draining")
        daemon.process.send_signal(signal.SIGINT)
        assert await _exit_code(daemon, within=5) == 128 + signal.SIGINT, daemon.log()
    rows = await wait_for(
        conn, "SELECT status, lease_owner FROM runs WHERE run_id = %s", (run_id,), until=bool
    )
    assert rows[0] == {"status": "running", "lease_owner": "w1"}


async def test_a_cancelled_provider_call_is_cancelled_not_retried(server: ScriptedServer) -> None:
    """Guards providers.http: tenacity catches BaseException around each attempt."""
    server.script(*[Reply(200, {"code": 200, "data": {"taskId": "t"}}, delay=30)] * 3)
    async with ProviderClients(provider_settings(server.url), retry=FAST) as clients:
        call = asyncio.create_task(
            clients.kie.gpt4o_image_generate("a cat", idempotency_key="k", run_id="r")
        )
        deadline = time.monotonic() + 5
        while not server.calls:
            assert time.monotonic() < deadline, "the call never arrived"
            await asyncio.sleep(0.01)
        call.cancel()
        cancelled = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        assert call.cancelled()
        assert time.monotonic() - cancelled < 1
    assert len(server.calls) == 1


IMAGES = (
    "SELECT status, provider_job_id, idempotency_key, metadata FROM artifacts "
    "WHERE run_id = %s AND persona = 'media' ORDER BY id"
)


async def test_retrying_a_run_whose_provider_job_failed_submits_a_new_job(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        s.daemon("w1")
        await s.configure_sandbox(fail_jobs=True)
        run_id = await _create(s)
        await _approve(s, conn, run_id, "workflow")
        rows = await wait_for(conn, STATUS, (run_id,), until=_status_is("failed"), within=60)
        assert rows[0]["error"]["type"] == "ProviderJobFailed"
        await s.configure_sandbox(fail_jobs=False)

        retried = orchestrator(db_url, "runs", "retry", run_id)
        assert retried.returncode == 0, retried.stderr
        assert "1 failed provider job" in retried.stdout
        await _approve(s, conn, run_id, "publish")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("published"), within=60)
        calls = await s.sandbox_calls(run_id=run_id, operation="gpt4o_image_generate")
        log = s.processes["w1"].log()

    images = await (await conn.execute(IMAGES, (run_id,))).fetchall()
    assert [image["status"] for image in images] == ["failed", "done"]
    failed, done = images
    assert failed["provider_job_id"] != done["provider_job_id"]
    assert "generation failed" in failed["metadata"]["error"]
    assert failed["metadata"]["retried_at"]
    # The new job says which one it replaces, and why.
    assert done["metadata"]["replaces"] == failed["provider_job_id"]
    assert "generation failed" in done["metadata"]["because"]
    # A new idempotency key, each sent once.
    assert [call["idempotency_key"] for call in calls] == [
        failed["idempotency_key"],
        done["idempotency_key"],
    ]
    assert "submitting a new provider job" in log


# A payload nested deeper than `json.loads` goes (PostgreSQL stores it happily).
INSERT_UNDECODABLE = """
INSERT INTO runs (run_id, project, payload, workflow)
VALUES ('run_undecodable', 'p',
        ('{"deep": ' || repeat('[', 1000) || repeat(']', 1000) || '}')::jsonb, 'ledger')"""


async def test_a_run_that_cannot_be_loaded_fails_and_the_daemon_works_on(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    await conn.execute(INSERT_UNDECODABLE)
    good = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    with daemons(db_url, tmp_path) as start:
        daemon = start("w1")
        rows = await wait_for(
            conn, STATUS, ("run_undecodable",), until=_status_is("failed"), within=30
        )
        await wait_for(conn, STATUS, (good["run_id"],), until=_status_is("pending_review"))
        assert daemon.process.poll() is None, daemon.log()
    error = rows[0]["error"]
    assert error["type"] == "RecursionError"
    assert error["message"].startswith("run could not be loaded: ")


async def test_a_checkpoint_that_cannot_be_decoded_fails_its_run(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    broken = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    good = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    with daemons(db_url, tmp_path) as start:
        daemon = start("w1")
        for run in (broken, good):
            await wait_for(conn, STATUS, (run["run_id"],), until=_status_is("pending_review"))
        await conn.execute(
            "UPDATE checkpoint_blobs SET blob = '\\xc1c1c1'::bytea, type = 'msgpack' "
            "WHERE thread_id = %s",
            (broken["run_id"],),
        )
        for run in (broken, good):
            await store.approve(conn, run["run_id"], gate="review")
        rows = await wait_for(
            conn, STATUS, (broken["run_id"],), until=_status_is("failed"), within=30
        )
        await wait_for(conn, STATUS, (good["run_id"],), until=_status_is("published"))
        assert daemon.process.poll() is None, daemon.log()
    assert rows[0]["error"]["message"].startswith("run could not be loaded: ")
