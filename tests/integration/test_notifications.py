"""Notifications: recorded by triggers in the transaction that changes the run, delivered
from the outbox to an Apprise json:// receiver and a signed webhook on a loopback
server, retried, given up and reported, and never in a run's way."""

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData, NumberDataPoint
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import SecretStr
from standardwebhooks import Webhook

from engine.db.connections import open_pool
from engine.observability.telemetry import DISABLED, Telemetry, setup
from engine.runtime import store
from engine.runtime.channels import channels_from
from engine.runtime.daemon import Daemon
from engine.runtime.notifications import Notifier
from engine.settings import Settings
from tests.graphs import ledger_workflow
from tests.helpers import wait_for
from tests.scripted_http import Reply, ScriptedServer

Conn = AsyncConnection[DictRow]
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
APPRISE, WEBHOOK = "/apprise", "/webhook"
PUBLIC = "https://orchestrator.example"
PASSWORD = "hunter2-not-for-logs"
NOTIFIED = (
    "SELECT id, run_id, metadata ->> 'event' AS event, metadata, status, idempotency_key"
    " FROM artifacts WHERE type = 'notification' ORDER BY id"
)
DELIVERIES = (
    "SELECT a.run_id, a.metadata ->> 'event' AS event, d.channel, d.attempts, d.delivered_at,"
    " d.gave_up_at, d.last_error FROM notification_deliveries d"
    " JOIN artifacts a ON a.id = d.artifact_id ORDER BY d.id"
)
STATUS = "SELECT status FROM runs WHERE run_id = %s"
OWED = ("pending", "sending")


def _settings(server: ScriptedServer, **change: Any) -> Settings:
    host = server.url.removeprefix("http://")
    values: dict[str, Any] = {
        "poll_interval": 0.05,
        "lease_ttl": 5,
        "retry_backoff": 0.01,
        "max_attempts": 1,
        "health_port": 0,
        "public_url": PUBLIC,
        "notify_urls": SecretStr(f"json://ann:{PASSWORD}@{host}{APPRISE}"),
        "notify_webhook_url": SecretStr(server.url + WEBHOOK),
        "notify_webhook_secret": SecretStr(SECRET),
        # An attempt timed out may still have been delivered, and goes again: long
        # enough for a loaded machine.
        "notify_timeout": 5,
        "notify_backoff": 0.2,
        "notify_backoff_max": 1,
        "notify_max_attempts": 3,
    }
    return Settings(**(values | change))


@contextlib.asynccontextmanager
async def _daemon(
    db_url: str, settings: Settings, telemetry: Telemetry = DISABLED
) -> AsyncIterator[None]:
    """A daemon running the ledger workflow, with the settings' channels."""
    async with open_pool(db_url, settings) as pool:
        stop = asyncio.Event()
        daemon = Daemon(
            db_url,
            pool,
            settings,
            {"ledger": ledger_workflow()},
            telemetry,
            channels_from(settings),
        )
        serving = asyncio.create_task(daemon.serve(stop))
        try:
            yield
        finally:
            stop.set()
            await serving


@contextlib.asynccontextmanager
async def _notifier(db_url: str, settings: Settings) -> AsyncIterator[None]:
    """The sender alone, for runs moved by plain SQL."""
    async with open_pool(db_url, settings) as pool:
        serving = asyncio.create_task(Notifier(pool, settings, channels_from(settings)).serve())
        try:
            yield
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving


async def _status(conn: Conn, run_id: str, status: str) -> None:
    await wait_for(conn, STATUS, (run_id,), until=lambda rows: rows[0]["status"] == status)


async def _settled(conn: Conn, count: int, within: float = 30.0) -> list[dict[str, Any]]:
    """The notifications once there are `count` and none is owed anything more."""
    return await wait_for(
        conn,
        NOTIFIED,
        until=lambda rows: len(rows) == count and all(r["status"] not in OWED for r in rows),
        within=within,
    )


def _hooks(server: ScriptedServer) -> list[dict[str, Any]]:
    """Each webhook the receiver got, its signature verified, with its id and answer."""
    verifier = Webhook(SECRET)
    return [
        {**verifier.verify(call.body, call.headers), "status": call.status}
        | {"webhook_id": call.headers["webhook-id"], "at": call.received_at}
        for call in server.calls
        if call.path == WEBHOOK
    ]


