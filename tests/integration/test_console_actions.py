"""Acting on runs from the console (no browser): cancel, retry and start a run, each
after a page that asks to confirm (forking: tests/integration/test_history_fork.py);
the runs list's status counts, filters and bulk actions on the runs ticked; the
navigation's inbox count."""

import re
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from html import unescape
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from engine.db.status import statuses
from engine.runtime import store
from engine.service.access.identities import Role, create_token
from engine.service.console import QUERIES
from tests.app import app as test_app
from tests.integration.test_console import console, text

Conn = AsyncConnection[DictRow]
STATE = (
    "SELECT run_id, status, error, attempt, lease_owner, lease_epoch, wake_at, updated_at"
    " FROM runs WHERE run_id = ANY(%s) ORDER BY created_at, run_id"
)
STARTED = (
    "SELECT project, status, payload, workflow, priority, wake_at, waiting_for, idempotency_key"
    " FROM runs WHERE run_id = %s"
)
IMAGE = "SELECT metadata FROM artifacts WHERE run_id = %s AND type = 'image'"
ADMIN_ONLY = "Starting, cancelling, retrying and forking runs need the admin role."


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with console(db_url) as c:
        yield c


async def a_run(
    conn: Conn,
    status: str = "queued",
    *,
    project: str = "cats",
    workflow: str = "production",
    brief: str = "Why cats sit in boxes",
    age: timedelta = timedelta(0),
    **columns: Any,
) -> str:
    """A run of `project` in `status`, created `age` ago, with `columns` set as given."""
    run = await store.create_run(conn, project=project, payload={"brief": brief}, workflow=workflow)
    values = {
        "status": status,
        "created_at": datetime.now(UTC) - age,
        **{k: Jsonb(v) if isinstance(v, dict) else v for k, v in columns.items()},
    }
    await conn.execute(
        sql.SQL("UPDATE runs SET {} WHERE run_id = %s").format(
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values)
        ),
        [*values.values(), run["run_id"]],
    )
    return str(run["run_id"])


async def states(conn: Conn, *run_ids: str) -> list[dict[str, Any]]:
    return [dict(row) for row in await (await conn.execute(STATE, (list(run_ids),))).fetchall()]


async def run_count(conn: Conn) -> int:
    row = await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()
    assert row is not None
    return int(row["n"])


def confirm_form(page: str) -> dict[str, list[str]]:
    """The hidden fields of a confirmation page's yes button, as its form sends them."""
    fields: dict[str, list[str]] = defaultdict(list)
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page):
        fields[unescape(name)].append(unescape(value))
    assert fields.get("confirm") == ["yes"], page
    return dict(fields)


async def confirm(client: httpx.AsyncClient, path: str, asked: httpx.Response) -> httpx.Response:
    """Press the yes button of the confirmation page `asked`, which posts to `path`."""
    assert asked.status_code == 200, asked.text
    assert f'<form method="post" action="{path}">' in asked.text
    return await client.post(path, data=confirm_form(asked.text))


