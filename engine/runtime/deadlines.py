"""Gate deadlines: when a gate decides for itself that nobody answered, and what then.

A workflow's gate spec declares a `Deadline`; when its graph pauses at the gate
the executor turns it into a `Timeout` (the due time and what to do), stored in
`runs.waiting_for.deadline` with `runs.wake_at` the due time. At that time a
daemon's pass (`time_out_gates` in `engine/db/queries.sql`) inserts the system's
answer into `hitl_approvals` (approver `system`, payload `{"timed_out": ...}`),
which the claim hands to the gate's node like any approval; `ask()` reads it
back with `timed_out()`. The approval trigger (migration 0013) refuses a
person's answer once the deadline has passed.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from engine.runtime.timers import LONGEST_WAIT, aware

Action = Literal["reject", "approve", "fail", "escalate"]
ACTIONS: tuple[str, ...] = get_args(Action)
# Who may answer an escalated pause (the API's roles; approvers are anyone who may approve).
EscalationRole = Literal["approver", "admin"]
SYSTEM_APPROVER = "system"  # the name the system's answers are recorded under


@dataclass(frozen=True)
class Timeout:
    """A paused gate's deadline: when it falls due, what the system then decides, and
    when to remind the approvers before it (`waiting_for.deadline`)."""

    at: datetime
    then: Action = "reject"
    comment: str | None = None
    escalate_to: str | None = None  # None: the same gate
    role: EscalationRole | None = None  # the role an escalated pause needs
    reminders: tuple[datetime, ...] = ()

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"at": self.at.isoformat(), "then": self.then}
        optional = {"comment": self.comment, "escalate_to": self.escalate_to, "role": self.role}
        value.update({key: item for key, item in optional.items() if item is not None})
        if self.reminders:
            value["reminders"] = [moment.isoformat() for moment in self.reminders]
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Timeout":
        then = value.get("then", "reject")
        if then not in ACTIONS:
            raise ValueError(f"deadline: unknown action {then!r}")
        return cls(
            at=datetime.fromisoformat(value["at"]),
            then=then,
            comment=value.get("comment"),
            escalate_to=value.get("escalate_to"),
            role=value.get("role"),
            reminders=tuple(datetime.fromisoformat(r) for r in value.get("reminders", ())),
        )


@dataclass(frozen=True)
class Deadline:
    """What a gate spec declares: a deadline `after` the pause, or `at` the time the
    graph asks with under that key (an ISO time taken from its state), and what
    happens then: `reject` (with `comment`, the graph's rejection path), `approve`,
    `fail` the run, or `escalate` (to gate `escalate_to`, else the same gate, for
    approvers holding `role`). `reminders`: how long before the deadline to remind
    the approvers (e.g. 24 h and 1 h)."""

    after: timedelta | None = None
    at: str | None = None
    then: Action = "reject"
    comment: str | None = None
    escalate_to: str | None = None
    role: EscalationRole | None = None
    reminders: Sequence[timedelta] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if (self.after is None) == (self.at is None):
            raise ValueError("a deadline needs either after= (a duration) or at= (a key)")
        if self.after is not None and not timedelta(0) < self.after <= LONGEST_WAIT:
            raise ValueError(f"deadline: after= must be positive and at most {LONGEST_WAIT}")
        if self.then not in ACTIONS:
            raise ValueError(f"deadline: then= must be one of {', '.join(ACTIONS)}")
        if (self.escalate_to or self.role) and self.then != "escalate":
            raise ValueError("deadline: escalate_to= and role= need then='escalate'")
        if any(r <= timedelta(0) for r in self.reminders):
            raise ValueError("deadline: reminders are positive durations before the deadline")

    def timeout(self, request: Mapping[str, Any], now: datetime) -> Timeout | None:
        """The deadline of a pause that asks with `request` at `now`; None when it is
        due `at` a key the request leaves out. ValueError when that key holds no
        aware ISO time."""
        if self.after is not None:
            due = now + self.after
        else:
            moment = request.get(self.at or "")
            if moment is None:
                return None
            try:
                parsed = moment if isinstance(moment, datetime) else datetime.fromisoformat(moment)
            except (TypeError, ValueError):
                raise ValueError(
                    f"deadline: the gate's {self.at!r} is {moment!r}, not an ISO time"
                ) from None
            due = aware(parsed, f"deadline {self.at!r}")
        reminders = tuple(sorted(due - before for before in self.reminders if due - before > now))
        return Timeout(due, self.then, self.comment, self.escalate_to, self.role, reminders)


class GateTimedOut(Exception):
    """A gate whose deadline says `fail`: nobody answered in time. Final: not retried."""

    def __init__(self, gate: str, timeout: Timeout) -> None:
        super().__init__(
            f"gate {gate!r} timed out at {timeout.at.isoformat()}: nobody answered by its deadline"
        )


def timed_out(approval: Mapping[str, Any]) -> Timeout | None:
    """The deadline an approval row answers for the system, if the system gave it."""
    payload = approval.get("payload") or {}
    if approval.get("approver") != SYSTEM_APPROVER or "timed_out" not in payload:
        return None
    return Timeout.from_json(payload["timed_out"])
