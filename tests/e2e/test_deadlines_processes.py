"""A gate's deadline with real daemons: the production workflow gate, due after 2 s,
outlives the daemon that paused it (SIGKILLed), and the next daemon's system answer
rejects it, so Brendan proposes again with the timeout as feedback; a person's
answer to the timed-out question is refused saying so."""

from pathlib import Path

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.helpers import daemons, wait_for

Conn = AsyncConnection[DictRow]
PROPOSALS = "SELECT status, waiting_for, wake_at FROM runs WHERE run_id = %s"


async def test_the_workflow_gate_times_out_and_brendan_proposes_again(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    run = await store.create_run(
        conn, project="p", payload={"brief": "a cat video"}, workflow="production"
    )
    run_id = run["run_id"]
    with daemons(db_url, tmp_path) as start:
        first = start("first", workflow_gate_deadline="2s")
        (paused,) = await wait_for(
            conn, PROPOSALS, (run_id,), until=lambda rows: rows[0]["status"] == "pending_workflow"
        )
        first.kill()  # the deadline lives in the database, not in this process
        assert paused["waiting_for"]["deadline"]["then"] == "reject"
        start("second", workflow_gate_deadline="2s")
        (system,) = await wait_for(
            conn,
            "SELECT * FROM hitl_approvals WHERE run_id = %s",
            (run_id,),
            until=lambda rows: bool(rows),
        )
        assert (system["approver"], system["decision"]) == ("system", "rejected")
        assert system["pause_id"] == paused["waiting_for"]["pause_id"]
        assert system["created_at"] >= paused["wake_at"]
        (again,) = await wait_for(
            conn,
            PROPOSALS,
            (run_id,),
            until=lambda rows: (
                rows[0]["status"] == "pending_workflow"
                and rows[0]["waiting_for"]["pause_id"] != paused["waiting_for"]["pause_id"]
            ),
        )
        view = await store.show_run(conn, run_id)
        assert view.checkpoint is not None
        assert view.checkpoint["state"]["values"]["feedback"] == [system["comment"]]
        assert "nobody decided on the proposed workflow within 0:00:02" in system["comment"]
        assert again["waiting_for"]["proposal"]  # Brendan's new proposal, with a new deadline
        assert again["wake_at"] > paused["wake_at"]
        # The approver answers the first question, too late.
        with pytest.raises(store.Refused, match=f"gate workflow of run {run_id} timed out at"):
            await store.approve(
                conn,
                run_id,
                gate="workflow",
                approver="ann",
                pause_id=paused["waiting_for"]["pause_id"],
            )
