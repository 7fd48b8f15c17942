"""The sandbox provider server: kie.ai, Shotstack and upload-post on loopback.

Each provider lives under its own prefix (`/kie`, `/shotstack/edit/{env}`,
`/upload-post`) followed by the real provider's paths, so a client only needs
its base URL changed. `/_sandbox` inspects and steers it (see `control`).
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import fastapi
from fastapi import APIRouter

from engine.service.serving import serve_http
from providers.sandbox import control, files, kie, shotstack, upload_post
from providers.sandbox.config import SandboxConfig
from providers.sandbox.operations import ProviderRoute
from providers.sandbox.state import Job, JobSettings, SandboxState, opened_database

__all__ = ["SandboxConfig", "create_app", "serve"]

PROVIDER_ROUTERS: tuple[APIRouter, ...] = (kie.router, shotstack.router, upload_post.router)
JOB_KINDS: tuple[type[Job], ...] = (kie.KieTask, shotstack.Render, upload_post.Upload)


def create_app(config: SandboxConfig) -> fastapi.FastAPI:
    operations = frozenset(
        (route.provider, route.name)
        for router in PROVIDER_ROUTERS
        for route in router.routes
        if isinstance(route, ProviderRoute)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        with opened_database(config) as db:
            state = SandboxState(config, JobSettings(config.job_latency), operations, db)
            state.resume(JOB_KINDS)
            app.state.sandbox = state
            async with asyncio.TaskGroup() as tasks:
                webhooks = tasks.create_task(state.webhooks.run())
                yield
                webhooks.cancel()

    app = fastapi.FastAPI(title="sandbox providers", lifespan=lifespan)
    for router in (*PROVIDER_ROUTERS, control.router, files.router):
        app.include_router(router)
    return app


async def serve(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8100) -> None:
    """Run uvicorn in the current event loop until cancelled (no signal handlers of its own)."""
    await serve_http(create_app(config), host, port)
