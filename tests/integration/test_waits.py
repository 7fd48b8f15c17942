"""Waits are typed in one place: the stored `waiting_for` keeps its shape, and a run
that pauses on nothing a worker resumes fails instead of waiting forever."""

from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import pytest
from langgraph.graph import START, StateGraph
from langgraph.types import interrupt
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.connections import open_pool
from engine.runtime import store
from engine.runtime.claims import Claim
from engine.runtime.executor import Executor
from engine.runtime.waits import (
    GateWait,
    LimitWait,
    ProviderWait,
    TimerWait,
    UnclaimableWait,
    ask,
    parse_wait,
    pause,
)
from engine.runtime.workflow import Workflow
from engine.settings import Settings

Conn = AsyncConnection[DictRow]
WAKE = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)


def test_a_gate_wait_is_stored_as_the_gate_and_its_request() -> None:
    wait = GateWait("review", {"draft": "d", "problem": "p"})
    assert wait.to_json() == {"gate": "review", "draft": "d", "problem": "p"}
    assert wait.status == "pending_review" and wait.wake_at is None
    # As the claim and the console read it back, with the pause `pause_run` numbered.
    assert parse_wait({**wait.to_json(), "pause_id": 3}) == GateWait(
        "review", {"draft": "d", "problem": "p"}, pause_id=3
    )


def test_a_provider_wait_is_stored_as_provider_steps_wrote_it() -> None:
    stored = {
        "provider": "kie",
        "persona": "media",
        "job_id": "job-1",
        "wake_at": WAKE.isoformat(),
    }
    wait = parse_wait(stored)
    assert wait == ProviderWait("kie", "job-1", WAKE, {"persona": "media"})
    assert wait.to_json() == stored
    assert wait.status == "waiting_provider" and wait.wake_at == WAKE
    assert parse_wait({"provider": "kie"}) == ProviderWait("kie")


@pytest.mark.parametrize("value", [None, "review", {"gate": 1}, {"job_id": "x"}, ["gate"]])
def test_a_value_that_names_no_wait_is_refused(value: object) -> None:
    with pytest.raises(UnclaimableWait, match="neither a gate, a provider, a timer nor a limit"):
        parse_wait(value)


def test_a_timer_wait_is_stored_as_its_due_time() -> None:
    wait = parse_wait({"timer": WAKE.isoformat(), "pause_id": 2})
    assert wait == TimerWait(WAKE, pause_id=2)
    assert wait.to_json() == {"timer": WAKE.isoformat(), "pause_id": 2}
    assert wait.status == "waiting_timer" and wait.wake_at == WAKE


def test_a_limit_wait_is_stored_as_the_slot_or_the_pause_it_waits_for() -> None:
    slot = parse_wait({"limit": "provider:x", "key": "media:0", "pause_id": 4})
    assert slot == LimitWait("provider:x", "media:0", pause_id=4)
    assert slot.status == "waiting_limit" and slot.wake_at is None  # handed a slot in turn
    paused = LimitWait("provider:x", wake_at=WAKE)
    assert paused.to_json() == {"limit": "provider:x", "until": WAKE.isoformat()}
    assert parse_wait(paused.to_json()) == paused and paused.wake_at == WAKE


class Asked(TypedDict, total=False):
    project: str
    decision: Any


def _graph(node: Any) -> Workflow:
    builder = StateGraph(Asked)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    return Workflow("asking", "1", builder.compile())


def _ask(state: Asked) -> Asked:
    decision = ask("review", draft="d")
    return {"decision": [decision.approved, decision.comment, decision.payload]}


async def _execute(db_url: str, conn: Conn, workflow: Workflow) -> tuple[str | None, str]:
    run = await store.create_run(conn, project="p", payload={}, workflow=workflow.name)
    row = await (
        await conn.execute(
            "UPDATE runs SET status = 'running', lease_epoch = lease_epoch + 1, "
            "lease_expires_at = NOW() + INTERVAL '1 minute' WHERE run_id = %s "
            "RETURNING lease_epoch",
            (run["run_id"],),
        )
    ).fetchone()
    assert row is not None
    settings = Settings(max_attempts=1)
    async with open_pool(db_url, settings) as pool:
        executor = Executor(pool, settings, {workflow.name: workflow})
        claim = Claim(run["run_id"], "p", workflow.name, {}, row["lease_epoch"], None, None)
        return await executor.execute(claim), run["run_id"]


async def test_ask_pauses_at_the_gate_and_reads_the_decision(db_url: str, conn: Conn) -> None:
    status, run_id = await _execute(db_url, conn, _graph(_ask))
    assert status == "pending_review"
    run = await store.get_run(conn, run_id)
    assert run["waiting_for"] == {"gate": "review", "draft": "d", "pause_id": 1}


async def test_a_run_that_pauses_on_nothing_fails_saying_why(db_url: str, conn: Conn) -> None:
    def bare(state: Asked) -> Asked:
        return {"decision": interrupt("what now?")}

    status, run_id = await _execute(db_url, conn, _graph(bare))
    assert status == "failed"
    run = await store.get_run(conn, run_id)
    assert run["error"]["type"] == "UnclaimableWait"
    assert "names neither a gate, a provider, a timer nor a limit" in run["error"]["message"]
    assert run["lease_owner"] is None and run["waiting_for"] is None


async def test_a_provider_wait_sets_its_timer(db_url: str, conn: Conn) -> None:
    wake_at = datetime.now(UTC) + timedelta(hours=1)

    def waiting(state: Asked) -> Asked:
        pause(ProviderWait("kie", "job-1", wake_at, {"persona": "media"}))
        return {}

    status, run_id = await _execute(db_url, conn, _graph(waiting))
    assert status == "waiting_provider"
    run = await store.get_run(conn, run_id)
    assert run["wake_at"] == wake_at
    assert parse_wait(run["waiting_for"]) == ProviderWait(
        "kie", "job-1", wake_at, {"persona": "media"}, pause_id=1
    )
