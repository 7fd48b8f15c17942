"""The production graph's gates: approve the workflow, approve publishing (at once, or
at the time the approver gives)."""

from datetime import UTC, datetime, timedelta
from typing import Any

from langgraph.types import Command
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from engine import Config, Deadline, Gate, ask
from gates.settings import GateSettings, OnDeadline
from personas.publisher import RECONCILE_GATE
from personas.state import (
    CREW,
    NEEDS,
    PUBLISHER_HOLD,
    Persona,
    ProductionState,
    next_step,
    platforms_of,
)
from providers.upload_post import LONGEST_SCHEDULE

WORKFLOW_GATE = "workflow"
PUBLISH_GATE = "publish"
# A publish_at longer ago than this is a mistyped day or offset, not a slow approval:
# refused at approval rather than posted at once.
STALE_PUBLISH_AT = timedelta(hours=1)
EXAMPLE_TIME = "2027-06-01T09:00:00+02:00"


def _rejected(state: ProductionState, gate: str, comment: str | None) -> Command[str]:
    feedback = [*state.get("feedback", []), comment or f"rejected at the {gate} gate"]
    return Command(goto="brendan", update={"feedback": feedback, "publish_approved": False})


def valid_workflow(workflow: object) -> list[str]:
    """The workflow to run, approved as proposed or as an approver edited it."""
    if not isinstance(workflow, list) or not workflow or not set(workflow) <= set(CREW):
        raise ValueError(
            f"workflow must be a non-empty list of {', '.join(CREW)}; got {workflow!r}"
        )
    for persona, (needed, what) in NEEDS.items():
        if persona in workflow and needed not in workflow[: workflow.index(persona)]:
            raise ValueError(f"workflow: the {persona} needs the {needed}'s {what} before it")
    return list(workflow)


def workflow_gate(state: ProductionState) -> Command[str]:
    problem: dict[str, str] = {}
    while True:
        decision = ask(WORKFLOW_GATE, proposal=state.get("proposal", []), **problem)
        if not decision.approved:
            return _rejected(state, WORKFLOW_GATE, decision.comment)
        try:
            workflow = valid_workflow(decision.payload.get("workflow", state.get("proposal")))
        except ValueError as error:
            # Ask again, saying why: a typo in an edit must not fail the run.
            problem = {"problem": str(error)}
            continue
        break
    approved: ProductionState = {**state, "workflow": workflow, "done": []}
    return Command(goto=next_step(approved), update={"workflow": workflow, "done": []})


