"""The personas that carry out an approved workflow: script, media, edit, publish.

Until the provider clients land, media, editor and publisher record what
they would ask the providers for, without calling them.
"""

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from engine.workflow import RunContext
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


async def media(state: ProductionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    prompt = f"Key visual for: {state.get('script') or state.get('brief', '')}"[:500]
    item = {"kind": "image", "prompt": prompt}
    await runtime.context.record_artifact(
        "image", key=f"media:{round_of(state)}", persona="media", metadata=item
    )
    return _finished(state, "media", media=[item])


async def editor(state: ProductionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    edit = {
        "script": state.get("script", ""),
        "clips": [m["prompt"] for m in state.get("media", [])],
        "output": {"format": "mp4", "resolution": "hd"},
    }
    await runtime.context.record_artifact(
        "render", key=f"editor:{round_of(state)}", persona="editor", metadata=edit
    )
    return _finished(state, "editor", render=edit)


async def publisher(state: ProductionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    publication = {"project": state.get("project"), "platforms": ["tiktok"], "posted": True}
    await runtime.context.record_artifact(
        "publication",
        key=f"publisher:{round_of(state)}",
        persona="publisher",
        metadata=publication,
    )
    return _finished(state, "publisher", publication=publication)
