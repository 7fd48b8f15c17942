"""Who decided what, a run's steps and where it is in its graph: in `runs show`, the
API's run body and the run page, with a real daemon in this process running the runs."""

import json
import re
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine import ProviderWait, RunContext, Workflow, pause
from engine.db.queries import QUERIES
from engine.runtime import store
from engine.service.console.graphs import flow_order
from engine.settings import Settings
from tests.conftest import orchestrator
from tests.graphs import ledger_workflow
from tests.helpers import in_process_daemon, wait_for
from tests.integration.test_console import console, text

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status FROM runs WHERE run_id = %s"
SETTINGS = Settings(poll_interval=0.1, max_attempts=2, retry_backoff=0.01)


class WaiterState(TypedDict, total=False):
    project: str


async def _submit(state: WaiterState) -> dict[str, Any]:
    return {}


async def _wait(state: WaiterState) -> dict[str, Any]:
    # Polled again in an hour: the run stays waiting while the test looks at it.
    pause(ProviderWait("render", "job-7", datetime.now(UTC) + timedelta(hours=1)))
    return {}


def waiter_workflow() -> Workflow:
    """`submit → wait`: `wait` waits for a provider's job that never finishes."""
    builder = StateGraph(WaiterState, context_schema=RunContext)
    builder.add_node("submit", _submit)
    builder.add_node("wait", _wait)
    builder.add_edge(START, "submit")
    builder.add_edge("submit", "wait")
    return Workflow("waiter", "waiter-1", builder.compile())


def daemon(db_url: str) -> AbstractAsyncContextManager[None]:
    """A real daemon in this process serving the ledger and waiter graphs."""
    return in_process_daemon(
        db_url, SETTINGS, {"ledger": ledger_workflow(), "waiter": waiter_workflow()}
    )


async def reaches(conn: Conn, run_id: str, status: str) -> None:
    await wait_for(conn, STATUS, (run_id,), until=lambda rows: rows[0]["status"] == status)


async def ledger_run(conn: Conn, **payload: Any) -> str:
    run = await store.create_run(conn, project="p", payload=payload, workflow="ledger")
    return str(run["run_id"])


def cli(db_url: str, *args: str) -> tuple[int, str, str]:
    done = orchestrator(db_url, "runs", *args)
    return done.returncode, done.stdout, done.stderr


def nodes_drawn(html: str) -> dict[str, str]:
    """Each node of the page's graph and its state, in the order drawn."""
    return dict(re.findall(r'data-node="([^"]+)" data-state="([^"]+)"', html))


