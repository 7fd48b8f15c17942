"""Logs are JSON lines an operator can follow one run by, across a daemon's death."""

import json
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.helpers import daemons, wait_for

Conn = AsyncConnection[DictRow]


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_one_run_can_be_followed_by_run_id_across_a_restart(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    run_id = (
        await store.create_run(conn, project="cats", payload={"node_delay": 1}, workflow="ledger")
    )["run_id"]
    with daemons(db_url, tmp_path) as start:
        first = start("first", lease_ttl=1)
        await wait_for(conn, "SELECT 1 FROM node_ledger WHERE run_id = %s", (run_id,), until=bool)
        first.kill()
        second = start("second", lease_ttl=1)
        await wait_for(
            conn,
            "SELECT status FROM runs WHERE run_id = %s",
            (run_id,),
            until=lambda rows: rows[0]["status"] == "pending_review",
        )
        second.terminate()
        lines = _lines(first.log()) + _lines(second.log())  # every line parses as JSON
    assert all({"ts", "level", "logger", "message", "worker_id"} <= line.keys() for line in lines)
    mine = [line for line in lines if line.get("run_id") == run_id]
    assert {line["worker_id"] for line in mine} == {"first", "second"}
    assert all(line["project"] == "cats" and line.get("action") for line in mine)
    assert [line["action"] for line in mine if line["worker_id"] == "second"][-1] == "run_paused"
