"""A claim: the run a worker took with `claim_runs`, and how to continue it.

The statement's parameters (`claim_params`) and the shape of its rows (a run,
its fence, what it resumes with, its latest checkpoint in LangGraph's row
shape: `CHECKPOINT_COLUMNS`) are defined here, beside the `Claim` a row
becomes, so that the daemon that claims and the executor that continues read
the same contract.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import psycopg
from psycopg import pq

from engine.db.status import STATUS_PARAMS
from engine.runtime.retry import Unloadable

# The claim's columns holding the run's latest checkpoint (LangGraph's row shape,
# as `AsyncPostgresSaver.SELECT_SQL` reads it).
CHECKPOINT_COLUMNS = (
    "thread_id",
    "checkpoint",
    "checkpoint_ns",
    "checkpoint_id",
    "parent_checkpoint_id",
    "metadata",
    "channel_values",
    "pending_writes",
)


class Held(Protocol):
    """A run as a worker holds it: what a status change is fenced by."""

    @property
    def run_id(self) -> str: ...
    @property
    def epoch(self) -> int: ...


@dataclass(frozen=True)
class HeldRun:
    run_id: str
    epoch: int


@dataclass(frozen=True)
class Claim:
    """A run this worker holds at `epoch`, and how to continue it."""

    run_id: str
    project: str
    workflow: str
    payload: dict[str, Any]
    epoch: int
    resume: dict[str, Any] | None  # the approval, or the provider events, it resumes with
    # Its latest checkpoint, as LangGraph's saver reads it (None: not begun).
    checkpoint: dict[str, Any] | None
    trace_context: dict[str, str] | None = None  # the run's trace, once an execution began it

    @property
    def approval_id(self) -> int | None:
        return approval_id(self.resume)


def approval_id(resume: dict[str, Any] | None) -> int | None:
    """The approval a resume value is (an approval row answers a gate), if it is one."""
    return int(resume["id"]) if resume and "gate" in resume else None


def claim_params(
    limit: int, worker_id: str, lease_ttl: timedelta, versions: dict[str, list[str]]
) -> dict[str, object]:
    """The parameters of `claim_runs`; `versions` as `daemon.workflow_versions()` gives them."""
    return {
        "limit": limit,
        "worker_id": worker_id,
        "lease_ttl": lease_ttl,
        **STATUS_PARAMS,
        **versions,
    }


async def load_claims(
    cursor: psycopg.AsyncCursor[Any],
) -> tuple[list[Claim], list[tuple[HeldRun, Unloadable]]]:
    """The claimed rows as claims, and the runs whose row cannot become one.

    Row by row, because decoding a row can fail (a payload nested deeper than
    `json.loads` goes raises RecursionError) and such a run, left to its lease,
    would crash every worker that claims it in turn. Its id and epoch are
    decoded on their own, to fail it fenced.
    """
    claims: list[Claim] = []
    unloadable: list[tuple[HeldRun, Unloadable]] = []
    rows = cursor.pgresult.ntuples if cursor.pgresult is not None else 0
    for index in range(rows):
        await cursor.scroll(index, mode="absolute")
        try:
            claims.append(claim_from_row(await cursor.fetchone()))
        except Exception as error:
            unloadable.append((_held(cursor, index), Unloadable(error)))
    return claims, unloadable


def claim_from_row(row: dict[str, Any] | None) -> Claim:
    assert row is not None
    return Claim(
        run_id=row["run_id"],
        project=row["project"],
        workflow=row["workflow"],
        payload=row["payload"],
        epoch=row["lease_epoch"],
        resume=row["resume"],
        checkpoint={key: row[key] for key in CHECKPOINT_COLUMNS} if row["checkpoint"] else None,
        trace_context=row["trace_context"],
    )


def _held(cursor: psycopg.AsyncCursor[Any], index: int) -> HeldRun:
    """Row `index`'s run id and epoch, decoded without the rest of the row."""
    assert cursor.pgresult is not None and cursor.description is not None
    values = {}
    for column, described in enumerate(cursor.description):
        if described.name in ("run_id", "lease_epoch"):
            raw = cursor.pgresult.get_value(index, column)
            format = pq.Format(cursor.pgresult.fformat(column))
            loader = cursor.adapters.get_loader(described.type_code, format)
            assert loader is not None and raw is not None
            values[described.name] = loader(described.type_code, cursor).load(raw)
    return HeldRun(values["run_id"], values["lease_epoch"])
