"""The workers over HTTP: `GET /workers` lists each daemon's heartbeat row and the
live runs that no live worker can take (`engine.runtime.workers`)."""

from datetime import datetime

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from engine.db.connections import Pool
from engine.runtime import workers
from engine.service.answers import GUARDED, refusals


class Worker(BaseModel):
    worker_id: str
    host: str
    pid: int
    version: str = Field(description="the engine's package version it runs")
    workflows: dict[str, str] = Field(description="each workflow it runs -> its graph version")
    concurrency: int = Field(description="runs it executes at once, at most")
    runs_held: int = Field(description="runs it held at its last heartbeat")
    started_at: datetime
    last_seen: datetime = Field(description="its last heartbeat (every lease_ttl/3)")
    live_until: datetime = Field(description="gone unless seen again by then (2 lease TTLs)")
    live: bool
    seen: str = Field(description="when it was last seen, as people read it: '3 s ago'")


class Unrunnable(BaseModel):
    """Live runs of one workflow and graph version that no live worker can take."""

    workflow: str
    graph_version: str | None = Field(description="none: runs not begun (any version may)")
    runs: int
    reason: str = Field(description="'no live worker runs W at version V'")


class Workers(BaseModel):
    workers: list[Worker] = Field(description="the live ones first, then the gone ones")
    unrunnable: list[Unrunnable]


def workers_router(pool: Pool) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/workers",
        summary="List the workers and the runs no live worker can take",
        response_model=Workers,
        responses=refusals(*GUARDED),
    )
    async def list_workers() -> JSONResponse:
        async with pool.connection() as conn:
            return JSONResponse(jsonable_encoder(await workers.overview(conn)))

    return router
