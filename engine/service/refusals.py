"""Input nothing downstream can hold (`engine.runtime.holdable`), refused as a 4xx naming the
field; and the services' one refusal shape. Paths and query strings may carry NUL
(`%00`), which TEXT refuses.
"""

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.runtime.holdable import Unholdable, parse_json

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def error(status_code: int, message: str, field: str | None = None) -> JSONResponse:
    """The services' one refusal shape: `{"error": ..., "field": ...}`."""
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status_code)


def first_invalid(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """A pydantic validation's first error as a refusal names it: (field, "field: why")."""
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"] if part not in ("body", "query"))
    field = field or "body"
    return field, f"{field}: {first['msg']}"


class RefuseUnholdable:
    """NUL in a path, a query string or a form field, and unholdable JSON request bodies,
    get a 422 naming the field before any route sees them.

    Webhook deliveries are exempt: the ingress stores them raw first, then refuses.
    Bodies are read whole, so `BodyLimit` must wrap this middleware.
    """

    def __init__(self, app: ASGIApp, exempt_prefix: str = "/webhooks/") -> None:
        self.app = app
        self.exempt_prefix = exempt_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        field = _nul_in_url(scope)
        exempt = scope["path"].startswith(self.exempt_prefix)
        if field is None and scope["method"] in _BODY_METHODS and not exempt:
            body, receive = await _buffered(receive)
            field = _unholdable_in_body(_content_type(scope), body)
        if field is not None:
            name, why = field
            await error(422, f"{name}: {why}", name)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _nul_in_url(scope: Scope) -> tuple[str, str] | None:
    if "\x00" in scope["path"]:
        return "path", "must not contain the NUL character (%00)"
    return _nul_in_pairs(scope["query_string"].decode("latin-1"))


def _nul_in_pairs(encoded: str) -> tuple[str, str] | None:
    for name, value in parse_qsl(encoded, keep_blank_values=True):
        if "\x00" in name:
            return "query", "a parameter name must not contain the NUL character (%00)"
        if "\x00" in value:
            return name, "must not contain the NUL character (%00)"
    return None


def _content_type(scope: Scope) -> str:
    headers: dict[bytes, bytes] = dict(scope["headers"])
    return headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()


def _unholdable_in_body(content_type: str, body: bytes) -> tuple[str, str] | None:
    if content_type == "application/x-www-form-urlencoded":
        return _nul_in_pairs(body.decode("latin-1"))
    if content_type != "application/json" and not content_type.endswith("+json"):
        return None
    try:
        parse_json(body, root="")
    except Unholdable as refused:
        name = refused.field.lstrip(".") or "body"
        return name, str(refused).split(": ", 1)[1]
    except ValueError:  # not JSON at all (JSONDecodeError, UnicodeDecodeError): the route says so
        return None
    return None


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a `receive` that hands it to the app again."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay
