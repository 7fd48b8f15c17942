"""The operator console over HTTP (no browser): pages, the approval form, sign-in."""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from engine.db.connections import open_pool
from engine.db.status import statuses
from engine.runtime import limits, schedules, store
from engine.runtime.limits import Limits
from engine.runtime.schedule_times import Timing
from engine.service.api import create_app
from engine.settings import ProviderLimit, Settings
from tests.app import app as test_app

KNOWN = ", ".join(statuses(test_app.gate_names()))

Conn = AsyncConnection[DictRow]
TOKEN = "console-token-for-the-tests-0123456789abcdef"
# With no token the console serves loopback only: the tests come from there.
CLIENT_IP = "127.0.0.1"
PROPOSAL = ["script_writer", "media", "editor", "publisher"]
RENDER = "http://127.0.0.1:9/_sandbox/files/abc.mp4"


@asynccontextmanager
async def console(db_url: str, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(api_token=SecretStr(token) if token else None)
    async with open_pool(db_url, settings) as pool:
        app = create_app(test_app, test_app.configure(settings), url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 4711))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            yield client


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with console(db_url) as c:
        yield c


async def waiting(conn: Conn, gate: str, brief: str = "Why cats sit in boxes", **ask: Any) -> str:
    """A run paused at `gate`, asking what `ask` says (as the gate's interrupt would)."""
    run = await store.create_run(
        conn, project="cats", payload={"brief": brief}, workflow="production"
    )
    await conn.execute(
        "UPDATE runs SET status = %s, waiting_for = %s WHERE run_id = %s",
        (f"pending_{gate}", Jsonb({"gate": gate, **ask}), run["run_id"]),
    )
    return str(run["run_id"])


async def approvals(conn: Conn) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT run_id, gate, decision, approver, approver_ip, comment, payload"
        " FROM hitl_approvals ORDER BY id"
    )
    return [dict(row) for row in await cursor.fetchall()]


def form(gate: Any = "workflow", decision: Any = "approved", **fields: Any) -> dict[str, Any]:
    return {"gate": gate, "decision": decision, "approver": "ann", "next": "/", **fields}


