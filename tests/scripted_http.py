"""A provider stand-in on a loopback port that answers from a script and records each call.

The retry and error-classification tests need answers the sandbox would not
give on demand (a 455, a 429 with a hard cap, a slow reply), and they count
attempts where they arrive: on the server.
"""

import asyncio
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

METHODS = ["GET", "POST", "PUT", "DELETE"]

STARTUP_POLL = 0.01  # seconds between looks at whether uvicorn is up (deadline: 5 s)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    form: list[tuple[str, str]]
    received_at: float  # time.monotonic()
    status: int  # what it was answered


class ScriptedServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        # What a path answers once the script is used up (receivers of notifications
        # that fail, or hang, until a test says otherwise).
        self.standing: dict[str, Reply] = {}
        self.calls: list[Call] = []
        self.url = ""
        self.app = Starlette(routes=[Route("/{path:path}", self._answer, methods=METHODS)])

    def reset(self) -> None:
        self.replies.clear()
        self.standing.clear()
        self.calls.clear()

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def _answer(self, request: Request) -> Response:
        received_at = time.monotonic()
        body = await request.body()
        form: list[tuple[str, str]] = []
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form() as parsed:
                form = [
                    (name, value if isinstance(value, str) else f"<file {value.filename}>")
                    for name, value in parsed.multi_items()
                ]
        if self.replies:
            reply = self.replies.popleft()
        else:
            reply = self.standing.get(
                request.url.path, Reply(418, {"message": "no scripted reply left"})
            )
        self.calls.append(
            Call(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                headers={key.lower(): value for key, value in request.headers.items()},
                body=body,
                form=form,
                received_at=received_at,
                status=reply.status,
            )
        )
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


@contextmanager
def serve_scripted() -> Iterator[ScriptedServer]:
    """Serve a `ScriptedServer` on a free loopback port, from a thread of its own.

    One server per test module: starting and stopping uvicorn costs more than
    all of a test's requests, and `reset()` gives each test a clean script.
    """
    scripted = ScriptedServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    scripted.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        scripted.app,
        log_level="warning",
        lifespan="off",
        ws="none",
        loop="asyncio",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="scripted-http")
    thread.start()
    try:
        deadline = time.monotonic() + 5.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scripted provider server did not start")
            time.sleep(STARTUP_POLL)
        yield scripted
    finally:
        server.should_exit = True
        thread.join(timeout=5.0)
        sock.close()


def closed_port_url() -> str:
    """A loopback URL nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
