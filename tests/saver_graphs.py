"""Graphs that hold the saver to LangGraph's contract (tests/integration/test_saver.py).

- `siblings`: two nodes in one superstep; `a` ends at once, `b` fails on its
  first execution a moment later (within the saver's linger). Each execution
  is counted in `node_ledger`.
- `hostile`: a state JSON cannot hold as it is (a NUL, NaN, a tuple key), which
  LangGraph's serde stores fine.
- `nested`: the parent's state, and a subgraph node with a state of its own
  that pauses at a gate: the subgraph's checkpoint is the last one written
  before the pause.
"""

import asyncio
import operator
from collections import defaultdict
from typing import Annotated, Any, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from engine.runtime.workflow import RunContext, Workflow


async def count_execution(node: str, runtime: Runtime[RunContext]) -> int:
    """Record one execution of `node` in `node_ledger`; how often it has now run."""
    ctx = runtime.context
    async with ctx.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO node_ledger (run_id, node, epoch) VALUES (%s, %s, %s)",
            (ctx.run_id, node, ctx.lease.epoch),
        )
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM node_ledger WHERE run_id = %s AND node = %s",
            (ctx.run_id, node),
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


class SiblingState(TypedDict, total=False):
    seen: Annotated[list[str], operator.add]


# Per run: `a` has returned. `b` fails only after that, however slow the machine: a
# sibling still running when its neighbour fails is cancelled, and rightly runs again.
_a_returned: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


async def _a(state: SiblingState, runtime: Runtime[RunContext]) -> SiblingState:
    await count_execution("a", runtime)
    asyncio.get_running_loop().call_soon(_a_returned[runtime.context.run_id].set)
    return {"seen": ["a"]}


async def _b(state: SiblingState, runtime: Runtime[RunContext]) -> SiblingState:
    executions = await count_execution("b", runtime)
    if executions == 1:
        await _a_returned[runtime.context.run_id].wait()
        await asyncio.sleep(0.002)  # `a` has ended: its writes wait in the saver's linger
        raise RuntimeError("b fails on its first execution")
    return {"seen": ["b"]}


def siblings_workflow() -> Workflow:
    builder = StateGraph(SiblingState, context_schema=RunContext)
    builder.add_node("a", _a)
    builder.add_node("b", _b)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    return Workflow("siblings", "1", builder.compile())


class HostileState(TypedDict, total=False):
    reply: dict[Any, Any]
    line: str


def _hostile(state: HostileState) -> HostileState:
    # What an LLM or a tool may hand back.
    return {
        "reply": {"text": "a\x00b", "score": float("nan"), "best": float("inf"), ("a", 1): 2},
        "line": "fine",
    }


def hostile_workflow() -> Workflow:
    builder = StateGraph(HostileState)
    builder.add_node("hostile", _hostile)
    builder.add_edge(START, "hostile")
    return Workflow("hostile", "1", builder.compile())


class ParentState(TypedDict, total=False):
    project: str
    topic: str
    draft: str
    approved: bool


class DraftState(TypedDict, total=False):
    draft: str
    notes: str
    approved: bool


def _write(state: DraftState) -> DraftState:
    return {"draft": "a draft", "notes": "the subgraph's own"}


def _review(state: DraftState) -> DraftState:
    approval = interrupt({"gate": "review", "draft": state.get("draft")})
    return {"approved": approval.get("decision", "approved") == "approved"}


def nested_workflow() -> Workflow:
    drafting = StateGraph(DraftState)
    drafting.add_node("write", _write)
    drafting.add_node("review", _review)
    drafting.add_edge(START, "write")
    drafting.add_edge("write", "review")
    builder = StateGraph(ParentState)
    builder.add_node("drafting", drafting.compile())
    builder.add_edge(START, "drafting")
    return Workflow("nested", "1", builder.compile())
