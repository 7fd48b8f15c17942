"""Workers: each daemon's heartbeat row (migration 0021), and the live runs that no
live worker can take.

A daemon writes its row with every heartbeat, in the statement that renews its
leases (`heartbeat` in queries.sql: no round trip of its own), and deletes it on a
clean stop. It is live until `live_until`, two of its lease TTLs past its last
beat: by then its leases have expired too. A row whose worker died stays, shown as
gone, until a daemon starting removes it a day later.

A live run (not ended) that no live worker can take is *unrunnable*: no live
worker has its workflow, or has it at another graph version than the one the run
began on (`orchestrator_worker_runs`, the claim's own condition).
"""

import os
import socket
from datetime import timedelta
from importlib import metadata
from typing import Any

from psycopg.types.json import Jsonb

from engine.db.queries import QUERIES
from engine.runtime.store import Connection
from engine.runtime.timers import time_left
from engine.settings import Settings

LIVE_FOR_LEASES = 2  # a worker unseen for this many lease TTLs is gone
GONE_KEPT = timedelta(days=1)  # how long a gone worker's row is still shown
UNRUNNABLE_SHOWN = 50  # the oldest unrunnable runs listed by name


def package_version() -> str:
    """The engine's installed version (a source tree never installed has none)."""
    try:
        return metadata.version("orchestrator")
    except metadata.PackageNotFoundError:
        return "unknown"


def beat_params(settings: Settings, versions: dict[str, list[str]]) -> dict[str, object]:
    """What a worker's every heartbeat says of it, beside its runs: who and where it
    is, what it runs (`versions` as `daemon.workflow_versions()` gives them)."""
    return {
        "worker_id": settings.worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": package_version(),
        "workflows": Jsonb(dict(zip(versions["workflows"], versions["versions"], strict=True))),
        "concurrency": settings.concurrency,
        "live_for": timedelta(seconds=settings.lease_ttl * LIVE_FOR_LEASES),
        "gone_kept": GONE_KEPT,
    }


def reason(workflow: str, graph_version: str | None) -> str:
    """Why a run of `workflow` at `graph_version` (None: not begun) waits for nobody."""
    at = f" at version {graph_version}" if graph_version is not None else ""
    return f"no live worker runs {workflow}{at}"


async def list_workers(conn: Connection) -> list[dict[str, Any]]:
    """Every worker's row, the live ones first, with when it was last seen ("just now",
    "3 s ago", by the database's clock)."""
    rows = await (await conn.execute(QUERIES["list_workers"])).fetchall()
    shown = []
    for row in rows:
        worker = dict(row)
        now = worker.pop("now")
        recent = now - worker["last_seen"] < timedelta(seconds=1)
        shown.append(
            {**worker, "seen": "just now" if recent else time_left(worker["last_seen"], now)}
        )
    return shown


async def unrunnable_kinds(conn: Connection) -> list[dict[str, Any]]:
    """The live runs no live worker can take, by workflow and graph version: how many, why."""
    rows = await (await conn.execute(QUERIES["unrunnable_kinds"])).fetchall()
    return [{**row, "reason": reason(row["workflow"], row["graph_version"])} for row in rows]


async def unrunnable_runs(conn: Connection, limit: int = UNRUNNABLE_SHOWN) -> list[dict[str, Any]]:
    """The oldest live runs that no live worker can take, each with why."""
    rows = await (await conn.execute(QUERIES["unrunnable_runs"], {"limit": limit})).fetchall()
    return [{**row, "unrunnable": reason(row["workflow"], row["graph_version"])} for row in rows]


async def overview(conn: Connection) -> dict[str, Any]:
    """What `GET /workers` and `orchestrator workers --json` answer."""
    return {"workers": await list_workers(conn), "unrunnable": await unrunnable_kinds(conn)}


async def flag_unrunnable(conn: Connection, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`runs`, each with `unrunnable`: why no live worker can take it, or None."""
    if not runs:
        return runs
    cursor = await conn.execute(
        QUERIES["unrunnable_among"], {"run_ids": [run["run_id"] for run in runs]}
    )
    rows = await cursor.fetchall()
    why = {row["run_id"]: reason(row["workflow"], row["graph_version"]) for row in rows}
    return [{**run, "unrunnable": why.get(run["run_id"])} for run in runs]
