"""Acting on runs in a real browser, against the whole system as processes: a run
started from the runs page's form, retried and cancelled from its page, and a selection
of the list filtered by status cancelled in bulk, each after its confirmation page."""

import re
from pathlib import Path

import pytest
from playwright.async_api import expect
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from tests.browser.test_console_browser import (
    CHROMIUM,
    WITHIN_MS,
    chromium,
    create_run,
    screenshot,
)
from tests.helpers import statuses, wait_for
from tests.stack import stack

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
)

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status FROM runs WHERE run_id = %s"
# A run that fails waits out its provider's attempts first.
FAILING_MS = 60_000


async def test_start_a_run_from_the_form_then_retry_and_cancel_it_from_its_page(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s, chromium() as page:
        s.daemon("w1")
        await s.configure_sandbox(fail_jobs=True)
        await page.goto(f"{s.api}/console/runs")
        await page.get_by_text("New run", exact=True).click()
        form = page.locator("#new-run")
        await form.get_by_label("Project").fill("cats")
        await form.get_by_label("Priority").fill("7")
        await form.get_by_label("Brief").fill("Cats in the rain")
        await form.get_by_role("button", name="Start…").click()

        # Nothing is started until the confirmation's yes.
        await expect(page.locator("h1")).to_have_text("Start a run of production for project cats?")
        await expect(page.locator("#confirmation")).to_contain_text("Cats in the rain")
        assert await statuses(conn) == {}
        await page.get_by_role("button", name="Yes, start it").click()
        await expect(page.locator("#outcome")).to_have_text("Started this run.")
        run_id = page.url.rsplit("/", 1)[1].split("?")[0]
        [started] = await (await conn.execute("SELECT * FROM runs")).fetchall()
        assert (started["run_id"], started["project"], started["priority"]) == (run_id, "cats", 7)
        assert started["payload"] == {"brief": "Cats in the rain"}

        # At the workflow gate: approve it here; its image job fails, and so does the run.
        summary = page.locator("#summary")
        await summary.get_by_label("Your name").fill("ann")
        await summary.get_by_role("button", name="Approve").click()
        await expect(summary.locator("h2 .badge")).to_have_text("failed", timeout=FAILING_MS)
        actions = page.locator("#actions")
        await expect(actions.get_by_role("button", name="Cancel run…")).to_have_count(0)
        await s.configure_sandbox(fail_jobs=False)
        await actions.get_by_role("button", name="Retry…").click()
        confirmation = page.locator("#confirmation")
        await expect(confirmation).to_contain_text("1 failed provider job will be submitted anew.")
        await expect(confirmation).to_contain_text("ProviderJobFailed")
        await page.get_by_role("button", name="Yes, retry it").click()
        await expect(page.locator("#outcome")).to_contain_text(
            "Queued again from its last checkpoint"
        )
        # The new job is done: the run goes on to the publish gate.
        await expect(summary.locator("h2 .badge")).to_have_text(
            "pending_publish", timeout=FAILING_MS
        )
        await expect(actions.get_by_role("button", name="Retry…")).to_have_count(0)

        await actions.get_by_role("button", name="Cancel run…").click()
        await expect(page.locator("h1")).to_have_text(f"Cancel run {run_id}?")
        assert (await (await conn.execute(STATUS, (run_id,))).fetchone()) == {
            "status": "pending_publish"
        }
        await page.get_by_role("button", name="Yes, cancel it").click()
        await expect(page.locator("#outcome")).to_have_text("Cancelled this run.")
        await expect(summary.locator("h2 .badge")).to_have_text("cancelled")
        await expect(actions.get_by_role("button", name="Cancel run…")).to_have_count(0)
        assert (await (await conn.execute(STATUS, (run_id,))).fetchone()) == {"status": "cancelled"}


async def test_filter_by_status_and_cancel_a_selection_in_bulk(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s, chromium() as page:
        s.daemon("w1")
        runs = [await create_run(s, f"Cats and boxes, part {n}") for n in (1, 2, 3)]
        await wait_for(
            conn,
            "SELECT status FROM runs",
            until=lambda rows: [r["status"] for r in rows] == ["pending_workflow"] * 3,
            within=WITHIN_MS / 1000,
        )
        await page.goto(f"{s.api}/console/runs")
        status = page.get_by_label("Status")
        await expect(status.locator('option[value="pending_workflow"]')).to_have_text(
            "pending_workflow (3)"
        )
        await expect(status.locator('option[value=""]')).to_have_text("any (3)")
        await status.select_option("pending_workflow")
        await page.get_by_role("button", name="Filter").click()
        await expect(page).to_have_url(re.compile(r"status=pending_workflow"))
        rows = page.locator("#runs-table tbody tr")
        await expect(rows).to_have_count(3)
        await expect(page.locator("#nav-inbox-count")).to_have_text("3")

        first, second, kept = runs
        await page.get_by_label(f"tick {first}").check()
        await page.get_by_label(f"tick {second}").check()
        await screenshot(page, "runs-list")
        await page.get_by_role("button", name="Cancel…").click()
        await expect(page.locator("h1")).to_have_text("Cancel 2 runs?")
        confirmation = page.locator("#confirmation")
        await expect(confirmation).to_contain_text(first)
        await expect(confirmation).to_contain_text(second)
        await expect(confirmation).not_to_contain_text(kept)
        assert set((await statuses(conn)).values()) == {"pending_workflow"}
        await screenshot(page, "runs-bulk-confirmation")
        await page.get_by_role("button", name="Yes, cancel 2 runs").click()

        await expect(page.locator("#outcome")).to_have_text("Cancelled 2 of the 2 runs ticked.")
        await expect(page).to_have_url(re.compile(r"status=pending_workflow"))  # the list as it was
        await expect(rows).to_have_count(1)
        await expect(page.locator(f"#row-{kept}")).to_be_visible()
        assert await statuses(conn) == {
            first: "cancelled",
            second: "cancelled",
            kept: "pending_workflow",
        }

        await page.get_by_role("link", name=re.compile(r"^Inbox")).click()
        await expect(page.locator("#nav-inbox-count")).to_have_text("1")
        await expect(page.locator(f"#run-{kept}")).to_be_visible()
        await screenshot(page, "inbox")
