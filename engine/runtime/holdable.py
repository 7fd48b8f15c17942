"""Values the parsers accept but PostgreSQL or the code cannot hold, found before they
reach either.

JSON text may say NaN, Infinity, 1e999 (a float overflowing to infinity), an
integer of any length, a lone surrogate ("\\ud800") or nest without end;
JSONB refuses the first three and NUL, psycopg cannot encode a lone surrogate,
a recursive walk of deep nesting exhausts the stack, and nothing the engine
reads is an integer wider than 64 bits.
"""

import json
import math
import re
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 64
_INT64 = range(-(2**63), 2**63)
_SURROGATE = re.compile("[\ud800-\udfff]")
# NaN, Infinity, a NUL or surrogate escape, 19+ digits, or a three-digit exponent.
_MAYBE_UNHOLDABLE = re.compile(rb"NaN|Infinity|\\u0000|\\u[dD][89a-fA-F]|\d{19}|[eE][+-]?\d{3}")


class Unholdable(ValueError):
    """A value nothing downstream can hold; `field` is its dotted path."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


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
