"""Gate deadlines: at its deadline a gate gets the system's answer (a `hitl_approvals`
row by approver `system`), a person's answer after it is refused saying so, and the
gate's node goes on as its spec says (reject, approve, fail, escalate)."""

import re
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import pytest
from langgraph.graph import START, StateGraph
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine import Deadline, Gate, ask
from engine.db.connections import open_pool
from engine.db.queries import QUERIES
from engine.runtime import store
from engine.runtime.claims import Claim
from engine.runtime.deadlines import Action
from engine.runtime.executor import Executor
from engine.runtime.workflow import RunContext, Workflow
from engine.settings import Settings
from tests.helpers import claim, wait_for

Conn = AsyncConnection[DictRow]
VERSIONS = {"workflows": ["gated"], "versions": ["1"]}
SOON = timedelta(seconds=0.5)


class Gated(TypedDict, total=False):
    project: str
    answers: list[dict[str, Any]]


def _review(state: Gated) -> dict[str, Any]:
    decision = ask("review", item="the draft")
    answer = {"approved": decision.approved, "by": decision.approver, "comment": decision.comment}
    return {"answers": [*state.get("answers", []), {**answer, "timed_out": decision.timed_out}]}


def _gated(deadline: Deadline | None, *more: Gate) -> Workflow:
    builder = StateGraph(Gated, context_schema=RunContext)
    builder.add_node("review", _review)
    builder.add_edge(START, "review")
    gates = [Gate("review", "Review the draft", deadline=deadline), *more]
    return Workflow("gated", "1", builder.compile(), gates=gates)


async def _execute(db_url: str, workflow: Workflow, claimed: Claim) -> str | None:
    settings = Settings(max_attempts=1)
    async with open_pool(db_url, settings) as pool:
        return await Executor(pool, settings, {"gated": workflow}).execute(claimed)


async def _paused(db_url: str, conn: Conn, workflow: Workflow) -> dict[str, Any]:
    """A run of `workflow`, executed up to its gate; its row."""
    run = await store.create_run(conn, project="p", payload={}, workflow="gated")
    (claimed,) = await claim(conn, VERSIONS)
    assert await _execute(db_url, workflow, claimed) == "pending_review"
    return await store.get_run(conn, run["run_id"])


async def _time_out(conn: Conn) -> int:
    """Run the daemons' pass over due gates until it answers one (deadline: 10 s)."""
    rows = await wait_for(
        conn,
        QUERIES["time_out_gates"] + " RETURNING id",
        until=lambda rows: bool(rows),
        within=10,
    )
    return len(rows)


