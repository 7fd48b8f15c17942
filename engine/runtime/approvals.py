"""Who decided what at a run's gates, and the gate an approval answers when its sender
names none: the one the run waits at.

The rows are `hitl_approvals`' own: a person's answer (`approver` as sent, or the
identity that sent it), or the system's at a gate's deadline (approver `system`,
payload `{"timed_out": ...}`: `engine.runtime.deadlines`).
"""

from collections.abc import Callable
from typing import Any

from engine.db.queries import QUERIES
from engine.db.status import PENDING_PREFIX
from engine.runtime import store
from engine.runtime.deadlines import timed_out
from engine.runtime.store import Connection, InvalidInput

SHOWN = 50  # a run's newest approvals that `runs show`, the API and the run page list


async def run_approvals(conn: Connection, run_id: str, limit: int = SHOWN) -> list[dict[str, Any]]:
    """The newest `limit` approvals and rejections of `run_id`, newest first, each with
    `timed_out`: whether it is the system's answer at the gate's deadline."""
    cursor = await conn.execute(QUERIES["run_approvals"], {"run_id": run_id, "limit": limit})
    return [{**row, "timed_out": timed_out(row) is not None} for row in await cursor.fetchall()]


def waiting_gate(run: dict[str, Any]) -> str | None:
    """The gate a run is paused at (status `pending_<gate>`), if any."""
    status: str = run["status"]
    return status.removeprefix(PENDING_PREFIX) if status.startswith(PENDING_PREFIX) else None


def gate_for(run: dict[str, Any], gate: str | None, field: str) -> str:
    """`gate`, or when it is None the gate the run waits at (InvalidInput naming
    `field` when it waits at none)."""
    if gate is not None:
        return gate
    waiting = waiting_gate(run)
    if waiting is None:
        raise InvalidInput(
            f"{field}: run {run['run_id']} waits at no gate (status {run['status']}): name the gate"
        )
    return waiting


async def approve(
    conn: Connection,
    run_id: str,
    *,
    gate: str | None,
    field: str,
    check: Callable[[dict[str, Any], str], None] | None = None,
    **decision: Any,
) -> dict[str, Any]:
    """`store.approve` at `gate`, or at the gate the run waits at when it is None;
    `check(run, gate)` first (it raises for an approval the gate would refuse).
    The approval trigger still has the last word: a run that moved on since it was
    read refuses it."""
    run = await store.get_run(conn, run_id)
    chosen = gate_for(run, gate, field)
    if check is not None:
        check(run, chosen)
    return await store.approve(conn, run_id, gate=chosen, **decision)
