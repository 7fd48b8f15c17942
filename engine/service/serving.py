"""Serve an ASGI app inside our own event loop until the serving task is cancelled."""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 1  # seconds open requests get to finish once serving is cancelled


async def serve_http(
    app: ASGIApp, host: str, port: int, trusted_proxies: Sequence[str] = ()
) -> None:
    """Serve `app` (with its lifespan) until cancelled, then shut it down gracefully.

    The socket is bound here so that a port in use raises `OSError` to the caller
    (uvicorn would `sys.exit` instead). `X-Forwarded-For` and `-Proto` are believed
    only from `trusted_proxies` (uvicorn's default believes any loopback peer, so a
    local process could name any client address).
    """
    server = _EmbeddedServer(
        uvicorn.Config(
            app,
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies),
            lifespan="on",
            ws="none",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
        )
    )
    with _bind(host, port) as listener:
        log.info("serving", extra={"action": "http_serving", "host": host, "port": port})
        serving = asyncio.ensure_future(server.serve(sockets=[listener]))
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            server.should_exit = True
            await serving
            raise


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that
    # say they are TCP, and without it every keep-alive request waits ~40 ms.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    return listener


class _EmbeddedServer(uvicorn.Server):
    """uvicorn 0.54 always enters `capture_signals` in `serve`. The program that
    embeds the server owns the signals (engine.service.signals), so this one takes none."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
