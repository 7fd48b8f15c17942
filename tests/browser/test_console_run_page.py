"""A run's page in a real browser against the whole system as processes: who decided
what, the step table, and the graph with the run's place in it."""

import re
from pathlib import Path

from playwright.async_api import expect
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from tests.browser.test_console_browser import chromium, create_run, pytestmark, screenshot
from tests.helpers import wait_for
from tests.stack import stack

__all__ = ["pytestmark"]  # skipped, as the console's other browser tests, without Chromium

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status FROM runs WHERE run_id = %s"


async def reaches(conn: Conn, run_id: str, status: str) -> None:
    await wait_for(conn, STATUS, (run_id,), until=lambda rows: rows[0]["status"] == status)


async def test_the_run_page_shows_who_decided_the_steps_and_where_the_run_is(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s, chromium() as page:
        s.daemon("w1")
        run_id = await create_run(s, "Why cats sit in boxes")
        await reaches(conn, run_id, "pending_workflow")
        # No gate named: the one the run waits at.
        sent = await s.http.post(
            f"{s.api}/runs/{run_id}/approvals", json={"approver": "ann", "comment": "as proposed"}
        )
        assert sent.status_code == 201 and sent.json()["gate"] == "workflow", sent.text
        await reaches(conn, run_id, "pending_publish")

        await page.goto(f"{s.api}/console/runs/{run_id}")
        decided = page.locator("#approvals tbody tr")
        await expect(decided).to_have_count(1)
        await expect(decided.locator("td")).to_have_text(
            [re.compile(r"UTC$"), "workflow", "approved", re.compile("^ann"), "as proposed",
             re.compile(r"UTC$")]
        )  # fmt: skip
        steps = page.locator("#steps tbody tr")
        first = ["brendan", "workflow_gate", "script_writer", "media", "media_wait"]
        nodes = await steps.locator("td:first-child").all_inner_texts()
        assert nodes[: len(first)] == first and nodes[-1] == "publish_gate", nodes
        waiting = steps.last
        await expect(waiting).to_have_class("step-waiting")
        await expect(waiting.locator("td").nth(5)).to_have_text("gate publish")
        await expect(steps.nth(1).locator("td").nth(5)).to_have_text("gate workflow")
        await expect(steps.first.locator("td.duration")).to_have_text(re.compile(r"^[\d.]+ s$"))

        graph = page.locator("#place svg.graph")
        gate = graph.locator('[data-node="publish_gate"]')
        await expect(gate).to_have_class("node current waiting")
        for done in ("brendan", "workflow_gate", "script_writer", "editor"):
            await expect(graph.locator(f'[data-node="{done}"]')).to_have_class("node finished")
        await expect(graph.locator('[data-node="publisher"]')).to_have_class("node ahead")
        await expect(page.locator("#place .step-count")).to_have_text(re.compile(r"step \d+ of 14"))
        await screenshot(page, "run-page")

        # Published from the page: the steps, the graph and who decided follow.
        summary = page.locator("#summary")
        await summary.get_by_label("Your name").fill("bo")
        await summary.get_by_role("button", name="Approve").click()
        await expect(page.locator("#steps .end")).to_contain_text("Published at")
        await expect(graph.locator('[data-node="publisher"]')).to_have_class("node finished")
        await expect(decided).to_have_count(2)
        await expect(decided.first.locator("td").nth(1)).to_have_text("publish")
        await expect(decided.first.locator("td").nth(3)).to_have_text(re.compile("^bo"))
