"""A gate's deadline spec: refused when it could never work, and the times it gives."""

from datetime import UTC, datetime, timedelta
from typing import TypedDict

import pytest
from langgraph.graph import START, StateGraph

from engine import Deadline, Gate, Workflow
from engine.runtime.deadlines import Timeout, timed_out
from engine.runtime.waits import GateWait, UnclaimableWait, parse_wait

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "refusal"),
    [
        ({}, "either after= .* or at="),
        ({"after": timedelta(hours=1), "at": "by"}, "either after="),
        ({"after": timedelta(0)}, "must be positive"),
        ({"after": timedelta(days=4000)}, "at most"),
        ({"after": timedelta(hours=1), "then": "shrug"}, "then= must be one of"),
        ({"after": timedelta(hours=1), "escalate_to": "lead"}, "need then='escalate'"),
        ({"after": timedelta(hours=1), "reminders": [timedelta(0)]}, "reminders are positive"),
    ],
)
def test_a_deadline_that_could_never_work_is_refused(spec: dict[str, object], refusal: str) -> None:
    with pytest.raises(ValueError, match=refusal):
        Deadline(**spec)  # type: ignore[arg-type]


def test_reminders_fall_before_the_deadline_and_only_those_still_ahead() -> None:
    spec = Deadline(after=timedelta(hours=2), reminders=[timedelta(hours=1), timedelta(hours=24)])
    timeout = spec.timeout({}, NOW)
    assert timeout is not None
    assert timeout.at == NOW + timedelta(hours=2)
    assert timeout.reminders == (NOW + timedelta(hours=1),)


def test_a_deadline_at_a_key_the_graph_asks_with() -> None:
    spec = Deadline(at="by", then="approve")
    timeout = spec.timeout({"by": "2026-12-04T10:00:00+01:00"}, NOW)
    assert timeout is not None and timeout.at == datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    assert spec.timeout({}, NOW) is None  # not asked with: no deadline
    with pytest.raises(ValueError, match="not an ISO time"):
        spec.timeout({"by": "tomorrow"}, NOW)
    with pytest.raises(ValueError, match="no UTC offset"):
        spec.timeout({"by": "2026-12-04T10:00:00"}, NOW)


def test_a_pause_stores_its_deadline_and_reads_it_back() -> None:
    spec = Deadline(after=timedelta(hours=2), then="escalate", role="admin")
    wait = GateWait("review", {"item": 1}).timed(spec, NOW)
    stored = {**wait.to_json(), "pause_id": 4}
    assert stored["deadline"] == {
        "at": (NOW + timedelta(hours=2)).isoformat(),
        "then": "escalate",
        "role": "admin",
    }
    assert parse_wait(stored) == GateWait("review", {"item": 1}, 4, wait.deadline)
    assert parse_wait(stored).wake_at == NOW + timedelta(hours=2)


def test_a_pause_escalated_from_its_own_gate_gets_no_second_deadline() -> None:
    spec = Deadline(after=timedelta(hours=2), then="escalate", role="admin")
    wait = GateWait("review", {"escalated": {"from": "review"}}).timed(spec, NOW)
    assert wait.deadline is None


def test_a_bad_time_to_time_out_at_is_a_wait_no_worker_can_keep() -> None:
    with pytest.raises(UnclaimableWait, match="gate 'review'"):
        GateWait("review", {"by": 12}).timed(Deadline(at="by"), NOW)


def test_only_the_systems_answer_is_a_timeout() -> None:
    timeout = Timeout(NOW, "reject")
    system = {"approver": "system", "payload": {"timed_out": timeout.to_json()}}
    assert timed_out(system) == timeout
    assert timed_out({**system, "approver": "ann"}) is None
    assert timed_out({"approver": "system", "payload": None}) is None


class Nothing(TypedDict, total=False):
    pass


def _workflow(*gates: Gate) -> Workflow:
    builder = StateGraph(Nothing)
    builder.add_node("n", lambda state: {})
    builder.add_edge(START, "n")
    return Workflow("w", "1", builder.compile(), gates=gates)


def test_an_escalation_to_a_gate_not_declared_or_round_in_a_circle_is_refused() -> None:
    hour = timedelta(hours=1)
    with pytest.raises(ValueError, match="escalates to 'lead', which it does not declare"):
        _workflow(
            Gate("a", "A", deadline=Deadline(after=hour, then="escalate", escalate_to="lead"))
        )
    with pytest.raises(ValueError, match="goes round: a -> b -> a"):
        _workflow(
            Gate("a", "A", deadline=Deadline(after=hour, then="escalate", escalate_to="b")),
            Gate("b", "B", deadline=Deadline(after=hour, then="escalate", escalate_to="a")),
        )
    _workflow(  # a chain that ends is fine
        Gate("a", "A", deadline=Deadline(after=hour, then="escalate", escalate_to="b")),
        Gate("b", "B", deadline=Deadline(after=hour, then="fail")),
    )