def steps_listed(html: str) -> list[list[str]]:
    """The step table's rows, as the texts of their cells."""
    table = html[html.index('<table class="steps">') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr class=\"step-[^\"]+\"[^>]*>(.*?)</tr>", table, re.S)
    return [[text(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


async def test_who_decided_what_shows_in_the_cli_the_api_and_the_run_page(
    db_url: str, conn: Conn
) -> None:
    person, timed = await ledger_run(conn), await ledger_run(conn)
    async with daemon(db_url):
        await reaches(conn, person, "pending_review")
        # No --gate: the gate the run waits at.
        code, out, _ = cli(
            db_url, "approve", person, "--reject", "--comment", "late, but go", "--approver", "ann"
        )
        assert code == 0 and re.fullmatch(
            rf"rejected {person} at gate review \(approval \d+\)\n", out
        )
        await reaches(conn, person, "published")
        # Nobody answers the other run by its deadline: the system does.
        await reaches(conn, timed, "pending_review")
        await conn.execute(
            "UPDATE runs SET wake_at = NOW() - interval '1 second', waiting_for = waiting_for"
            " || jsonb_build_object('deadline', jsonb_build_object('at', NOW()::text,"
            " 'then', 'approve')) WHERE run_id = %s",
            (timed,),
        )
        assert (await conn.execute(QUERIES["time_out_gates"])).rowcount == 1
        await reaches(conn, timed, "published")

    code, out, _ = cli(db_url, "show", person, "--json")
    assert code == 0
    [shown] = json.loads(out)["approvals"]
    assert {k: shown[k] for k in ("gate", "decision", "approver", "comment", "timed_out")} == {
        "gate": "review",
        "decision": "rejected",
        "approver": "ann",
        "comment": "late, but go",
        "timed_out": False,
    }
    assert shown["created_at"] <= shown["consumed_at"]
    code, out, _ = cli(db_url, "show", timed)
    assert code == 0 and re.search(r"review +│ approved +│ system \(deadline\)", out), out

    async with console(db_url) as client:
        body = (await client.get(f"/runs/{person}")).json()
        [answer] = body["approvals"]
        assert (answer["approver"], answer["decision"], answer["comment"]) == (
            "ann",
            "rejected",
            "late, but go",
        )
        assert answer["id"] == shown["id"] and answer["timed_out"] is False
        [system] = (await client.get(f"/runs/{timed}")).json()["approvals"]
        assert (system["approver"], system["decision"], system["timed_out"]) == (
            "system",
            "approved",
            True,
        )

        page = text((await client.get(f"/console/runs/{person}")).text)
        decided = page[page.index("Who decided") :]
        assert "review rejected ann late, but go" in decided
        page = text((await client.get(f"/console/runs/{timed}")).text)
        decided = page[page.index("Who decided") :]
        assert "review approved system nobody answered by the deadline" in decided


async def test_approve_takes_the_gate_the_run_waits_at_and_refuses_a_run_at_none(
    db_url: str, conn: Conn
) -> None:
    queued = await ledger_run(conn)
    code, out, err = cli(db_url, "approve", queued)
    assert code == 2 and out == ""
    assert err == f"error: --gate: run {queued} waits at no gate (status queued): name the gate\n"
    code, _, err = cli(db_url, "approve", "run_nope")
    assert (code, err) == (1, "error: run run_nope not found\n")

    async with console(db_url) as client:
        refused = await client.post(f"/runs/{queued}/approvals", json={})
        assert refused.status_code == 422
        assert refused.json()["field"] == "gate" and "waits at no gate" in refused.json()["error"]
        async with daemon(db_url):
            await reaches(conn, queued, "pending_review")
            sent = await client.post(f"/runs/{queued}/approvals", json={"approver": "bo"})
            assert sent.status_code == 201, sent.text
            assert sent.json()["gate"] == "review"
            await reaches(conn, queued, "published")


async def test_the_step_table_lists_each_node_with_its_duration_and_how_the_run_ended(
    db_url: str, conn: Conn
) -> None:
    published = await ledger_run(conn, node_delay=0.2)
    failed = await ledger_run(conn, fail_times=5)
    waiting = await store.create_run(conn, project="p", payload={}, workflow="waiter")
    async with daemon(db_url):
        await reaches(conn, published, "pending_review")
        await store.approve(conn, published, gate="review", approver="ann")
        await reaches(conn, published, "published")
        await reaches(conn, failed, "failed")
        await reaches(conn, waiting["run_id"], "waiting_provider")

    async with console(db_url) as client:
        html = (await client.get(f"/console/runs/{published}")).text
        rows = steps_listed(html)
        assert [row[:2] for row in rows] == [
            ["n1", "done"], ["n2", "done"], ["review", "done"], ["n4", "done"], ["n5", "done"],
        ]  # fmt: skip
        for row in (rows[0], rows[1], rows[3], rows[4]):  # each sleeps 0.2 s
            seconds = float(row[3].removesuffix(" s"))
            assert 0.2 <= seconds < 10, row
        assert rows[2][5] == "gate review"  # it paused there until the approval
        assert re.search(r"Published at [\d-]+ [\d:]+ UTC: the graph reached its end", text(html))
        # A published run's result is its final state: shown once.
        assert "Result: the final state" in text(html) and "<h2>Result</h2>" not in html

        html = (await client.get(f"/console/runs/{failed}")).text
        rows = steps_listed(html)
        assert [row[:2] for row in rows] == [["n1", "done"], ["n2", "failed"]]
        attempts, error = rows[1][4], rows[1][6]
        assert attempts == "2" and "n2 fails on purpose (execution 2)" in error
        assert "Failed at" in text(html)
        assert "RuntimeError: n2 fails on purpose (execution 2)" in text(html)

        html = (await client.get(f"/console/runs/{waiting['run_id']}")).text
        rows = steps_listed(html)
        assert [row[:2] for row in rows] == [["submit", "done"], ["wait", "waiting"]]
        assert re.fullmatch(
            r"provider render · job job-7 · next poll [\d-]+ [\d:]+ UTC", rows[1][5]
        ), rows[1]
        assert re.fullmatch(r"\d+ s so far", rows[1][3]), rows[1]  # still waiting

    code, out, _ = cli(db_url, "show", published, "--json")
    shown = json.loads(out)
    assert [s["node"] for s in shown["steps"]] == ["n1", "n2", "review", "n4", "n5"]
    assert all(s["seconds"] >= 0.2 for s in shown["steps"] if s["node"] != "review")
    assert shown["end"]["status"] == "published"
    code, out, _ = cli(db_url, "show", failed)
    failure = r"n2 +│ failed +│ .* │ 2 +│ RuntimeError: n2 fails on purpose"
    assert code == 0 and re.search(failure, out), out


async def test_the_graph_marks_the_finished_nodes_and_the_current_one(
    db_url: str, conn: Conn
) -> None:
    run_id = await ledger_run(conn)
    production = await store.create_run(conn, project="p", payload={}, workflow="production")
    async with console(db_url) as client, daemon(db_url):
        await reaches(conn, run_id, "pending_review")
        html = (await client.get(f"/console/runs/{run_id}")).text
        # In flow order, not the order the nodes were added (n4 and n5 before review).
        assert list(nodes_drawn(html).items()) == [
            ("__start__", "terminal"),
            ("n1", "finished"),
            ("n2", "finished"),
            ("review", "current waiting"),
            ("n4", "ahead"),
            ("n5", "ahead"),
            ("__end__", "terminal"),
        ]
        assert "Where the run is step 2 of 5" in text(html)

        await store.approve(conn, run_id, gate="review", approver="ann")
        await reaches(conn, run_id, "published")
        html = (await client.get(f"/console/runs/{run_id}/live")).text
        assert set(nodes_drawn(html).values()) == {"terminal", "finished"}
        assert "step 5 of 5" in text(html)

        # A workflow the App builds: drawn from its graph once built, with its gates.
        html = (await client.get(f"/console/runs/{production['run_id']}")).text
        drawn = nodes_drawn(html)
        assert list(drawn)[:4] == ["__start__", "brendan", "workflow_gate", "script_writer"]
        assert "publish_gate" in drawn and set(drawn.values()) == {"terminal", "ahead"}
        assert "step 0 of 14" in text(html)

        # A run on another version of its graph than the one served: no drawing that may lie.
        await conn.execute(
            "UPDATE runs SET graph_version = 'ledger-0' WHERE run_id = %s", (run_id,)
        )
        page = text((await client.get(f"/console/runs/{run_id}")).text)
        assert "No graph to show: the run is on version ledger-0 of ledger" in page


def test_the_flow_order_follows_the_edges_and_leaves_out_those_that_lead_back() -> None:
    nodes = ["__start__", "a", "gate", "c", "b", "__end__"]
    edges = [
        ("__start__", "a"),
        ("a", "gate"),
        ("gate", "a"),  # a rejection goes back
        ("gate", "b"),
        ("gate", "c"),
        ("b", "c"),
        ("c", "__end__"),
    ]
    assert flow_order(nodes, edges) == ["__start__", "a", "gate", "b", "c", "__end__"]
