"""A run's history (its checkpoints, what each wrote) and forks from one of them, with
a real daemon in this process: the fork continues from the checkpoint, runs the step
after it again, and leaves its source as it was."""

from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from engine.runtime import store
from engine.runtime.forks import CheckpointNotFound, fork_run
from engine.runtime.history import Entry, run_history
from engine.service.access.identities import Role, create_token
from engine.settings import Settings
from tests.access import api
from tests.graphs import ledger_workflow
from tests.helpers import in_process_daemon, run_checksums, table_checksums, wait_for
from tests.integration.test_console import console, text

SETTLED = (
    "SELECT 1 FROM artifacts WHERE run_id = %s AND type = 'notification' "
    "AND status NOT IN ('pending', 'sending')"
)

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status FROM runs WHERE run_id = %s"
LEDGER = "SELECT node, count(*) AS n FROM node_ledger WHERE run_id = %s GROUP BY node"
SETTINGS = Settings(poll_interval=0.1, max_attempts=1)


def daemon(db_url: str) -> AbstractAsyncContextManager[None]:
    """A real daemon in this process serving the ledger graph, drained when the block ends."""
    return in_process_daemon(db_url, SETTINGS, {"ledger": ledger_workflow()})


async def reaches(conn: Conn, run_id: str, status: str) -> None:
    await wait_for(conn, STATUS, (run_id,), until=lambda rows: rows[0]["status"] == status)


async def approve(conn: Conn, run_id: str) -> None:
    await reaches(conn, run_id, "pending_review")
    await store.approve(conn, run_id, gate="review", approver="ann")


async def executions(conn: Conn, run_id: str) -> dict[str, int]:
    rows = await (await conn.execute(LEDGER, (run_id,))).fetchall()
    return {row["node"]: row["n"] for row in rows}


async def published_run(conn: Conn) -> str:
    """A ledger run taken to its end: n1 → n2 → review (approved) → n4 → n5."""
    run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    await approve(conn, run["run_id"])
    await reaches(conn, run["run_id"], "published")
    return str(run["run_id"])


def before_review(entries: list[Entry]) -> Entry:
    """The checkpoint whose next node is the review gate."""
    return next(entry for entry in entries if entry.next == ["review"])


async def test_history_lists_each_checkpoint_with_the_nodes_and_writes_that_made_it(
    db_url: str, conn: Conn
) -> None:
    async with daemon(db_url):
        run_id = await published_run(conn)
    found = await run_history(conn, run_id)

    assert [e.step for e in found.entries] == [-1, 0, 1, 2, 3, 4, 5]
    assert [e.nodes for e in found.entries] == [
        [], ["__start__"], ["n1"], ["n2"], ["review"], ["n4"], ["n5"],
    ]  # fmt: skip
    assert [e.next for e in found.entries] == [[], ["n1"], ["n2"], ["review"], ["n4"], ["n5"], []]
    ids = [e.checkpoint_id for e in found.entries]
    assert ids == sorted(ids) and [e.parent_checkpoint_id for e in found.entries] == [
        None,
        *ids[:-1],
    ]
    times = [e.at for e in found.entries]
    assert all(times) and times == sorted(times)  # type: ignore[type-var]
    n4 = found.entries[5]
    assert [(w.node, w.channel, w.value) for w in n4.writes] == [
        ("n4", "visited", ["n1", "n2", "n4"])
    ]
    review = found.entries[4]
    assert [(w.channel, w.value["approver"]) for w in review.writes] == [("decision", "ann")]
    assert review.writes_not_shown == 0  # its interrupt is not a write to the state
    # The run paused after the checkpoint before the gate, asking what the gate asked.
    assert before_review(found.entries).interrupts == [{"gate": "review", "visited": ["n1", "n2"]}]
    assert found.earlier == 0 and found.before is None

    # A page at a time, newest first; the cursor gives the page before.
    newest = await run_history(conn, run_id, limit=3)
    assert [e.step for e in newest.entries] == [3, 4, 5] and newest.earlier == 4
    older = await run_history(conn, run_id, before=newest.before, limit=3)
    assert [e.step for e in older.entries] == [0, 1, 2] and older.earlier == 1

    with pytest.raises(store.RunNotFound, match="run run_nope not found"):
        await run_history(conn, "run_nope")


