"""What the API answers, as `/openapi.json` documents it: the bodies of runs, approvals
and schedules, and the one refusal body every 4xx carries (`refusals.error`).

The routes return their rows as they are (`JSONResponse`), so these models describe
and do not filter; `tests/integration/test_api.py` checks real answers against them.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# A JSON value as stored; a large one is shown as {"truncated": true, "bytes", "preview"}.
JSON_VALUE = "any JSON; past the API's size bound, {truncated: true, bytes, preview}"


class Refusal(BaseModel):
    """Every refusal: what was wrong, and the field it was in."""

    error: str = Field(description="what was wrong, starting with the field's name when one is")
    field: str | None = Field(
        default=None,
        description="the body key, query parameter, header or path part at fault "
        "(`status`, `payload.publish_at`, `authorization`); absent when none is",
    )
    detail: list[dict[str, Any]] | None = Field(
        default=None, description="422 for a body or query that fits no schema: every problem"
    )


_REFUSALS: dict[int, str] = {
    401: "No identity: send `Authorization: Bearer TOKEN` or sign in to the console "
    "(field `authorization`).",
    403: "Not allowed: the identity's role is too low, the run's pause was escalated past it, "
    "or the request came from another site or (with no token) another host "
    "(field `authorization`, `origin` or `client`).",
    404: "No such run, schedule, provider or webhook event (field `run_id`, `schedule_id`, "
    "`provider` or `event_id`).",
    409: "The database refused the change (the message is its own): the run is not waiting "
    "at that gate or has moved on, has ended, is not failed; or the idempotency key "
    "started another request (field `idempotency_key`).",
    413: "The body is larger than the bound (`ORCHESTRATOR_MAX_BODY_BYTES`, for webhooks "
    "`ORCHESTRATOR_WEBHOOK_MAX_BYTES`); nothing is stored (field `body`).",
    422: "A value is invalid: `field` names it and `error` says why; nothing is written.",
    429: "Too many failed sign-ins from this client or identity, or webhook deliveries from "
    "this provider: retry after `Retry-After` seconds.",
    503: "The database is unreachable: try again (field `database`).",
}
# What the request guard may answer on any route that needs an identity.
GUARDED = (401, 403, 422, 429, 503)


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that may refuse with these status codes."""
    return {code: {"model": Refusal, "description": _REFUSALS[code]} for code in codes}


class _Row(BaseModel):
    # The rows carry more columns than are documented here (lease and trace details).
    model_config = ConfigDict(extra="allow")


class Run(_Row):
    """A run as its row holds it."""

    run_id: str
    project: str
    workflow: str
    status: str = Field(
        description="queued, running, waiting_provider, waiting_timer, pending_<gate>, "
        "published, failed or cancelled"
    )
    payload: Any = Field(description=f"the run's input: {JSON_VALUE}")
    result: Any = Field(description=f"what a published run produced: {JSON_VALUE}")
    error: Any = Field(description=f"why a failed run failed: {JSON_VALUE}")
    waiting_for: Any = Field(
        description=f"what a paused run waits for (its gate's question, pause_id): {JSON_VALUE}"
    )
    attempt: int
    priority: int
    graph_version: str | None
    wake_at: datetime | None = Field(description="when a timer, provider wait or deadline is due")
    schedule_id: str | None
    schedule_fire_time: datetime | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    unrunnable: str | None = Field(
        default=None,
        description="on GET: why no live worker can take this live run ('no live worker runs "
        "W at version V': no daemon has its workflow at that graph version), else null",
    )


class ShownRun(Run):
    """A run as `POST /runs` and `GET /runs/{run_id}` show it: with when it is due."""

    due_at: datetime | None = Field(
        description="when a run asleep, delayed or waiting for a provider is due, or its "
        "gate's deadline"
    )


class Checkpoint(BaseModel):
    """The readable mirror of a run's latest LangGraph state."""

    state: Any = Field(description=JSON_VALUE)
    updated_at: datetime
    checkpoint_id: str | None
    step: int | None


class Artifact(BaseModel):
    id: int
    type: str
    provider: str | None
    persona: str | None
    url: str | None
    metadata: Any = Field(description=JSON_VALUE)
    status: str
    idempotency_key: str | None
    provider_job_id: str | None
    created_at: datetime


class Approval(_Row):
    """An approval as written: a worker takes it up (`consumed_at`) and resumes the run."""

    id: int
    run_id: str
    gate: str
    decision: Literal["approved", "rejected"]
    approver: str | None = Field(
        description="who decided: the identity that sent it, the name given, or `system` "
        "for the system's answer at the gate's deadline"
    )
    approver_ip: str | None
    comment: str | None
    payload: dict[str, Any] | None = Field(
        description=f"an edit sent with it, or the deadline the system answered: {JSON_VALUE}"
    )
    pause_id: int | None
    created_at: datetime
    consumed_at: datetime | None


class Decided(Approval):
    """An approval as a run's page lists it: whether it was the system's at a deadline,
    and whether it was voided (the run left that pause unanswered)."""

    timed_out: bool = Field(description="the system's answer: nobody answered by the deadline")
    voided_at: datetime | None
    void_reason: str | None


class RunView(BaseModel):
    """The seed's triad: the run, its checkpoint and its artifacts; and who decided what."""

    run: ShownRun
    checkpoint: Checkpoint | None
    artifacts: list[Artifact]
    approvals: list[Decided] = Field(description="the run's newest 50 approvals, newest first")


class BulkResult(BaseModel):
    matched: int = Field(description="runs the selection took (at most 10,000)")
    changed: int = Field(description="of those, the runs changed (0 for a dry run)")
    dry_run: bool
    limited: bool = Field(description="the selection stopped at 10,000: run it again")
    run_ids: list[str] = Field(description="the first 100 runs changed (dry run: matched)")


class Schedule(_Row):
    schedule_id: str
    cron: str
    timezone: str
    project: str
    workflow: str
    payload: dict[str, Any]
    overlap: Literal["skip", "allow", "buffer_one"]
    catchup: float = Field(description="seconds: how old a missed fire time may be to start")
    paused: bool
    next_fire_at: datetime
    buffered_fire_at: datetime | None
    upcoming: list[datetime] = Field(description="its next 3 fire times")
    problem: str | None = Field(
        default=None, description="a row no schedule could be created with: why it cannot fire"
    )
    created_at: datetime
    updated_at: datetime


class Backfill(BaseModel):
    fire_times: list[datetime] = Field(description="the fire times in the range")
    created: list[str] = Field(description="the runs started for those that had none")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ok", "unavailable"]
    schema_version: int | None = None
    expected: int | None = Field(default=None, description="the version this code needs")
    database: str | None = Field(default=None, description="why the database is unreachable")


class Delivery(BaseModel):
    """A webhook delivery stored (202), or `{"status": "duplicate"}` (200)."""

    id: int | None = None
    signature_status: str | None = None
    run_id: str | None = None
    status: Literal["duplicate"] | None = None
