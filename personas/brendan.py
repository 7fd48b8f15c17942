"""Brendan, the producer: proposes which personas run, and in which order.

A proposal is shown to the workflow gate's approvers only if the gate would run it
(`valid_workflow`): one the gate would refuse is sent back to the model with the
reason, and after `ASKS` refused replies the step fails with the last reason.
"""

from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, ValidationError, field_validator

from engine import RunContext
from gates.production import valid_workflow
from personas.model import PROPOSE_WORKFLOW
from personas.state import CREW, Persona, PersonaNode, ProductionState, needs_sentences, round_of

SYSTEM = (
    f"You are Brendan, the producer of a short-video channel. {PROPOSE_WORKFLOW}, "
    f"in order, choosing from: {', '.join(CREW)}. {needs_sentences()}"
)
ASKS = 3  # replies Brendan asks the model for before he gives up on a proposal


class Proposal(BaseModel):
    """The personas to run for the brief, in order, and why."""

    personas: list[Persona] = Field(min_length=1, description="in the order they run, each once")
    reason: str = Field(description="why these personas, in a sentence or two")

    @field_validator("personas")
    @classmethod
    def _each_once(cls, personas: list[Persona]) -> list[Persona]:
        if len(set(personas)) != len(personas):
            raise ValueError("a persona is named more than once")
        return personas


def make_brendan(model: BaseChatModel) -> PersonaNode:
    proposer = model.with_structured_output(Proposal)

    async def propose(request: str) -> Proposal:
        """A proposal the workflow gate would run; ValueError with the last reason if
        the model gave none in ASKS replies."""
        asked, problem = request, ""
        for _ in range(ASKS):
            try:
                proposal = await proposer.ainvoke([SystemMessage(SYSTEM), HumanMessage(asked)])
                if not isinstance(proposal, Proposal):  # a reply that calls no tool: None
                    problem = "the model's reply held no proposal"
                else:
                    valid_workflow(proposal.personas)
                    return proposal
            except (ValidationError, OutputParserException) as invalid:
                problem = _problem(invalid)
            except ValueError as refused:  # valid_workflow's: the gate would not run it
                problem = str(refused)
            asked = f"{request}\nYour last proposal cannot run: {problem}. Propose again."
        raise ValueError(f"Brendan proposed no valid workflow: {problem}")

    async def brendan(state: ProductionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        request = f"Brief: {state.get('brief', '')}"
        if feedback := state.get("feedback"):
            request += "\nThe last proposal was rejected: " + feedback[-1]
        proposal = await propose(request)
        await runtime.context.record_artifact(
            "workflow_proposal",
            key=f"brendan:{round_of(state)}",
            persona="brendan",
            metadata={
                "workflow": proposal.personas,
                "reply": proposal.reason,
                "round": round_of(state),
            },
        )
        return {"proposal": list(proposal.personas), "publish_approved": False}

    return brendan


def _problem(invalid: ValidationError | OutputParserException) -> str:
    """The first thing wrong with a proposal, in one line, without echoing the reply."""
    if isinstance(invalid, ValidationError):
        first = invalid.errors(include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return (str(invalid).strip().splitlines() or ["unparsable"])[0]
