"""The script writer: text from the chat model, no provider involved."""

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from engine import RunContext
from personas.state import PersonaNode, ProductionState, round_of


def _finished(state: ProductionState, persona: str, **updates: Any) -> dict[str, Any]:
    return {"done": [*state.get("done", []), persona], **updates}


def make_script_writer(model: BaseChatModel) -> PersonaNode:
    async def script_writer(state: ProductionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        reply = await model.ainvoke(
            [
                SystemMessage("You are the script writer. Write a 30-second video script."),
                HumanMessage(f"Brief: {state.get('brief', '')}"),
            ]
        )
        await runtime.context.record_artifact(
            "script",
            key=f"script_writer:{round_of(state)}",
            persona="script_writer",
            metadata={"text": reply.text},
        )
        return _finished(state, "script_writer", script=reply.text)

    return script_writer