async def test_a_value_too_large_is_listed_by_its_size_and_the_api_cuts_the_rest(
    db_url: str, conn: Conn
) -> None:
    run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    run_id = run["run_id"]
    # A step that wrote a large value and a long one, as LangGraph stores writes.
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    serde = JsonPlusSerializer()
    for n in range(2):
        await conn.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_id, parent_checkpoint_id, checkpoint,"
            " metadata) VALUES (%s, %s, %s, %s, %s)",
            (
                run_id,
                f"1f000000-0000-6000-800{n}-000000000000",
                "1f000000-0000-6000-8000-000000000000" if n else None,
                Jsonb({"ts": "2026-12-03T08:00:00+00:00"}),
                Jsonb({"step": n, "source": "loop"}),
            ),
        )
    for idx, value in enumerate(["x" * 100_000, "y" * 10_000, *range(22)]):
        kind, blob = serde.dumps_typed(value)
        await conn.execute(
            "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,"
            " task_path, idx, channel, type, blob) VALUES (%s, '', %s, 't', %s, %s, %s, %s, %s)",
            (
                run_id,
                "1f000000-0000-6000-8000-000000000000",
                "~__pregel_pull, big",
                idx,
                f"c{idx}",
                kind,
                blob,
            ),
        )
    [_, made] = (await run_history(conn, run_id)).entries
    large, long, *_ = made.writes
    assert (len(made.writes), made.writes_not_shown) == (20, 4)  # a few per checkpoint
    assert (large.channel, large.shown, large.value) == ("c0", False, None)
    assert large.size is not None and large.size > 100_000
    assert long.shown and long.value == "y" * 10_000
    async with api(db_url, peer="127.0.0.1", base="http://127.0.0.1") as client:
        page = await client.get(f"/runs/{run_id}/history")
    assert page.status_code == 200, page.text
    assert len(page.content) < 8_000
    [shown_large, shown_long, *_] = page.json()["checkpoints"][1]["writes"]
    assert shown_large["shown"] is False and shown_large["size"] == large.size
    assert shown_long["value"].startswith("y" * 100) and "more characters" in shown_long["value"]


async def test_a_fork_before_the_gate_asks_again_and_runs_only_what_follows(
    db_url: str, conn: Conn
) -> None:
    async with daemon(db_url):
        source = await published_run(conn)
        point = before_review((await run_history(conn, source)).entries)
        untouched = await run_checksums(conn, source)

        fork = await fork_run(conn, source, point.checkpoint_id)
        assert fork["status"] == "queued" and fork["run_id"] != source
        assert (fork["forked_from"], fork["forked_from_checkpoint"]) == (
            source,
            point.checkpoint_id,
        )
        # The fork point's step runs again: the gate asks the fork, not the source's answer.
        await approve(conn, fork["run_id"])
        await reaches(conn, fork["run_id"], "published")

    assert await executions(conn, fork["run_id"]) == {"n4": 1, "n5": 1}
    shown = await store.show_run(conn, fork["run_id"])
    assert shown.run["result"]["visited"] == ["n1", "n2", "n4", "n5"]
    assert shown.run["result"]["decision"]["run_id"] == fork["run_id"]  # its own approval
    assert await run_checksums(conn, source) == untouched
    history = (await run_history(conn, fork["run_id"])).entries
    source_history = (await run_history(conn, source)).entries
    # The chain up to the fork point is the source's (the gate asked the same there),
    # then the fork's own steps.
    assert history[:4] == source_history[:4]
    assert history[3].checkpoint_id == point.checkpoint_id
    assert [e.step for e in history] == [-1, 0, 1, 2, 3, 4, 5]
    assert history[4].checkpoint_id > source_history[-1].checkpoint_id


async def test_a_fork_from_a_step_whose_tasks_wrote_runs_that_step_again(
    db_url: str, conn: Conn
) -> None:
    async with daemon(db_url):
        source = await published_run(conn)
        entries = (await run_history(conn, source)).entries
        after_n1 = next(e for e in entries if e.nodes == ["n1"])  # n2's writes are on it
        fork = await fork_run(conn, source, after_n1.checkpoint_id)
        await approve(conn, fork["run_id"])
        await reaches(conn, fork["run_id"], "published")
    assert await executions(conn, fork["run_id"]) == {"n2": 1, "n4": 1, "n5": 1}


