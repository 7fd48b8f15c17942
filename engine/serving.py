"""Serve an ASGI app inside our own event loop, stopping when our stop event is set."""

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals belong to the process (engine.signals); uvicorn must not take them.
        yield


async def serve_http(app: ASGIApp, host: str, port: int, stop: asyncio.Event) -> None:
    server = _Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="on", access_log=False
        )
    )

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    async with asyncio.TaskGroup() as group:
        watcher = group.create_task(stop_when_asked())
        await server.serve()
        watcher.cancel()
