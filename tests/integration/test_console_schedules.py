"""The console's schedule forms over HTTP (no browser): create, pause, resume, backfill,
delete, their refusals on the page, and who may send them."""

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow

from engine.runtime import schedules
from engine.runtime.schedule_times import Timing
from engine.service.access.identities import Role, create_token
from tests.integration.test_console import console, text

Conn = AsyncConnection[DictRow]
NEW = {
    "cron": "0 9 * * MON-FRI",
    "timezone": "Asia/Tokyo",
    "project": "cats",
    "workflow": "production",
    "overlap": "buffer_one",
    "catchup": "30m",
    "brief": "  Cats at nine  ",
}
DAY = timedelta(days=1)
WEEK = {"from": "2026-11-30T00:00+09:00", "to": "2026-12-06T23:59:59+09:00"}


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with console(db_url) as c:
        yield c


async def count(conn: Conn, table: str) -> int:
    query = sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))
    row = await (await conn.execute(query)).fetchone()
    assert row is not None
    return int(row["n"])


async def a_schedule(conn: Conn, cron: str = "0 9 * * MON-FRI") -> str:
    timing = Timing.parse(cron=cron, timezone="Asia/Tokyo")
    row = await schedules.create_schedule(
        conn, timing=timing, project="cats", workflow="production", payload={"brief": "b"}
    )
    return str(row["schedule_id"])


async def test_the_form_creates_what_the_api_would(client: httpx.AsyncClient, conn: Conn) -> None:
    page = await client.get("/console/schedules")
    assert '<form class="schedule" method="post" action="/console/schedules">' in page.text
    sent = await client.post("/console/schedules", data=NEW)
    assert sent.status_code == 303, sent.text
    found = re.fullmatch(
        r"/console/schedules\?done=created&schedule=(sch_\w+)", sent.headers["location"]
    )
    assert found, sent.headers["location"]
    sid = found[1]
    by_api = await client.post("/schedules", json={**NEW, "brief": "Cats at nine"})
    ours, theirs = await schedules.get_schedule(conn, sid), by_api.json()
    for key in ("cron", "timezone", "project", "workflow", "payload", "overlap", "paused"):
        assert ours[key] == theirs[key], key
    assert ours["payload"] == {"brief": "Cats at nine"} and str(ours["catchup"]) == "0:30:00"

    listed = await client.get(sent.headers["location"])
    assert f"Created {sid}." in text(listed.text)
    row = re.search(rf'<tr id="schedule-{sid}">.*?</tr>', listed.text, re.S)
    assert row is not None
    # 09:00 in Tokyo (no DST) is 00:00 UTC: the next three weekdays' fire times.
    assert row[0].count("00:00:00 UTC") == 3
    for action in ("pause", "backfill", "delete"):
        assert f'action="/console/schedules/{sid}/{action}"' in row[0]


async def test_blank_fields_take_the_apis_defaults(client: httpx.AsyncClient, conn: Conn) -> None:
    fields = {"cron": "@daily", "timezone": "UTC", "project": "cats", "brief": "b"}
    sent = await client.post(
        "/console/schedules", data={**fields, "workflow": "", "overlap": "", "catchup": ""}
    )
    assert sent.status_code == 303, sent.text
    [row] = await schedules.list_schedules(conn)
    assert (row["workflow"], row["overlap"], str(row["catchup"])) == (
        "production",
        "skip",
        "0:05:00",
    )


