"""What the engine runs: named, versioned LangGraph graphs, their gates, and the context
their nodes get."""

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from langgraph.pregel import Pregel
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from engine.db.connections import Pool
from engine.db.queries import QUERIES
from engine.runtime.deadlines import Deadline
from engine.runtime.lease import Lease
from engine.runtime.limits import RunLimits
from engine.runtime.session import RunSession
from engine.runtime.store import InvalidInput
from engine.settings import Config

Graph = Pregel[Any, Any, Any, Any]
# The query parameter of a callback URL that names the job's idempotency key.
CALLBACK_KEY = "key"
# Builds a workflow's graph from the process's settings and owns what it opened
# (HTTP clients, model clients) until the process stops.
GraphBuilder = Callable[[Config], AbstractAsyncContextManager[Graph]]


@dataclass(frozen=True)
class Gate:
    """A gate a workflow's graph pauses at (`ask(name, ...)`), as approvers are shown it.

    `shows` labels the keys of the request the graph asks with, in the order shown.
    `edits` is what an approver may send with an approval: a pydantic model whose
    JSON schema the console renders as a form (a field's `json_schema_extra`
    `{"prefill": key}` fills it from the request's `key`) and which every approval's
    payload is checked against before it is written.

    `deadline`: when the gate stops waiting and what it decides then
    (`engine.runtime.deadlines`), or a function of the process's settings that
    gives one (None: the gate waits as long as it takes).
    """

    name: str
    title: str
    description: str = ""
    shows: Mapping[str, str] = field(default_factory=dict)
    edits: type[BaseModel] | None = None
    deadline: Deadline | Callable[[Config], Deadline | None] | None = None

    def resolved(self, config: Config) -> "Gate":
        """This gate with its deadline as `config` sets it."""
        if self.deadline is None or isinstance(self.deadline, Deadline):
            return self
        return replace(self, deadline=self.deadline(config))

    @property
    def timeout(self) -> Deadline | None:
        """The deadline of a resolved gate."""
        if callable(self.deadline):
            raise RuntimeError(f"gate {self.name!r}: its deadline is not resolved")
        return self.deadline


@dataclass(frozen=True)
class Workflow:
    """A graph the engine runs, given compiled (without a checkpointer: the engine gives
    each run its own) or as `build`, which makes it from the settings and owns its
    resources while the process runs."""

    name: str
    version: str
    graph: Graph | None = None
    build: GraphBuilder | None = None
    # The run's payload, checked when a run is created: a key it does not declare
    # would become graph state that no approver is ever shown.
    input_schema: type[BaseModel] | None = None
    gates: Sequence[Gate] = ()

    def __post_init__(self) -> None:
        if (self.graph is None) == (self.build is None):
            raise ValueError(f"workflow {self.name!r}: give either graph or build, not both")
        names = [gate.name for gate in self.gates]
        if len(set(names)) != len(names):
            raise ValueError(f"workflow {self.name!r}: two gates share a name")
        for gate in self.gates:
            if isinstance(gate.deadline, Deadline):
                _check_escalation(self.name, self.gates, gate.name, gate.deadline)

    def gate(self, name: str) -> Gate | None:
        return next((gate for gate in self.gates if gate.name == name), None)

    @asynccontextmanager
    async def opened(self, config: Config) -> AsyncIterator["Workflow"]:
        """This workflow with its graph built, for as long as the block runs."""
        gates = [gate.resolved(config) for gate in self.gates]
        if self.build is None:
            yield replace(self, gates=gates)
            return
        async with self.build(config) as graph:
            yield replace(self, graph=graph, build=None, gates=gates)

    @property
    def compiled(self) -> Graph:
        """The graph of an opened workflow."""
        if self.graph is None:
            raise RuntimeError(f"workflow {self.name!r} is not opened: its graph is not built")
        return self.graph


@dataclass(frozen=True)
class RunContext:
    """Handed to every node as LangGraph's runtime context (`runtime.context`)."""

    project: str
    session: RunSession

    @property
    def run_id(self) -> str:
        return self.session.run_id

    @property
    def lease(self) -> Lease:
        return self.session.lease

    @property
    def pool(self) -> Pool:
        return self.session.pool

    @property
    def limits(self) -> RunLimits:
        """The limits every daemon keeps to: a provider's slots (`slot`, `release`)."""
        return RunLimits(self.session)

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

    def callback_url(self, base: str, idempotency_key: str) -> str:
        """`base` (where a provider calls back) naming the job's `idempotency_key`, so
        that a callback about a job whose id was never recorded (the worker died
        between the provider accepting it and hearing back) can still be matched
        to it: `callback_job` then finds it."""
        joined = "&" if "?" in base else "?"
        return f"{base}{joined}{urlencode({CALLBACK_KEY: idempotency_key})}"

    async def callback_job(self, provider: str, idempotency_key: str) -> str | None:
        """The job of `provider` that a verified callback carrying `idempotency_key`
        names, if one came."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                QUERIES["callback_job"],
                {"provider": provider, "callback_key": idempotency_key, "run_id": self.run_id},
            )
            row = await cursor.fetchone()
        return str(row["job_id"]) if row else None

    def idempotency_key(self, key: str) -> str:
        """`key` scoped to this run: what providers receive as our idempotency key."""
        return f"{self.run_id}:{key}"


def _check_escalation(workflow: str, gates: Sequence[Gate], name: str, deadline: Deadline) -> None:
    """Refuse an escalation to a gate the workflow does not declare, or one that comes
    back around: each escalated pause would time out into the next for ever."""
    seen = [name]
    while deadline.then == "escalate" and deadline.escalate_to not in (None, seen[-1]):
        target = next((gate for gate in gates if gate.name == deadline.escalate_to), None)
        if target is None:
            raise ValueError(
                f"workflow {workflow!r}: gate {seen[-1]!r} escalates to {deadline.escalate_to!r}, "
                "which it does not declare"
            )
        if target.name in seen:
            raise ValueError(
                f"workflow {workflow!r}: escalation goes round: {' -> '.join([*seen, target.name])}"
            )
        seen.append(target.name)
        if not isinstance(target.deadline, Deadline):
            return
        deadline = target.deadline


def checked_input(schema: type[BaseModel] | None, payload: Mapping[str, Any]) -> None:
    """Raise `InvalidInput` naming the first key of `payload` that `schema` refuses."""
    _checked(schema, payload, "payload")


def checked_edit(gate: Gate | None, payload: Mapping[str, Any] | None) -> None:
    """Raise `InvalidInput` naming the first field of an approval's `payload` that its
    gate's `edits` refuses (a gate that declares no edits takes any payload)."""
    if gate is not None and payload is not None:
        _checked(gate.edits, payload, "payload")


def _checked(schema: type[BaseModel] | None, value: Mapping[str, Any], name: str) -> None:
    if schema is None:
        return
    try:
        schema.model_validate(value)
    except ValidationError as refused:
        first = refused.errors()[0]
        where = ".".join([name, *(str(part) for part in first["loc"])])
        raise InvalidInput(f"{where}: {first['msg']}") from None
