"""Notifications across a SIGKILL of their sender: real daemons, loopback receivers.

The receivers fail while the first daemon tries, so every delivery is owed when it is
killed; another daemon delivers each once. A daemon killed mid-send leaves a delivery
that goes out again under the same id, for the receiver to drop.
"""

import asyncio
import base64
import json
import time
from collections import Counter
from pathlib import Path

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from standardwebhooks import Webhook

from engine.runtime import store
from tests.conftest import orchestrator
from tests.helpers import DaemonProcess, daemons, wait_for
from tests.scripted_http import Reply, ScriptedServer, serve_scripted

Conn = AsyncConnection[DictRow]
SECRET = "whsec_" + base64.b64encode(b"e2e-notifications-secret-32-byte").decode()
APPRISE, WEBHOOK = "/apprise", "/webhook"
RUNS = 10
NOTIFIED = "SELECT idempotency_key, status FROM artifacts WHERE type = 'notification'"
IN_FLIGHT = (
    "SELECT count(*) AS n FROM notification_deliveries WHERE delivered_at IS NULL"
    " AND gave_up_at IS NULL AND next_attempt_at > last_attempt_at + interval '2 seconds'"
)


def _settings(
    receiver: ScriptedServer, apprise: bool = True, timeout: float = 5
) -> dict[str, object]:
    # An attempt that times out may still have been delivered, and is sent again: the
    # timeout is long enough for a loaded machine, so that only the kills send twice.
    settings: dict[str, object] = {
        "notify_webhook_url": receiver.url + WEBHOOK,
        "notify_webhook_secret": SECRET,
        "notify_timeout": timeout,
        "notify_backoff": 0.2,
        "notify_backoff_max": 0.5,
        "notify_max_attempts": 1000,
        "public_url": "https://orchestrator.example",
    }
    if apprise:
        settings["notify_urls"] = receiver.url.replace("http://", "json://") + APPRISE
    return settings


def _accepted_hooks(receiver: ScriptedServer) -> Counter[str]:
    """Webhook ids the receiver accepted (answered 2xx), each verified, counted."""
    verifier = Webhook(SECRET)
    accepted: Counter[str] = Counter()
    for call in receiver.calls:
        if call.path == WEBHOOK and call.status == 200:
            verifier.verify(call.body, call.headers)
            accepted[call.headers["webhook-id"]] += 1
    return accepted


async def _kill_between_attempts(conn: Conn, sender: DaemonProcess, within: float = 30) -> None:
    """SIGKILL `sender` while none of its attempts is out: stopped (SIGSTOP), it starts
    none, and the database says each one it made has its answer recorded (an attempt
    under way holds its delivery for the timeout and 5 s, a failed one waits 0.5 s at
    most). So no request of its is still on the way to the receiver."""
    deadline = time.monotonic() + within
    while True:
        sender.pause()
        row = await (await conn.execute(IN_FLIGHT)).fetchone()
        if row == {"n": 0}:
            sender.kill()
            return
        sender.resume()
        assert time.monotonic() < deadline, "the sender never paused between attempts"
        await asyncio.sleep(0.02)


async def test_deliveries_owed_when_their_sender_is_sigkilled_are_delivered_once_each_by_another(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    with serve_scripted() as receiver, daemons(db_url, tmp_path) as start:
        receiver.standing = {APPRISE: Reply(503), WEBHOOK: Reply(503)}
        runs = [
            (await store.create_run(conn, project="cats", payload={}, workflow="ledger"))["run_id"]
            for _ in range(RUNS)
        ]
        doomed = start("doomed", **_settings(receiver))
        # Every run waits at its gate, and every delivery has failed at least twice.
        await wait_for(
            conn,
            "SELECT count(*) FILTER (WHERE attempts >= 2) AS failing, count(*) AS owed"
            " FROM notification_deliveries WHERE delivered_at IS NULL AND gave_up_at IS NULL",
            until=lambda rows: rows[0]["failing"] == rows[0]["owed"] == 2 * RUNS,
            within=60,
        )
        await _kill_between_attempts(conn, doomed)
        receiver.standing = {APPRISE: Reply(200), WEBHOOK: Reply(200)}
        start("heir", **_settings(receiver))
        rows = await wait_for(
            conn,
            NOTIFIED,
            until=lambda rows: len(rows) == RUNS and all(r["status"] == "delivered" for r in rows),
            within=60,
        )
    keys = sorted(row["idempotency_key"] for row in rows)
    assert keys == sorted(f"{run_id}:notification:gate:1" for run_id in runs)
    accepted = _accepted_hooks(receiver)
    assert sorted(accepted) == keys and set(accepted.values()) == {1}
    messages = Counter(
        json.loads(call.body)["message"].splitlines()[0]
        for call in receiver.calls
        if call.path == APPRISE and call.status == 200
    )
    assert len(messages) == RUNS and set(messages.values()) == {1}
    assert all(any(run_id in message for message in messages) for run_id in runs)


async def test_a_sender_killed_mid_send_is_followed_by_the_same_delivery_under_the_same_id(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    with serve_scripted() as receiver, daemons(db_url, tmp_path) as start:
        receiver.script(Reply(200, delay=3))  # the first send is still out when its sender dies
        receiver.standing = {WEBHOOK: Reply(200)}
        run_id = (await store.create_run(conn, project="cats", payload={}, workflow="ledger"))[
            "run_id"
        ]
        # The send out at the kill is sent again once its hold (timeout and 5 s) is over.
        doomed = start("doomed", **_settings(receiver, apprise=False, timeout=3))
        await wait_for(
            conn,
            "SELECT count(*) AS n FROM notification_deliveries",
            until=lambda rows: rows[0]["n"] == 1 and len(receiver.calls) == 1,
        )
        doomed.kill()
        start("heir", **_settings(receiver, apprise=False, timeout=3))
        await wait_for(
            conn, NOTIFIED, until=lambda rows: [r["status"] for r in rows] == ["delivered"]
        )
    # The receiver saw it twice (the first answer went to a dead sender), under one id.
    assert [call.headers["webhook-id"] for call in receiver.calls] == [
        f"{run_id}:notification:gate:1"
    ] * 2
    attempts = await (await conn.execute("SELECT attempts FROM notification_deliveries")).fetchone()
    assert attempts == {"attempts": 2}


def test_a_daemon_with_a_bad_channel_setting_stops_with_one_line_that_shows_no_secret(
    db_url: str,
) -> None:
    secret = "tok3n-that-must-not-show"
    bad = orchestrator(db_url, "daemon", notify_urls=f"nosuchservice://{secret}@example")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "error: ORCHESTRATOR_NOTIFY_URLS: a nosuchservice:// URL that Apprise cannot use "
        "(https://github.com/caronc/apprise/wiki lists every service's URL)"
    ]
    short = orchestrator(
        db_url,
        "daemon",
        notify_webhook_url="https://hooks.example/in",
        notify_webhook_secret="whsec_" + base64.b64encode(b"too short").decode(),
    )
    assert short.returncode == 2
    assert short.stderr.startswith("error: ORCHESTRATOR_NOTIFY_WEBHOOK_SECRET: give whsec_")
    assert secret not in bad.stderr + bad.stdout
