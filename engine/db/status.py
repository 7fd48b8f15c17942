"""Run status names: the one place they are defined (SQL receives them as parameters)."""

from collections.abc import Iterable
from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_PROVIDER = "waiting_provider"
    WAITING_TIMER = "waiting_timer"  # a durable sleep, or a run not to start before wake_at
    WAITING_LIMIT = "waiting_limit"  # parked at a limit: for a provider's slot, or its pause
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELLED = "cancelled"


PENDING_PREFIX = "pending_"
PENDING_LIKE = PENDING_PREFIX.replace("_", r"\_") + "%"  # LIKE pattern of every pending_<gate>
TERMINAL: frozenset[str] = frozenset({Status.PUBLISHED, Status.FAILED, Status.CANCELLED})

# What the SQL (every queries.sql) receives, by name, for the statuses it mentions.
STATUS_PARAMS: dict[str, str] = {
    **{status.name.lower(): status.value for status in Status},
    "pending_prefix": PENDING_PREFIX,
    "pending_like": PENDING_LIKE,
}


def pending(gate: str) -> str:
    """The status of a run paused at HITL gate `gate` (`pending_<gate>`, as the seed names them)."""
    return PENDING_PREFIX + gate


def statuses(gates: Iterable[str]) -> tuple[str, ...]:
    """Every status a run of an App with `gates` can have, in the order a run meets them:
    the live ones, a `pending_<gate>` per gate, then the ends."""
    return (
        *(status for status in Status if status not in TERMINAL),
        *(pending(gate) for gate in gates),
        *(status for status in Status if status in TERMINAL),
    )