async def test_a_fork_of_a_run_waiting_at_a_gate_waits_there_too(db_url: str, conn: Conn) -> None:
    async with daemon(db_url):
        run = await store.create_run(conn, project="p", payload={}, workflow="ledger")
        source = run["run_id"]
        await reaches(conn, source, "pending_review")
        # The daemon's outbox settles the pause's notification (`recorded`: no channel)
        # in its own time; the fork must change nothing of the source after that.
        await wait_for(conn, SETTLED, (source,), until=bool)
        untouched = await run_checksums(conn, source)
        fork = await fork_run(conn, source)  # its latest checkpoint
        await reaches(conn, fork["run_id"], "pending_review")
        forked = await store.get_run(conn, fork["run_id"])
        assert forked["waiting_for"]["gate"] == "review"
        assert await run_checksums(conn, source) == untouched
        # Each answers its own question: approving the fork leaves the source waiting.
        await approve(conn, fork["run_id"])
        await reaches(conn, fork["run_id"], "published")
    assert (await store.get_run(conn, source))["status"] == "pending_review"
    assert await executions(conn, source) == {"n1": 1, "n2": 1}
    assert await executions(conn, fork["run_id"]) == {"n4": 1, "n5": 1}


async def test_a_fork_of_a_fork_continues_from_the_copied_chain(db_url: str, conn: Conn) -> None:
    async with daemon(db_url):
        source = await published_run(conn)
        first = await fork_run(
            conn, source, before_review((await run_history(conn, source)).entries).checkpoint_id
        )
        await approve(conn, first["run_id"])
        await reaches(conn, first["run_id"], "published")
        entries = (await run_history(conn, first["run_id"])).entries
        second = await fork_run(conn, first["run_id"], before_review(entries).checkpoint_id)
        assert second["forked_from"] == first["run_id"]
        await approve(conn, second["run_id"])
        await reaches(conn, second["run_id"], "published")
    assert await executions(conn, second["run_id"]) == {"n4": 1, "n5": 1}


async def test_refused_forks_write_nothing_and_say_why(db_url: str, conn: Conn) -> None:
    other = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    async with daemon(db_url):
        source = await published_run(conn)
        await reaches(conn, other["run_id"], "pending_review")
    others_checkpoint = (await run_history(conn, other["run_id"])).entries[0].checkpoint_id
    fresh = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    running = await store.create_run(conn, project="p", payload={}, workflow="ledger")
    # As a claim leaves it, with no daemon here to run it.
    await conn.execute("UPDATE runs SET status = 'running' WHERE run_id = %s", (running["run_id"],))
    before = await table_checksums(conn)

    refusals: list[tuple[str, str | None, type[Exception], str]] = [
        ("run_nope", None, store.RunNotFound, "run run_nope not found"),
        (source, "cp-nope", CheckpointNotFound, f"run {source} has no checkpoint cp-nope"),
        (
            source,
            others_checkpoint,
            CheckpointNotFound,
            f"run {source} has no checkpoint {others_checkpoint}",
        ),
        (running["run_id"], None, store.Refused, f"run {running['run_id']} is running"),
        (fresh["run_id"], None, store.Refused, f"run {fresh['run_id']} has no checkpoint yet"),
        (source, "cp\x00", store.InvalidInput, "checkpoint_id: "),
    ]
    for run_id, checkpoint_id, refusal, message in refusals:
        with pytest.raises(refusal) as refused:
            await fork_run(conn, run_id, checkpoint_id)
        assert message in str(refused.value)
    assert await table_checksums(conn) == before


