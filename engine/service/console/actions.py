"""Acting on runs from the console: cancel, retry, fork, start, and cancel or retry a
selection. Each form is answered first with a page that says what it will do and asks
to confirm (`confirm.html`: a form, so no script is needed); sent again with
`confirm=yes`, it is done by what the API's routes call, and the browser goes back with
what was done in its query string (`Outcome`).

Retrying is also how a failed step is resubmitted: the run resumes from its last
checkpoint, so the step that failed runs again, and a provider job that failed is
submitted anew (`retry_run` marks it). There is one button for both.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData

from engine.db.status import TERMINAL, Status
from engine.runtime.store import Refused
from engine.service.console.forms import BulkForm, Operation
from engine.service.console.views import with_query
from engine.service.inputs import CheckedRun

OUTCOMES = ("started", "cancelled", "retried", "forked")
DONE: dict[Operation, str] = {"cancel": "cancelled", "retry": "retried"}
WHO_TAKES = {
    "cancel": "only live runs are cancelled",
    "retry": "only failed runs are retried",
}


def takes(operation: Operation, status: str) -> bool:
    """Whether `operation` changes a run in `status`, as `cancel_run` and `retry_run`
    decide (which check again as they change it)."""
    return status not in TERMINAL if operation == "cancel" else status == Status.FAILED


def confirmed(form: FormData) -> bool:
    return form.get("confirm") == "yes"


@dataclass(frozen=True)
class Confirmation:
    """The page asking whether to do what a form asked."""

    question: str  # the heading: "Cancel run run_…?"
    action: str  # where the yes button posts
    fields: Sequence[tuple[str, str]]  # the form as it came, sent again with confirm=yes
    button: str  # "Yes, cancel it"
    back: str  # where "no" goes
    says: Sequence[str] = ()  # what doing it does
    facts: Sequence[tuple[str, str]] = ()  # what it is done to
    tone: str = "approve"  # the button's look: "reject" for what cannot be undone


def single(operation: Operation, run: Mapping[str, Any], failed_jobs: int) -> Confirmation:
    """Confirm cancelling or retrying `run` (`failed_jobs`: those a retry submits anew);
    `Refused` when it would not change the run."""
    run_id, status = run["run_id"], run["status"]
    if not takes(operation, status):
        raise Refused(f"run {run_id} is {status}: {WHO_TAKES[operation]}")
    back = f"/console/runs/{run_id}"
    facts = [("Run", run_id), ("Project", run["project"]), ("Status", status)]
    if operation == "cancel":
        return Confirmation(
            f"Cancel run {run_id}?",
            f"{back}/cancel",
            [],
            "Yes, cancel it",
            back,
            [
                "The run stops where it is and stays cancelled: it cannot be resumed, "
                "only forked from one of its checkpoints.",
                "A worker still executing a step is fenced out: what it writes after "
                "this is refused.",
            ],
            facts,
            tone="reject",
        )
    return Confirmation(
        f"Retry run {run_id}?",
        f"{back}/retry",
        [],
        "Yes, retry it",
        back,
        [
            "The run is queued again and resumes from its last checkpoint: the step that "
            "failed runs again (this is how a failed step is resubmitted).",
            f"{_jobs(failed_jobs)} will be submitted anew."
            if failed_jobs
            else "No provider job of it failed.",
        ],
        [*facts, ("Error", _error_of(run))],
    )


def fork(run_id: str, checkpoint_id: str, step: int | None) -> Confirmation:
    back = f"/console/runs/{run_id}"
    return Confirmation(
        f"Fork run {run_id}?",
        f"{back}/fork",
        [("checkpoint_id", checkpoint_id)],
        "Yes, fork it",
        f"{back}#checkpoint-{checkpoint_id}",
        [
            "A new run, queued, continues from this checkpoint; the step after it runs "
            "again, with effects of its own (no artifact is copied).",
            f"Run {run_id} stays as it is.",
        ],
        [("Run", run_id), ("Checkpoint", checkpoint_id), ("Step", str(step))],
    )


def starting(checked: CheckedRun, fields: Mapping[str, str], key: str) -> Confirmation:
    """Confirm starting the run `checked`; `key` (an idempotency key) makes a second
    click of the yes button find the run the first one started."""
    new = checked.new
    return Confirmation(
        f"Start a run of {checked.workflow} for project {new.project}?",
        "/console/runs",
        [*fields.items(), ("idempotency_key", key)],
        "Yes, start it",
        "/console/runs",
        [
            f"It waits until {checked.not_before.isoformat()} before a worker takes it."
            if checked.not_before
            else "It is queued: the next free worker takes it."
        ],
        [
            ("Project", new.project),
            ("Workflow", checked.workflow),
            ("Priority", str(new.priority)),
            ("Brief", new.brief or "—"),
        ],
    )


def bulk(chosen: BulkForm, rows: Sequence[Mapping[str, Any]], back: str) -> Confirmation:
    """Confirm cancelling or retrying the runs ticked (`rows`: those found, as they are
    now); `Refused` when it would change none of them."""
    operation, ticked = chosen.operation, len(chosen.run_ids)
    taken = [row for row in rows if takes(operation, row["status"])]
    if not taken:
        raise Refused(f"none of the runs ticked can be {DONE[operation]}: {WHO_TAKES[operation]}")
    says = []
    if (left := ticked - len(taken)) > 0:
        says.append(f"{_runs(left)} of those ticked stay as they are: {WHO_TAKES[operation]}.")
    says.append(
        "Each is queued again from its last checkpoint: its failed step runs again."
        if operation == "retry"
        else "Each stops where it is and stays cancelled; a worker still executing one is "
        "fenced out."
    )
    return Confirmation(
        f"{operation.capitalize()} {_runs(len(taken))}?",
        "/console/runs/bulk",
        [("operation", operation), ("next", back), *(("run_id", r) for r in chosen.run_ids)],
        f"Yes, {operation} {_runs(len(taken))}",
        back,
        says,
        [(row["run_id"], f"{row['project']} · {row['status']}") for row in taken],
        tone="reject" if operation == "cancel" else "approve",
    )


@dataclass(frozen=True)
class Outcome:
    """What an action on runs did, from the query string it sent the browser back with."""

    done: str  # one of OUTCOMES
    changed: int | None = None  # a selection's: how many of `ticked` it changed
    ticked: int | None = None
    jobs: int = 0  # retried: the failed provider jobs to be submitted anew

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> "Outcome | None":
        done = params.get("done", "")
        if done not in OUTCOMES:
            return None
        changed, ticked, jobs = (
            int(n) if n.isdigit() and len(n) <= 6 else None
            for n in (params.get(key, "") for key in ("changed", "ticked", "jobs"))
        )
        return cls(done, changed, ticked, jobs or 0)

    def path(self, back: str) -> str:
        counts = {"changed": self.changed, "ticked": self.ticked, "jobs": self.jobs or None}
        given = {name: n for name, n in counts.items() if n is not None}
        return with_query(back, done=self.done, **given)

    @property
    def message(self) -> str:
        if self.changed is not None and self.ticked is not None:
            done = "Cancelled" if self.done == "cancelled" else "Queued again"
            moved = self.ticked - self.changed
            left = f" ({moved} left as {'it was' if moved == 1 else 'they were'})"
            return f"{done} {self.changed} of the {_runs(self.ticked)} ticked{left * (moved > 0)}."
        if self.done == "retried":
            jobs = f"; {_jobs(self.jobs)} will be submitted anew" if self.jobs else ""
            return f"Queued again from its last checkpoint{jobs}."
        return {
            "started": "Started this run.",
            "cancelled": "Cancelled this run.",
            "forked": "Forked: this run continues from the checkpoint of its source.",
        }[self.done]


def _runs(n: int) -> str:
    return f"{n} run{'s' * (n != 1)}"


def _jobs(n: int) -> str:
    return f"{n} failed provider job{'s' * (n != 1)}"


def _error_of(run: Mapping[str, Any]) -> str:
    """The run's error in a line: its type and message, as the executor records them."""
    error = run.get("error")
    if isinstance(error, dict) and {"type", "message"} <= error.keys():
        return f"{error['type']}: {error['message']}"[:500]
    return "—" if error is None else str(error)[:500]
