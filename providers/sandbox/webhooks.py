"""Webhooks the sandbox sends when a job finishes, the way each real provider sends them.

A delivery waits until its job finishes, builds its requests then (so they carry
the final result), and POSTs each up to the config's `webhook_attempts` times;
one that still fails is logged and dropped. Then it is done, and says so (the state stops keeping it
due); one cut off by a restart is sent again from the start, as providers send
at least once. Every delivery is a task of the sender's TaskGroup, and `run` is
owned by the app's lifespan.
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

TIMEOUT = 15.0  # kie.ai's documented callback timeout


@dataclass(frozen=True)
class Webhook:
    url: str
    body: bytes  # sent exactly as signed
    headers: Mapping[str, str] = field(default_factory=dict)


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


Build = Callable[[], list[Webhook]]
Done = Callable[[], None]


class WebhookSender:
    def __init__(self, attempts: int, retry_delay: float) -> None:
        self._attempts, self._retry_delay = attempts, retry_delay
        self._scheduled: asyncio.Queue[tuple[float, Build, Done]] = asyncio.Queue()

    def schedule(self, due_at: float, build: Build, done: Done) -> None:
        """Send what `build` returns once `time.time()` reaches `due_at`, then call `done`."""
        self._scheduled.put_nowait((due_at, build, done))

    async def run(self) -> None:
        """Deliver scheduled webhooks until cancelled; those not sent yet stay due in the state."""
        async with (
            httpx.AsyncClient(timeout=TIMEOUT) as client,
            asyncio.TaskGroup() as deliveries,
        ):
            while True:
                due_at, build, done = await self._scheduled.get()
                deliveries.create_task(self._deliver(client, due_at, build, done))

    async def _deliver(
        self, client: httpx.AsyncClient, due_at: float, build: Build, done: Done
    ) -> None:
        await asyncio.sleep(max(due_at - time.time(), 0.0))
        for webhook in build():
            await self._post(client, webhook)
        done()

    async def _post(self, client: httpx.AsyncClient, webhook: Webhook) -> None:
        headers = {"Content-Type": "application/json", **webhook.headers}
        # A receiver may take a token in its query string: keep it out of the logs.
        target = str(httpx.URL(webhook.url).copy_with(query=None))
        for attempt in range(1, self._attempts + 1):
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
            if attempt == self._attempts:
                log.error("webhook abandoned", extra={"action": "webhook_abandoned", **extra})
                return
            log.warning("webhook failed", extra={"action": "webhook_failed", **extra})
            await asyncio.sleep(self._retry_delay * attempt)