async def test_pause_resume_backfill_and_delete(client: httpx.AsyncClient, conn: Conn) -> None:
    sid = await a_schedule(conn)
    base = f"/console/schedules/{sid}"

    paused = await client.post(f"{base}/pause")
    assert paused.status_code == 303
    assert paused.headers["location"] == f"/console/schedules?done=paused&schedule={sid}"
    assert (await schedules.get_schedule(conn, sid))["paused"] is True
    page = await client.get(paused.headers["location"])
    assert f"Paused {sid}." in text(page.text) and ">paused<" in page.text
    assert f'action="{base}/resume"' in page.text and f'action="{base}/pause"' not in page.text

    resumed = await client.post(f"{base}/resume")
    assert resumed.status_code == 303
    assert (await schedules.get_schedule(conn, sid))["paused"] is False
    assert f"Resumed {sid}." in text((await client.get(resumed.headers["location"])).text)

    backfilled = await client.post(f"{base}/backfill", data=WEEK)
    assert backfilled.status_code == 303, backfilled.text
    shown = text((await client.get(backfilled.headers["location"])).text)
    assert f"Backfilled {sid}: 5 runs started for 5 fire times." in shown  # Monday to Friday
    fired = await conn.execute(
        "SELECT schedule_fire_time AS at FROM runs WHERE schedule_id = %s ORDER BY 1", (sid,)
    )
    monday = datetime(2026, 11, 30, tzinfo=UTC)  # 09:00 in Tokyo
    assert [row["at"] for row in await fired.fetchall()] == [monday + n * DAY for n in range(5)]
    again = await client.post(f"{base}/backfill", data=WEEK)
    shown = text((await client.get(again.headers["location"])).text)
    assert "0 runs started for 5 fire times (the others had one already)" in shown
    assert await count(conn, "runs") == 5

    deleted = await client.post(f"{base}/delete")
    assert deleted.status_code == 303
    assert await schedules.list_schedules(conn) == []
    page = await client.get(deleted.headers["location"])
    assert f"Deleted {sid}." in text(page.text) and "No schedules." in page.text
    assert await count(conn, "runs") == 5  # its runs stay

    for action in ("pause", "resume", "delete", "backfill"):
        missing = await client.post(f"{base}/{action}", data=WEEK)
        assert missing.status_code == 404 and f"schedule {sid} not found" in missing.text, action
    unknown = await client.post(f"/console/schedules/{sid}/explode")
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "cron: '61 * * * *' is not a cron expression"),
        ({"cron": "  "}, "cron", "cron: Field required"),
        ({"cron": "0 0 1 1 * 0 2020"}, "cron", "cron: '0 0 1 1 * 0 2020' never fires again"),
        ({"timezone": "Mars/Olympus"}, "timezone", "timezone: 'Mars/Olympus' is not an IANA"),
        ({"project": "Not A Slug"}, "project", "project: String should match pattern"),
        ({"workflow": "nope"}, "workflow", "workflow: no workflow named 'nope'"),
        ({"overlap": "queue"}, "overlap", "overlap: 'queue' is not one of skip, allow"),
        ({"catchup": "a while"}, "catchup", "catchup: 'a while' is not a duration"),
        ({"brief": "x" * 20_001}, "brief", "brief: String should have at most 20000"),
    ],
)
async def test_a_refused_form_shows_why_on_the_page_with_what_was_typed(
    client: httpx.AsyncClient, conn: Conn, change: dict[str, str], field: str, message: str
) -> None:
    refused = await client.post("/console/schedules", data={**NEW, **change})
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("text/html")
    form = refused.text[refused.text.index('id="new-schedule"') :]
    assert 'role="alert" id="refusal-new"' in form and message in text(form)
    named = re.search(rf'<(?:input|select|textarea) name="{field}"[^>]*>', form)
    assert named is not None and 'aria-invalid="true"' in named[0], named
    assert form.count('aria-invalid="true"') == 1
    if field != "brief":
        assert 'value="Asia/Tokyo"' in form or field == "timezone"  # kept as typed
        assert "Cats at nine" in form
    assert await count(conn, "schedules") == 0


