"""Schedules against PostgreSQL: one run per fire time under concurrent firing passes,
overlap policies, pause and resume, backfill, and bad input over HTTP."""

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from pydantic import SecretStr

from engine.db.connections import open_pool
from engine.runtime import schedules
from engine.runtime.schedule_times import Timing
from engine.service.api import create_app
from engine.settings import Settings
from tests.app import app as test_app

Conn = AsyncConnection[DictRow]
TOKEN = "s3cret-token-for-the-schedule-tests-0123456789"
SECOND = timedelta(seconds=1)


async def every_second(conn: Conn, overlap: str = "allow", catchup: str = "5m") -> dict[str, Any]:
    timing = Timing.parse(
        cron="* * * * * *", timezone="Europe/Berlin", overlap=overlap, catchup=catchup
    )
    return await schedules.create_schedule(
        conn, timing=timing, project="p", workflow="ledger", payload={"node_delay": 0}
    )


async def fire_times(conn: Conn, schedule_id: str) -> list[datetime]:
    cursor = await conn.execute(
        "SELECT schedule_fire_time AS at FROM runs WHERE schedule_id = %s ORDER BY 1",
        (schedule_id,),
    )
    return [row["at"] for row in await cursor.fetchall()]


async def end_runs(conn: Conn, schedule_id: str) -> None:
    await conn.execute(
        "UPDATE runs SET status = 'published' WHERE schedule_id = %s", (schedule_id,)
    )


async def test_concurrent_passes_and_backfills_start_one_run_per_fire_time(
    db_url: str, conn: Conn
) -> None:
    schedule = await every_second(conn)
    first: datetime = schedule["next_fire_at"]
    # Eight connections fire the same 31 seconds at once, in three waves, while two
    # more backfill the same range.
    connections = [
        await AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row)
        for _ in range(10)
    ]
    try:
        for wave in (10, 20, 30):
            now = first + wave * SECOND
            await asyncio.gather(
                *(schedules.fire_due(c, now) for c in connections[:8]),
                *(
                    schedules.backfill(c, schedule["schedule_id"], first, now)
                    for c in connections[8:]
                ),
            )
    finally:
        for c in connections:
            await c.close()
    assert await fire_times(conn, schedule["schedule_id"]) == [
        first + s * SECOND for s in range(31)
    ]
    row = await schedules.get_schedule(conn, schedule["schedule_id"])
    assert row["next_fire_at"] == first + 31 * SECOND
    shown = await (
        await conn.execute(
            "SELECT status, workflow, payload, project FROM runs WHERE schedule_id = %s LIMIT 1",
            (schedule["schedule_id"],),
        )
    ).fetchone()
    assert shown == {
        "status": "queued",
        "workflow": "ledger",
        "payload": {"node_delay": 0},
        "project": "p",
    }


async def test_overlap_skip_starts_nothing_while_its_run_lives(conn: Conn) -> None:
    schedule = await every_second(conn, overlap="skip")
    sid, first = schedule["schedule_id"], schedule["next_fire_at"]
    fired = await schedules.fire_due(conn, first + 2 * SECOND)
    assert (fired.started, fired.skipped) == (1, 2)
    assert await fire_times(conn, sid) == [first]
    assert (await schedules.fire_due(conn, first + 3 * SECOND)).started == 0
    await end_runs(conn, sid)
    await schedules.fire_due(conn, first + 4 * SECOND)
    assert await fire_times(conn, sid) == [first, first + 4 * SECOND]


async def test_overlap_allow_starts_every_fire_time(conn: Conn) -> None:
    schedule = await every_second(conn, overlap="allow")
    fired = await schedules.fire_due(conn, schedule["next_fire_at"] + 2 * SECOND)
    assert (fired.started, fired.skipped) == (3, 0)


async def test_overlap_buffer_one_holds_one_start_until_the_live_run_ends(conn: Conn) -> None:
    schedule = await every_second(conn, overlap="buffer_one")
    sid, first = schedule["schedule_id"], schedule["next_fire_at"]
    fired = await schedules.fire_due(conn, first + 3 * SECOND)
    assert (fired.started, fired.skipped) == (1, 2)  # first starts, +1s held, +2s and +3s not
    assert (await schedules.get_schedule(conn, sid))["buffered_fire_at"] == first + SECOND
    # Nothing is due, but the held start waits for the run to end.
    assert fired.next_due is not None and fired.next_due <= fired.now
    assert (await schedules.fire_due(conn, first + 3 * SECOND)).started == 0
    await end_runs(conn, sid)
    assert (await schedules.fire_due(conn, first + 3 * SECOND)).started == 1
    assert await fire_times(conn, sid) == [first, first + SECOND]
    assert (await schedules.get_schedule(conn, sid))["buffered_fire_at"] is None


