"""Input the parsers accept but PostgreSQL or the code cannot hold, refused as a 4xx
naming the field before it reaches either.

JSON text may say NaN, Infinity, 1e999 (a float overflowing to infinity), an
integer of any length, a lone surrogate ("\\ud800") or nest without end;
JSONB refuses the first three and NUL, psycopg cannot encode a lone surrogate,
a recursive walk of deep nesting exhausts the stack, and nothing the engine
reads is an integer wider than 64 bits. Paths and query strings may carry NUL
(`%00`), which TEXT refuses.
"""

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 64
_INT64 = range(-(2**63), 2**63)
_SURROGATE = re.compile("[\ud800-\udfff]")
# NaN, Infinity, a NUL or surrogate escape, 19+ digits, or a three-digit exponent.
_MAYBE_UNHOLDABLE = re.compile(rb"NaN|Infinity|\\u0000|\\u[dD][89a-fA-F]|\d{19}|[eE][+-]?\d{3}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Unholdable(ValueError):
    """A value nothing downstream can hold; `field` is its dotted path."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


def error(status_code: int, message: str, field: str | None = None) -> JSONResponse:
    """The services' one refusal shape: `{"error": ..., "field": ...}`."""
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status_code)


class _Constant:
    """NaN or Infinity as parsed: kept, so that the walk can name its path."""

    def __init__(self, text: str) -> None:
        self.text = text


def parse_json(raw: bytes | str, root: str = "body") -> Any:
    """`json.loads`, refusing (`Unholdable`) what it accepts but nothing here can hold.

    Syntax errors raise as `json.loads` raises them.
    """
    try:
        value = json.loads(raw, parse_constant=_Constant)
    except RecursionError:
        raise Unholdable(root or "body", f"nested deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:  # an integer past Python's 4300 digits for int()
        raise Unholdable(root or "body", "an integer is too long to be a number") from None
    text = raw.encode() if isinstance(raw, str) else raw
    # Most bodies cannot hold anything unholdable: skip the walk (C-speed scans only).
    if _MAYBE_UNHOLDABLE.search(text) or text.count(b"[") + text.count(b"{") > MAX_DEPTH:
        check(value, root)
    return value


def check(value: Any, root: str) -> None:
    """Raise `Unholdable` naming the first part of `value` nothing here can hold."""
    problem = find_unholdable(value)
    if problem is not None:
        path, why = problem
        raise Unholdable(".".join([root, *path]), why)


def find_unholdable(value: Any) -> tuple[list[str], str] | None:
    """(path, why) of the first value nothing here can hold, or None.

    Iterative, so that depth itself cannot exhaust the stack; nesting past
    MAX_DEPTH is named by its top-level key alone. Only containers are stacked,
    each with a link to its parent rather than a copy of its path: a 1 MiB body
    can hold half a million leaves, and this runs on the event loop.
    """
    if not isinstance(value, Mapping | list | tuple):
        why = _unholdable_leaf(value)
        return None if why is None else ([], why)
    stack: list[tuple[Any, int, _Link]] = [(value, 0, None)]
    while stack:
        item, depth, link = stack.pop()
        if depth >= MAX_DEPTH and isinstance(item, Mapping | list | tuple) and item:
            return _path(link)[:1], f"nested deeper than {MAX_DEPTH} levels"
        children = item.items() if isinstance(item, Mapping) else enumerate(item)
        for key, child in children:
            if isinstance(key, str) and (bad := _bad_text(key)):
                return _path(link), f"a key {bad}"
            if isinstance(child, Mapping | list | tuple):
                stack.append((child, depth + 1, (str(key), link)))
            elif (why := _unholdable_leaf(child)) is not None:
                return _path((str(key), link)), why
    return None


_Link = tuple[str, Any] | None


def _path(link: _Link) -> list[str]:
    parts = []
    while link is not None:
        parts.append(link[0])
        link = link[1]
    return parts[::-1]


def _unholdable_leaf(item: Any) -> str | None:
    if isinstance(item, _Constant):
        return f"{item.text[:40]} is not a number PostgreSQL can store"
    if isinstance(item, float) and not math.isfinite(item):
        return "the number is out of range (NaN or infinite)"
    if isinstance(item, int) and not isinstance(item, bool) and item not in _INT64:
        return "the integer does not fit in 64 bits"
    if isinstance(item, str):
        return _bad_text(item)
    return None


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain the NUL character (\\u0000)"
    if _SURROGATE.search(text):
        return "must not contain a lone surrogate (\\ud800-\\udfff)"
    return None


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
