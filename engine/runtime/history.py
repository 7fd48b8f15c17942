"""A run's history: its checkpoints in order, each with what made it.

Read from LangGraph's own tables (the thread is the run), in the run's own
namespace only: a subgraph's checkpoints are steps inside one of the run's,
and a fork copies and continues the run's own chain (`engine.runtime.forks`).
Each checkpoint says which nodes' writes made it (the task writes stored on
its parent, as LangGraph keeps them), what they wrote to the state, which
nodes run next (its `branch:to:` channels) and where the run paused after it
(its interrupts). Bounded whatever the state holds: a page of checkpoints at a
time, newest first; a few writes per checkpoint; a value decoded only when it
is small (the API cuts what it shows further: `engine.service.previews`).
"""

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.db.queries import QUERIES
from engine.runtime.mirror import mirror_json
from engine.runtime.store import Connection, get_run, storable

if TYPE_CHECKING:
    from langgraph.checkpoint.serde.base import SerializerProtocol

PAGE = 100
MAX_PAGE = 200
WRITES_SHOWN = 20  # per checkpoint
MAX_VALUE_BYTES = 16 * 1024  # a larger stored value is listed with its size only
_PULL = "~__pregel_pull, "  # LangGraph's path of a node's task (`task_path_str`)
INTERRUPT = "__interrupt__"  # LangGraph's channel of a task's interrupts


@dataclass(frozen=True)
class Write:
    """One value a task wrote to a state channel."""

    node: str
    channel: str
    value: Any  # JSON-compatible; None when `shown` is False
    size: int | None  # bytes stored (None: no value, as for a write of None)
    shown: bool = True  # False: larger than MAX_VALUE_BYTES, or not decodable


@dataclass(frozen=True)
class Entry:
    """One checkpoint of the run."""

    checkpoint_id: str
    parent_checkpoint_id: str | None
    step: int | None
    source: str | None  # LangGraph's: input, loop, update, fork
    at: datetime | None  # the checkpoint's `ts`
    nodes: list[str]  # the nodes whose writes made it
    writes: list[Write]  # what they wrote to the state (at most WRITES_SHOWN)
    writes_not_shown: int
    next: list[str]  # the nodes that run after it
    interrupts: list[Any]  # what the run paused with after it (a gate's request)


@dataclass(frozen=True)
class History:
    run_id: str
    entries: list[Entry]  # oldest first
    earlier: int  # checkpoints older than the first entry, not in this page

    @property
    def before(self) -> str | None:
        """The cursor of the page before this one (None: this is the first)."""
        return self.entries[0].checkpoint_id if self.earlier and self.entries else None


async def run_history(
    conn: Connection, run_id: str, *, before: str | None = None, limit: int = PAGE
) -> History:
    """The newest `limit` checkpoints of `run_id` older than checkpoint `before`
    (None: its newest), oldest first. `RunNotFound` for an unknown run."""
    # Imported here: LangGraph is slow to import, and `orchestrator --help` imports this.
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    # The saver's own serialiser (LangGraph's default): values read back as the run wrote them.
    serde = JsonPlusSerializer()
    await get_run(conn, run_id)
    params = {"run_id": run_id, "before": storable(before, "before"), "limit": limit}
    rows = await (await conn.execute(QUERIES["history_page"], params)).fetchall()
    rows.reverse()
    wanted = {row["checkpoint_id"] for row in rows} | {
        row["parent_checkpoint_id"] for row in rows if row["parent_checkpoint_id"]
    }
    cursor = await conn.execute(
        QUERIES["history_writes"],
        {
            "run_id": run_id,
            "checkpoint_ids": sorted(wanted),
            "interrupt": INTERRUPT,
            "shown": WRITES_SHOWN,
            "max_bytes": MAX_VALUE_BYTES,
        },
    )
    writes: dict[str, list[Write]] = defaultdict(list)
    interrupts: dict[str, list[Any]] = defaultdict(list)
    stored: dict[str, int] = {}
    for write in await cursor.fetchall():
        checkpoint_id = write["checkpoint_id"]
        stored[checkpoint_id] = write["total"]
        if write["channel"] == INTERRUPT:
            interrupts[checkpoint_id] += _paused_with(_decoded(write, serde))
        else:
            writes[checkpoint_id].append(_decoded(write, serde))
    entries = []
    for row in rows:
        parent = row["parent_checkpoint_id"]
        made = writes.get(parent, []) if parent else []
        entries.append(
            Entry(
                checkpoint_id=row["checkpoint_id"],
                parent_checkpoint_id=parent,
                step=row["step"],
                source=row["source"],
                at=_time(row["ts"]),
                nodes=[node_of(path) for path in row["tasks"]],
                writes=made,
                writes_not_shown=max(0, stored.get(parent, 0) - len(made)) if parent else 0,
                next=_following(row["updated"]),
                interrupts=interrupts.get(row["checkpoint_id"], []),
            )
        )
    earlier = rows[0]["total"] - len(rows) if rows else 0
    return History(run_id, entries, earlier)


def node_of(task_path: str) -> str:
    """The node a task ran, from LangGraph's task path (a node's own task); any other
    task (a `Send`'s) by its path."""
    return task_path.removeprefix(_PULL) if task_path.startswith(_PULL) else task_path


def _decoded(row: dict[str, Any], serde: "SerializerProtocol") -> Write:
    node, channel, size = node_of(row["task_path"]), row["channel"], row["size"]
    if size is not None and row["blob"] is None:
        return Write(node, channel, None, size, shown=False)  # too large to decode here
    try:
        value = serde.loads_typed((row["type"], row["blob"] or b""))
    except Exception:  # a type this process cannot rebuild: say that it is there
        return Write(node, channel, None, size, shown=False)
    if channel == INTERRUPT and isinstance(value, list | tuple):
        value = [getattr(interrupt, "value", interrupt) for interrupt in value]
    # As JSON-compatible data, as the state mirror writes it.
    return Write(node, channel, json.loads(mirror_json(value)), size)


def _paused_with(write: Write) -> list[Any]:
    """The values of a task's interrupts (LangGraph stores a list of `Interrupt`s)."""
    if write.shown and isinstance(write.value, list):
        return list(write.value)
    return [{"bytes": write.size, "shown": False}]


def _following(updated: object) -> list[str]:
    if not isinstance(updated, list):
        return []
    return [str(c).removeprefix("branch:to:") for c in updated if str(c).startswith("branch:to:")]


def _time(text: str | None) -> datetime | None:
    """LangGraph's `ts` (ISO 8601, UTC); None for anything else plain SQL stored."""
    try:
        at = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at
