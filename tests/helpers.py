"""Waiting on the database with a deadline, daemons as real subprocesses, the sandbox
providers in the test's event loop."""

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, LiteralString

import httpx
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow

from engine.db.connections import open_pool
from engine.db.queries import QUERIES
from engine.runtime.claims import Claim, claim_params, load_claims
from engine.runtime.daemon import Daemon
from engine.runtime.workflow import Workflow
from engine.settings import Settings
from providers.sandbox import SandboxConfig, serve
from providers.settings import ProviderSettings
from tests.conftest import ROOT, orchestrator_env

Rows = list[dict[str, Any]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def in_process_daemon(
    db_url: str, settings: Settings, workflows: dict[str, Workflow]
) -> AsyncIterator[None]:
    """A real daemon in this process serving `workflows`, stopped cleanly (drained) when
    the block ends."""
    stop = asyncio.Event()
    async with open_pool(db_url, settings) as pool:
        serving = asyncio.create_task(Daemon(db_url, pool, settings, workflows).serve(stop))
        try:
            yield
        finally:
            stop.set()
            await serving


async def wait_for(
    conn: AsyncConnection[DictRow],
    query: LiteralString,
    params: dict[str, Any] | tuple[Any, ...] | None = None,
    *,
    until: Callable[[Rows], bool],
    within: float = 30.0,
) -> Rows:
    """Poll `query` until `until(rows)` holds; fail with the last rows at the deadline."""
    deadline = time.monotonic() + within
    while True:
        rows = [dict(r) for r in await (await conn.execute(query, params)).fetchall()]
        if until(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s; last rows: {rows}")
        await asyncio.sleep(0.02)


async def claim(
    conn: AsyncConnection[DictRow], versions: dict[str, list[str]], *, within: float = 0.0
) -> list[Claim]:
    """What a claim of `versions`' workflows takes now; with `within`, the first
    claim that takes something, polled until `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        cursor = await conn.execute(
            QUERIES["claim_runs"],
            claim_params(10, "tester", timedelta(seconds=30), versions),
            binary=True,
        )
        claims, unloadable = await load_claims(cursor)
        assert unloadable == []
        if claims or time.monotonic() >= deadline:
            assert claims or not within, f"nothing claimed within {within}s"
            return claims
        await asyncio.sleep(0.05)


TABLES = (
    "runs",
    "orchestration_checkpoints",
    "artifacts",
    "webhook_events",
    "hitl_approvals",
    "checkpoints",
    "checkpoint_blobs",
    "checkpoint_writes",
)


async def table_checksums(conn: AsyncConnection[DictRow]) -> dict[str, Any]:
    """Row count and content checksum of every table a run's state lives in."""
    snapshot = {}
    for table in TABLES:
        query = sql.SQL(
            "SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            " AS sum FROM {} t"
        ).format(sql.Identifier(table))
        snapshot[table] = await (await conn.execute(query)).fetchone()
    return snapshot


async def wait_for_log(process: "DaemonProcess", text: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while text not in process.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.name} never logged {text!r}: {process.log()}")
        await asyncio.sleep(0.05)


async def statuses(conn: AsyncConnection[DictRow]) -> dict[str, str]:
    rows = await (await conn.execute("SELECT run_id, status FROM runs")).fetchall()
    return {row["run_id"]: row["status"] for row in rows}


class DaemonProcess:
    """An `orchestrator` service in a subprocess (the daemon unless `command` says
    otherwise), its log in a file for failures."""

    def __init__(
        self,
        db_url: str,
        log_dir: Path,
        name: str,
        command: tuple[str, ...] = (),
        **settings: object,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine", *(command or ("daemon", "--worker-id", name))],
            env=orchestrator_env(db_url, **settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()


def start_api(db: str, log_dir: Path, **settings: object) -> tuple[DaemonProcess, str]:
    """`orchestrator api` in a subprocess on a free port, once it answers `/readyz`."""
    port = free_port()
    process = DaemonProcess(db, log_dir, "api", ("api",), api_port=port, **settings)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        assert process.process.poll() is None, process.log()
        assert time.monotonic() < deadline, process.log()
        time.sleep(0.05)


@contextmanager
def daemons(
    db_url: str, log_dir: Path, **defaults: object
) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons with `start(worker_id, **settings)`, other services with
    `start(name, "api", **settings)`, each with `defaults` under its settings; all
    are killed at the end."""
    started: list[DaemonProcess] = []

    def start(name: str, *command: str, **settings: object) -> DaemonProcess:
        process = DaemonProcess(db_url, log_dir, name, command, **{**defaults, **settings})
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.close()


@contextlib.asynccontextmanager
async def sandbox_serving() -> AsyncIterator[ProviderSettings]:
    """The sandbox providers on a free port, in this event loop."""
    settings = ProviderSettings(sandbox_port=free_port())
    server = asyncio.create_task(serve(SandboxConfig(), port=settings.sandbox_port))
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(500):
                with contextlib.suppress(httpx.TransportError):
                    await probe.get(f"http://127.0.0.1:{settings.sandbox_port}/_sandbox/config")
                    break
                assert not server.done(), server
                await asyncio.sleep(0.02)
        yield settings
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


async def run_checksums(conn: AsyncConnection[DictRow], run_id: str) -> dict[str, Any]:
    """Row count and content checksum of one run's rows in every table of `TABLES`."""
    snapshot = {}
    for table in TABLES:
        column = "thread_id" if table.startswith("checkpoint") else "run_id"
        query = sql.SQL(
            "SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            " AS sum FROM {} t WHERE {} = %s"
        ).format(sql.Identifier(table), sql.Identifier(column))
        snapshot[table] = await (await conn.execute(query, (run_id,))).fetchone()
    return snapshot
