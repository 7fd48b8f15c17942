"""A timer's due time: durations and times are checked before anything parks."""

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.runtime.store import InvalidInput, parse_not_before
from engine.runtime.timers import LONGEST_WAIT, due_time


def test_a_duration_falls_due_that_long_from_now() -> None:
    before = datetime.now(UTC)
    due = due_time(timedelta(minutes=10), None, "sleep")
    assert before + timedelta(minutes=10) <= due <= datetime.now(UTC) + timedelta(minutes=10)
    assert due_time(timedelta(0), None, "sleep") <= datetime.now(UTC)


def test_until_keeps_its_offset() -> None:
    berlin = datetime(2026, 12, 3, 9, tzinfo=timezone(timedelta(hours=1)))
    assert due_time(None, berlin, "sleep") == berlin == datetime(2026, 12, 3, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("duration", "until", "message"),
    [
        (timedelta(seconds=-1), None, "between 0 and 3660 days, not -1 day"),
        (LONGEST_WAIT + timedelta(days=1), None, "between 0 and 3660 days"),
        (None, datetime(2026, 12, 3, 9), "2026-12-03T09:00:00 has no UTC offset"),
        (None, datetime.now(UTC) + 2 * LONGEST_WAIT, "more than 3660 days away"),
        (None, None, "give a duration or until=, not both or neither"),
        (timedelta(1), datetime.now(UTC), "give a duration or until=, not both or neither"),
    ],
)
def test_naive_negative_absurd_or_ambiguous_times_are_refused(
    duration: timedelta | None, until: datetime | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        due_time(duration, until, "sleep")
    assert str(refused.value).startswith("sleep: ")


def test_a_duration_that_is_not_a_timedelta_is_refused() -> None:
    with pytest.raises(TypeError, match="must be a timedelta, not 10"):
        due_time(10, None, "sleep")  # type: ignore[arg-type]


def test_not_before_is_iso_8601_with_its_offset() -> None:
    assert parse_not_before("2026-12-03T09:00:00+01:00", "--not-before") == datetime(
        2026, 12, 3, 8, tzinfo=UTC
    )
    assert parse_not_before("2026-12-03T08:00:00Z", "--not-before").tzinfo is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tomorrow", "--not-before: 'tomorrow' is not an ISO 8601 time"),
        ("2026-12-03T09:00:00", "--not-before: 2026-12-03T09:00:00 has no UTC offset"),
        ("9999-12-31T00:00:00+00:00", "--not-before: 9999-12-31T00:00:00+00:00 is more than"),
        ("", "--not-before: '' is not an ISO 8601 time"),
    ],
)
def test_a_bad_not_before_names_the_option(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse_not_before(text, "--not-before")


def test_not_before_names_the_field_it_came_in() -> None:
    with pytest.raises(InvalidInput, match=r"^not_before: 2026-12-03T09:00:00 has no UTC offset"):
        parse_not_before("2026-12-03T09:00:00", "not_before")
