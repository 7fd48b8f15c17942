"""Tiny workflows for the tests: every node execution is counted in `node_ledger`.

`n1 → n2 → review gate → n4 → n5`, each node sleeping `node_delay` seconds
(from the payload) after recording itself, so a test can kill a daemon while
nodes are in flight. `fail_times` makes n2 raise until it has run that often.
`sleeper` (`before → nap → after`) sleeps durably (`engine.sleep`) in `nap`.
"""

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict
from uuid import UUID

import psycopg
from langchain_core.callbacks import AsyncCallbackHandler
from langgraph.errors import GraphInterrupt
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from engine import sleep
from engine.db.connections import Pool, database_url, open_pool
from engine.runtime.workflow import Gate, Graph, RunContext, Workflow
from engine.settings import Config, Settings
from personas.graph import PRODUCTION, production_graph

LEDGER_TABLE = """
CREATE TABLE node_ledger (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL,
    node        TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    worker      TEXT,
    parked      BOOLEAN NOT NULL DEFAULT false,
    executed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
)"""


class LedgerState(TypedDict, total=False):
    project: str
    node_delay: float
    fail_times: int
    visited: list[str]
    decision: dict[str, Any]


async def record_node(node: str, runtime: Runtime[RunContext]) -> int:
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
        executions = await record_node(node, runtime)
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
    # A test of versioning runs daemons with two versions of this graph.
    return Workflow(
        "ledger",
        os.environ.get("LEDGER_GRAPH_VERSION", "ledger-1"),
        builder.compile(),
        gates=[REVIEW],
    )


class SleeperState(TypedDict, total=False):
    project: str
    nap: float  # seconds to sleep
    due: str  # when the sleep falls due (ISO)
    woke: str  # when it woke (ISO), as sleep() returned it


async def _before(state: SleeperState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    await record_node("before", runtime)
    return {"due": (datetime.now(UTC) + timedelta(seconds=state.get("nap", 1.0))).isoformat()}


async def _nap(state: SleeperState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    woke = sleep(until=datetime.fromisoformat(state["due"]))  # first: nothing runs twice
    await record_node("nap", runtime)
    return {"woke": woke.isoformat()}


async def _after(state: SleeperState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    await record_node("after", runtime)
    return {}


def sleeper_workflow() -> Workflow:
    """`before → nap → after`: `nap` sleeps until `nap` seconds (from the payload) after
    `before` ran; every node execution is counted in `node_ledger`."""
    builder = StateGraph(SleeperState, context_schema=RunContext)
    builder.add_node("before", _before)
    builder.add_node("nap", _nap)
    builder.add_node("after", _after)
    builder.add_edge(START, "before")
    builder.add_edge("before", "nap")
    builder.add_edge("nap", "after")
    return Workflow("sleeper", "sleeper-1", builder.compile())


class ReviewEdit(BaseModel):
    """One field of each kind the console draws a form for."""

    model_config = ConfigDict(extra="forbid")
    order: list[Literal["n4", "n5"]] = Field(
        default=["n4", "n5"], title="Nodes after the review", json_schema_extra={"prefill": "next"}
    )
    level: Literal["low", "high"] = "low"
    note: str = Field(default="", max_length=50)
    weight: int = Field(default=1, ge=1, le=10)
    urgent: bool = False
    extra: dict[str, int] = Field(default_factory=dict)


REVIEW = Gate(
    "review",
    title="Review the ledger",
    description="Check the nodes so far.",
    shows={"visited": "Nodes so far"},
    edits=ReviewEdit,
)


class NodeLedger(AsyncCallbackHandler):
    """Counts each start of the production nodes that should act once per run, with
    the lease it ran under, and marks the starts that ended by parking the run.

    Gate and wait nodes run again on every resume by design, and collect nodes
    once per wake-up, so they are not counted. A counted node that parks (waiting
    for a limit's slot or a cut-off submit's callback) runs again when it wakes,
    having done nothing yet: the start after a parked one repeats no work.
    """

    COUNTED = frozenset({"brendan", "script_writer", "media", "editor", "publisher"})

    def __init__(self) -> None:
        self._pool: Pool | None = None
        self._rows: dict[UUID, int] = {}  # LangChain's run id of a start → its ledger row

    async def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        node, metadata = kwargs.get("name"), metadata or {}
        if node not in self.COUNTED or node != metadata.get("langgraph_node"):
            return
        # Who ran it, under which lease: the chaos test pairs a second run of a node
        # with the fault that cut the first one off.
        row = await self._write(
            "INSERT INTO node_ledger (run_id, node, epoch, worker) "
            "SELECT run_id, %s, lease_epoch, lease_owner FROM runs WHERE run_id = %s "
            "RETURNING id",
            (node, metadata["thread_id"]),
        )
        if row is not None:
            self._rows[run_id] = row["id"]

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._rows.pop(run_id, None)

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        row = self._rows.pop(run_id, None)
        if row is not None and isinstance(error, GraphInterrupt):
            await self._write("UPDATE node_ledger SET parked = true WHERE id = %s", (row,))

    async def _write(self, query: str, params: tuple[object, ...]) -> dict[str, Any] | None:
        if self._pool is None:
            self._pool = open_pool(database_url(Settings()), Settings(), min_size=1)
            await self._pool.open()
        # The chaos test restarts PostgreSQL: a count lost to it would hide a re-execution.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_fixed(0.2),
            stop=stop_after_delay(60),
            reraise=True,
        ):
            with attempt:
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(query, params)
                    return await cursor.fetchone() if cursor.description else None
        raise AssertionError("unreachable: the retry reraises")


@asynccontextmanager
async def chaos_graph(config: Config) -> AsyncIterator[Graph]:
    """The production graph, its once-per-run nodes counted in `node_ledger`."""
    async with production_graph(config) as graph:
        yield graph.with_config(callbacks=[NodeLedger()])


def chaos_workflow() -> Workflow:
    return replace(PRODUCTION, name="chaos", build=chaos_graph)
