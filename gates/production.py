"""The production graph's gates: approve the workflow, approve publishing."""

from datetime import timedelta

from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine import Config, Deadline, Gate, ask
from gates.settings import GateSettings, OnDeadline
from personas.state import CREW, Persona, ProductionState, next_step

WORKFLOW_GATE = "workflow"
PUBLISH_GATE = "publish"


def _rejected(state: ProductionState, gate: str, comment: str | None) -> Command[str]:
    feedback = [*state.get("feedback", []), comment or f"rejected at the {gate} gate"]
    return Command(goto="brendan", update={"feedback": feedback, "publish_approved": False})


def valid_workflow(workflow: object) -> list[str]:
    """The workflow to run, approved as proposed or as an approver edited it."""
    if not isinstance(workflow, list) or not workflow or not set(workflow) <= set(CREW):
        raise ValueError(
            f"workflow must be a non-empty list of {', '.join(CREW)}; got {workflow!r}"
        )
    if "publisher" in workflow and "editor" not in workflow[: workflow.index("publisher")]:
        raise ValueError("workflow: the publisher needs the editor's video before it")
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


def publish_gate(state: ProductionState) -> Command[str]:
    decision = ask(PUBLISH_GATE, render=state.get("render", {}))
    if not decision.approved:
        return _rejected(state, PUBLISH_GATE, decision.comment)
    return Command(goto="publisher", update={"publish_approved": True})


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
        description="The render goes to the run's platforms through upload-post once approved; "
        "a rejection sends the run back to Brendan with the comment.",
        shows={"render": "The render to publish"},
        deadline=publish_deadline,
    ),
)
