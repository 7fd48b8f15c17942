"""A state as JSON that PostgreSQL's JSONB always holds: the readable mirror.

LangGraph's checkpoint keeps the state exactly (its serde); the mirror in
`orchestration_checkpoints` (and a finished run's `result`) is a view of it
for people and SQL, and must never fail the write that carries it. JSON text
can say what JSONB refuses: a NUL (`\\u0000`, in an LLM's reply), a lone
surrogate, NaN and infinities; and `json.dumps` refuses keys that are not
text (a tuple) and nesting past Python's recursion limit. The mirror writes
those as U+FFFD, as text (`"nan"`, `"('a', 1)"`), or cut at MAX_DEPTH.
"""

import json
import math
import re
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 200
REPLACEMENT = "\ufffd"
# In `json.dumps`' own output: a NUL or a surrogate escape (a lone one is refused;
# a pair is fine, and only costs the careful path).
_SUSPECT = re.compile(r"\\u0000|\\ud[89a-f]", re.IGNORECASE)
_UNENCODABLE = re.compile("[\x00\ud800-\udfff]")


def mirror_json(value: Any) -> str:
    """`value` as JSON text JSONB accepts, whatever it holds."""
    try:
        text = json.dumps(value, default=_plain, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(_holdable(value, 0))
    if _SUSPECT.search(text):
        return json.dumps(_holdable(value, 0))
    return text


def _plain(value: object) -> object:
    """What `json.dumps` cannot encode by itself: a model as its JSON, else its repr."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return repr(value)


def _holdable(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _UNENCODABLE.sub(REPLACEMENT, value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return f"{REPLACEMENT} nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, Mapping):
        return {
            _holdable(k if isinstance(k, str) else str(k), depth): _holdable(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_holdable(item, depth + 1) for item in value]
    return _holdable(_plain(value), depth + 1)
