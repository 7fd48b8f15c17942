"""Run status names: the one place they are defined (SQL receives them as parameters)."""

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_PROVIDER = "waiting_provider"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELLED = "cancelled"


PENDING_PREFIX = "pending_"
TERMINAL: frozenset[str] = frozenset({Status.PUBLISHED, Status.FAILED, Status.CANCELLED})


def pending(gate: str) -> str:
    """The status of a run paused at HITL gate `gate` (the seed's `pending_workflow`)."""
    return PENDING_PREFIX + gate
