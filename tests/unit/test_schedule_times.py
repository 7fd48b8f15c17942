"""A schedule's fire times: cron in its timezone, DST both ways, the catch-up window."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from engine.runtime.schedule_times import Timing, due
from engine.runtime.store import InvalidInput

BERLIN = ZoneInfo("Europe/Berlin")


def timing(cron: str, timezone: str = "Europe/Berlin", catchup: str = "5m") -> Timing:
    return Timing.parse(cron=cron, timezone=timezone, catchup=catchup)


def local(times: list[datetime]) -> list[str]:
    return [at.astimezone(BERLIN).isoformat() for at in times]


def day_of(cron: str, day: datetime) -> list[str]:
    """The fire times of `cron` on one Berlin calendar day."""
    start = day.replace(tzinfo=BERLIN)
    return local(timing(cron).between(start, start + timedelta(days=1, seconds=-1), 100))


def test_weekday_mornings_are_computed_in_the_schedules_timezone() -> None:
    friday_evening = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    times = timing("0 9 * * MON-FRI").fire_times(friday_evening)
    assert local([next(times) for _ in range(2)]) == [
        "2026-12-07T09:00:00+01:00",  # Monday, 08:00 UTC in winter
        "2026-12-08T09:00:00+01:00",
    ]
    new_york = Timing.parse(cron="0 9 * * *", timezone="America/New_York")
    assert new_york.next_after(friday_evening) == datetime(2026, 12, 5, 14, 0, tzinfo=UTC)


def test_spring_forward_a_0230_job_fires_once_at_0300() -> None:
    # 2026-03-29: Berlin's clocks go from 02:00 CET straight to 03:00 CEST.
    assert day_of("30 2 * * *", datetime(2026, 3, 28)) == ["2026-03-28T02:30:00+01:00"]
    assert day_of("30 2 * * *", datetime(2026, 3, 29)) == ["2026-03-29T03:00:00+02:00"]
    assert day_of("30 2 * * *", datetime(2026, 3, 30)) == ["2026-03-30T02:30:00+02:00"]
    # An hourly job has no 02:30 that day: the hour does not exist.
    assert "2026-03-29T03:30:00+02:00" in day_of("30 * * * *", datetime(2026, 3, 29))
    assert len(day_of("30 * * * *", datetime(2026, 3, 29))) == 23


def test_fall_back_a_0230_job_fires_once_at_the_first_0230() -> None:
    # 2026-10-25: 02:00-03:00 happens twice, in CEST then in CET.
    assert day_of("30 2 * * *", datetime(2026, 10, 25)) == ["2026-10-25T02:30:00+02:00"]
    assert day_of("30 2 * * *", datetime(2026, 10, 26)) == ["2026-10-26T02:30:00+01:00"]
    # From a fire time stored in the repeated hour, the next one is the next day's.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert local([next(timing("30 2 * * *").fire_times(first))]) == ["2026-10-26T02:30:00+01:00"]
    # An hourly job fires in both 02:30s: they are an hour apart.
    hourly = day_of("30 * * * *", datetime(2026, 10, 25))
    assert len(hourly) == 25
    assert hourly[2:4] == ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"]


def test_a_sixth_field_is_seconds() -> None:
    start = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
    times = timing("* * * * * */2").fire_times(start)
    assert [next(times) - start for _ in range(3)] == [timedelta(seconds=s) for s in (2, 4, 6)]


def test_catch_up_starts_only_fire_times_within_the_window() -> None:
    every_minute = timing("* * * * *", catchup="5m")
    down_since = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    back = down_since + timedelta(hours=1, seconds=30)
    owed = due(every_minute, down_since, back, limit=100)
    assert owed.start == [back - timedelta(seconds=30 + 60 * m) for m in (4, 3, 2, 1, 0)]
    assert owed.missed_since == down_since
    assert owed.next_fire_at == back + timedelta(seconds=30)
    # On time: nothing missed, and the limit leaves the rest for the next pass.
    on_time = due(every_minute, down_since, down_since + timedelta(minutes=2), limit=2)
    assert on_time.start == [down_since, down_since + timedelta(minutes=1)]
    assert on_time.missed_since is None
    assert on_time.next_fire_at == down_since + timedelta(minutes=2)


def test_a_year_of_missed_seconds_is_skipped_without_walking_it() -> None:
    every_second = timing("* * * * * *", catchup="1s")
    owed = due(every_second, datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), 10)
    assert len(owed.start) == 2  # 23:59:59 and 00:00:00


def test_an_expression_with_a_year_ends() -> None:
    new_year = timing("0 0 1 1 * 0 2030-2031", timezone="UTC")
    times = list(new_year.fire_times(datetime(2026, 1, 1, tzinfo=UTC)))
    assert times == [datetime(year, 1, 1, tzinfo=UTC) for year in (2030, 2031)]
    assert new_year.next_after(times[-1]) is None
    owed = due(new_year, times[-1], times[-1] + timedelta(minutes=1), limit=10)
    assert (owed.start, owed.next_fire_at) == ([times[-1]], None)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),  # February 30th: never
        ({"cron": "0 0 1 1 * 0 2020"}, "cron"),  # a year gone by
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"timezone": "../etc/passwd"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"overlap": "queue"}, "overlap"),
        ({"catchup": "forever"}, "catchup"),
        ({"catchup": "0s"}, "catchup"),
    ],
)
def test_bad_options_are_refused_naming_them(options: dict[str, str], field: str) -> None:
    given = {"cron": "0 9 * * *", "timezone": "Europe/Berlin", **options}
    with pytest.raises(InvalidInput, match=rf"^--{field}: "):
        Timing.parse(**given, prefix="--")