async def test_paused_schedules_do_not_fire_and_resume_makes_nothing_up(conn: Conn) -> None:
    schedule = await every_second(conn, overlap="allow")
    sid, first = schedule["schedule_id"], schedule["next_fire_at"]
    await schedules.pause_schedule(conn, sid)
    fired = await schedules.fire_due(conn, first + 60 * SECOND)
    assert fired.started == 0 and fired.next_due is None
    assert schedules.upcoming(await schedules.get_schedule(conn, sid)) == []
    # Paused for an hour: its fire time then is long past.
    await conn.execute(
        "UPDATE schedules SET next_fire_at = next_fire_at - interval '1 hour' "
        "WHERE schedule_id = %s",
        (sid,),
    )
    before = await (await conn.execute("SELECT now() AS now")).fetchone()
    resumed = await schedules.resume_schedule(conn, sid)
    assert before is not None
    assert before["now"] < resumed["next_fire_at"] <= before["now"] + 2 * SECOND
    assert len(schedules.upcoming(resumed)) == 3
    await schedules.fire_due(conn, resumed["next_fire_at"])
    assert await fire_times(conn, sid) == [resumed["next_fire_at"]]
    # Resuming a running schedule moves nothing.
    again = await schedules.resume_schedule(conn, sid)
    assert again["next_fire_at"] == resumed["next_fire_at"] + SECOND


async def test_backfill_starts_each_fire_time_once_even_while_paused(conn: Conn) -> None:
    schedule = await every_second(conn, overlap="skip")
    sid, first = schedule["schedule_id"], schedule["next_fire_at"]
    await schedules.pause_schedule(conn, sid)
    done = await schedules.backfill(conn, sid, first - 5 * SECOND, first - SECOND)
    assert len(done.fire_times) == 5 and len(done.created) == 5
    again = await schedules.backfill(conn, sid, first - 7 * SECOND, first - SECOND)
    assert len(again.fire_times) == 7 and len(again.created) == 2
    assert await fire_times(conn, sid) == [first - s * SECOND for s in range(7, 0, -1)]


async def test_catch_up_after_downtime_starts_only_the_window(conn: Conn) -> None:
    schedule = await every_second(conn, overlap="allow", catchup="10s")
    sid, first = schedule["schedule_id"], schedule["next_fire_at"]
    back = first + 3600 * SECOND
    await schedules.fire_due(conn, back)
    assert await fire_times(conn, sid) == [back - s * SECOND for s in range(10, -1, -1)]


async def test_a_broken_or_finished_schedule_is_paused_and_the_others_fire(conn: Conn) -> None:
    broken, finished, healthy = [await every_second(conn) for _ in range(3)]
    await conn.execute(
        "UPDATE schedules SET timezone = 'Mars/Olympus' WHERE schedule_id = %s",
        (broken["schedule_id"],),
    )
    await conn.execute(
        "UPDATE schedules SET cron = '0 0 1 1 * 0 2026', next_fire_at = '2026-01-01T00:00Z' "
        "WHERE schedule_id = %s",
        (finished["schedule_id"],),
    )
    fired = await schedules.fire_due(conn, healthy["next_fire_at"])
    assert fired.started == 1  # the finished one's last time is long past its catch-up
    assert await fire_times(conn, healthy["schedule_id"]) == [healthy["next_fire_at"]]
    for gone in (broken, finished):
        assert (await schedules.get_schedule(conn, gone["schedule_id"]))["paused"] is True


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(api_token=SecretStr(TOKEN))
    async with open_pool(db_url, settings) as pool:
        app = create_app(test_app, test_app.configure(settings), url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=headers
        ) as c:
            yield c


GOOD = {"cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin", "project": "cats", "brief": "b"}


