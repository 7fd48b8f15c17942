"""Forking a production run, as real processes: API, daemon and the sandbox providers.

A fork from the checkpoint before the publish gate reaches `pending_publish` with
the source's script and media, makes nothing again at the providers, and
publishes exactly once under its own key; the source stays as it was.
"""

import json
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from tests.conftest import orchestrator
from tests.helpers import run_checksums, wait_for
from tests.stack import Stack, stack

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status, error FROM runs WHERE run_id = %s"
STATE = "SELECT state FROM orchestration_checkpoints WHERE run_id = %s"
MADE = ("gpt4o_image_generate", "render")  # the media and the render, made once


def _status_is(status: str) -> Any:
    def check(rows: list[dict[str, Any]]) -> bool:
        if rows and rows[0]["status"] == "failed":
            raise AssertionError(f"run failed: {rows[0]['error']}")
        return bool(rows) and rows[0]["status"] == status

    return check


async def _approve(s: Stack, conn: Conn, run_id: str, gate: str) -> None:
    await wait_for(conn, STATUS, (run_id,), until=_status_is(f"pending_{gate}"), within=60)
    response = await s.http.post(
        f"{s.api}/runs/{run_id}/approvals", json={"gate": gate, "approver": "e2e"}
    )
    assert response.status_code == 201, response.text


async def _calls(s: Stack, operation: str, run_id: str | None = None) -> int:
    filters = {"operation": operation, **({"run_id": run_id} if run_id else {})}
    return len(await s.sandbox_calls(**filters))


async def _state(conn: Conn, run_id: str) -> dict[str, Any]:
    row = await (await conn.execute(STATE, (run_id,))).fetchone()
    assert row is not None
    values: dict[str, Any] = row["state"]["values"]
    return values


async def test_a_fork_before_the_publish_gate_publishes_once_with_the_sources_media(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        s.daemon("w1")
        created = await s.http.post(
            f"{s.api}/runs", json={"project": "cats", "brief": "Why cats sit in boxes"}
        )
        source = created.json()["run_id"]
        await _approve(s, conn, source, "workflow")
        await _approve(s, conn, source, "publish")
        await wait_for(conn, STATUS, (source,), until=_status_is("published"), within=60)
        made = {operation: await _calls(s, operation) for operation in MADE}
        assert made == dict.fromkeys(MADE, 1)
        assert await _calls(s, "upload", source) == 1

        history = (await s.http.get(f"{s.api}/runs/{source}/history")).json()["checkpoints"]
        point = next(c for c in history if c["next"] == ["publish_gate"])
        assert point["interrupts"][0]["gate"] == "publish"  # where the source paused
        listed = orchestrator(db_url, "runs", "history", source, "--json")
        assert listed.returncode == 0, listed.stderr
        assert [c["checkpoint_id"] for c in json.loads(listed.stdout)["checkpoints"]] == [
            c["checkpoint_id"] for c in history
        ]
        table = orchestrator(db_url, "runs", "history", source)
        assert point["checkpoint_id"] in table.stdout and "publish_gate" in table.stdout
        untouched = await run_checksums(conn, source)

        forked = orchestrator(
            db_url, "runs", "fork", source, "--checkpoint", point["checkpoint_id"]
        )
        assert forked.returncode == 0, forked.stderr
        fork = forked.stdout.splitlines()[-1]
        assert fork.startswith("run_") and fork != source

        await wait_for(conn, STATUS, (fork,), until=_status_is("pending_publish"), within=60)
        source_state, fork_state = await _state(conn, source), await _state(conn, fork)
        for key in ("script", "media", "render"):
            assert fork_state[key] == source_state[key], key
        assert {operation: await _calls(s, operation) for operation in MADE} == made
        assert await _calls(s, "upload", fork) == 0

        await _approve(s, conn, fork, "publish")
        await wait_for(conn, STATUS, (fork,), until=_status_is("published"), within=60)
        uploads = await s.sandbox_calls(operation="upload")
        assert {operation: await _calls(s, operation) for operation in MADE} == made
        assert await run_checksums(conn, source) == untouched

    assert sorted(call["run_id"] for call in uploads) == sorted([source, fork])
    assert [call["idempotency_key"] for call in uploads if call["run_id"] == fork] == [
        f"{fork}:publisher:0"
    ]
    shown = await (
        await conn.execute(
            "SELECT type, idempotency_key FROM artifacts"
            " WHERE run_id = %s AND type <> 'notification' ORDER BY id",
            (fork,),
        )
    ).fetchall()
    # Its effect ledger began empty: only what it did after the fork point.
    assert [(a["type"], a["idempotency_key"]) for a in shown] == [
        ("publication", f"{fork}:publisher:0")
    ]
    run = await (
        await conn.execute(
            "SELECT forked_from, forked_from_checkpoint, result FROM runs WHERE run_id = %s",
            (fork,),
        )
    ).fetchone()
    assert run is not None
    assert (run["forked_from"], run["forked_from_checkpoint"]) == (source, point["checkpoint_id"])
    assert run["result"]["publication"]["status"] == "completed"


async def test_the_cli_refuses_a_bad_fork_with_one_line(db_url: str, conn: Conn) -> None:
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow)"
        " VALUES ('run_busy', 'p', 'running', '{}', 'ledger'),"
        " ('run_new', 'p', 'queued', '{}', 'ledger')"
    )
    for args, code, message in [
        (["run_busy"], 2, "error: run run_busy is running: fork it once it pauses or ends"),
        (["run_new"], 2, "error: run run_new has no checkpoint yet"),
        (["run_new", "--checkpoint", "cp-x"], 2, "error: run run_new has no checkpoint cp-x"),
        (["run_nope"], 1, "error: run run_nope not found"),
    ]:
        result = orchestrator(db_url, "runs", "fork", *args)
        assert result.returncode == code, result
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(message), result
    count = await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()
    assert count is not None and count["n"] == 2
