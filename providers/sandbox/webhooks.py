"""Webhooks the sandbox sends when a job finishes, the way each real provider sends them.

A delivery waits until its job finishes, builds its requests then (so they carry
the final result), and POSTs each at most `ATTEMPTS` times; one that still fails
is logged and dropped. Every delivery is a task of the sender's TaskGroup, and
`run` is owned by the app's lifespan.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)

ATTEMPTS = 3
RETRY_DELAY = 0.1  # seconds, times the attempt number
TIMEOUT = 15.0  # kie.ai's documented callback timeout


@dataclass(frozen=True)
class Webhook:
    url: str
    body: bytes  # sent exactly as signed
    headers: Mapping[str, str] = field(default_factory=dict)


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


Build = Callable[[], list[Webhook]]


class WebhookSender:
    def __init__(self) -> None:
        self._scheduled: asyncio.Queue[tuple[float, Build]] = asyncio.Queue()

    def schedule(self, finishes_at: float | None, build: Build) -> None:
        """Send what `build` returns once `time.monotonic()` reaches `finishes_at`.

        A job that never finishes (`finishes_at` None) sends nothing.
        """
        if finishes_at is not None:
            self._scheduled.put_nowait((finishes_at, build))

    async def run(self) -> None:
        """Deliver scheduled webhooks until cancelled; cancelling drops those not yet sent."""
        async with (
            httpx.AsyncClient(timeout=TIMEOUT) as client,
            asyncio.TaskGroup() as deliveries,
        ):
            while True:
                finishes_at, build = await self._scheduled.get()
                deliveries.create_task(self._deliver(client, finishes_at, build))

    async def _deliver(self, client: httpx.AsyncClient, finishes_at: float, build: Build) -> None:
        await asyncio.sleep(max(finishes_at - time.monotonic(), 0.0))
        for webhook in build():
            await self._post(client, webhook)

    async def _post(self, client: httpx.AsyncClient, webhook: Webhook) -> None:
        headers = {"Content-Type": "application/json", **webhook.headers}
        # A receiver may take a token in its query string: keep it out of the logs.
        target = str(httpx.URL(webhook.url).copy_with(query=None))
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await client.post(webhook.url, content=webhook.body, headers=headers)
            except httpx.HTTPError as error:
                failure = f"{type(error).__name__}: {error}"
            else:
                if response.status_code < 400:
                    log.debug(
                        "webhook delivered",
                        extra={"action": "webhook_delivered", "url": target},
                    )
                    return
                failure = f"HTTP {response.status_code}"
            extra = {"url": target, "attempt": attempt, "error": failure}
            if attempt == ATTEMPTS:
                log.error("webhook abandoned", extra={"action": "webhook_abandoned", **extra})
                return
            log.warning("webhook failed", extra={"action": "webhook_failed", **extra})
            await asyncio.sleep(RETRY_DELAY * attempt)
