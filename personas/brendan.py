"""Brendan, the producer: proposes which personas run, and in which order."""

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from engine.workflow import RunContext
from personas.model import PROPOSE_WORKFLOW
from personas.state import CREW, PersonaNode, ProductionState, round_of

SYSTEM = (
    f"You are Brendan, the producer of a short-video channel. {PROPOSE_WORKFLOW}, "
    f"in order, choosing from: {', '.join(CREW)}. Answer with their names joined by ' -> '."
)


def parse_workflow(reply: str) -> list[str]:
    """The known persona names in the reply, in the order they appear."""
    positions = {persona: reply.find(persona) for persona in CREW if persona in reply}
    return sorted(positions, key=positions.__getitem__)


def make_brendan(model: BaseChatModel) -> PersonaNode:
    async def brendan(state: ProductionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        request = f"Brief: {state.get('brief', '')}"
        if feedback := state.get("feedback"):
            request += "\nThe last proposal was rejected: " + feedback[-1]
        reply = await model.ainvoke([SystemMessage(SYSTEM), HumanMessage(request)])
        proposal = parse_workflow(reply.text)
        if not proposal:
            raise ValueError(f"Brendan proposed no known persona: {reply.text!r}")
        await runtime.context.record_artifact(
            "workflow_proposal",
            key=f"brendan:{round_of(state)}",
            persona="brendan",
            metadata={"workflow": proposal, "reply": reply.text, "round": round_of(state)},
        )
        return {"proposal": proposal, "publish_approved": False}

    return brendan
