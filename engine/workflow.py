"""What the engine runs: named, versioned LangGraph graphs, and the context their nodes get."""

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langgraph.pregel import Pregel
from psycopg.types.json import Jsonb

from engine.database import Pool
from engine.lease import Lease
from engine.sql import QUERIES


@dataclass(frozen=True)
class Workflow:
    """A compiled graph (without a checkpointer: the engine gives each run its own)."""

    name: str
    version: str
    graph: Pregel[Any, Any, Any, Any]


@dataclass(frozen=True)
class RunContext:
    """Handed to every node as LangGraph's runtime context (`runtime.context`)."""

    run_id: str
    project: str
    lease: Lease
    pool: Pool

    async def record_artifact(
        self,
        type: str,
        *,
        key: str,
        persona: str | None = None,
        provider: str | None = None,
        url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        status: str = "done",
    ) -> dict[str, Any]:
        """Write an artifact once per `key` (scoped to the run), fenced by the lease.

        A node that runs again after a crash rewrites the same row instead of
        adding a second one; a worker that lost the run writes nothing.
        """
        async with self.lease.transaction(self.pool) as conn:
            cursor = await conn.execute(
                QUERIES["record_artifact"],
                {
                    "run_id": self.run_id,
                    "type": type,
                    "provider": provider,
                    "persona": persona,
                    "url": url,
                    "metadata": Jsonb(dict(metadata or {})),
                    "idempotency_key": f"{self.run_id}:{key}",
                    "status": status,
                },
            )
            row = await cursor.fetchone()
        assert row is not None
        return dict(row)


WorkflowFactory = Callable[[], Workflow]


def load_workflows(refs: Mapping[str, str]) -> dict[str, Workflow]:
    """Import each 'module:factory' reference and build its workflow."""
    workflows = {}
    for name, ref in refs.items():
        module_name, _, attr = ref.partition(":")
        if not attr:
            raise ValueError(f"workflow {name!r}: reference {ref!r} is not 'module:factory'")
        factory: WorkflowFactory = getattr(importlib.import_module(module_name), attr)
        workflow = factory()
        if workflow.name != name:
            raise ValueError(f"workflow {name!r}: {ref} builds a workflow named {workflow.name!r}")
        workflows[name] = workflow
    return workflows
