"""Forking a run: a new run that continues from a checkpoint of another, which is
left as it was (LangGraph's time travel, DBOS's `fork_workflow`, Temporal's reset).

The fork gets a new run id, the source's project, workflow, graph version,
payload and priority, and `forked_from` / `forked_from_checkpoint`. Its
LangGraph thread is a copy of the source's chain of checkpoints up to and
including the fork point, in one transaction with the run's row and its
readable mirror, so a daemon that claims the queued fork finds the fork point
as its latest checkpoint and continues from it (`invoke(None)`), as after a
crash. The fork point's own task writes are not copied: the step after it
runs again, as in LangGraph's time travel, so a fork from the checkpoint
before a gate asks at that gate again. Its effects start afresh too: the
artifacts (the effect ledger) are keyed by run id and none are copied, so a
step after the fork point submits and publishes under the fork's own keys,
while what the state already holds (a script, media) is not made again.
docs/design.md, "History and forks", says why it is built this way.
"""

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import NULL_TASK_ID, RESUME
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from engine.db.queries import QUERIES
from engine.db.status import Status
from engine.runtime.saver import state_json
from engine.runtime.store import Connection, Refused, RunNotFound, new_run_id, storable


class CheckpointNotFound(LookupError):
    def __init__(self, run_id: str, checkpoint_id: str) -> None:
        super().__init__(f"run {run_id} has no checkpoint {checkpoint_id}")


async def fork_run(
    conn: Connection, run_id: str, checkpoint_id: str | None = None
) -> dict[str, Any]:
    """A queued fork of `run_id` from `checkpoint_id` (None: its latest checkpoint).

    `RunNotFound`, `CheckpointNotFound` (not one of the run's), or `Refused`: the run
    is running (its checkpoints are still being written) or has none yet.
    """
    async with conn.transaction():
        params = {"run_id": run_id, "checkpoint_id": storable(checkpoint_id, "checkpoint_id")}
        source = await (await conn.execute(QUERIES["fork_source"], params)).fetchone()
        if source is None:
            raise RunNotFound(run_id)
        if source["status"] == Status.RUNNING:
            raise Refused(
                f"run {run_id} is running: fork it once it pauses or ends (or cancel it first)"
            )
        point = await (await conn.execute(QUERIES["fork_point"], params)).fetchone()
        if point is None and checkpoint_id is not None:
            raise CheckpointNotFound(run_id, checkpoint_id)
        if point is None:
            raise Refused(f"run {run_id} has no checkpoint yet: it has not started")
        fork_id, at = new_run_id(), point["checkpoint_id"]
        cursor = await conn.execute(
            QUERIES["insert_fork"],
            {"run_id": fork_id, "source": run_id, "checkpoint_id": at, "queued": Status.QUEUED},
        )
        fork = await cursor.fetchone()
        assert fork is not None
        await conn.execute(
            QUERIES["copy_thread"],
            {
                "source": run_id,
                "fork": fork_id,
                "checkpoint_id": at,
                "null_task": NULL_TASK_ID,
                "resume": RESUME,
            },
        )
        await conn.execute(
            QUERIES["insert_fork_mirror"],
            {
                "run_id": fork_id,
                "state": await _state_at(conn, fork_id, at),
                "checkpoint_id": at,
                "step": point["step"],
            },
        )
    return dict(fork)


async def _state_at(conn: Connection, run_id: str, checkpoint_id: str) -> str:
    """The readable state at a checkpoint of `run_id`, read back by LangGraph's saver as
    the daemon will read it (which also proves the copy loads)."""
    config: RunnableConfig = {
        "configurable": {"thread_id": run_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}
    }
    try:
        found = await AsyncPostgresSaver(conn).aget_tuple(config)
    except Exception as error:
        raise Refused(f"checkpoint {checkpoint_id} cannot be loaded: {error}") from None
    assert found is not None  # copied just now, in this transaction
    return state_json(found.checkpoint)