def _apprised(server: ScriptedServer) -> list[dict[str, Any]]:
    return [
        {**json.loads(call.body), "status": call.status, "at": call.received_at}
        for call in server.calls
        if call.path == APPRISE
    ]


def _counted(data: MetricsData | None) -> dict[tuple[str, str], int | float]:
    """orchestrator.notifications by (outcome, channel)."""
    assert data is not None
    counted = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if metric.name == "orchestrator.notifications":
                        assert isinstance(point, NumberDataPoint) and point.attributes
                        labels = point.attributes
                        counted[str(labels["outcome"]), str(labels["channel"])] = point.value
    return counted


async def _pause(conn: Conn, run_id: str, pause_id: int, **deadline: Any) -> None:
    """Park a run at the review gate as pause_run would (a deadline: as the deadline
    work stores it)."""
    waiting: dict[str, Any] = {"gate": "review", "pause_id": pause_id}
    if deadline:
        waiting["deadline"] = deadline
    await conn.execute(
        "UPDATE runs SET status = 'pending_review', waiting_for = %s, wake_at = %s "
        "WHERE run_id = %s",
        (Jsonb(waiting), deadline.get("at"), run_id),
    )


async def _now(conn: Conn) -> datetime:
    row = await (await conn.execute("SELECT now() AS now")).fetchone()
    assert row is not None
    now: datetime = row["now"]
    return now


async def _new_run(conn: Conn, project: str = "cats", **payload: Any) -> str:
    run = await store.create_run(conn, project=project, payload=payload, workflow="ledger")
    return str(run["run_id"])


async def test_a_gate_a_failure_and_a_publish_are_recorded_once_and_delivered_once_per_channel(
    db_url: str, conn: Conn, server: ScriptedServer
) -> None:
    server.standing = {APPRISE: Reply(200), WEBHOOK: Reply(200)}
    published = await _new_run(conn)
    failed = await _new_run(conn, "dogs", fail_times=9)
    async with _daemon(db_url, _settings(server)):
        await _status(conn, published, "pending_review")
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 'ann')",
            (published,),
        )
        await _status(conn, published, "published")
        await _status(conn, failed, "failed")
        rows = await _settled(conn, 3)

    assert sorted((r["run_id"], r["event"], r["status"]) for r in rows) == sorted(
        [
            (published, "gate", "delivered"),
            (published, "published", "delivered"),
            (failed, "failed", "delivered"),
        ]
    )
    keys = {r["event"]: r["idempotency_key"] for r in rows}
    [gate] = [r for r in rows if r["event"] == "gate"]
    assert keys["gate"] == f"{published}:notification:gate:{gate['metadata']['pause_id']}"
    # One webhook per notification, under its key, signed; its body says what happened.
    hooks = _hooks(server)
    assert sorted(h["webhook_id"] for h in hooks) == sorted(keys.values())
    assert all(h["status"] == 200 and h["webhook_id"] == h["id"] for h in hooks)
    by_event = {h["event"]: h for h in hooks}
    assert by_event["gate"]["run_id"] == published
    assert by_event["gate"]["project"] == "cats" and by_event["gate"]["gate"] == "review"
    assert by_event["gate"]["link"] == f"{PUBLIC}/console/runs/{published}"
    assert by_event["gate"]["message"] == (
        f"Run {published} (cats) waits for a decision at gate review."
    )
    assert datetime.fromisoformat(by_event["gate"]["time"]).tzinfo is not None
    assert by_event["failed"]["message"].startswith(f"Run {failed} (dogs) failed: n2 fails")
    assert by_event["published"]["message"] == f"Run {published} (cats) published."
    # And one Apprise message each, with the link to the run's page.
    apprised = _apprised(server)
    assert sorted(a["message"].splitlines()[0] for a in apprised) == sorted(
        h["message"] for h in hooks
    )
    assert {a["message"].splitlines()[1] for a in apprised} == {
        f"{PUBLIC}/console/runs/{published}",
        f"{PUBLIC}/console/runs/{failed}",
    }
    assert f"[cats] {published} published" in {a["title"] for a in apprised}