async def test_cancel_asks_then_cancels_as_the_api_does(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    ours = await a_run(conn, "running", lease_owner="w1")
    theirs = await a_run(conn, "running", lease_owner="w1")
    before = await states(conn, ours, theirs)
    page = await client.get(f"/console/runs/{ours}")
    assert f'action="/console/runs/{ours}/cancel"' in page.text
    assert f'action="/console/runs/{ours}/retry"' not in page.text  # it has not failed
    asked = await client.post(f"/console/runs/{ours}/cancel")
    assert f"Cancel run {ours}?" in text(asked.text)
    assert await states(conn, ours, theirs) == before  # asking writes nothing

    done = await confirm(client, f"/console/runs/{ours}/cancel", asked)
    assert done.status_code == 303
    assert done.headers["location"] == f"/console/runs/{ours}?done=cancelled"
    shown = await client.get(done.headers["location"])
    assert "Cancelled this run." in text(shown.text)
    assert f'action="/console/runs/{ours}/cancel"' not in shown.text
    assert (await client.post(f"/runs/{theirs}/cancel")).status_code == 200

    by_console, by_api = await states(conn, ours, theirs)
    for state, was in zip((by_console, by_api), before, strict=True):
        assert state["status"] == "cancelled"
        assert state["lease_epoch"] == was["lease_epoch"] + 1  # the worker is fenced out
        assert state["lease_owner"] is None and state["wake_at"] is None

    again = await client.post(f"/console/runs/{ours}/cancel")
    assert again.status_code == 409
    assert f"run {ours} is cancelled: only live runs are cancelled" in text(again.text)
    gone = await client.post(f"/console/runs/{ours}/cancel", data={"confirm": "yes"})
    assert gone.status_code == 409 and "has already ended" in text(gone.text)  # the store's
    missing = await client.post("/console/runs/run_nosuchrun/cancel")
    assert missing.status_code == 404 and "run_nosuchrun" in text(missing.text)


async def test_retry_resumes_a_failed_run_and_resubmits_its_failed_job(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    error = {"type": "ProviderJobFailed", "message": "generation failed", "attempts": 1}
    run_id = await a_run(conn, "failed", error=error, attempt=3)
    await conn.execute(
        "INSERT INTO artifacts (run_id, type, provider, persona, status, metadata)"
        " VALUES (%s, 'image', 'kie', 'media', 'failed', '{}')",
        (run_id,),
    )
    page = await client.get(f"/console/runs/{run_id}/actions/live")
    assert "<html" not in page.text and f'action="/console/runs/{run_id}/retry"' in page.text

    asked = await client.post(f"/console/runs/{run_id}/retry")
    shown = text(asked.text)
    assert f"Retry run {run_id}?" in shown
    assert "ProviderJobFailed: generation failed" in shown
    assert "the step that failed runs again" in shown
    assert "1 failed provider job will be submitted anew" in shown
    assert (await states(conn, run_id))[0]["status"] == "failed"

    done = await confirm(client, f"/console/runs/{run_id}/retry", asked)
    assert done.headers["location"] == f"/console/runs/{run_id}?done=retried&jobs=1"
    notice = "Queued again from its last checkpoint; 1 failed provider job will be submitted anew."
    assert notice in text((await client.get(done.headers["location"])).text)
    [state] = await states(conn, run_id)
    assert (state["status"], state["error"], state["attempt"]) == ("queued", None, 0)
    cursor = await conn.execute(IMAGE, (run_id,))
    assert "retried_at" in (await cursor.fetchall())[0]["metadata"]  # as `runs retry` marks it

    again = await client.post(f"/console/runs/{run_id}/retry")
    assert again.status_code == 409
    assert f"run {run_id} is queued: only failed runs are retried" in text(again.text)


IN_A_MONTH = (datetime.now(UTC) + timedelta(days=30)).astimezone(timezone(timedelta(hours=1)))
NEW_RUN = {
    "project": "cats",
    "workflow": "production",
    "priority": "5",
    "not_before": IN_A_MONTH.replace(microsecond=0).isoformat(),
    "brief": "Cats and cardboard",
}


async def test_a_new_run_from_the_form_is_what_post_runs_starts(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    asked = await client.post("/console/runs", data=NEW_RUN)
    shown = text(asked.text)
    assert "Start a run of production for project cats?" in shown
    assert f"It waits until {NEW_RUN['not_before']} before a worker takes it." in shown
    assert await run_count(conn) == 0

    done = await confirm(client, "/console/runs", asked)
    assert done.status_code == 303, done.text
    location = done.headers["location"]
    match = re.fullmatch(r"/console/runs/(run_\w+)\?done=started", location)
    assert match, location
    assert "Started this run." in text((await client.get(location)).text)
    # Its confirmation carries a key: pressed twice, it still starts one run.
    twice = await client.post("/console/runs", data=confirm_form(asked.text))
    assert twice.headers["location"] == location and await run_count(conn) == 1

    body = {**NEW_RUN, "priority": 5}
    by_api = await client.post("/runs", json=body)
    assert by_api.status_code == 201, by_api.text
    ours = await (await conn.execute(STARTED, (match[1],))).fetchone()
    theirs = await (await conn.execute(STARTED, (by_api.json()["run_id"],))).fetchone()
    assert ours is not None and theirs is not None
    assert ours.pop("idempotency_key").startswith("console_")
    assert theirs.pop("idempotency_key") is None
    assert ours == theirs
    assert ours["status"] == "waiting_timer" and ours["priority"] == 5
    assert ours["payload"] == {"brief": "Cats and cardboard"}


@pytest.mark.parametrize(
    ("field", "typed", "json_value", "message"),
    [
        ("project", "Not A Slug", "Not A Slug", "project: String should match pattern"),
        ("workflow", "nope", "nope", "workflow: no workflow named 'nope'"),
        ("priority", "high", "high", "priority: Input should be a valid integer"),
        ("priority", "5000", 5000, "priority: Input should be less than or equal to 1000"),
        ("not_before", "tomorrow", "tomorrow", "not_before: 'tomorrow' is not an ISO 8601 time"),
        ("brief", "x" * 20_001, "x" * 20_001, "brief: String should have at most 20000"),
    ],
)
async def test_a_refused_new_run_names_the_field_keeps_what_was_typed_and_writes_nothing(
    client: httpx.AsyncClient, conn: Conn, field: str, typed: str, json_value: Any, message: str
) -> None:
    form = {**NEW_RUN, field: typed}
    for confirmed in ({}, {"confirm": "yes"}):  # refused whether asking or confirming
        page = await client.post("/console/runs", data={**form, **confirmed})
        assert page.status_code == 422, page.text
        assert message in text(page.text)
        assert re.search(rf'name="{field}"[^>]*aria-invalid="true"', page.text), page.text
        assert typed[:100] in unescape(page.text)  # shown again as typed
    # The same words as the API's for the same request.
    api = await client.post("/runs", json={**NEW_RUN, "priority": 5, field: json_value})
    assert api.status_code == 422 and api.json()["error"].startswith(message)
    assert api.json()["error"] in text(page.text)
    assert await run_count(conn) == 0


async def test_acting_needs_the_admin_role(db_url: str, conn: Conn) -> None:
    live = await a_run(conn, "running")
    failed = await a_run(conn, "failed")
    tokens = {role: (await create_token(conn, f"t-{role}", role))[1] for role in Role}
    before = await states(conn, live, failed)
    for role in (Role.VIEWER, Role.APPROVER):
        async with console(db_url) as client:
            login = {"token": tokens[role], "next": "/"}
            assert (await client.post("/console/login", data=login)).status_code == 303
            page = await client.get(f"/console/runs/{live}")
            assert "Cancelling, retrying and forking runs need the admin role." in text(page.text)
            assert "/cancel" not in page.text
            listed = await client.get("/console/runs")
            assert 'id="bulk"' not in listed.text and 'form="bulk"' not in listed.text
            assert 'id="new-run"' not in listed.text
            forms: list[tuple[str, dict[str, Any]]] = [
                (f"/console/runs/{live}/cancel", {}),
                (f"/console/runs/{failed}/retry", {}),
                ("/console/runs", NEW_RUN),
                ("/console/runs/bulk", {"operation": "cancel", "run_id": [live]}),
            ]
            for confirmed in ({}, {"confirm": "yes"}):
                for path, form in forms:
                    refused = await client.post(path, data={**form, **confirmed})
                    assert refused.status_code == 403, (role, path)
                    assert ADMIN_ONLY in text(refused.text), (role, path)
    assert await states(conn, live, failed) == before
    assert await run_count(conn) == 2

    async with console(db_url) as client:
        login = {"token": tokens[Role.ADMIN], "next": "/"}
        assert (await client.post("/console/login", data=login)).status_code == 303
        asked = await client.post(f"/console/runs/{live}/cancel")
        assert (await confirm(client, f"/console/runs/{live}/cancel", asked)).status_code == 303
    assert (await states(conn, live))[0]["status"] == "cancelled"


def counts_shown(page: str) -> dict[str, int]:
    """The status list's options: status (or "" for any) -> the count it shows."""
    options = re.findall(
        r'<option value="(\w*)"(?: selected)?>(?:any|\w+) \((\d+)\)</option>', page
    )
    return {status: int(n) for status, n in options}


async def test_the_status_list_counts_each_status_as_the_other_filters_select(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    for status, project in [
        ("queued", "cats"),
        ("queued", "dogs"),
        ("failed", "cats"),
        ("pending_workflow", "cats"),
        ("published", "cats"),
        ("published", "cats"),
        ("published", "dogs"),
    ]:
        await a_run(conn, status, project=project)
    shown = counts_shown((await client.get("/console/runs")).text)
    assert shown[""] == 7
    assert (shown["queued"], shown["failed"], shown["published"]) == (2, 1, 3)
    assert shown["pending_workflow"] == 1 and shown["running"] == shown["pending_publish"] == 0
    # Every status a run can have is offered, whether any run has it or not.
    assert set(shown) == {"", *statuses(test_app.gate_names())}

    cats = counts_shown((await client.get("/console/runs?project=cats&status=queued")).text)
    assert (cats[""], cats["queued"], cats["published"]) == (5, 1, 2)
    assert (
        '<option value="queued" selected>queued (1)</option>'
        in (await client.get("/console/runs?project=cats&status=queued")).text
    )


async def test_the_filters_narrow_the_list(client: httpx.AsyncClient, conn: Conn) -> None:
    made = {
        "cats_box": await a_run(conn, brief="Why CATS sit in boxes", age=timedelta(hours=3)),
        "dogs_ledger": await a_run(
            conn,
            project="dogs",
            workflow="ledger",
            brief="A ledger of dogs",
            age=timedelta(hours=2),
        ),
        "percent": await a_run(conn, brief="100% cats", age=timedelta(hours=1)),
        "thousand": await a_run(conn, brief="1000 cats", age=timedelta(minutes=1)),
        "no_brief": await a_run(conn, brief="", workflow="ledger"),
    }
    names = {run_id: name for name, run_id in made.items()}

    async def listed(query: str) -> list[str]:
        page = await client.get(f"/console/runs?{query}")
        assert page.status_code == 200, page.text
        return [names[run_id] for run_id in re.findall(r'<tr id="row-(run_\w+)"', page.text)]

    assert await listed("workflow=ledger") == ["no_brief", "dogs_ledger"]
    assert await listed("brief=cats") == ["thousand", "percent", "cats_box"]  # any case
    assert await listed("brief=100%25") == ["percent"]  # % is a character, not a wildcard
    assert await listed("brief=_0") == []
    assert await listed("older_than=90m") == ["dogs_ledger", "cats_box"]
    assert await listed("older_than=90m&brief=cats") == ["cats_box"]
    assert await listed("project=dogs&workflow=ledger&brief=LEDGER") == ["dogs_ledger"]

    # Paging keeps the filters: the next page's link carries them with its cursor.
    first = await client.get("/console/runs?brief=cats&limit=2")
    older = re.search(r'href="/console/runs\?([^"]+)">Older', first.text)
    assert older is not None and "brief=cats" in older[1]
    assert await listed(unescape(older[1])) == ["cats_box"]
    live = await client.get(f"/console/runs/live?{unescape(older[1])}")
    assert "<html" not in live.text and made["cats_box"] in live.text

    for query, message in [
        ("brief=" + "x" * 201, "brief: search for at most 200 characters"),
        ("workflow=nope", "workflow: no workflow named 'nope'; one of production"),
        ("older_than=soon", "older_than: 'soon' is not a duration"),
        ("status=bogus", "status: 'bogus' is not a status; one of queued"),
    ]:
        bad = await client.get(f"/console/runs?{query}")
        assert bad.status_code == 422 and message in text(bad.text), query


async def test_bulk_cancel_cancels_exactly_the_runs_ticked(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    ticked = [await a_run(conn, "queued"), await a_run(conn, "pending_workflow")]
    ended = await a_run(conn, "published")
    others = [await a_run(conn, "queued"), await a_run(conn, "running")]
    page = await client.get("/console/runs?status=queued")
    assert f'value="{ticked[0]}" form="bulk"' in page.text
    assert '<input type="hidden" name="next" value="/console/runs?status=queued">' in page.text
    before = await states(conn, *ticked, ended, *others)

    form = {
        "operation": "cancel",
        "run_id": [*ticked, ended],
        "next": "/console/runs?status=queued",
    }
    asked = await client.post("/console/runs/bulk", data=form)
    shown = text(asked.text)
    assert "Cancel 2 runs?" in shown and "Yes, cancel 2 runs" in shown
    assert "1 run of those ticked stay as they are: only live runs are cancelled." in shown
    assert ticked[0] in shown and ticked[1] in shown and ended not in shown
    assert await states(conn, *ticked, ended, *others) == before

    done = await confirm(client, "/console/runs/bulk", asked)
    assert done.status_code == 303
    location = done.headers["location"]
    assert location == "/console/runs?status=queued&done=cancelled&changed=2&ticked=3"
    notice = "Cancelled 2 of the 3 runs ticked (1 left as it was)."
    assert notice in text((await client.get(location)).text)
    after = {state["run_id"]: state for state in await states(conn, *ticked, ended, *others)}
    assert [after[run_id]["status"] for run_id in ticked] == ["cancelled", "cancelled"]
    unchanged = {state["run_id"]: state for state in before if state["run_id"] not in ticked}
    assert {run_id: after[run_id] for run_id in unchanged} == unchanged


async def test_bulk_retry_and_what_a_selection_is_refused_for(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    failed = [await a_run(conn, "failed"), await a_run(conn, "failed")]
    queued = await a_run(conn, "queued")
    asked = await client.post(
        "/console/runs/bulk", data={"operation": "retry", "run_id": [*failed, queued]}
    )
    assert "Retry 2 runs?" in text(asked.text)
    done = await confirm(client, "/console/runs/bulk", asked)
    assert done.headers["location"] == "/console/runs?done=retried&changed=2&ticked=3"
    assert [s["status"] for s in await states(conn, *failed, queued)] == ["queued"] * 3
    before = await states(conn, *failed, queued)

    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({"operation": "cancel"}, 422, "run_id: tick the runs to cancel first"),
        (
            {"operation": "drop", "run_id": queued},
            422,
            "operation: 'cancel' or 'retry', not 'drop'",
        ),
        ({"operation": "cancel", "run_id": "x;drop"}, 422, "run_id: 'x;drop' is not a run id"),
        (
            {"operation": "cancel", "run_id": [f"run_{i}" for i in range(201)]},
            422,
            "run_id: at most 200 runs at once, not 201",
        ),
        (
            {"operation": "retry", "run_id": [queued]},
            409,
            "none of the runs ticked can be retried: only failed runs are retried",
        ),
    ]
    for form, code, message in refusals:
        for confirmed in ({}, {"confirm": "yes"}):
            refused = await client.post("/console/runs/bulk", data={**form, **confirmed})
            if code == 409 and confirmed:  # confirmed, the store changes none: nothing to say
                assert refused.status_code == 303, refused.text
                assert "changed=0" in refused.headers["location"]
                continue
            assert refused.status_code == code, (form, refused.text)
            assert message in text(refused.text), form
    assert await states(conn, *failed, queued) == before


async def test_the_navigation_counts_the_runs_waiting_at_a_gate(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    assert 'id="nav-inbox-count"' not in (await client.get("/console/runs")).text
    await a_run(conn, "pending_workflow")
    await a_run(conn, "pending_publish")
    await a_run(conn, "queued")
    for path in ("/", "/console/runs", "/console/schedules"):
        page = await client.get(path)
        assert re.search(r'<span class="count" id="nav-inbox-count"[^>]*>2</span>', page.text), path
    assert "nav-inbox-count" not in (await client.get("/console/runs/live")).text


async def test_the_inbox_count_reads_no_run_that_is_not_waiting(conn: Conn) -> None:
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow) "
        "SELECT 'run_' || i, 'p', CASE WHEN i % 1000 = 0 THEN 'pending_review' "
        "ELSE 'published' END, '{}', 'ledger' FROM generate_series(1, 20000) i"
    )
    await conn.execute("ANALYZE runs")
    cursor = await conn.execute(
        "EXPLAIN " + QUERIES["console_inbox_count"], {"pending": ["pending_review"]}
    )
    plan = "\n".join(row["QUERY PLAN"] for row in await cursor.fetchall())
    assert "Seq Scan on runs" not in plan and "runs_status_created" in plan, plan
