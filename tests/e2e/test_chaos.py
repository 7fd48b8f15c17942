"""A short chaos run in every `make test`: kills, a PostgreSQL restart, random approvals."""

from pathlib import Path

from tests.chaos import run_chaos
from tests.conftest import Postgres


async def test_short_chaos_loses_nothing_and_publishes_nothing_twice(
    db_url: str, postgres: Postgres, tmp_path: Path
) -> None:
    report = await run_chaos(
        db_url,
        postgres,
        tmp_path,
        runs=24,
        daemons=2,
        kill_every=(1.5, 3.0),
        deadline_s=150,
        seed=7,
    )
    print(report.table())
    assert report.kills >= 1 and report.postgres_restarts == 1, report.table()
    assert (report.lost, report.stuck, report.failed) == (0, 0, 0), report.table()
    assert report.published == 24
    assert report.duplicate_publishes == 0, report.table()
    assert report.resubmitted_jobs == 0, report.table()  # no generation or render twice
    # A node runs again only if it was in flight when its daemon died, the database went or
    # its daemon stalled past its lease; once per such hold at most.
    assert report.unexplained == [], report.table()
    assert report.node_reexecutions <= report.in_flight_at_faults, report.table()
