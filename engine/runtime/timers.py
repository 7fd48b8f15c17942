"""When a timer is due: the checks every durable wait's time goes through.

A sleep's duration or `until=`, and a run's `not_before`, become one aware
time here, or a ValueError that names what was wrong: a naive time (which
clock?), a negative duration, or one so long it is a unit mistaken. No
LangGraph here: the CLI checks `--not-before` without importing it.
"""

from datetime import UTC, datetime, timedelta

# The longest sleep or delay taken: anything longer is a unit mistaken (ms for s).
LONGEST_WAIT = timedelta(days=3660)


def due_time(duration: timedelta | None, until: datetime | None, what: str) -> datetime:
    """When a wait of `duration` from now, or until `until`, is due; ValueError
    (naming `what`) for a naive time, a negative or absurd duration, or neither/both."""
    if (duration is None) == (until is None):
        raise ValueError(f"{what}: give a duration or until=, not both or neither")
    if duration is not None:
        if not isinstance(duration, timedelta):
            raise TypeError(f"{what}: the duration must be a timedelta, not {duration!r}")
        if duration < timedelta(0) or duration > LONGEST_WAIT:
            raise ValueError(
                f"{what}: the duration must be between 0 and {LONGEST_WAIT.days} days, "
                f"not {duration}"
            )
        return datetime.now(UTC) + duration
    assert until is not None
    return aware(until, what)


def aware(moment: datetime, what: str) -> datetime:
    """`moment` if it says its UTC offset and lies within `LONGEST_WAIT` of now."""
    if not isinstance(moment, datetime):
        raise TypeError(f"{what}: expected a datetime, not {moment!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{what}: {moment.isoformat()} has no UTC offset; give one "
            "(e.g. 2026-12-03T09:00:00+01:00)"
        )
    if moment - datetime.now(UTC) > LONGEST_WAIT:
        raise ValueError(f"{what}: {moment.isoformat()} is more than {LONGEST_WAIT.days} days away")
    return moment


def time_left(moment: datetime, now: datetime) -> str:
    """How far `moment` is from `now`, as people read it: 'in 1 h 59 min', '40 s ago'."""
    seconds = int((moment - now).total_seconds())
    left = abs(seconds)
    if left < 60:
        amount = f"{left} s"
    elif left < 3600:
        amount = f"{left // 60} min"
    elif left < 48 * 3600:
        amount = f"{left // 3600} h {left % 3600 // 60} min"
    else:
        amount = f"{left // 86400} days"
    return f"in {amount}" if seconds >= 0 else f"{amount} ago"
