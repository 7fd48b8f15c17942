"""Named SQL statements, loaded once from `queries.sql` (`-- name --` blocks)."""

import re
from importlib import resources
from typing import LiteralString, cast

_BLOCK = re.compile(r"^-- (?P<name>\w+) --\n(?:--.*\n)*(?P<sql>(?:(?!-- \w+ --\n).*\n?)*)", re.M)


def load_queries(package: str) -> dict[str, LiteralString]:
    """The named statements of `package`'s `queries.sql`."""
    text = resources.files(package).joinpath("queries.sql").read_text()
    return {
        m["name"]: cast(LiteralString, m["sql"].strip().rstrip(";")) for m in _BLOCK.finditer(text)
    }


QUERIES: dict[str, LiteralString] = load_queries("engine.db")
