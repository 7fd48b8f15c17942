"""Stored values cut to a bounded preview, so that no page or response grows with them.

A value is pruned by depth, by items per container and by a budget of bytes
shared across the whole value; what is cut says how much was left out. The
whole value stays where it is stored (the raw endpoints serve it).
"""

import json
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 6
MAX_ITEMS = 50
MAX_TEXT = 2_000
BUDGET = 16 * 1024
MORE = "…"


def pruned(value: Any, *, budget: int = BUDGET) -> Any:
    """`value` as it is when small; otherwise a copy cut to about `budget` bytes."""
    left = [budget]
    return _prune(value, 0, left)


def _prune(value: Any, depth: int, left: list[int]) -> Any:
    if isinstance(value, str):
        room = max(0, min(MAX_TEXT, left[0]))
        left[0] -= min(len(value), room) + 2
        if len(value) <= room:
            return value
        return f"{value[:room]}{MORE} ({len(value) - room} more characters)"
    if not isinstance(value, Mapping | list | tuple):
        left[0] -= 8
        return value
    left[0] -= 2  # even an empty container: a list of empty lists must not escape the budget
    if depth >= MAX_DEPTH and value:
        return f"{MORE} ({_kind(value)} nested deeper than {MAX_DEPTH} levels)"
    if isinstance(value, Mapping):
        kept: dict[str, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_ITEMS or left[0] <= 0:
                kept[MORE] = f"{len(value) - index} more keys"
                break
            kept[str(key)[:MAX_TEXT]] = _prune(item, depth + 1, left)
            left[0] -= len(str(key)) + 4
        return kept
    items: list[Any] = []
    for index, item in enumerate(value):
        if index >= MAX_ITEMS or left[0] <= 0:
            items.append(f"{MORE} {len(value) - index} more items")
            break
        items.append(_prune(item, depth + 1, left))
    return items


def _kind(value: Mapping[str, Any] | list[Any] | tuple[Any, ...]) -> str:
    return f"{len(value)} keys" if isinstance(value, Mapping) else f"{len(value)} items"


def pretty(value: Any) -> str:
    """Indented JSON of the pruned value: its size is bounded whatever `value` holds."""
    return json.dumps(pruned(value), indent=2, ensure_ascii=False, sort_keys=True, default=str)


def bounded(value: Any, max_bytes: int) -> Any:
    """`value` when its JSON fits in `max_bytes`; else a marker saying how large it is,
    with a pruned preview (for lists of rows, where each row must stay small)."""
    size = len(json.dumps(value, ensure_ascii=False, default=str).encode())
    if size <= max_bytes:
        return value
    return {"truncated": True, "bytes": size, "preview": pruned(value, budget=max_bytes // 2)}
