"""What a paused run waits for, typed, and the one parser of it.

A graph pauses with LangGraph's `interrupt(value)`; the value says what brings
the run back, and is stored as `runs.waiting_for` (JSONB), which SQL reads too
(the claim, the approval guard's trigger, the seed's queries, the console), so
its shape is fixed:

- a gate: `{"gate": name, ...what the approver is shown, "deadline"?}`; the
  run's status is `pending_<name>` until an approval row for that gate arrives
  (the system's, at the deadline: `engine.runtime.deadlines`);
- a provider job: `{"provider": name, "job_id"?, "wake_at"?, ...}`; the status
  is `waiting_provider` until a webhook about the job or `wake_at` (ISO time);
- a timer (a durable sleep): `{"timer": ISO time}`; the status is
  `waiting_timer` until then, when the claim resumes the run with
  `{"timer": ..., "woke_at": ...}`. (A delayed start waits with the same status
  and `{"not_before": ISO time}`, written by `store.create_run`, not by a graph.)
- a limit (`engine.runtime.limits`): `{"limit": name, "key": job}` for a slot of
  that limit (no `wake_at`: the run is handed one in turn, then due at once),
  or `{"limit": name}` with `wake_at`, the end of a pause of its requests; the
  status is `waiting_limit`, and the claim resumes the run with `{"limit": ...,
  "woke_at": ...}`.

`pause_run` adds `pause_id` (the epoch that paused) to the stored value.
`parse_wait()` reads any form back (the interrupt's value, or the stored row)
into a `GateWait`, a `ProviderWait`, a `TimerWait` or a `LimitWait`; graphs build
them with `ask()`, `sleep()` and `pause()` (and `RunContext.limits`).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from langgraph.types import interrupt

from engine.db.status import Status, pending
from engine.runtime.deadlines import Deadline, GateTimedOut, Timeout, timed_out
from engine.runtime.timers import due_time

# Keys the engine gives meaning to; every other key of a wait is carried as is.
_PAUSE_ID = "pause_id"
_DEADLINE = "deadline"
# What an escalated pause asks with besides the first request: where it came from.
ESCALATED = "escalated"


class UnclaimableWait(ValueError):
    """A wait no worker would ever resume: failing the run beats parking it forever."""


@dataclass(frozen=True)
class GateWait:
    """Paused until a person answers at `gate` (an approval row)."""

    gate: str
    request: Mapping[str, Any] = field(default_factory=dict)  # what the approver is shown
    pause_id: int | None = None  # the pause an approval must name (set by `pause_run`)
    deadline: Timeout | None = None  # set by the executor from the gate's spec

    @property
    def status(self) -> str:
        return pending(self.gate)

    @property
    def wake_at(self) -> datetime | None:
        return self.deadline.at if self.deadline is not None else None

    def timed(self, spec: Deadline | None, now: datetime) -> "GateWait":
        """This pause with the deadline its gate's `spec` gives it at `now`: none for a
        pause escalated from this very gate (it waits for its new approvers)."""
        escalated = self.request.get(ESCALATED)
        if spec is None or self.deadline is not None:
            return self
        if isinstance(escalated, Mapping) and escalated.get("from") == self.gate:
            return self
        try:
            return replace(self, deadline=spec.timeout(self.request, now))
        except ValueError as error:
            raise UnclaimableWait(f"gate {self.gate!r}: {error}") from None

    def to_json(self) -> dict[str, Any]:
        deadline = {} if self.deadline is None else {_DEADLINE: self.deadline.to_json()}
        return {"gate": self.gate, **self.request, **deadline, **_pause(self.pause_id)}


@dataclass(frozen=True)
class ProviderWait:
    """Paused until a provider's webhook about `job_id`, or until `wake_at` to ask it."""

    provider: str
    job_id: str | None = None
    wake_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. the persona waiting
    pause_id: int | None = None

    @property
    def status(self) -> str:
        return Status.WAITING_PROVIDER

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"provider": self.provider, **self.details}
        if self.job_id is not None:
            value["job_id"] = self.job_id
        if self.wake_at is not None:
            value["wake_at"] = self.wake_at.isoformat()
        return {**value, **_pause(self.pause_id)}


@dataclass(frozen=True)
class TimerWait:
    """Paused until `wake_at` (a durable sleep), holding nothing."""

    wake_at: datetime
    pause_id: int | None = None

    @property
    def status(self) -> str:
        return Status.WAITING_TIMER

    def to_json(self) -> dict[str, Any]:
        return {"timer": self.wake_at.isoformat(), **_pause(self.pause_id)}


