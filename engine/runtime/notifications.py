"""Delivering the notifications the triggers of migration 0017 record: the outbox's sender.

Every daemon runs one (`Notifier.serve`, a side task of its TaskGroup). Its router
hands each notification, once due, to this daemon's channels: one delivery row per
channel, in one statement (`route_notifications`). Each channel then has a sender of
its own, so a slow or dead one holds up no other: it claims the deliveries owed to
it (`FOR UPDATE SKIP LOCKED`, each attempt counted and leased as it starts), keeps
up to SENDS_AT_ONCE attempts out, claiming more as each ends, and marks each
delivery delivered right after its send, or failed, to be tried again
after a backoff, or given up after `notify_max_attempts` or `notify_max_age`. A
sender killed mid-attempt leaves the delivery to the next claim once its lease
(`notify_timeout` and a margin) is over: at least once, every time under the
notification's stable id. Nothing here touches a run, and no send holds a database
connection.
"""

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg

from engine.db.connections import Pool
from engine.db.queries import QUERIES
from engine.observability.telemetry import DISABLED, Telemetry
from engine.runtime.channels import RUN_WEBHOOK, Channel, DeliveryFailed, Notice
from engine.settings import Settings

log = logging.getLogger(__name__)

ROUTE_BATCH = 100  # notifications handed to the channels per statement
SENDS_AT_ONCE = 20  # attempts a channel's sender has out at a time
LEASE_MARGIN = 5.0  # seconds past an attempt's timeout before its delivery is claimable again
# Seconds at least between two routing passes when one is due already: what another
# daemon is routing at that moment is not asked for again at once.
ROUTE_SPACING = 0.05