async def test_schedules_over_http(client: httpx.AsyncClient, conn: Conn) -> None:
    created = await client.post("/schedules", json={**GOOD, "overlap": "buffer_one"})
    assert created.status_code == 201, created.text
    schedule = created.json()
    sid = schedule["schedule_id"]
    assert schedule["workflow"] == "production" and schedule["payload"] == {"brief": "b"}
    assert len(schedule["upcoming"]) == 3
    assert all("T08:00:00" in at for at in schedule["upcoming"])  # 09:00 CET in UTC
    assert [s["schedule_id"] for s in (await client.get("/schedules")).json()] == [sid]
    assert (await client.get(f"/schedules/{sid}")).json()["overlap"] == "buffer_one"
    assert (await client.post(f"/schedules/{sid}/pause")).json()["paused"] is True
    assert (await client.post(f"/schedules/{sid}/resume")).json()["paused"] is False
    span = {"from": "2026-11-30T00:00:00+01:00", "to": "2026-12-04T23:59:59+01:00"}
    backfilled = await client.post(f"/schedules/{sid}/backfill", json=span)
    assert backfilled.status_code == 200, backfilled.text
    assert len(backfilled.json()["created"]) == 5  # Monday to Friday
    again = await client.post(f"/schedules/{sid}/backfill", json=span)
    assert again.json()["created"] == []
    run_id = backfilled.json()["created"][0]
    shown = (await client.get(f"/runs/{run_id}")).json()["run"]
    assert shown["schedule_id"] == sid
    assert shown["schedule_fire_time"].startswith("2026-11-30T08:00:00")
    for method, path in [
        ("GET", "/schedules"),
        ("POST", "/schedules"),
        ("DELETE", f"/schedules/{sid}"),
    ]:
        unsigned = await client.request(method, path, headers={"Authorization": ""})
        assert unsigned.status_code == 401, (method, path)
    assert (await client.delete(f"/schedules/{sid}")).status_code == 204
    for method, path in [
        ("GET", f"/schedules/{sid}"),
        ("POST", f"/schedules/{sid}/pause"),
        ("POST", f"/schedules/{sid}/resume"),
        ("DELETE", f"/schedules/{sid}"),
    ]:
        missing = await client.request(method, path)
        assert missing.status_code == 404 and missing.json()["field"] == "schedule_id"
    missing = await client.post(f"/schedules/{sid}/backfill", json=span)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "daily"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"overlap": "queue"}, "overlap"),
        ({"catchup": "a while"}, "catchup"),
        ({"project": "Not A Slug"}, "project"),
        ({"workflow": "nope"}, "workflow"),
        ({"payload": {"surprise": 1}}, "payload.surprise"),
        ({"brief": "a\u0000b"}, "brief"),
        ({"surprise": True}, "surprise"),
    ],
)
async def test_bad_schedules_get_422_naming_the_field_and_write_nothing(
    client: httpx.AsyncClient, conn: Conn, change: dict[str, object], field: str
) -> None:
    response = await client.post("/schedules", json={**GOOD, **change})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.json()
    count = await (await conn.execute("SELECT count(*) AS n FROM schedules")).fetchone()
    assert count == {"n": 0}


async def test_bad_backfill_ranges_get_422(client: httpx.AsyncClient, conn: Conn) -> None:
    sid = (await client.post("/schedules", json={**GOOD, "cron": "* * * * *"})).json()[
        "schedule_id"
    ]
    for span, field in [
        ({"from": "2026-12-01T00:00:00", "to": "2026-12-02T00:00:00Z"}, "from"),
        ({"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, "from"),
        ({"from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z"}, "to"),  # 1441 times
        ({"from": "yesterday", "to": "2026-12-02T00:00:00Z"}, "from"),
    ]:
        response = await client.post(f"/schedules/{sid}/backfill", json=span)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field, (span, response.json())
    count = await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()
    assert count == {"n": 0}


async def test_a_row_written_by_hand_with_a_bad_timezone_is_shown_and_refused_not_a_500(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    schedule = await every_second(conn)
    schedule_id = schedule["schedule_id"]
    await conn.execute(
        "UPDATE schedules SET timezone = 'Mars/Olympus', paused = true WHERE schedule_id = %s",
        (schedule_id,),
    )
    problem = f"schedule {schedule_id}: its stored timezone: 'Mars/Olympus' is not an IANA timezone"
    for path in ("/schedules", f"/schedules/{schedule_id}"):
        shown = await client.get(path)
        assert shown.status_code == 200
        body = shown.json()[0] if isinstance(shown.json(), list) else shown.json()
        assert body["upcoming"] == []
        assert body["problem"].startswith(problem)
    resumed = await client.post(f"/schedules/{schedule_id}/resume")
    assert resumed.status_code == 422 and resumed.json()["error"].startswith(problem)
    backfilled = await client.post(
        f"/schedules/{schedule_id}/backfill",
        json={"from": "2026-12-01T00:00:00Z", "to": "2026-12-01T00:00:05Z"},
    )
    assert backfilled.status_code == 422
    page = await client.get("/console/schedules")
    assert page.status_code == 200 and "Mars/Olympus" in page.text
