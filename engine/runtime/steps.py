"""A run's steps: each node execution its checkpoints record, how long it took and
what it waited for, the step it is at now, and how the run ended.

Read from the run's history (`engine.runtime.history`): a node runs after one
checkpoint and its writes make the next, so it started at the first one's time
and took until the second's. A step that paused (a gate, a provider job, a
timer) finished only when the run resumed, so its duration holds the wait. The
nodes a run is at now are its newest checkpoint's next ones, as its status says
(running, waiting, failed...). Nothing here is recorded per attempt: a failed
step's attempts and error are the run's (`runs.error`, set when its retries ran
out), and a step that succeeded after retrying shows no count.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from engine.db.queries import QUERIES
from engine.db.status import PENDING_PREFIX, Status
from engine.runtime.history import Entry, node_of
from engine.runtime.store import Connection
from engine.runtime.waits import GateWait, LimitWait, ProviderWait, TimerWait, parse_wait

START, END = "__start__", "__end__"  # LangGraph's names of a graph's entry and exit
CHECKPOINTS_SHOWN = 50  # the newest, whose steps `runs show` and the run page list
_WAITS = (Status.WAITING_PROVIDER, Status.WAITING_TIMER, Status.WAITING_LIMIT)


@dataclass(frozen=True)
class Waited:
    """What a step paused for: a gate, a provider's job, a timer or a limit."""

    kind: str  # gate | provider | timer | limit
    name: str | None = None  # the gate, the provider or the limit
    job_id: str | None = None  # a provider's job
    until: datetime | None = None  # a provider's next poll; when a timer or a pause ends
    deadline: datetime | None = None  # a gate's

    def describe(self) -> str:
        """One line: "gate review, deadline …", "provider render job j-1, next poll …"."""
        words = [self.kind, *filter(None, [self.name])]
        if self.job_id is not None:
            words.append(f"job {self.job_id}")
        parts = [" ".join(words)]
        if self.until is not None:
            next_time = "next poll" if self.kind == "provider" else "until"
            parts.append(f"{next_time} {self.until.isoformat()}")
        if self.deadline is not None:
            parts.append(f"deadline {self.deadline.isoformat()}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Step:
    """One execution of a node."""

    node: str
    state: str  # done, or the run's status at its current step (running, waiting, ...)
    after: str  # the checkpoint it ran after
    started_at: datetime | None  # that checkpoint's time
    ended_at: datetime | None  # done: the checkpoint it made; failed, cancelled: the run's end
    waited: list[Waited] = field(default_factory=list)
    attempts: int | None = None  # known for a failed step only
    error: Any = None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "state": self.state,
            "after": self.after,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "seconds": self.seconds,
            "waited": [w.describe() for w in self.waited],
            "attempts": self.attempts,
            "error": self.error,
        }


@dataclass(frozen=True)
class End:
    """How a run ended: published, failed or cancelled, when, and why."""

    status: str
    at: datetime
    cause: str

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "at": self.at, "cause": self.cause}


def run_steps(run: Mapping[str, Any], entries: Sequence[Entry]) -> list[Step]:
    """The node executions `entries` (a page of the run's history, oldest first)
    record, then the ones the run is at now. The page's oldest checkpoint only
    starts the first step: what made it ran after a checkpoint not in the page."""
    steps = []
    for before, made in pairwise(entries):
        waited = [w for w in map(_waited, before.interrupts) if w is not None]
        for node in made.nodes:
            if node != START:
                steps.append(Step(node, "done", before.checkpoint_id, before.at, made.at, waited))
    if entries and run["status"] != Status.PUBLISHED:
        newest = entries[-1]
        steps += [_current(run, newest, node) for node in newest.next if node != END]
    return steps


def _current(run: Mapping[str, Any], newest: Entry, node: str) -> Step:
    status: str = run["status"]
    if status == Status.FAILED:
        error = run["error"]
        attempts = error.get("attempts") if isinstance(error, Mapping) else None
        ended = run["updated_at"]
        return Step(node, status, newest.checkpoint_id, newest.at, ended, [], attempts, error)
    if status == Status.CANCELLED:
        return Step(node, status, newest.checkpoint_id, newest.at, run["updated_at"])
    waiting = status.startswith(PENDING_PREFIX) or status in _WAITS
    waited = _waited(run["waiting_for"], run["wake_at"]) if waiting else None
    state = "waiting" if waiting else status
    return Step(node, state, newest.checkpoint_id, newest.at, None, [waited] if waited else [])


def _waited(value: object, wake_at: datetime | None = None) -> Waited | None:
    """What an interrupt's value (or the run's `waiting_for`, due at `wake_at`) waits
    for; None for a value that names no wait."""
    try:
        wait = parse_wait(value)
    except (ValueError, TypeError):
        return None
    if isinstance(wait, GateWait):
        deadline = wait.deadline.at if wait.deadline is not None else None
        return Waited("gate", wait.gate, deadline=deadline)
    if isinstance(wait, ProviderWait):
        return Waited("provider", wait.provider, wait.job_id, wake_at or wait.wake_at)
    if isinstance(wait, TimerWait):
        return Waited("timer", until=wait.wake_at)
    assert isinstance(wait, LimitWait)
    return Waited("limit", wait.limit, until=wake_at or wait.wake_at)


def run_end(run: Mapping[str, Any]) -> End | None:
    """How the run ended, if it has: the graph's end, its error, or a cancel."""
    status = run["status"]
    if status == Status.PUBLISHED:
        return End(status, run["updated_at"], "the graph reached its end")
    if status == Status.FAILED:
        return End(status, run["updated_at"], error_text(run["error"]))
    if status == Status.CANCELLED:
        cause = "cancelled on request (runs cancel, the API or the console); who is not recorded"
        return End(status, run["updated_at"], cause)
    return None


def error_text(error: object) -> str:
    """A run's `error` in one line: "RuntimeError: what it said"."""
    if isinstance(error, Mapping) and "message" in error:
        return f"{error.get('type', 'error')}: {error['message']}"
    return "no error recorded" if error is None else str(error)


async def finished_nodes(conn: Connection, run_id: str) -> set[str]:
    """The nodes of the run that have finished at least once, over all its checkpoints."""
    cursor = await conn.execute(QUERIES["finished_tasks"], {"run_id": run_id})
    return {node_of(row["task_path"]) for row in await cursor.fetchall()} - {START}
