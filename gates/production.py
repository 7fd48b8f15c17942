"""The production graph's gates: approve the workflow, approve publishing."""

from typing import Any

from langgraph.types import Command

from gates.decision import ask
from personas.state import CREW, ProductionState, next_step

WORKFLOW_GATE = "workflow"
PUBLISH_GATE = "publish"


def _rejected(state: ProductionState, gate: str, comment: str | None) -> Command[str]:
    feedback = [*state.get("feedback", []), comment or f"rejected at the {gate} gate"]
    return Command(goto="brendan", update={"feedback": feedback, "publish_approved": False})


def edited_workflow(payload: dict[str, Any]) -> list[str] | None:
    """The workflow an approver substituted for Brendan's, if any (validated)."""
    workflow = payload.get("workflow")
    if workflow is None:
        return None
    if not isinstance(workflow, list) or not workflow or not set(workflow) <= set(CREW):
        raise ValueError(
            f"approval payload: workflow must be a non-empty list of {', '.join(CREW)}; "
            f"got {workflow!r}"
        )
    return workflow


def workflow_gate(state: ProductionState) -> Command[str]:
    decision = ask(WORKFLOW_GATE, proposal=state.get("proposal", []))
    if not decision.approved:
        return _rejected(state, WORKFLOW_GATE, decision.comment)
    workflow = edited_workflow(decision.payload) or state.get("proposal", [])
    approved: ProductionState = {**state, "workflow": workflow, "done": []}
    return Command(goto=next_step(approved), update={"workflow": workflow, "done": []})


def publish_gate(state: ProductionState) -> Command[str]:
    decision = ask(PUBLISH_GATE, render=state.get("render", {}))
    if not decision.approved:
        return _rejected(state, PUBLISH_GATE, decision.comment)
    return Command(goto="publisher", update={"publish_approved": True})
