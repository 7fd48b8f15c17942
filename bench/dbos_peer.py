"""The reference workflow in DBOS Transact: four steps and a `recv` gate.

`n1 → n2 → recv("review") → n4 → n5`, each step a no-op that appends its name,
as the engine's nodes do. Imported only when DBOS is installed (`.[bench]`).
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy
from dbos import DBOS, SetWorkflowID
from psycopg.conninfo import conninfo_to_dict

from bench.reference import APPROVAL

# In-process signal that a workflow reached its gate, so the approval is sent
# the moment it waits (a message sent earlier would be received as well).
_at_gate: dict[str, asyncio.Event] = {}


@DBOS.step()
async def node(name: str, visited: list[str]) -> list[str]:
    return [*visited, name]


@DBOS.workflow()
async def reference_workflow() -> list[str]:
    visited = await node("n1", [])
    visited = await node("n2", visited)
    if (gate := _at_gate.get(DBOS.workflow_id or "")) is not None:
        gate.set()
    decision = await DBOS.recv_async("review", timeout_seconds=60)
    assert decision is not None, "no approval within 60 s"
    visited = await node("n4", visited)
    return await node("n5", visited)


def sqlalchemy_url(conninfo: str) -> str:
    """A psycopg conninfo string (or URL) as the SQLAlchemy URL DBOS wants."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    host = params.get("host", "")
    socket_dir = host.startswith("/")
    return sqlalchemy.URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password") or None,
        host=None if socket_dir else host or None,
        port=int(params["port"]) if params.get("port") and not socket_dir else None,
        database=params.get("dbname"),
        query={"host": host, "port": params.get("port", "5432")} if socket_dir else {},
    ).render_as_string(hide_password=False)


@asynccontextmanager
async def launched(url: str) -> AsyncIterator[None]:
    DBOS(
        config={
            "name": "orchestrator-bench",
            "system_database_url": sqlalchemy_url(url),
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        yield
    finally:
        DBOS.destroy(destroy_registry=False)


async def run_once() -> float:
    """Milliseconds from starting a workflow to its result, approved when it waits."""
    workflow_id = f"wf_{uuid.uuid4().hex}"
    gate = _at_gate[workflow_id] = asyncio.Event()
    started = time.perf_counter()
    try:
        with SetWorkflowID(workflow_id):
            handle = await DBOS.start_workflow_async(reference_workflow)
        await asyncio.wait_for(gate.wait(), 30)
        await DBOS.send_async(workflow_id, APPROVAL, topic="review")
        visited = await handle.get_result()
    finally:
        del _at_gate[workflow_id]
    assert visited == ["n1", "n2", "n4", "n5"], visited
    return (time.perf_counter() - started) * 1000