async def _answers(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = (await store.get_run(conn, run_id))["result"]["answers"]
    return answers


async def test_a_paused_gate_carries_its_deadline_as_its_wake_time(db_url: str, conn: Conn) -> None:
    before = datetime.now(UTC)
    run = await _paused(
        db_url, conn, _gated(Deadline(after=timedelta(hours=2), reminders=[timedelta(hours=1)]))
    )
    deadline = run["waiting_for"]["deadline"]
    assert run["wake_at"] == datetime.fromisoformat(deadline["at"])
    assert before + timedelta(hours=2) <= run["wake_at"] <= datetime.now(UTC) + timedelta(hours=2)
    assert deadline["then"] == "reject"
    assert [datetime.fromisoformat(r) for r in deadline["reminders"]] == [
        run["wake_at"] - timedelta(hours=1)
    ]
    assert store.due_at(run) == run["wake_at"]
    # Not due: the pass answers nothing, the claim takes nothing.
    assert (await conn.execute(QUERIES["time_out_gates"])).rowcount == 0
    assert await claim(conn, VERSIONS) == []


async def test_without_a_deadline_a_gate_waits_with_no_wake_time(db_url: str, conn: Conn) -> None:
    run = await _paused(db_url, conn, _gated(None))
    assert run["wake_at"] is None and "deadline" not in run["waiting_for"]


async def test_at_the_deadline_the_system_rejects_and_the_node_gets_the_rejection(
    db_url: str, conn: Conn
) -> None:
    workflow = _gated(Deadline(after=SOON, comment="too slow: propose again"))
    run = await _paused(db_url, conn, workflow)
    assert await _time_out(conn) == 1
    approvals = await (
        await conn.execute(
            "SELECT gate, approver, decision, comment, payload, pause_id FROM hitl_approvals"
        )
    ).fetchall()
    assert [dict(a) for a in approvals] == [
        {
            "gate": "review",
            "approver": "system",
            "decision": "rejected",
            "comment": "too slow: propose again",
            "payload": {"timed_out": run["waiting_for"]["deadline"]},
            "pause_id": run["waiting_for"]["pause_id"],
        }
    ]
    # The seed's "recent approvals" query shows it.
    recent = await (
        await conn.execute(
            "SELECT run_id, gate, approver, approver_ip, created_at FROM hitl_approvals "
            "ORDER BY created_at DESC LIMIT 20"
        )
    ).fetchall()
    assert [(r["run_id"], r["approver"]) for r in recent] == [(run["run_id"], "system")]
    (resumed,) = await claim(conn, VERSIONS)
    assert await _execute(db_url, workflow, resumed) == "published"
    assert await _answers(conn, run["run_id"]) == [
        {"approved": False, "by": "system", "comment": "too slow: propose again", "timed_out": True}
    ]


@pytest.mark.parametrize("then", ["approve", "reject"])
async def test_the_system_decides_as_the_spec_says(db_url: str, conn: Conn, then: Action) -> None:
    workflow = _gated(Deadline(after=SOON, then=then))
    run = await _paused(db_url, conn, workflow)
    await _time_out(conn)
    (resumed,) = await claim(conn, VERSIONS)
    assert await _execute(db_url, workflow, resumed) == "published"
    (answer,) = await _answers(conn, run["run_id"])
    assert answer["approved"] is (then == "approve") and answer["timed_out"] is True
    assert f"so the system chose to {then} it" in answer["comment"]


async def test_a_deadline_that_fails_fails_the_run_once_without_retries(
    db_url: str, conn: Conn
) -> None:
    workflow = _gated(Deadline(after=SOON, then="fail"))
    run = await _paused(db_url, conn, workflow)
    await _time_out(conn)
    (resumed,) = await claim(conn, VERSIONS)
    settings = Settings(max_attempts=3, retry_backoff=5.0)  # a retry would take seconds
    async with open_pool(db_url, settings) as pool:
        started = datetime.now(UTC)
        assert await Executor(pool, settings, {"gated": workflow}).execute(resumed) == "failed"
        assert datetime.now(UTC) - started < timedelta(seconds=4)
    failed = await store.get_run(conn, run["run_id"])
    assert failed["error"]["type"] == "GateTimedOut"
    assert "gate 'review' timed out at" in failed["error"]["message"]


async def test_an_escalation_asks_again_at_its_gate_for_the_role_it_names(
    db_url: str, conn: Conn
) -> None:
    workflow = _gated(
        Deadline(after=SOON, then="escalate", escalate_to="lead"),
        Gate("lead", "The lead decides", deadline=Deadline(after=timedelta(hours=1))),
    )
    run = await _paused(db_url, conn, workflow)
    await _time_out(conn)
    (resumed,) = await claim(conn, VERSIONS)
    assert await _execute(db_url, workflow, resumed) == "pending_lead"
    escalated = await store.get_run(conn, run["run_id"])
    assert escalated["waiting_for"]["item"] == "the draft"
    assert escalated["waiting_for"]["escalated"] == {
        "from": "review",
        "deadline": run["waiting_for"]["deadline"]["at"],
    }
    # The lead's gate has its own deadline, an hour away.
    assert escalated["wake_at"] - datetime.now(UTC) > timedelta(minutes=59)
    await store.approve(conn, run["run_id"], gate="lead", approver="lee")
    (answered,) = await claim(conn, VERSIONS)
    assert await _execute(db_url, workflow, answered) == "published"
    (answer,) = await _answers(conn, run["run_id"])
    assert answer == {"approved": True, "by": "lee", "comment": None, "timed_out": False}


async def test_an_escalation_to_the_same_gate_waits_for_its_role_without_a_deadline(
    db_url: str, conn: Conn
) -> None:
    workflow = _gated(Deadline(after=SOON, then="escalate", role="admin"))
    run = await _paused(db_url, conn, workflow)
    await _time_out(conn)
    (resumed,) = await claim(conn, VERSIONS)
    assert await _execute(db_url, workflow, resumed) == "pending_review"
    escalated = await store.get_run(conn, run["run_id"])
    assert escalated["waiting_for"]["escalated"]["role"] == "admin"
    assert escalated["wake_at"] is None and "deadline" not in escalated["waiting_for"]


async def test_an_answer_after_the_deadline_is_refused_saying_when_the_gate_timed_out(
    db_url: str, conn: Conn
) -> None:
    workflow = _gated(Deadline(after=SOON))
    run = await _paused(db_url, conn, workflow)
    at = run["waiting_for"]["deadline"]["at"]
    await wait_for(conn, "SELECT NOW() > %s AS due", (run["wake_at"],), until=lambda r: r[0]["due"])
    # Past the deadline, before any daemon's pass: too late already.
    with pytest.raises(store.Refused) as before_pass:
        await store.approve(conn, run["run_id"], gate="review", approver="ann")
    assert str(before_pass.value) == (
        f"approval refused: gate review of run {run['run_id']} timed out at {at} "
        "(nobody answered by its deadline; the system will reject it)"
    )
    await _time_out(conn)
    (resumed,) = await claim(conn, VERSIONS)
    await _execute(db_url, workflow, resumed)
    # After the system answered and the run moved on: the same words, in the past.
    with pytest.raises(store.Refused, match=f"gate review of run .* timed out at {re.escape(at)}"):
        await store.approve(conn, run["run_id"], gate="review", approver="ann")
    count = await (await conn.execute("SELECT count(*) AS n FROM hitl_approvals")).fetchone()
    assert count is not None and count["n"] == 1  # only the system's


async def test_an_answer_in_time_wins_over_the_deadline(db_url: str, conn: Conn) -> None:
    workflow = _gated(Deadline(after=timedelta(seconds=1)))
    run = await _paused(db_url, conn, workflow)
    await store.approve(conn, run["run_id"], gate="review", approver="ann")
    await wait_for(conn, "SELECT NOW() > %s AS due", (run["wake_at"],), until=lambda r: r[0]["due"])
    # The deadline passes with an answer waiting: the pass leaves it alone.
    assert (await conn.execute(QUERIES["time_out_gates"])).rowcount == 0
    (resumed,) = await claim(conn, VERSIONS)
    await _execute(db_url, workflow, resumed)
    (answer,) = await _answers(conn, run["run_id"])
    assert answer["by"] == "ann" and answer["timed_out"] is False


async def test_nobody_answers_as_the_system(db_url: str, conn: Conn) -> None:
    run = await _paused(db_url, conn, _gated(Deadline(after=timedelta(hours=1))))
    with pytest.raises(store.InvalidInput, match="approver: 'system'"):
        await store.approve(conn, run["run_id"], gate="review", approver="system")


async def test_a_deadline_at_a_time_the_graph_asks_with(db_url: str, conn: Conn) -> None:
    due = datetime.now(UTC) + timedelta(minutes=5)

    def review(state: Gated) -> dict[str, Any]:
        ask("review", by=due.isoformat())
        return {}

    builder = StateGraph(Gated, context_schema=RunContext)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    gate = Gate("review", "Review", deadline=Deadline(at="by", then="approve"))
    workflow = Workflow("gated", "1", builder.compile(), gates=[gate])
    run = await _paused(db_url, conn, workflow)
    assert run["wake_at"] == due
