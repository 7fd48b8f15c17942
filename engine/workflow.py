"""What the engine runs: named, versioned LangGraph graphs, and the context their nodes get."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langgraph.pregel import Pregel
from psycopg.types.json import Jsonb

from engine.database import Pool
from engine.lease import Lease
from engine.references import load_reference
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
        provider_job_id: str | None = None,
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
                    "idempotency_key": self.idempotency_key(key),
                    "status": status,
                    "provider_job_id": provider_job_id,
                },
            )
            row = await cursor.fetchone()
        assert row is not None
        return dict(row)

    async def ensure_held(self) -> None:
        """Raise `LeaseLost` unless this worker still holds the run (and renew the lease).

        Call before anything with an effect outside the database, such as a
        provider request, that no fenced write precedes.
        """
        await self.lease.execute(self.pool, QUERIES["fence"], {})

    async def artifact(self, key: str) -> dict[str, Any] | None:
        """The artifact recorded under `key`, if a previous execution got that far."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                QUERIES["get_artifact"], {"idempotency_key": self.idempotency_key(key)}
            )
            row = await cursor.fetchone()
        return dict(row) if row else None

    def idempotency_key(self, key: str) -> str:
        """`key` scoped to this run: what providers receive as our idempotency key."""
        return f"{self.run_id}:{key}"


WorkflowFactory = Callable[[], Workflow]


def load_workflows(refs: Mapping[str, str]) -> dict[str, Workflow]:
    """Build each workflow from its 'module:factory' reference."""
    workflows = {}
    for name, ref in refs.items():
        factory: WorkflowFactory = load_reference(ref, f"workflow {name!r}")
        workflow = factory()
        if workflow.name != name:
            raise ValueError(f"workflow {name!r}: {ref} builds a workflow named {workflow.name!r}")
        workflows[name] = workflow
    return workflows
