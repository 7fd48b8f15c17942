"""Is the process alive, and can it work? For Kubernetes probes and systemd's watchdog."""

import time
from typing import Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from engine.db.connections import Pool
from engine.db.migrations import discover
from engine.db.queries import QUERIES
from engine.observability.telemetry import DISABLED, Telemetry


class Vitals(Protocol):
    """What the daemon says of itself."""

    @property
    def last_tick(self) -> float:
        """`time.monotonic()` of the work loop's latest turn."""

    @property
    def listening(self) -> bool:
        """LISTEN is established (or not wanted)."""


async def schema_ready(pool: Pool) -> JSONResponse:
    """200 when the database answers and its schema is at least this code's."""
    head = len(discover())
    try:
        async with pool.connection(timeout=2) as conn:
            row = await (await conn.execute(QUERIES["schema_version"])).fetchone()
    except Exception as exc:  # any failure to reach the database means not ready
        return JSONResponse({"status": "unavailable", "database": str(exc)}, status_code=503)
    version = row["version"] if row else None
    # A newer schema is fine: migrations are additive, so old code keeps working
    # while a rolling upgrade replaces it.
    if version is None or version < head:
        return JSONResponse(
            {"status": "unavailable", "schema_version": version, "expected": head},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "schema_version": version})


async def metrics(telemetry: Telemetry, pool: Pool) -> Response:
    """This process's metrics as Prometheus text, the run counts refreshed when stale."""
    if not telemetry.enabled:
        return JSONResponse({"error": "telemetry is off (ORCHESTRATOR_TELEMETRY=false)"}, 404)
    await telemetry.stats.refresh(pool)
    return Response(telemetry.prometheus_text(), media_type=CONTENT_TYPE_LATEST)


def health_app(
    vitals: Vitals, pool: Pool, stale_after: float, telemetry: Telemetry = DISABLED
) -> FastAPI:
    """The daemon's small health port: /healthz (loop turning), /readyz (can do work),
    /metrics (Prometheus)."""
    app = FastAPI(title="orchestrator daemon health", openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        idle = time.monotonic() - vitals.last_tick
        if idle > stale_after:
            return JSONResponse({"status": "stalled", "loop_idle_s": round(idle, 1)}, 503)
        return JSONResponse({"status": "ok", "loop_idle_s": round(idle, 1)})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not vitals.listening:
            return JSONResponse({"status": "unavailable", "listener": "reconnecting"}, 503)
        return await schema_ready(pool)

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return await metrics(telemetry, pool)

    return app