def publish_time(value: object) -> datetime | None:
    """When to publish, as an approval's payload says: None (at once), or an ISO 8601
    time with its UTC offset at most as far ahead as upload-post schedules; ValueError
    naming publish_at otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"publish_at: give an ISO 8601 time such as {EXAMPLE_TIME}, not {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"publish_at: {value[:40]!r} is not an ISO 8601 time (e.g. {EXAMPLE_TIME})"
        ) from None
    if moment.utcoffset() is None:
        raise ValueError(f"publish_at: {value} has no UTC offset; give one (e.g. {EXAMPLE_TIME})")
    if moment - datetime.now(UTC) > LONGEST_SCHEDULE:
        raise ValueError(
            f"publish_at: {value} is more than {LONGEST_SCHEDULE.days} days away "
            "(upload-post schedules posts at most that far ahead)"
        )
    return moment


def publish_request(state: ProductionState) -> dict[str, Any]:
    """Everything an approver needs to let the post go: the render, the script that is
    its caption, the images in it and where it will be posted (the time is the form's)."""
    return {
        "render": state.get("render", {}),
        "script": state.get("script", ""),
        "images": [item["url"] for item in state.get("media", []) if item.get("kind") == "image"],
        "platforms": platforms_of(state),
    }


def publish_gate(state: ProductionState) -> Command[str]:
    problem: dict[str, str] = {}
    while True:
        decision = ask(PUBLISH_GATE, **publish_request(state), **problem)
        if not decision.approved:
            return _rejected(state, PUBLISH_GATE, decision.comment)
        try:
            # Checked at approval already; this catches a payload inserted by plain SQL.
            publish_at = publish_time(decision.payload.get("publish_at"))
        except ValueError as error:
            problem = {"problem": str(error)}
            continue
        break
    when = publish_at.astimezone(UTC).isoformat() if publish_at is not None else None
    return Command(goto=PUBLISHER_HOLD, update={"publish_approved": True, "publish_at": when})


class WorkflowEdit(BaseModel):
    """What an approver may change at the workflow gate: the personas and their order."""

    model_config = ConfigDict(extra="forbid")
    workflow: list[Persona] = Field(
        min_length=1,
        title="Personas to run, in order",
        json_schema_extra={"prefill": "proposal"},
    )

    @field_validator("workflow")
    @classmethod
    def _runnable(cls, workflow: list[Persona]) -> list[Persona]:
        valid_workflow(workflow)
        return workflow


class PublishEdit(BaseModel):
    """What an approver may set at the publish gate: when the post goes out."""

    model_config = ConfigDict(extra="forbid")
    publish_at: AwareDatetime | None = Field(
        default=None,
        title=f"Publish at (ISO 8601 with its offset, e.g. {EXAMPLE_TIME}; empty: now)",
    )

    @field_validator("publish_at", mode="before")
    @classmethod
    def _when(cls, value: Any) -> datetime | None:
        moment = publish_time(value)
        if moment is not None and datetime.now(UTC) - moment > STALE_PUBLISH_AT:
            raise ValueError(
                f"publish_at: {value} is more than an hour ago; leave it out to publish now"
            )
        return moment


def _deadline(
    after: timedelta | None, then: OnDeadline, reminders: tuple[timedelta, ...], what: str
) -> Deadline | None:
    if after is None:
        return None
    comment = f"nobody decided on the {what} within {after}: " + (
        "propose again" if then == "reject" else f"the system chose to {then}"
    )
    return Deadline(
        after=after,
        then=then,
        comment=comment if then == "reject" else None,
        role="admin" if then == "escalate" else None,
        reminders=reminders,
    )


def workflow_deadline(config: Config) -> Deadline | None:
    gates = config[GateSettings]
    return _deadline(
        gates.workflow_gate_deadline,
        gates.workflow_gate_on_deadline,
        gates.gate_reminders,
        "proposed workflow",
    )


def publish_deadline(config: Config) -> Deadline | None:
    gates = config[GateSettings]
    return _deadline(
        gates.publish_gate_deadline, gates.publish_gate_on_deadline, gates.gate_reminders, "render"
    )


GATES = (
    Gate(
        WORKFLOW_GATE,
        title="Approve the workflow",
        description="Brendan proposes which personas run, in order. Change the proposal "
        "before approving, or reject it with what should change (e.g. 'skip media').",
        shows={"proposal": "Brendan proposes", "problem": "The last edit was refused"},
        edits=WorkflowEdit,
        deadline=workflow_deadline,
    ),
    Gate(
        PUBLISH_GATE,
        title="Approve publishing",
        description="The render goes to the run's platforms through upload-post once approved, "
        "at once or at the time set below; a rejection sends the run back to Brendan with "
        "the comment.",
        shows={
            "render": "The render to publish",
            "script": "The script (its caption)",
            "images": "The images in it",
            "platforms": "Posts to",
            "problem": "The last approval was refused",
        },
        edits=PublishEdit,
        deadline=publish_deadline,
    ),
    Gate(
        RECONCILE_GATE,
        title="Did the post go out?",
        description="The publisher was cut off while posting and upload-post cannot say "
        "whether the post exists. Check the channels: approve if there is no post (it is "
        "posted then), reject if it is out there (it is not posted again).",
        shows={"reason": "Why upload-post could not tell", "request_id": "The post's request id"},
    ),
)