@dataclass(frozen=True)
class LimitWait:
    """Parked at limit `limit`: for a slot for job `key` (handed over in priority,
    then age order, as slots free), or until `wake_at` (a pause of its requests)."""

    limit: str
    key: str | None = None
    wake_at: datetime | None = None
    pause_id: int | None = None

    @property
    def status(self) -> str:
        return Status.WAITING_LIMIT

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"limit": self.limit}
        if self.key is not None:
            value["key"] = self.key
        if self.wake_at is not None:
            value["until"] = self.wake_at.isoformat()
        return {**value, **_pause(self.pause_id)}


Wait = GateWait | ProviderWait | TimerWait | LimitWait


def parse_wait(value: object) -> Wait:
    """The wait an interrupt's value (or a stored `waiting_for`) names; `UnclaimableWait`
    (a ValueError) when it names none."""
    if isinstance(value, Mapping):
        rest = {key: item for key, item in value.items() if key != _PAUSE_ID}
        pause_id = value.get(_PAUSE_ID)
        pause_id = int(pause_id) if pause_id is not None else None
        if isinstance(gate := rest.pop("gate", None), str):
            deadline = rest.pop(_DEADLINE, None)
            timeout = Timeout.from_json(deadline) if isinstance(deadline, Mapping) else None
            return GateWait(gate, rest, pause_id, timeout)
        if isinstance(provider := rest.pop("provider", None), str):
            job_id, wake_at = rest.pop("job_id", None), rest.pop("wake_at", None)
            return ProviderWait(
                provider,
                str(job_id) if job_id is not None else None,
                datetime.fromisoformat(wake_at) if wake_at else None,
                rest,
                pause_id,
            )
        if isinstance(timer := rest.pop("timer", None), str):
            return TimerWait(datetime.fromisoformat(timer), pause_id)
        if isinstance(limit := rest.pop("limit", None), str):
            key, until = rest.pop("key", None), rest.pop("until", None)
            return LimitWait(
                limit,
                str(key) if key is not None else None,
                datetime.fromisoformat(until) if until else None,
                pause_id,
            )
    raise UnclaimableWait(
        f"interrupt value {value!r} names neither a gate, a provider, a timer nor a limit: "
        "pause with engine.ask(), engine.sleep() or engine.pause()"
    )


def pause(wait: Wait) -> Any:
    """Pause the run until `wait` is answered; the value it is resumed with (the
    approval row for a gate, `{"events": [...]}` for a provider job, `{"timer": ...,
    "woke_at": ...}` for a timer, `{"limit": ..., "woke_at": ...}` for a limit).

    The node runs again from its first line on resume: it must do nothing with
    side effects before this call.
    """
    return interrupt(wait.to_json())


def sleep(duration: timedelta | None = None, *, until: datetime | None = None) -> datetime:
    """Park the run for `duration`, or until `until` (timezone-aware), holding no
    worker (status `waiting_timer`); the time it woke (UTC, by the database's clock).

    The sleep ends the step, as `ask()` does: nodes before this one never run
    again. This node itself runs again from its first line when the run wakes,
    and `sleep()` then returns at once: call it first in its node (or give it a
    node of its own) so that nothing before it runs twice. A time already past
    still pauses, and wakes at the next claim.
    """
    woke = pause(TimerWait(due_time(duration, until, "sleep")))
    return datetime.fromisoformat(woke["woke_at"]).astimezone(UTC)


@dataclass(frozen=True)
class Decision:
    """A person's answer at a gate."""

    approved: bool
    comment: str | None = None
    approver: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)  # e.g. what the approver edited
    timed_out: bool = False  # the system's, at the gate's deadline (approver "system")


def ask(gate: str, **request: Any) -> Decision:
    """Pause at `gate` (status `pending_<gate>`), showing the approver `request`,
    until an approval row arrives; what they decided. As `pause()`, the node runs
    again from its first line on resume.

    At the gate's deadline (its spec's `Deadline`) the system answers instead: a
    rejection or an approval with `timed_out` set; for `escalate`, the question
    is asked again at the gate it escalates to (or this one, for approvers of the
    role it names); for `fail`, `GateTimedOut` fails the run."""
    approval = pause(GateWait(gate, request))
    while (timeout := timed_out(approval)) is not None and timeout.then == "escalate":
        escalated = {"from": gate, "deadline": timeout.at.isoformat()}
        if timeout.role is not None:
            escalated["role"] = timeout.role
        gate = timeout.escalate_to or gate
        approval = pause(GateWait(gate, {**request, ESCALATED: escalated}))
    if timeout is not None and timeout.then == "fail":
        raise GateTimedOut(gate, timeout)
    return Decision(
        approved=approval.get("decision", "approved") == "approved",
        comment=approval.get("comment"),
        approver=approval.get("approver"),
        payload=approval.get("payload") or {},
        timed_out=timeout is not None,
    )


def _pause(pause_id: int | None) -> dict[str, int]:
    return {} if pause_id is None else {_PAUSE_ID: pause_id}
