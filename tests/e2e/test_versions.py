"""A run resumes only on the graph version it started on; other daemons leave it, and say so."""

from pathlib import Path

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.helpers import daemons, wait_for, wait_for_log

Conn = AsyncConnection[DictRow]
RUN = "SELECT status, graph_version FROM runs WHERE run_id = %s"


def _is(status: str, version: str):  # type: ignore[no-untyped-def]
    return lambda rows: rows[0]["status"] == status and rows[0]["graph_version"] == version


async def test_each_run_stays_on_its_graph_version(
    db_url: str, conn: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_run = (await store.create_run(conn, project="p", payload={}, workflow="ledger"))["run_id"]
    with daemons(db_url, tmp_path) as start:
        old = start("old")
        await wait_for(conn, RUN, (old_run,), until=_is("pending_review", "ledger-1"))
        assert old.terminate() == 0

        monkeypatch.setenv("LEDGER_GRAPH_VERSION", "ledger-2")
        new_run = (await store.create_run(conn, project="p", payload={}, workflow="ledger"))[
            "run_id"
        ]
        await store.approve(conn, old_run, gate="review")
        new = start("new")
        await wait_for(conn, RUN, (new_run,), until=_is("pending_review", "ledger-2"))
        await wait_for_log(new, "1 live runs of workflow 'ledger' need graph version 'ledger-1'")
        row = await (await conn.execute(RUN, (old_run,))).fetchone()
        assert row == {"status": "pending_review", "graph_version": "ledger-1"}

        monkeypatch.setenv("LEDGER_GRAPH_VERSION", "ledger-1")
        start("old-again")
        await wait_for(conn, RUN, (old_run,), until=_is("published", "ledger-1"))
