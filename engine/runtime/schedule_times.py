"""When a schedule fires: its cron expression in its timezone (croniter, zoneinfo), DST
and the catch-up window. Pure arithmetic; docs/time.md#schedules states the rules.

DST, as croniter computes and this module adjusts (tests/unit/test_schedule_times.py):
- a wall time that does not exist (spring forward) is moved by croniter to the first
  instant after the gap: `30 2 * * *` in Europe/Berlin fires at 03:00 CEST on
  2026-03-29, once; an hourly `30 * * * *` simply has no 02:30 that day;
- a wall time that exists twice (fall back) fires once, at its first occurrence, when
  the expression names its hours (croniter would fire the second one too: it is
  dropped here, as Vixie cron does); with `*` in the hour field both occurrences are
  real, distinct hours and both fire.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from engine.runtime.store import InvalidInput, parse_duration

OVERLAPS = ("skip", "allow", "buffer_one")
DEFAULT_OVERLAP = "skip"
# Long enough for a restart or a rolling deploy, short enough that an outage of hours
# does not flood the queue with missed runs (backfill starts those on purpose).
DEFAULT_CATCHUP = "5m"
_HOUR = 1  # croniter's `expanded`: minute, hour, day, month, weekday[, second[, year]]


class Unschedulable(ValueError):
    """A stored schedule whose times cannot be computed (written by plain SQL, say)."""


@dataclass(frozen=True)
class Timing:
    """A schedule's cron expression, timezone, overlap policy and catch-up window, checked."""

    cron: str
    timezone: str
    overlap: str
    catchup: timedelta

    @classmethod
    def parse(
        cls,
        *,
        cron: str,
        timezone: str,
        overlap: str = DEFAULT_OVERLAP,
        catchup: str = DEFAULT_CATCHUP,
        prefix: str = "",
    ) -> "Timing":
        """Raise `InvalidInput` naming the field (`prefix` + its name: `--cron`, `cron`)."""
        window = parse_duration(catchup, f"{prefix}catchup")
        if window < timedelta(seconds=1):
            raise InvalidInput(f"{prefix}catchup: {catchup!r} is shorter than 1s")
        timing = cls.checked(cron, timezone, overlap, window, prefix)
        if timing.next_after(datetime.now(UTC)) is None:
            raise InvalidInput(f"{prefix}cron: {cron!r} never fires again")
        return timing

    @classmethod
    def checked(
        cls, cron: str, timezone: str, overlap: str, catchup: timedelta, prefix: str = ""
    ) -> "Timing":
        """A timing whose cron, timezone and overlap every computation takes (a stored
        row written by hand may hold others); `InvalidInput` naming the field."""
        try:
            croniter(cron)
        except (CroniterError, ValueError, KeyError) as error:
            raise InvalidInput(
                f"{prefix}cron: {cron!r} is not a cron expression ({error})"
            ) from None
        zone(timezone, f"{prefix}timezone")
        if overlap not in OVERLAPS:
            raise InvalidInput(f"{prefix}overlap: {overlap!r} is not one of {', '.join(OVERLAPS)}")
        return cls(cron, timezone, overlap, catchup)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def fire_times(self, after: datetime) -> Iterator[datetime]:
        """Every fire time strictly after `after`, in order, as UTC instants; it ends
        where the expression does (a year field in the past)."""
        try:
            named_hours = croniter(self.cron).expanded[_HOUR] != ["*"]
            times = croniter(self.cron, after.astimezone(self.zone))
        except (CroniterError, ValueError, KeyError, ZoneInfoNotFoundError) as error:
            raise Unschedulable(f"{self.cron!r} in {self.timezone!r}: {error}") from None
        while True:
            try:
                local: datetime = times.get_next(datetime)
            except CroniterBadDateError:
                return
            if named_hours and _second_pass(local):
                continue
            yield local.astimezone(UTC)

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time after `after`; None if it fires no more."""
        return next(self.fire_times(after), None)

    def between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """The fire times in [start, end], at most `limit` of them (the earliest)."""
        found: list[datetime] = []
        for at in self.fire_times(start - timedelta(microseconds=1)):
            if at > end or len(found) == limit:
                break
            found.append(at)
        return found


def zone(name: str, field: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{field}: {name!r} is not an IANA timezone") from None


@dataclass(frozen=True)
class Due:
    """What a schedule owes at `now`: the fire times to start, the first fire time it
    missed for good (older than the catch-up window) if any, and the first fire time
    not dealt with (None: it fires no more)."""

    start: list[datetime]
    missed_since: datetime | None
    next_fire_at: datetime | None


def due(timing: Timing, next_fire_at: datetime, now: datetime, limit: int) -> Due:
    """The fire times from `next_fire_at` up to `now`: those within the catch-up window
    are started (at most `limit`, the earliest; the rest on the next pass), older ones
    are missed."""
    oldest = now - timing.catchup
    missed_since = None
    at: datetime | None = next_fire_at
    if next_fire_at < oldest:  # skip what is missed without walking it (a year of seconds)
        missed_since = next_fire_at
        at = timing.next_after(oldest - timedelta(microseconds=1))
    start: list[datetime] = []
    if at is not None:
        times = timing.fire_times(at)
        while at is not None and at <= now and len(start) < limit:
            start.append(at)
            at = next(times, None)
    return Due(start, missed_since, at)


def _second_pass(local: datetime) -> bool:
    """Whether `local` is the second occurrence of a wall time that repeats (fall back)."""
    first, second = local.replace(fold=0), local.replace(fold=1)
    return first.utcoffset() != second.utcoffset() and local.utcoffset() == second.utcoffset()