async def test_a_failing_channel_is_retried_given_up_and_reported_while_the_other_delivers(
    db_url: str, conn: Conn, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.standing = {APPRISE: Reply(500), WEBHOOK: Reply(200)}
    metrics = InMemoryMetricReader()
    telemetry = setup(Settings(otlp_endpoint=None), metric_readers=[metrics])
    caplog.set_level(logging.INFO)
    run_id = await _new_run(conn)
    try:
        async with _daemon(db_url, _settings(server), telemetry):
            await _status(conn, run_id, "pending_review")
            await conn.execute(
                "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 'ann')",
                (run_id,),
            )
            # The dead channel holds the run up in nothing.
            await _status(conn, run_id, "published")
            rows = await _settled(conn, 2)
        data = metrics.get_metrics_data()
    finally:
        telemetry.close()

    assert [r["status"] for r in rows] == ["undelivered", "undelivered"]
    deliveries = [dict(d) for d in await (await conn.execute(DELIVERIES)).fetchall()]
    [apprise_name] = {d["channel"] for d in deliveries} - {"webhook"}
    assert apprise_name.startswith("json:") and PASSWORD not in apprise_name
    for d in deliveries:
        if d["channel"] == "webhook":
            assert (d["attempts"], d["gave_up_at"]) == (1, None) and d["delivered_at"]
        else:
            assert d["attempts"] == 3 and d["delivered_at"] is None and d["gave_up_at"]
            assert "error=500" in d["last_error"] and PASSWORD not in d["last_error"]
    # Three attempts per notification, each after a longer wait (0.2 s, then 0.4 s).
    apprised = _apprised(server)
    for event in ("waits for a decision", "published"):
        times = [a["at"] for a in apprised if event in a["message"]]
        assert len(times) == 3, apprised
        assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.4, times
    assert sorted(h["event"] for h in _hooks(server)) == ["gate", "published"]
    # Reported: a log line per delivery given up (naming the channel, not its URL) ...
    gave_up = [r for r in caplog.records if getattr(r, "action", None) == "notification_gave_up"]
    assert sorted(str(getattr(r, "event", "")) for r in gave_up) == ["gate", "published"]
    assert {(getattr(r, "channel", None), getattr(r, "run_id", None)) for r in gave_up} == {
        (apprise_name, run_id)
    }
    assert PASSWORD not in caplog.text and SECRET not in caplog.text
    # ... and the metric.
    assert _counted(data) == {
        ("retried", apprise_name): 4,
        ("gave_up", apprise_name): 2,
        ("delivered", "webhook"): 2,
    }


async def test_a_hung_channel_holds_up_neither_the_other_channel_nor_the_run(
    db_url: str, conn: Conn, server: ScriptedServer
) -> None:
    server.standing = {APPRISE: Reply(200), WEBHOOK: Reply(200, delay=5)}
    settings = _settings(server, notify_timeout=3, notify_max_attempts=1)
    run_id = await _new_run(conn)
    async with _daemon(db_url, settings):
        await _status(conn, run_id, "pending_review")
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 'ann')",
            (run_id,),
        )
        await _status(conn, run_id, "published")
        published_at = (await store.get_run(conn, run_id))["updated_at"]
        await _settled(conn, 2)
    rows = [dict(d) for d in await (await conn.execute(DELIVERIES)).fetchall()]
    hung = [d for d in rows if d["channel"] == "webhook"]
    other = [d for d in rows if d["channel"] != "webhook"]
    assert [d["event"] for d in hung] == ["gate", "published"]
    assert all(d["gave_up_at"] and d["last_error"] for d in hung)
    # The gate's webhook was still hanging when the run published, and the other
    # channel had delivered both before either webhook gave up.
    assert published_at < hung[0]["gave_up_at"]
    assert all(d["delivered_at"] < h["gave_up_at"] for d, h in zip(other, hung, strict=True))
    # Nor does the hung attempt hold up the next one on its own channel.
    first, second = [call.received_at for call in server.calls if call.path == WEBHOOK]
    assert second - first < settings.notify_timeout


