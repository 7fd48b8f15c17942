"""The whole system as real processes: sandbox providers, API and daemons, over HTTP."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import DaemonProcess, daemons, free_port

KIE_SECRET = "kie-webhook-secret-for-tests"
UPLOAD_POST_SECRET = "upload-post-webhook-secret-for-tests"


@dataclass
class Stack:
    start: Callable[..., DaemonProcess]
    settings: dict[str, object]
    http: httpx.AsyncClient
    processes: dict[str, DaemonProcess] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.settings['api_port']}"

    @property
    def sandbox(self) -> str:
        return f"http://127.0.0.1:{self.settings['sandbox_port']}"

    def daemon(self, worker_id: str, **settings: object) -> DaemonProcess:
        process = self.start(worker_id, **{**self.settings, **settings})
        self.processes[worker_id] = process
        return process

    async def sandbox_calls(self, **filters: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.sandbox}/_sandbox/calls", params=filters)
        response.raise_for_status()
        calls: list[dict[str, Any]] = response.json()
        return calls

    async def wait_for_call(self, run_id: str, operation: str, within: float = 30.0) -> None:
        """Until the sandbox has received `operation` for `run_id`."""
        deadline = time.monotonic() + within
        while not await self.sandbox_calls(run_id=run_id, operation=operation):
            assert time.monotonic() < deadline, f"no {operation} call for {run_id}"
            await asyncio.sleep(0.02)

    async def configure_sandbox(self, **change: object) -> None:
        (await self.http.post(f"{self.sandbox}/_sandbox/config", json=change)).raise_for_status()

    async def restart_sandbox(self) -> None:
        """SIGKILL the sandbox and start it again on its port and state file."""
        self.processes["sandbox"].kill()
        again = self.start("sandbox-again", "service", "sandbox", **self.settings)
        self.processes["sandbox"] = again
        await _until_up(self.http, f"{self.sandbox}/_sandbox/config", again)


async def _until_up(client: httpx.AsyncClient, url: str, process: DaemonProcess) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise AssertionError(f"{process.name} exited: {process.log()}")
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} not up in 30 s: {process.log()}")


@asynccontextmanager
async def stack(db_url: str, log_dir: Path, **settings: object) -> AsyncIterator[Stack]:
    """Sandbox and API up (webhooks signed and verified); start daemons with `.daemon()`."""
    shared: dict[str, object] = {
        "sandbox_port": free_port(),
        "api_port": free_port(),
        "kie_webhook_secret": KIE_SECRET,
        "upload_post_webhook_secret": UPLOAD_POST_SECRET,
        # Long enough that a run left to the timer would fail the test: webhooks wake runs.
        "provider_poll_interval": 60,
        # The sandbox finishes a job in seconds: a callback not here by then never comes.
        "provider_adopt_window": 15,
        "provider_max_attempts": 3,
        # The sandbox keeps its jobs under the data dir: each test's its own.
        "data_dir": log_dir / "data",
        **settings,
    }
    with daemons(db_url, log_dir) as start:
        async with httpx.AsyncClient(timeout=10) as client:
            sandbox = start("sandbox", "service", "sandbox", **shared)
            api = start("api", "api", **shared)
            result = Stack(start, shared, client, {"sandbox": sandbox, "api": api})
            await _until_up(client, f"{result.sandbox}/_sandbox/config", sandbox)
            await _until_up(client, f"{result.api}/readyz", api)
            yield result