@pytest.mark.parametrize(
    ("span", "field", "message"),
    [
        (
            {"from": "2026-12-02T00:00Z", "to": "2026-12-01T00:00Z"},
            "from",
            "from: 2026-12-02T00:00:00+00:00 is after 2026-12-01T00:00:00+00:00",
        ),
        (
            {"from": "2026-12-01T00:00", "to": "2026-12-02T00:00Z"},
            "from",
            "from: Input should have timezone info",
        ),
        (
            {"from": "yesterday", "to": "2026-12-02T00:00Z"},
            "from",
            "from: Input should be a valid datetime",
        ),
        ({"from": "2026-12-01T00:00Z", "to": ""}, "to", "to: Field required"),
        (
            {"from": "2020-01-01T00:00Z", "to": "2026-12-01T00:00Z"},
            "to",
            "to: the range holds more than 1000",
        ),
    ],
)
async def test_a_refused_backfill_shows_why_beside_its_schedule(
    client: httpx.AsyncClient, conn: Conn, span: dict[str, str], field: str, message: str
) -> None:
    sid = await a_schedule(conn)
    other = await a_schedule(conn)
    refused = await client.post(f"/console/schedules/{sid}/backfill", data=span)
    assert refused.status_code == 422, refused.text
    row = re.search(rf'<tr id="schedule-{sid}">.*?</tr>', refused.text, re.S)
    assert row is not None
    assert f'role="alert" id="refusal-{sid}"' in row[0] and message in text(row[0])
    assert '<details class="confirm" open>' in row[0]  # the backfill form, open as sent
    named = re.search(rf'<input name="{field}"[^>]*>', row[0])
    assert named is not None and 'aria-invalid="true"' in named[0]
    if span["from"]:
        assert f'value="{span["from"]}"' in row[0]
    assert f"refusal-{other}" not in refused.text and "refusal-new" not in refused.text
    assert await count(conn, "runs") == 0


async def test_only_an_admin_may_change_schedules(db_url: str, conn: Conn) -> None:
    sid = await a_schedule(conn)
    tokens = {role: (await create_token(conn, f"t-{role}", role))[1] for role in Role}
    for role in (Role.VIEWER, Role.APPROVER):
        async with console(db_url) as client:
            sent = {"token": tokens[role], "next": "/console/schedules"}
            assert (await client.post("/console/login", data=sent)).status_code == 303
            page = await client.get("/console/schedules")
            assert page.status_code == 200 and sid in page.text
            assert "Creating and changing schedules needs the admin role." in text(page.text)
            assert "<form" not in page.text.split("</header>", 1)[1], role
            posts: list[tuple[str, dict[str, Any]]] = [
                ("/console/schedules", NEW),
                *((f"/console/schedules/{sid}/{a}", {}) for a in ("pause", "resume", "delete")),
                (f"/console/schedules/{sid}/backfill", WEEK),
            ]
            for path, data in posts:
                refused = await client.post(path, data=data)
                assert refused.status_code == 403, (role, path)
                assert "needs the admin role" in text(refused.text)
    assert await count(conn, "schedules") == 1 and await count(conn, "runs") == 0
    assert (await schedules.get_schedule(conn, sid))["paused"] is False

    async with console(db_url) as client:
        assert (await client.post(f"/console/schedules/{sid}/pause")).status_code == 401
        login = {"token": tokens[Role.ADMIN], "next": "/console/schedules"}
        assert (await client.post("/console/login", data=login)).status_code == 303
        assert (await client.post(f"/console/schedules/{sid}/pause")).status_code == 303
        assert (await client.post("/console/schedules", data=NEW)).status_code == 303
    assert (await schedules.get_schedule(conn, sid))["paused"] is True


async def test_a_form_sent_from_another_site_is_refused(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    sid = await a_schedule(conn)
    for path, data in [
        ("/console/schedules", NEW),
        (f"/console/schedules/{sid}/delete", {}),
        (f"/console/schedules/{sid}/backfill", WEEK),
    ]:
        forged = await client.post(path, data=data, headers={"Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403 and "sent from another site" in forged.text, path
        other = await client.post(path, data=data, headers={"Origin": "https://evil.example"})
        assert other.status_code == 403, path
    assert await count(conn, "schedules") == 1 and await count(conn, "runs") == 0