async def test_reminders_due_are_sent_while_the_run_waits_and_skipped_once_it_left_the_pause(
    db_url: str, conn: Conn, server: ScriptedServer
) -> None:
    server.standing = {APPRISE: Reply(200), WEBHOOK: Reply(200)}
    warnings: list[str | None] = []
    # A notice's fields are there only while the handler runs.
    conn.add_notice_handler(lambda notice: warnings.append(notice.message_primary))
    now = await _now(conn)
    deadline = {"at": (now + timedelta(hours=1)).isoformat(), "then": "reject"}
    waits, left = await _new_run(conn), await _new_run(conn)
    async with _notifier(db_url, _settings(server)):
        past = [(now - timedelta(minutes=m)).isoformat() for m in (2, 1)]
        await _pause(conn, waits, 3, **deadline, reminders=["not a time", *past])
        await _pause(
            conn, left, 5, **deadline, reminders=[(now + timedelta(seconds=1)).isoformat()]
        )
        await conn.execute(
            "UPDATE runs SET status = 'running', waiting_for = NULL WHERE run_id = %s", (left,)
        )
        rows = await _settled(conn, 5)

    assert {(r["run_id"], r["idempotency_key"].split(":", 2)[2], r["status"]) for r in rows} == {
        (waits, "gate:3", "delivered"),
        (waits, "reminder:3:2", "delivered"),
        (waits, "reminder:3:3", "delivered"),
        (left, "gate:5", "delivered"),
        (left, "reminder:5:1", "skipped"),
    }
    # The reminder that is no time is left out, said so, and the pause went through.
    assert warnings == [
        f"notification left out: run {waits} at gate review: "
        'reminder 1 ("not a time") is not a time'
    ]
    hooks = {h["webhook_id"]: h for h in _hooks(server)}
    assert len(hooks) == 4 == len(_hooks(server))
    reminder = hooks[f"{waits}:notification:reminder:3:2"]
    assert reminder["event"] == "reminder"
    assert reminder["message"] == (
        f"Reminder: Run {waits} (cats) still waits for a decision at gate review"
        f" (deadline {deadline['at']})."
    )
    assert datetime.fromisoformat(reminder["time"]) == datetime.fromisoformat(past[0])
    assert not any("reminder:5" in key for key in hooks)


async def test_a_gate_timing_out_is_notified_and_a_person_s_decision_is_not(
    db_url: str, conn: Conn, server: ScriptedServer
) -> None:
    server.standing = {APPRISE: Reply(200), WEBHOOK: Reply(200)}
    timed_out, answered = await _new_run(conn), await _new_run(conn)
    for run_id in (timed_out, answered):
        await _pause(conn, run_id, 4, at="2026-12-03T09:00:00+00:00", then="reject")
    async with _notifier(db_url, _settings(server)):
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver, decision, comment, payload)"
            " VALUES (%s, 'review', 'system', 'rejected', 'timed out', %s)",
            (
                timed_out,
                Jsonb({"timed_out": {"at": "2026-12-03T09:00:00+00:00", "then": "reject"}}),
            ),
        )
        # A person's answer (inserted by hand, as psql would: the deadline trigger
        # refuses it once the deadline has passed, so it is given before).
        await conn.execute("UPDATE runs SET wake_at = NULL WHERE run_id = %s", (answered,))
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 'ann')",
            (answered,),
        )
        rows = await _settled(conn, 3)
    timeouts = [r for r in rows if r["event"] == "timeout"]
    assert [(r["run_id"], r["idempotency_key"]) for r in timeouts] == [
        (timed_out, f"{timed_out}:notification:timeout:4")
    ]
    [hook] = [h for h in _hooks(server) if h["event"] == "timeout"]
    assert hook["message"] == (
        f"Run {timed_out} (cats): nobody decided at gate review by 2026-12-03T09:00:00+00:00;"
        " the gate rejected it (then: reject)."
    )


