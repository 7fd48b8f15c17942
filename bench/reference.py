"""The benchmarks' reference workflow: `n1 → n2 → review gate → n4 → n5`.

The nodes do nothing but append their name to `visited` (a list, so the
checkpoint carries a blob as real graphs' do); a `delay` in the payload makes
each node sleep that long, so a daemon can be killed mid-graph. The same
builder serves the engine (`reference_workflow`, registered as `reference`)
and bare LangGraph (`reference_graph().compile(checkpointer=...)`).
"""

import asyncio
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.types import interrupt

from engine.runtime.workflow import Workflow

NAME = "reference"
NODES = ("n1", "n2", "n4", "n5")
# What a run resumes with: the shape of an `hitl_approvals` row.
APPROVAL = {
    "id": 1,
    "run_id": "run_bench",
    "gate": "review",
    "decision": "approved",
    "approver": "bench",
}


class ReferenceState(TypedDict, total=False):
    project: str
    delay: float
    visited: list[str]
    decision: dict[str, Any]


def _step(node: str) -> Any:
    async def step(state: ReferenceState) -> dict[str, Any]:
        if delay := state.get("delay"):
            await asyncio.sleep(delay)
        return {"visited": [*state.get("visited", []), node]}

    return step


def review(state: ReferenceState) -> dict[str, Any]:
    return {"decision": interrupt({"gate": "review"})}


def reference_graph() -> StateGraph[ReferenceState, Any, ReferenceState, ReferenceState]:
    builder = StateGraph(ReferenceState)
    for node in NODES:
        builder.add_node(node, _step(node))
    builder.add_node("review", review)
    builder.add_edge(START, "n1")
    builder.add_edge("n1", "n2")
    builder.add_edge("n2", "review")
    builder.add_edge("review", "n4")
    builder.add_edge("n4", "n5")
    return builder


def reference_workflow() -> Workflow:
    return Workflow(NAME, "reference-1", reference_graph().compile())