class Notifier:
    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        channels: Sequence[Channel],
        telemetry: Telemetry = DISABLED,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._channels = list(channels)
        self._names = [channel.name for channel in self._channels]
        self._telemetry = telemetry
        self._recorded = asyncio.Event()  # a NOTIFY: a notification was recorded
        self._routed = {name: asyncio.Event() for name in self._names}
        self._base_url = settings.public_base_url
        self._limits = {
            "max_attempts": settings.notify_max_attempts,
            "max_age": timedelta(seconds=settings.notify_max_age),
        }

    def wake(self) -> None:
        """A notification was recorded (the daemon's listener heard its NOTIFY)."""
        self._recorded.set()

    async def serve(self) -> None:
        """Route and send until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._route_forever(), name="notifications-router")
            for channel in self._channels:
                tasks.create_task(self._send_forever(channel), name=f"notify-{channel.name}")

    async def _route_forever(self) -> None:
        while True:
            self._recorded.clear()
            wait = self._settings.poll_interval
            try:
                full, due_in = await self._route()
            except psycopg.Error as error:  # the next turn tries again
                log.warning(
                    "routing notifications failed: %s", error, extra={"action": "notify_failed"}
                )
            else:
                if full:
                    continue
                if due_in is not None:
                    wait = min(wait, max(ROUTE_SPACING, due_in))
            await _wait(self._recorded, wait)

    async def _route(self) -> tuple[bool, float | None]:
        """Hand the due notifications to the channels; whether a batch was full, and the
        seconds until the next one falls due (None: none waits)."""
        async with self._pool.connection() as conn:
            # The runs' own webhooks are a channel only for the runs that have one.
            shared = [name for name in self._names if name != RUN_WEBHOOK]
            cursor = await conn.execute(
                QUERIES["route_notifications"],
                {
                    "limit": ROUTE_BATCH,
                    "channels": shared,
                    "run_webhooks": RUN_WEBHOOK in self._names,
                },
            )
            routed = await cursor.fetchall()
            abandoned = await (
                await conn.execute(
                    QUERIES["abandon_deliveries"], {"channels": self._names, **self._limits}
                )
            ).fetchall()
            row = await (await conn.execute(QUERIES["next_notification_due"])).fetchone()
        for notification in routed:
            if notification["status"] == "skipped":
                self._count("skipped")
                log.info(
                    "reminder skipped: its run no longer waits at that pause",
                    extra={"action": "notification_skipped", "run_id": notification["run_id"]},
                )
        if any(notification["status"] == "sending" for notification in routed):
            for event in self._routed.values():
                event.set()
        for delivery in abandoned:
            self._gave_up(
                delivery["channel"],
                {**delivery, "error": None},
                f"older than {self._settings.notify_max_age:g} s, on a channel this daemon lacks",
            )
        return len(routed) == ROUTE_BATCH, row["seconds"] if row is not None else None

    async def _send_forever(self, channel: Channel) -> None:
        """Keep up to SENDS_AT_ONCE attempts out on `channel`, claiming more as each
        ends: a slow attempt holds up no delivery behind it."""
        wake = self._routed[channel.name]
        out: set[int] = set()  # the deliveries whose attempt is under way
        async with asyncio.TaskGroup() as attempts:
            while True:
                wake.clear()
                free = SENDS_AT_ONCE - len(out)
                claimed = await self._claim(channel, free) if free else []
                for delivery in claimed:
                    out.add(delivery["id"])
                    attempts.create_task(self._attempt(channel, delivery, out))
                if not claimed or len(claimed) < free:  # nothing more owed now
                    await _wait(wake, self._settings.poll_interval)

    async def _claim(self, channel: Channel, limit: int) -> list[dict[str, Any]]:
        lease = timedelta(seconds=self._settings.notify_timeout + LEASE_MARGIN)
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(
                    QUERIES["claim_deliveries"],
                    {"channel": channel.name, "limit": limit, "lease": lease, **self._limits},
                )
                return [dict(row) for row in await cursor.fetchall()]
        except psycopg.Error as error:  # the next turn tries again
            log.warning(
                "claiming deliveries failed: %s",
                error,
                extra={"action": "notify_failed", "channel": channel.name},
            )
            return []

    async def _attempt(self, channel: Channel, delivery: dict[str, Any], out: set[int]) -> None:
        try:
            await self._settle(channel, delivery)
        finally:
            out.discard(delivery["id"])
            self._routed[channel.name].set()  # a place is free: claim again

    async def _settle(self, channel: Channel, delivery: dict[str, Any]) -> None:
        """Send one claimed delivery (unless it expired) and record how it went."""
        if delivery["expired"]:
            await self._failed(channel, delivery, None, give_up=True)
            return
        try:
            async with asyncio.timeout(self._settings.notify_timeout):
                await channel.send(self._notice(delivery))
        except DeliveryFailed as failure:
            error = str(failure)
        except TimeoutError:
            error = f"no answer within {self._settings.notify_timeout:g} s"
        except Exception as failure:  # a channel's library failing is a failed attempt
            error = type(failure).__name__  # its text may quote the channel's URL
        else:
            await self._sent(channel, delivery)
            return
        await self._failed(channel, delivery, error, give_up=False)

    def _notice(self, delivery: dict[str, Any]) -> Notice:
        metadata = delivery["metadata"]
        return Notice(
            id=delivery["idempotency_key"],
            event=metadata["event"],
            run_id=delivery["run_id"],
            project=delivery["project"],
            gate=metadata.get("gate"),
            message=metadata["message"],
            link=self._base_url + metadata["path"],
            time=delivery["due_at"],
            target=delivery["webhook_url"],
        )

    async def _sent(self, channel: Channel, delivery: dict[str, Any]) -> None:
        try:
            async with self._pool.connection() as conn:
                await conn.execute(QUERIES["delivery_sent"], {"id": delivery["id"]})
        except psycopg.Error as error:  # sent again after the lease, under the same id
            log.warning(
                "delivered, but not marked so: it will be sent again: %s",
                error,
                extra={"action": "notify_failed", **_context(channel, delivery)},
            )
            return
        self._count("delivered", channel.name)
        log.info(
            "notification delivered",
            extra={"action": "notification_delivered", **_context(channel, delivery)},
        )

    async def _failed(
        self, channel: Channel, delivery: dict[str, Any], error: str | None, *, give_up: bool
    ) -> None:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(
                    QUERIES["delivery_failed"],
                    {
                        "id": delivery["id"],
                        "error": error,
                        "give_up": give_up,
                        "backoff": timedelta(seconds=self._settings.notify_backoff),
                        "backoff_max": timedelta(seconds=self._settings.notify_backoff_max),
                        **self._limits,
                    },
                )
                row = await cursor.fetchone()
        except psycopg.Error as db_error:  # tried again after the lease
            log.warning(
                "a failed delivery could not be recorded: %s",
                db_error,
                extra={"action": "notify_failed", **_context(channel, delivery)},
            )
            return
        if row is None:  # delivered or given up meanwhile (a sender whose lease ran out)
            return
        if row["gave_up"]:
            why = (
                f"after {row['attempts']} attempts"
                if row["attempts"] >= self._settings.notify_max_attempts
                else f"older than {self._settings.notify_max_age:g} s"
            )
            self._gave_up(channel.name, {**_context(channel, delivery), **row, "error": error}, why)
            return
        self._count("retried", channel.name)
        log.warning(
            "notification not delivered (attempt %d): %s; next attempt at %s",
            row["attempts"],
            error,
            row["next_attempt_at"].isoformat(),
            extra={"action": "notification_retry", **_context(channel, delivery)},
        )

    def _gave_up(self, channel: str, delivery: dict[str, Any], why: str) -> None:
        """Report a delivery given up: a log line, the metric, and (in its row) the console."""
        self._count("gave_up", channel)
        log.error(
            "notification given up %s: %s",
            why,
            delivery["error"] or "no attempt made",
            extra={
                "action": "notification_gave_up",
                "channel": channel,
                "run_id": delivery["run_id"],
                "event": delivery["event"],
                "attempts": delivery["attempts"],
            },
        )

    def _count(self, outcome: str, channel: str | None = None) -> None:
        if self._telemetry.enabled:
            labels = {"outcome": outcome} | ({} if channel is None else {"channel": channel})
            self._telemetry.notifications.add(1, labels)


def _context(channel: Channel, delivery: dict[str, Any]) -> dict[str, object]:
    return {
        "channel": channel.name,
        "run_id": delivery["run_id"],
        "event": delivery["metadata"]["event"],
        "attempts": delivery["attempts"],
    }


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set or `seconds` pass."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
