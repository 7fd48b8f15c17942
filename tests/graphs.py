"""Tiny workflows for the tests: every node execution is counted in `node_ledger`.

`n1 → n2 → review gate → n4 → n5`, each node sleeping `node_delay` seconds
(from the payload) after recording itself, so a test can kill a daemon while
nodes are in flight. `fail_times` makes n2 raise until it has run that often.
"""

import asyncio
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from engine.workflow import RunContext, Workflow

LEDGER_TABLE = """
CREATE TABLE node_ledger (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL,
    node        TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    executed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
)"""


class LedgerState(TypedDict, total=False):
    project: str
    node_delay: float
    fail_times: int
    visited: list[str]
    decision: dict[str, Any]


async def _record(node: str, runtime: Runtime[RunContext]) -> int:
    """Count this execution; returns how often `node` has now run for this run."""
    ctx = runtime.context
    async with ctx.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO node_ledger (run_id, node, epoch) VALUES (%s, %s, %s)",
            (ctx.run_id, node, ctx.lease.epoch),
        )
        row = await (
            await conn.execute(
                "SELECT count(*) AS n FROM node_ledger WHERE run_id = %s AND node = %s",
                (ctx.run_id, node),
            )
        ).fetchone()
    assert row is not None
    return int(row["n"])


def _step(node: str) -> Any:
    async def step(state: LedgerState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        executions = await _record(node, runtime)
        if node == "n2" and executions <= state.get("fail_times", 0):
            raise RuntimeError(f"n2 fails on purpose (execution {executions})")
        await asyncio.sleep(state.get("node_delay", 0.0))
        return {"visited": [*state.get("visited", []), node]}

    return step


def review(state: LedgerState) -> dict[str, Any]:
    decision = interrupt({"gate": "review", "visited": state.get("visited", [])})
    return {"decision": decision}


def ledger_workflow() -> Workflow:
    builder = StateGraph(LedgerState, context_schema=RunContext)
    for node in ("n1", "n2", "n4", "n5"):
        builder.add_node(node, _step(node))
    builder.add_node("review", review)
    builder.add_edge(START, "n1")
    builder.add_edge("n1", "n2")
    builder.add_edge("n2", "review")
    builder.add_edge("review", "n4")
    builder.add_edge("n4", "n5")
    return Workflow("ledger", "ledger-1", builder.compile())
