"""A run's history over HTTP: `GET /runs/{run_id}/history` lists its checkpoints,
`POST /runs/{run_id}/fork` starts a new run from one of them (`engine.runtime.forks`).

What a page shows of the values the steps wrote is bounded whatever they hold: a
page of checkpoints (at most `MAX_PAGE`), a few writes each, each value cut to a
preview (`engine.service.previews`).
"""

from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from engine.db.connections import Pool
from engine.runtime.forks import CheckpointNotFound, fork_run
from engine.runtime.history import MAX_PAGE, PAGE, History, run_history
from engine.service.answers import GUARDED, refusals
from engine.service.previews import pruned
from engine.service.refusals import error

# What one entry shows of each value written, and of the values it paused with.
WRITE_PREVIEW_BYTES = 2048
INTERRUPTS_PREVIEW_BYTES = 4096
# What a fork's answer says of the new run (its payload is the source's: `GET /runs/{id}`).
FORK_FIELDS = ("run_id", "project", "workflow", "graph_version", "status", "created_at")


class NewFork(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # None: the source's latest checkpoint
    checkpoint_id: str | None = Field(default=None, min_length=1, max_length=100)


def history_json(history: History) -> dict[str, Any]:
    """A page of history as the API and `runs history --json` show it: every value
    written cut to a preview."""
    checkpoints = []
    for entry in history.entries:
        shown = asdict(entry)
        for write in shown["writes"]:
            write["value"] = pruned(write["value"], budget=WRITE_PREVIEW_BYTES)
        shown["interrupts"] = pruned(entry.interrupts, budget=INTERRUPTS_PREVIEW_BYTES)
        checkpoints.append(shown)
    return {
        "run_id": history.run_id,
        "checkpoints": checkpoints,
        "earlier": history.earlier,
        "before": history.before,
    }


def history_router(pool: Pool, admin: Sequence[Any]) -> APIRouter:
    """The routes; `admin`: the dependencies that require the admin role."""
    router = APIRouter()

    @router.get(
        "/runs/{run_id}/history",
        summary="List a run's checkpoints: what each step wrote, what runs next",
        responses=refusals(*GUARDED, 404),
    )
    async def history(
        run_id: str,
        before: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
    ) -> JSONResponse:
        """The run's checkpoints, oldest first: the newest `limit` older than
        checkpoint `before` (none: up to the newest)."""
        async with pool.connection() as conn:
            found = await run_history(conn, run_id, before=before, limit=limit)
        return JSONResponse(jsonable_encoder(history_json(found)))

    @router.post(
        "/runs/{run_id}/fork",
        status_code=201,
        dependencies=list(admin),
        summary="Start a new run from one of a run's checkpoints",
        responses=refusals(*GUARDED, 404, 409, 413),
    )
    async def fork(run_id: str, new: NewFork | None = None) -> JSONResponse:
        """A new queued run continuing from `checkpoint_id` of this one (none: its latest)."""
        try:
            async with pool.connection() as conn:
                run = await fork_run(conn, run_id, new.checkpoint_id if new else None)
        except CheckpointNotFound as exc:
            return error(404, str(exc), "checkpoint_id")
        shown = {key: run[key] for key in FORK_FIELDS}
        shown |= {"forked_from": run_id, "forked_from_checkpoint": run["forked_from_checkpoint"]}
        return JSONResponse(jsonable_encoder(shown), status_code=201)

    return router
