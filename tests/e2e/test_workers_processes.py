"""Workers as processes: two daemons listed by `orchestrator workers`, one SIGKILLed
turning gone, the other taking its row away on SIGTERM."""

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.conftest import orchestrator
from tests.helpers import daemons

Conn = AsyncConnection[DictRow]


async def _listed(
    db_url: str, until: Callable[[dict[str, Any]], bool], within: float = 30.0
) -> dict[str, Any]:
    """`orchestrator workers --json`, polled until `until` holds of its answer."""
    deadline = time.monotonic() + within
    while True:
        done = await asyncio.to_thread(orchestrator, db_url, "workers", "--json")
        assert done.returncode == 0, done.stderr
        shown: dict[str, Any] = json.loads(done.stdout)
        if until(shown):
            return shown
        assert time.monotonic() < deadline, f"timed out; last answer: {shown}"


def _live(shown: dict[str, Any]) -> dict[str, bool]:
    return {worker["worker_id"]: worker["live"] for worker in shown["workers"]}


async def test_two_daemons_are_listed_and_a_killed_one_turns_gone(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    # Beats every 0.33 s; unseen for 2 s, a worker is gone.
    with daemons(db_url, tmp_path, lease_ttl=1) as start:
        first, second = start("w-one"), start("w-two")
        shown = await _listed(db_url, lambda s: _live(s) == {"w-one": True, "w-two": True})
        by_id = {worker["worker_id"]: worker for worker in shown["workers"]}
        assert by_id["w-one"]["pid"] == first.process.pid
        assert by_id["w-two"]["pid"] == second.process.pid
        assert "production" in by_id["w-one"]["workflows"]

        # A run of a workflow no daemon has is named in the table.
        await store.create_run(conn, project="cats", payload={}, workflow="nowhere")
        table = await asyncio.to_thread(orchestrator, db_url, "workers")
        assert table.returncode == 0, table.stderr
        assert "w-one" in table.stdout and "w-two" in table.stdout
        assert "no live worker runs nowhere: 1 live run waits" in table.stdout

        first.kill()
        shown = await _listed(db_url, lambda s: _live(s) == {"w-two": True, "w-one": False})
        assert [worker["worker_id"] for worker in shown["workers"]] == ["w-two", "w-one"]
        gone = await asyncio.to_thread(orchestrator, db_url, "workers")
        assert "(gone)" in gone.stdout

        assert second.terminate() == 0
        shown = await _listed(db_url, lambda s: "w-two" not in _live(s), within=0)
        assert _live(shown) == {"w-one": False}