def text(html: str) -> str:
    """The page's text, tags dropped and whitespace collapsed, for phrase checks."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


async def test_the_inbox_shows_what_each_waiting_run_asks(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    assert "Nothing is waiting for approval" in (await client.get("/")).text
    workflow_run = await waiting(conn, "workflow", proposal=PROPOSAL)
    publish_run = await waiting(conn, "publish", render={"url": RENDER, "render_id": "abc"})
    unrendered = await waiting(conn, "publish", render={})
    queued = await store.create_run(conn, project="dogs", payload={}, workflow="production")

    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    shown = text(page.text)
    assert "3 runs waiting" in shown
    assert f"workflow gate Approve the workflow {workflow_run}" in shown
    assert "Brendan proposes script_writer media editor publisher" in shown
    assert f'<video class="preview" src="{RENDER}"' in page.text
    assert f"{unrendered} cats pending_publish" in shown
    assert "The render to publish Nothing to show yet." in shown
    assert queued["run_id"] not in page.text
    assert page.text.index(workflow_run) < page.text.index(publish_run)  # longest waiting first

    live = await client.get("/console/inbox/live")
    assert live.status_code == 200 and "<html" not in live.text
    assert f'id="run-{workflow_run}"' in live.text and f'id="run-{publish_run}"' in live.text


async def test_approving_an_edited_workflow_records_who_from_where_and_what(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "workflow", proposal=PROPOSAL)
    other = await waiting(conn, "workflow", proposal=PROPOSAL)
    sent = await client.post(
        f"/console/runs/{run_id}/approvals",
        data=form(
            approver="Zoë O'Brien",
            edit="1",
            **{
                "edit.workflow": ["script_writer", "editor"],
                "order.workflow.editor": "1",
                "order.workflow.script_writer": "2",
                "order.workflow.media": "",
            },
        ),
    )
    assert sent.status_code == 303, sent.text
    assert re.fullmatch(r"/\?sent=\d+", sent.headers["location"])
    assert await approvals(conn) == [
        {
            "run_id": run_id,
            "gate": "workflow",
            "decision": "approved",
            "approver": "Zoë O'Brien",
            "approver_ip": CLIENT_IP,
            "comment": None,
            "payload": {"workflow": ["editor", "script_writer"]},
        }
    ]

    inbox = await client.get(sent.headers["location"])  # the cookie remembers the name
    shown = text(inbox.text)
    assert f"Sent: approved at the workflow gate for {run_id} by Zoë O'Brien" in shown
    assert "Approved by Zoë O'Brien" in shown  # the run's card, until a worker takes it up
    assert 'value="Zoë O&#39;Brien"' in inbox.text  # prefilled on the other run's form
    assert f'action="/console/runs/{other}/approvals"' in inbox.text


async def test_approving_the_proposal_unchanged_sends_no_payload(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "workflow", proposal=PROPOSAL)
    fields = form(edit="1", next=f"/console/runs/{run_id}", **{"edit.workflow": PROPOSAL})
    sent = await client.post(f"/console/runs/{run_id}/approvals", data=fields)
    assert sent.status_code == 303
    assert sent.headers["location"].startswith(f"/console/runs/{run_id}?sent=")
    assert (await approvals(conn))[0]["payload"] is None


async def test_a_rejection_carries_the_comment_and_ignores_the_editor(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "workflow", proposal=PROPOSAL)
    fields = form(
        decision="rejected", comment="  skip media  ", edit="1", **{"edit.workflow": ["editor"]}
    )
    assert (await client.post(f"/console/runs/{run_id}/approvals", data=fields)).status_code == 303
    [row] = await approvals(conn)
    assert (row["decision"], row["comment"], row["payload"]) == ("rejected", "skip media", None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"approver": "  "}, "approver: enter your name"),
        ({"approver": "x" * 201}, "approver: at most 200 characters"),
        ({"decision": "maybe"}, "decision: must be 'approved' or 'rejected'"),
        ({"gate": "Workflow!"}, "gate: 'Workflow!' is not a gate name"),
        ({"comment": "x" * 5001}, "comment: at most 5000 characters"),
        ({"edit": "1", "edit.workflow": ["dancer"]}, "payload.workflow: unknown choice 'dancer'"),
        ({"edit": "1"}, "payload.workflow: List should have at least 1 item"),
        (
            {"edit": "1", "edit.workflow": ["media"], "order.workflow.media": "first"},
            "payload.workflow: the position of media must be 1 to 99, not 'first'",
        ),
        # The gate's own rule, declared with its edits: refused before the row is written.
        (
            {"edit": "1", "edit.workflow": ["script_writer", "publisher"]},
            "payload.workflow: Value error, workflow: the publisher needs the editor",
        ),
    ],
)
async def test_bad_input_is_refused_with_the_field_named(
    client: httpx.AsyncClient, conn: Conn, change: dict[str, Any], message: str
) -> None:
    run_id = await waiting(conn, "workflow", proposal=PROPOSAL)
    refused = await client.post(f"/console/runs/{run_id}/approvals", data=form(**change))
    assert refused.status_code == 422
    assert message in text(refused.text)
    assert 'href="/"' in refused.text  # back to where the form was
    assert await approvals(conn) == []


async def test_the_publish_gate_takes_a_publish_at_from_its_form(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "publish", render={"url": RENDER})
    inbox = await client.get("/")
    assert 'name="edit.publish_at"' in inbox.text
    assert "Publish at (ISO 8601 with its offset" in text(inbox.text)
    naive = form(gate="publish", edit="1", **{"edit.publish_at": "2026-12-03T09:00"})
    refused = await client.post(f"/console/runs/{run_id}/approvals", data=naive)
    assert refused.status_code == 422
    assert "payload.publish_at: Value error, publish_at: 2026-12-03T09:00 has no UTC offset" in (
        text(refused.text)
    )
    assert await approvals(conn) == []
    at = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
    timed = form(gate="publish", edit="1", **{"edit.publish_at": f" {at} "})
    assert (await client.post(f"/console/runs/{run_id}/approvals", data=timed)).status_code == 303
    assert (await approvals(conn))[0]["payload"] == {"publish_at": at}


async def test_an_empty_publish_at_approves_publishing_at_once(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "publish", render={"url": RENDER})
    empty = form(gate="publish", edit="1", **{"edit.publish_at": ""})
    assert (await client.post(f"/console/runs/{run_id}/approvals", data=empty)).status_code == 303
    assert (await approvals(conn))[0]["payload"] is None


async def test_approving_a_run_that_is_not_waiting_shows_the_refusal(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    queued = (await store.create_run(conn, project="cats", payload={}, workflow="production"))[
        "run_id"
    ]
    refused = await client.post(f"/console/runs/{queued}/approvals", data=form())
    assert refused.status_code == 409
    assert (
        f"approval refused: run {queued} is not waiting at gate workflow (status is queued)"
        in text(refused.text)
    )

    run_id = await waiting(conn, "workflow", proposal=PROPOSAL)
    assert (await client.post(f"/console/runs/{run_id}/approvals", data=form())).status_code == 303
    twice = await client.post(f"/console/runs/{run_id}/approvals", data=form())
    assert twice.status_code == 409
    assert "(approved by ann) waiting at gate workflow" in text(twice.text)

    missing = await client.post("/console/runs/run_nope/approvals", data=form())
    assert missing.status_code == 404 and "run run_nope not found" in missing.text


async def test_a_form_sent_from_another_site_is_refused(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "workflow", proposal=PROPOSAL)
    forged = await client.post(
        f"/console/runs/{run_id}/approvals", data=form(), headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert forged.status_code == 403 and "sent from another site" in forged.text
    assert await approvals(conn) == []
    ours = await client.post(
        f"/console/runs/{run_id}/approvals", data=form(), headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert ours.status_code == 303


async def test_the_runs_list_filters_and_pages(client: httpx.AsyncClient, conn: Conn) -> None:
    now = datetime.now(UTC)
    made = {}
    for name, project, status, age in [
        ("old_running", "cats", "running", timedelta(hours=2)),
        ("old_published", "cats", "published", timedelta(hours=3)),
        ("new_running", "cats", "running", timedelta(minutes=1)),
        ("old_waiting", "dogs", "pending_workflow", timedelta(hours=1)),
        ("queued", "dogs", "queued", timedelta(minutes=2)),
    ]:
        run = await store.create_run(
            conn, project=project, payload={"brief": name}, workflow="production"
        )
        await conn.execute(
            "UPDATE runs SET status = %s, created_at = %s WHERE run_id = %s",
            (status, now - age, run["run_id"]),
        )
        made[name] = run["run_id"]

    async def listed(query: str) -> list[str]:
        page = await client.get(f"/console/runs?{query}")
        assert page.status_code == 200, page.text
        ids = re.findall(r'<tr id="row-(run_\w+)"', page.text)
        names = {run_id: name for name, run_id in made.items()}
        return [names[run_id] for run_id in ids]

    everything = ["new_running", "queued", "old_waiting", "old_running", "old_published"]
    assert await listed("") == everything
    assert await listed("status=running") == ["new_running", "old_running"]
    assert await listed("project=dogs") == ["queued", "old_waiting"]
    assert await listed("stuck=1&older_than=30m") == ["old_waiting", "old_running"]
    assert await listed("stuck=1&older_than=90m&project=cats") == ["old_running"]

    first = await client.get("/console/runs?limit=2")
    older = re.search(r'href="/console/runs\?([^"]+)">Older', first.text)
    assert older is not None
    cursor = older[1].replace("&amp;", "&")
    assert await listed(cursor) == ["old_waiting", "old_running"]
    live = await client.get(f"/console/runs/live?{cursor}")
    assert "<html" not in live.text and made["old_waiting"] in live.text

    for query, message in [
        ("project=Not+A+Slug", "project: 'Not A Slug' is not a project slug"),
        ("limit=0", "limit: a number from 1 to 200"),
        ("stuck=1&older_than=soon", "older_than: 'soon' is not a duration"),
        ("before=yesterday", "before: not a page cursor"),
        # A typo must not look like "no such runs": refused, listing what there is.
        ("status=bogus", f"status: 'bogus' is not a status; one of {KNOWN}"),
        ("status=pending_nowhere", "status: 'pending_nowhere' is not a status"),
    ]:
        bad = await client.get(f"/console/runs?{query}")
        assert bad.status_code == 422 and message in text(bad.text), query
        live = await client.get(f"/console/runs/live?{query}")
        assert live.status_code == 422 and message in text(live.text), query


async def test_the_run_page_shows_state_artifacts_and_a_timeline(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "publish", render={"url": RENDER})
    start = datetime.now(UTC) - timedelta(minutes=5)

    def at(seconds: int) -> datetime:
        return start + timedelta(seconds=seconds)

    await conn.execute("UPDATE runs SET created_at = %s WHERE run_id = %s", (at(0), run_id))
    await conn.execute(
        "INSERT INTO orchestration_checkpoints (run_id, state, checkpoint_id, step)"
        " VALUES (%s, %s, 'cp-2', 2)",
        (run_id, Jsonb({"values": {"script": "Cats love boxes", "workflow": ["editor"]}})),
    )
    # Each checkpoint is made by what its parent's tasks wrote (as LangGraph stores it).
    serde = JsonPlusSerializer()
    for n, (step, seconds, channels, made_by) in enumerate(
        [
            (-1, 1, ["__start__"], None),
            (0, 2, ["brief", "branch:to:editor"], ("__start__", "brief", "Why cats sit in boxes")),
            (1, 30, ["render"], ("editor", "render", {"url": RENDER})),
        ]
    ):
        checkpoint_id, parent = f"1f000000-0000-6000-800{n}-000000000000", None
        if made_by is not None:
            parent = f"1f000000-0000-6000-800{n - 1}-000000000000"
            node, channel, value = made_by
            kind, blob = serde.dumps_typed(value)
            await conn.execute(
                "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,"
                " task_path, idx, channel, type, blob) VALUES (%s, '', %s, %s, %s, 0, %s, %s, %s)",
                (run_id, parent, f"task-{n}", f"~__pregel_pull, {node}", channel, kind, blob),
            )
        await conn.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_id, parent_checkpoint_id, checkpoint,"
            " metadata) VALUES (%s, %s, %s, %s, %s)",
            (
                run_id,
                checkpoint_id,
                parent,
                Jsonb({"ts": at(seconds).isoformat(), "updated_channels": channels}),
                Jsonb({"step": step, "source": "input" if step < 0 else "loop"}),
            ),
        )
    for kind, url, persona in [
        ("image", "http://127.0.0.1:9/_sandbox/files/cat.png", "media"),
        ("render", RENDER, "editor"),
        ("publication", "https://tiktok.example/p/1", "publisher"),
    ]:
        await conn.execute(
            "INSERT INTO artifacts (run_id, type, persona, provider, url, metadata)"
            " VALUES (%s, %s, %s, 'kie', %s, '{\"note\": \"<b>bold</b>\"}')",
            (run_id, kind, persona, url),
        )
    await conn.execute(
        "INSERT INTO hitl_approvals (run_id, gate, approver, decision, comment, created_at)"
        " VALUES (%s, 'publish', 'ann', 'rejected', 'too dark', %s)",
        (run_id, at(10)),
    )
    await conn.execute(
        "INSERT INTO webhook_events (provider, signature_status, run_id, job_id, received_at)"
        " VALUES ('shotstack', 'verified_by_fetch', %s, 'job-7', %s)",
        (run_id, at(20)),
    )

    page = await client.get(f"/console/runs/{run_id}")
    assert page.status_code == 200, page.text
    shown = text(page.text)
    assert "Status pending_publish" in shown
    assert "brief Why cats sit in boxes" in shown  # the payload
    assert "script Cats love boxes" in shown  # the checkpoint's state
    assert 'src="http://127.0.0.1:9/_sandbox/files/cat.png"' in page.text
    assert f'<video class="preview" src="{RENDER}"' in page.text
    assert 'href="https://tiktok.example/p/1"' in page.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text  # stored text is escaped, never markup
    timeline = shown[shown.index("Timeline") :]
    order = [
        "Run created",
        "step -1 · input 1f000000-0000-6000-8000-000000000000",
        "step 0 · __start__ wrote brief → editor 1f000000-0000-6000-8001-000000000000",
        "Rejected at the publish gate by ann",
        "Webhook from shotstack · verified_by_fetch job job-7",
        "step 1 · editor wrote render 1f000000-0000-6000-8002-000000000000",
    ]
    positions = [timeline.index(phrase) for phrase in order]
    assert positions == sorted(positions), timeline
    assert f'"editor.render": {{ "url": "{RENDER}" }}' in shown  # what it wrote, on demand
    assert shown.count("Fork from here") == 3  # one per checkpoint

    live = await client.get(f"/console/runs/{run_id}/live")
    assert "<html" not in live.text and 'id="timeline"' in live.text
    missing = await client.get("/console/runs/run_nope")
    assert missing.status_code == 404 and "run run_nope not found" in missing.text


async def test_with_a_token_every_page_needs_a_session_opened_once(db_url: str, conn: Conn) -> None:
    run_id = await waiting(conn, "workflow", proposal=PROPOSAL)
    async with console(db_url, TOKEN) as client:
        inbox = await client.get("/")
        assert inbox.status_code == 303 and inbox.headers["location"] == "/console/login?next=/"
        refused = await client.post(f"/console/runs/{run_id}/approvals", data=form())
        assert refused.status_code == 401

        wrong = await client.post("/console/login", data={"token": "guess", "next": "/"})
        assert wrong.status_code == 401 and "not the API's token" in wrong.text
        signed = await client.post("/console/login", data={"token": TOKEN, "next": "//evil.test"})
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        session = client.cookies["orchestrator_session"]
        assert TOKEN not in cookie and session
        assert '<form class="decide"' in (await client.get("/")).text
        sent = await client.post(f"/console/runs/{run_id}/approvals", data=form())
        assert sent.status_code == 303
        # The identity that signed in, not the name the form carried.
        assert (await approvals(conn))[0]["approver"] == "admin"

        await client.post("/console/logout")
        assert "orchestrator_session" not in client.cookies
        other = await waiting(conn, "workflow", proposal=PROPOSAL)
        # The old cookie, replayed: the session was revoked at sign-out.
        client.cookies.set("orchestrator_session", session)
        after = await client.post(f"/console/runs/{other}/approvals", data=form())
        assert after.status_code == 401
        assert (await client.get("/")).status_code == 303


async def test_without_a_token_there_is_no_sign_in(client: httpx.AsyncClient) -> None:
    page = await client.get("/console/login?next=/console/runs")
    assert page.status_code == 303 and page.headers["location"] == "/console/runs"
    assert "Sign in" not in (await client.get("/")).text


async def test_static_files(client: httpx.AsyncClient) -> None:
    script = await client.get("/console/static/console.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    style = await client.get("/console/static/console.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert (await client.get("/console/static/..%2Fqueries.sql")).status_code == 404
    assert (await client.get("/console/static/nope.js")).status_code == 404


async def test_a_gate_is_drawn_and_checked_from_its_declaration(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run = await store.create_run(conn, project="cats", payload={}, workflow="ledger")
    run_id = run["run_id"]
    await conn.execute(
        "UPDATE runs SET status = 'pending_review', waiting_for = %s WHERE run_id = %s",
        (Jsonb({"gate": "review", "visited": ["n1", "n2"], "next": ["n5", "n4"]}), run_id),
    )
    page = await client.get(f"/console/runs/{run_id}")
    shown = text(page.text)
    assert "review gate Review the ledger" in shown and "Check the nodes so far." in shown
    assert "Nodes so far n1 n2" in shown
    # The request's `next` fills the ordered choice, in its order; each kind has its input.
    assert page.text.index('value="n5"') < page.text.index('value="n4"')
    for drawn in (
        'name="order.order.n5" value="1"',
        '<select name="edit.level">',
        '<textarea name="edit.note"',
        'type="number" step="any" name="edit.weight" value="1"',
        'type="checkbox" name="edit.urgent"',
        "Extra (JSON)",
    ):
        assert drawn in page.text, drawn

    def sent(**fields: Any) -> dict[str, Any]:
        return form(gate="review", edit="1", **{"edit.order": ["n5", "n4"], **fields})

    refused = await client.post(
        f"/console/runs/{run_id}/approvals", data=sent(**{"edit.weight": "11"})
    )
    assert refused.status_code == 422
    assert "payload.weight: Input should be less than or equal to 10" in text(refused.text)
    assert await approvals(conn) == []
    accepted = await client.post(
        f"/console/runs/{run_id}/approvals",
        data=sent(**{"edit.level": "high", "edit.urgent": "1", "edit.extra": '{"a": 1}'}),
    )
    assert accepted.status_code == 303, accepted.text
    [row] = await approvals(conn)
    # Only what changed; the ordered choice as the request gave it is no change.
    assert row["payload"] == {"level": "high", "urgent": True, "extra": {"a": 1}}


async def test_a_delayed_run_says_when_it_wakes_and_is_found_by_its_status(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    due = datetime.now(UTC) + timedelta(days=2)
    run = await store.create_run(
        conn, project="cats", payload={}, workflow="production", not_before=due
    )
    page = text((await client.get(f"/console/runs/{run['run_id']}")).text)
    assert "waiting_timer" in page and "Wakes at" in page, page
    listed = await client.get("/console/runs", params={"status": "waiting_timer"})
    assert run["run_id"] in listed.text


async def test_the_run_page_lists_its_notifications_and_how_each_channel_took_them(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "publish")  # the trigger records the gate's notification
    await conn.execute("UPDATE notification_outbox SET due_at = now() + interval '1 hour'")
    [gate] = await (
        await conn.execute("SELECT id FROM artifacts WHERE run_id = %s", (run_id,))
    ).fetchall()
    await conn.execute(
        "INSERT INTO notification_deliveries (artifact_id, channel, due_at, next_attempt_at,"
        " attempts, delivered_at, gave_up_at, last_error) VALUES"
        " (%(id)s, 'webhook', now(), now(), 1, now(), NULL, NULL),"
        " (%(id)s, 'json:0123abcd', now(), now(), 3, NULL, now(), 'failure: error=500.')",
        {"id": gate["id"]},
    )
    await conn.execute("UPDATE runs SET status = 'published' WHERE run_id = %s", (run_id,))

    shown = text((await client.get(f"/console/runs/{run_id}")).text)
    notes = shown[shown.index("Notifications") : shown.index("Timeline")]
    assert notes.startswith("Notifications 2 Event Due Status Deliveries"), notes
    assert f"gate gate publish Run {run_id} (cats) waits for a decision at gate publish." in notes
    assert re.search(r"webhook: delivered [-0-9]+ [:0-9]+ UTC · 1 attempt (?!·)", notes)
    assert re.search(
        r"json:0123abcd: gave up [-0-9]+ [:0-9]+ UTC · 3 attempts · last error: failure: error=500",
        notes,
    )
    assert f"published Run {run_id} (cats) published." in notes
    assert "pending not handed to the channels yet" in notes
    # Notifications are artifacts of the run, shown in their own section only.
    assert "Artifacts 0" in shown


async def test_a_run_parked_at_a_limit_says_for_which_slot_and_how_full_it_is(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    await limits.apply(conn, Limits({"x": ProviderLimit(concurrent=1)}))
    holder, parked = [
        await store.create_run(conn, project="cats", payload={}, workflow="production")
        for _ in range(2)
    ]
    await conn.execute(
        "INSERT INTO flow_slots (limit_name, run_id, key) VALUES ('provider:x', %s, 'job')",
        (holder["run_id"],),
    )
    await conn.execute(
        "UPDATE runs SET status = 'waiting_limit', waiting_for = %s WHERE run_id = %s",
        (Jsonb({"limit": "provider:x", "key": "job", "pause_id": 1}), parked["run_id"]),
    )
    page = text((await client.get(f"/console/runs/{parked['run_id']}")).text)
    assert "Waiting for a x slot (1 of 1 in flight, 1 run waiting for one)" in page, page
    listed = await client.get("/console/runs", params={"status": "waiting_limit"})
    assert parked["run_id"] in listed.text
    # Parked for room in its project instead, the one place taken.
    await conn.execute("UPDATE runs SET status = 'running' WHERE run_id = %s", (holder["run_id"],))
    await conn.execute(
        "UPDATE runs SET waiting_for = %s WHERE run_id = %s",
        (Jsonb({"limit": "project:cats"}), parked["run_id"]),
    )
    await limits.apply(conn, Limits(project_concurrency=1))
    page = text((await client.get(f"/console/runs/{parked['run_id']}")).text)
    assert "Waiting for room in project cats (1 of 1 running, 1 run waiting for room)" in page


async def test_the_schedules_page_lists_each_with_its_next_fire_times(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    empty = await client.get("/console/schedules")
    assert empty.status_code == 200 and "No schedules." in empty.text
    timing = Timing.parse(cron="0 9 * * MON-FRI", timezone="Asia/Tokyo")
    running, paused = [
        await schedules.create_schedule(
            conn, timing=timing, project="cats", workflow="production", payload={"brief": "b"}
        )
        for _ in range(2)
    ]
    await schedules.pause_schedule(conn, paused["schedule_id"])
    page = await client.get("/console/schedules")
    assert page.status_code == 200
    assert page.text.count("00:00:00 UTC") == 3  # 09:00 in Tokyo (no DST), the next three weekdays
    assert running["schedule_id"] in page.text and paused["schedule_id"] in page.text
    assert ">paused<" in page.text
    done = await schedules.backfill(
        conn,
        running["schedule_id"],
        datetime(2026, 11, 30, 0, tzinfo=UTC),
        datetime(2026, 11, 30, 0, tzinfo=UTC),
    )
    run_page = await client.get(f"/console/runs/{done.created[0]}")
    assert f"by {running['schedule_id']} for 2026-11-30 00:00:00 UTC" in run_page.text


async def test_a_gate_with_a_deadline_shows_it_and_the_time_left(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    due = datetime.now(UTC) + timedelta(hours=2, minutes=30)
    run_id = await waiting(
        conn, "workflow", proposal=PROPOSAL, deadline={"at": due.isoformat(), "then": "approve"}
    )
    await conn.execute("UPDATE runs SET wake_at = %s WHERE run_id = %s", (due, run_id))
    stamp = due.strftime("%Y-%m-%d %H:%M:%S UTC")
    inbox = text((await client.get("/")).text)
    assert re.search(
        rf"Deadline {stamp} \(in 2 h (29|30) min\): then the system will approve", inbox
    )
    page = text((await client.get(f"/console/runs/{run_id}")).text)
    assert re.search(rf"Deadline {stamp} \(in 2 h (29|30) min\)", page)
    escalated = await waiting(
        conn, "workflow", proposal=PROPOSAL, escalated={"from": "workflow", "role": "admin"}
    )
    assert "Escalated from the workflow gate at its deadline: needs the admin role." in text(
        (await client.get(f"/console/runs/{escalated}")).text
    )
