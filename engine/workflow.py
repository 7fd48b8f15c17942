"""What the engine runs: named, versioned LangGraph graphs, and the context their nodes get."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from langgraph.pregel import Pregel
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from engine.database import Pool
from engine.lease import Lease
from engine.references import load_reference
from engine.sql import QUERIES
from engine.store import InvalidInput


@dataclass(frozen=True)
class Workflow:
    """A compiled graph (without a checkpointer: the engine gives each run its own)."""

    name: str
    version: str
    graph: Pregel[Any, Any, Any, Any]
    # The run's payload, checked when a run is created: a key it does not declare
    # would become graph state that no approver is ever shown.
    input_schema: type[BaseModel] | None = None


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


@dataclass(frozen=True)
class DeclaredFactory:
    """A workflow factory that names its input schema without being called, so the API
    and the CLI can check a payload without building the graph and its clients."""

    build: WorkflowFactory
    input_schema: type[BaseModel]

    def __call__(self) -> Workflow:
        return replace(self.build(), input_schema=self.input_schema)


def takes_input(schema: type[BaseModel]) -> Callable[[WorkflowFactory], DeclaredFactory]:
    """Decorate a workflow factory with the schema of its runs' payload."""
    return lambda build: DeclaredFactory(build, schema)


def input_schema_of(reference: str, setting: str) -> type[BaseModel] | None:
    """The schema the 'module:factory' at `reference` declares; None: any payload."""
    schema = getattr(load_reference(reference, setting), "input_schema", None)
    if schema is not None and not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ValueError(f"{setting}: {reference}.input_schema is not a pydantic model")
    return schema


def checked_input(schema: type[BaseModel] | None, payload: Mapping[str, Any]) -> None:
    """Raise `InvalidInput` naming the first key of `payload` that `schema` refuses."""
    if schema is None:
        return
    try:
        schema.model_validate(payload)
    except ValidationError as refused:
        first = refused.errors()[0]
        field = ".".join(["payload", *(str(part) for part in first["loc"])])
        raise InvalidInput(f"{field}: {first['msg']}") from None


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