async def test_the_triggers_record_each_event_once_in_the_transaction_that_changes_the_run(
    conn: Conn,
) -> None:
    run_id = await _new_run(conn)
    await _pause(conn, run_id, 7)
    # The same pause written again, or left and taken up again, is one event.
    await conn.execute("UPDATE runs SET status = status, waiting_for = waiting_for")
    await conn.execute("UPDATE runs SET status = 'running' WHERE run_id = %s", (run_id,))
    await _pause(conn, run_id, 7)
    await _pause(conn, run_id, 8)  # a new pause: a new event
    # A change rolled back leaves no notification.
    async with conn.transaction():
        await conn.execute("UPDATE runs SET status = 'published' WHERE run_id = %s", (run_id,))
        raise psycopg.Rollback()
    await conn.execute(
        "UPDATE runs SET status = 'failed', error = %s WHERE run_id = %s",
        (Jsonb({"message": "boom"}), run_id),
    )
    rows = await (await conn.execute(NOTIFIED)).fetchall()
    epoch = (await store.get_run(conn, run_id))["lease_epoch"]
    assert [(r["idempotency_key"], r["status"]) for r in rows] == [
        (f"{run_id}:notification:gate:7", "pending"),
        (f"{run_id}:notification:gate:8", "pending"),
        (f"{run_id}:notification:failed:{epoch}", "pending"),
    ]
    outbox = await (
        await conn.execute("SELECT artifact_id FROM notification_outbox ORDER BY 1")
    ).fetchall()
    assert [o["artifact_id"] for o in outbox] == [r["id"] for r in rows]
    assert rows[2]["metadata"]["message"] == f"Run {run_id} (cats) failed: boom"
    assert rows[0]["metadata"]["path"] == f"/console/runs/{run_id}"


async def test_with_no_channel_notifications_are_recorded_and_nothing_is_sent(
    db_url: str, conn: Conn, server: ScriptedServer
) -> None:
    settings = _settings(
        server, notify_urls=None, notify_webhook_url=None, notify_webhook_secret=None
    )
    run_id = await _new_run(conn)
    async with _notifier(db_url, settings):
        await _pause(conn, run_id, 2)
        rows = await _settled(conn, 1)
    assert rows[0]["status"] == "recorded"
    assert await (await conn.execute(DELIVERIES)).fetchall() == []
    assert server.calls == []


async def test_a_delivery_sent_but_not_marked_is_sent_again_under_the_same_id(
    db_url: str, conn: Conn, server: ScriptedServer
) -> None:
    server.standing = {APPRISE: Reply(200), WEBHOOK: Reply(200)}
    run_id = await _new_run(conn)
    async with _notifier(db_url, _settings(server)):
        await _pause(conn, run_id, 2)
        await _settled(conn, 1)
        # As if the sender had died between the send and the mark, and its lease ran out.
        await conn.execute(
            "UPDATE notification_deliveries SET delivered_at = NULL, next_attempt_at = now()"
            " WHERE channel = 'webhook'"
        )
        await wait_for(
            conn,
            "SELECT attempts FROM notification_deliveries WHERE channel = 'webhook'"
            " AND delivered_at IS NOT NULL",
            until=lambda rows: rows == [{"attempts": 2}],
        )
    ids = [h["webhook_id"] for h in _hooks(server)]
    assert ids == [f"{run_id}:notification:gate:2"] * 2


async def test_deliveries_too_old_or_for_a_channel_nobody_has_are_given_up_unsent(
    db_url: str, conn: Conn, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.standing = {APPRISE: Reply(200), WEBHOOK: Reply(200)}
    caplog.set_level(logging.INFO)
    run_id = await _new_run(conn)
    await _pause(conn, run_id, 2)
    # Recorded a day ago (a daemon-less day): older than the age a delivery may reach.
    await conn.execute("UPDATE notification_outbox SET due_at = now() - interval '1 day'")
    [row] = await (await conn.execute(NOTIFIED)).fetchall()
    await conn.execute(
        "INSERT INTO notification_deliveries (artifact_id, channel, due_at, next_attempt_at)"
        " VALUES (%s, 'gone:0123abcd', now() - interval '1 day', now())",
        (row["id"],),
    )
    async with _notifier(db_url, _settings(server, notify_max_age=3600)):
        await _settled(conn, 1)
    deliveries = [dict(d) for d in await (await conn.execute(DELIVERIES)).fetchall()]
    assert sorted(
        (d["channel"].split(":")[0], d["delivered_at"], bool(d["gave_up_at"])) for d in deliveries
    ) == [
        ("gone", None, True),
        ("json", None, True),
        ("webhook", None, True),
    ]
    assert server.calls == [] and [d["attempts"] for d in deliveries] == [0, 0, 0]
    gave_up = [r for r in caplog.records if getattr(r, "action", None) == "notification_gave_up"]
    assert len(gave_up) == 3