async def test_over_http_viewers_read_history_and_admins_fork(db_url: str, conn: Conn) -> None:
    _, viewer = await create_token(conn, "vic", Role.VIEWER)
    _, admin = await create_token(conn, "ada", Role.ADMIN)
    async with daemon(db_url):
        source = await published_run(conn)

    def as_(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async with api(db_url, api_token=SecretStr("x" * 40)) as client:
        page = await client.get(f"/runs/{source}/history", headers=as_(viewer))
        assert page.status_code == 200, page.text
        checkpoints: list[dict[str, Any]] = page.json()["checkpoints"]
        assert [c["step"] for c in checkpoints] == [-1, 0, 1, 2, 3, 4, 5]
        point = next(c for c in checkpoints if c["next"] == ["review"])
        assert point["interrupts"] == [{"gate": "review", "visited": ["n1", "n2"]}]
        paged = await client.get(f"/runs/{source}/history?limit=2", headers=as_(viewer))
        assert (
            paged.json()["earlier"] == 5
            and paged.json()["before"] == checkpoints[5]["checkpoint_id"]
        )
        missing = await client.get("/runs/run_nope/history", headers=as_(viewer))
        assert missing.status_code == 404
        assert missing.json() == {"error": "run run_nope not found", "field": "run_id"}
        for bad in ("limit=0", "limit=201", f"before={'x' * 101}"):
            refused = await client.get(f"/runs/{source}/history?{bad}", headers=as_(viewer))
            assert refused.status_code == 422, bad

        body = {"checkpoint_id": point["checkpoint_id"]}
        denied = await client.post(f"/runs/{source}/fork", json=body, headers=as_(viewer))
        assert denied.status_code == 403
        assert denied.json()["error"] == "vic is viewer: this needs the admin role"
        unknown = await client.post(
            f"/runs/{source}/fork", json={"checkpoint_id": "cp-nope"}, headers=as_(admin)
        )
        assert unknown.status_code == 404
        assert unknown.json() == {
            "error": f"run {source} has no checkpoint cp-nope",
            "field": "checkpoint_id",
        }
        typo = await client.post(
            f"/runs/{source}/fork", json={"checkpoint": "x"}, headers=as_(admin)
        )
        assert typo.status_code == 422 and typo.json()["field"] == "checkpoint"
        created = await client.post(f"/runs/{source}/fork", json=body, headers=as_(admin))
        assert created.status_code == 201, created.text
        fork = created.json()
        assert fork["status"] == "queued" and fork["forked_from"] == source
        assert fork["forked_from_checkpoint"] == point["checkpoint_id"]
        latest = await client.post(f"/runs/{source}/fork", headers=as_(admin))  # no body
        assert latest.status_code == 201
        assert latest.json()["forked_from_checkpoint"] == checkpoints[-1]["checkpoint_id"]

        await conn.execute("UPDATE runs SET status = 'running' WHERE run_id = %s", (source,))
        busy = await client.post(f"/runs/{source}/fork", headers=as_(admin))
        assert busy.status_code == 409
        assert busy.json()["error"].startswith(f"run {source} is running")


async def test_the_console_forks_from_a_checkpoint_of_the_timeline(db_url: str, conn: Conn) -> None:
    tokens = {role: (await create_token(conn, f"t-{role}", role))[1] for role in Role}
    async with daemon(db_url):
        source = await published_run(conn)
    point = before_review((await run_history(conn, source)).entries).checkpoint_id
    form = {"checkpoint_id": point}
    for role in (Role.VIEWER, Role.APPROVER):
        async with console(db_url) as client:
            login = {"token": tokens[role], "next": "/"}
            assert (await client.post("/console/login", data=login)).status_code == 303
            page = await client.get(f"/console/runs/{source}")
            assert point in page.text and "Fork from here" not in page.text, role
            refused = await client.post(f"/console/runs/{source}/fork", data=form)
            assert refused.status_code == 403, role
            assert "Forking a run needs the admin role." in text(refused.text)
    assert (await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()) == {"n": 1}

    async with console(db_url) as client:
        login = {"token": tokens[Role.ADMIN], "next": "/"}
        assert (await client.post("/console/login", data=login)).status_code == 303
        shown = text((await client.get(f"/console/runs/{source}")).text)
        assert shown.count("Fork from here") == 7  # one per checkpoint
        unknown = await client.post(f"/console/runs/{source}/fork", data={"checkpoint_id": "cp"})
        assert unknown.status_code == 404
        assert f"run {source} has no checkpoint cp" in text(unknown.text)
        empty = await client.post(f"/console/runs/{source}/fork", data={})
        assert empty.status_code == 422 and "checkpoint_id" in text(empty.text)
        # The form asks first; nothing is forked until its answer comes back confirmed.
        asked = await client.post(f"/console/runs/{source}/fork", data=form)
        assert asked.status_code == 200, asked.text
        assert f"Fork run {source}?" in text(asked.text) and point in asked.text
        assert (await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()) == {"n": 1}
        forked = await client.post(f"/console/runs/{source}/fork", data={**form, "confirm": "yes"})
        assert forked.status_code == 303
        fork_page = await client.get(forked.headers["location"])
    fork_id = forked.headers["location"].removeprefix("/console/runs/").removesuffix("?done=forked")
    assert (await store.get_run(conn, fork_id))["forked_from"] == source
    assert f"Forked from {source} at checkpoint {point}" in text(fork_page.text)
    assert f'href="/console/runs/{source}"' in fork_page.text
