"""What the API and the console accept to start work: a new run, a new schedule, a
backfill's range. Each is checked one way, wherever it was sent from (JSON to the
API, a form in the console): the bodies here, then the workflow's input schema."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from engine.app import App
from engine.runtime import schedules, store
from engine.runtime.schedule_times import DEFAULT_CATCHUP, DEFAULT_OVERLAP, Timing
from engine.runtime.store import Connection
from engine.runtime.webhook_targets import run_webhook
from engine.runtime.workflow import checked_input
from engine.settings import Settings

SLUG = store.PROJECT_SLUG.pattern


class NewRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = Field(pattern=SLUG, max_length=63)
    brief: str | None = Field(default=None, max_length=20_000)
    payload: dict[str, Any] = Field(default_factory=dict)
    workflow: str | None = Field(default=None, max_length=100)  # None: the App's first
    # strict: JSON true or 2.0 is not a priority
    priority: int = Field(default=0, ge=-1000, le=1000, strict=True)
    # No daemon claims the run before then (ISO 8601 with its offset; past: at once).
    # Read as `--not-before` is (store.parse_not_before): an epoch number is refused.
    not_before: str | None = Field(
        default=None, max_length=64, json_schema_extra={"format": "date-time"}
    )
    # The client's name for this request, unique per project: sent again (a retry),
    # it answers with the run it created (docs/flow-control.md).
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    # Where the run's gates and end are POSTed, signed (docs/flow-control.md).
    webhook: str | None = Field(default=None, max_length=2048)


class BulkChange(BaseModel):
    """`POST /runs/cancel` and `/runs/retry`: which runs (None: any), and whether only
    to count them."""

    model_config = ConfigDict(extra="forbid")
    status: str | None = Field(default=None, max_length=64)
    project: str | None = Field(default=None, max_length=63)
    older_than: str | None = Field(default=None, max_length=20)  # 45s, 30m, 2h, 7d
    dry_run: bool = False


class NewSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str = Field(max_length=200)
    timezone: str = Field(max_length=100)
    project: str = Field(pattern=SLUG, max_length=63)
    brief: str | None = Field(default=None, max_length=20_000)
    payload: dict[str, Any] = Field(default_factory=dict)
    workflow: str | None = Field(default=None, max_length=100)  # None: the App's first
    overlap: str = Field(default=DEFAULT_OVERLAP, max_length=20)
    catchup: str = Field(default=DEFAULT_CATCHUP, max_length=20)


class BackfillRange(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: AwareDatetime = Field(alias="from")
    end: AwareDatetime = Field(alias="to")


def run_input(served: App, new: NewRun | NewSchedule) -> tuple[str, dict[str, Any]]:
    """The workflow and the input its run starts with, checked as `POST /runs` does."""
    workflow = new.workflow or served.default_workflow
    if workflow not in served.by_name:
        raise store.InvalidInput(f"workflow: no workflow named {workflow!r}")
    brief = store.storable(new.brief, "brief")
    payload = {**new.payload, **({"brief": brief} if brief is not None else {})}
    checked_input(served.by_name[workflow].input_schema, payload)
    return workflow, payload


@dataclass(frozen=True)
class CheckedRun:
    """A new run as `checked_run` found it fit to start."""

    new: NewRun
    workflow: str
    payload: dict[str, Any]
    not_before: datetime | None
    webhook: str | None

    async def start(self, conn: Connection) -> store.Start:
        """The run started (or the one its idempotency key already started)."""
        return await store.start_run(
            conn,
            project=self.new.project,
            payload=self.payload,
            workflow=self.workflow,
            priority=self.new.priority,
            not_before=self.not_before,
            idempotency_key=self.new.idempotency_key,
            webhook_url=self.webhook,
        )


async def checked_run(served: App, settings: Settings, new: NewRun) -> CheckedRun:
    """`new` checked as `POST /runs` checks it, before any row is written: the workflow
    and its input, the start time, the webhook (InvalidInput naming the field)."""
    workflow, payload = run_input(served, new)
    start = (
        store.parse_not_before(new.not_before, "not_before") if new.not_before is not None else None
    )
    webhook = await run_webhook(new.webhook, served.default_webhook, settings, "webhook")
    return CheckedRun(new, workflow, payload, start, webhook)


async def create_schedule(conn: Connection, served: App, new: NewSchedule) -> dict[str, Any]:
    """The schedule `new` asks for, created, with its next fire times (`schedules.view`)."""
    timing = Timing.parse(
        cron=new.cron, timezone=new.timezone, overlap=new.overlap, catchup=new.catchup
    )
    workflow, payload = run_input(served, new)
    row = await schedules.create_schedule(
        conn, timing=timing, project=new.project, workflow=workflow, payload=payload
    )
    return schedules.view(row)
