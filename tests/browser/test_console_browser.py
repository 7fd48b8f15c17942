"""The console in a real browser (Debian's Chromium, driven by Playwright) against the
whole system as processes: sandbox providers, API and a daemon.

Screenshots are saved under tests/artifacts/console/ (not committed).
"""

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Locator, Page, Route, async_playwright, expect
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import schedules
from tests.conftest import ROOT
from tests.helpers import start_api
from tests.stack import Stack, stack

Conn = AsyncConnection[DictRow]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "tests" / "artifacts" / "console"
TOKEN = "browser-token-for-the-tests-0123456789abcdef"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long an expectation waits for the daemon (and the page's next refresh).
WITHIN_MS = 20_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
)


@asynccontextmanager
async def chromium() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WITHIN_MS)
            expect.set_options(timeout=WITHIN_MS)
            yield page
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


async def decoded(image: Locator) -> None:
    """Until `image` has loaded and decoded (the page's CSP allowed its source)."""
    await image.scroll_into_view_if_needed()
    deadline = time.monotonic() + WITHIN_MS / 1000
    while not await image.evaluate("img => img.complete && img.naturalWidth > 1"):
        assert time.monotonic() < deadline, "the image never loaded"
        await asyncio.sleep(0.05)


async def create_run(s: Stack, brief: str, **headers: str) -> str:
    response = await s.http.post(
        f"{s.api}/runs", json={"project": "cats", "brief": brief}, headers=headers
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def approval_rows(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT gate, decision, approver, approver_ip, comment, payload FROM hitl_approvals"
        " WHERE run_id = %s ORDER BY id",
        (run_id,),
    )
    return [dict(row) for row in await cursor.fetchall()]


async def test_approve_in_the_inbox_then_publish_from_the_run_page(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path, api_token=TOKEN) as s, chromium() as page:
        s.daemon("w1")
        # With a token every page needs a session: the inbox sends us to sign in first.
        await page.goto(f"{s.api}/")
        await page.get_by_label("Token").fill(TOKEN)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#inbox-empty")).to_be_visible()
        await page.evaluate("window.sameDocument = true")

        run_id = await create_run(s, "Why cats sit in boxes", authorization=f"Bearer {TOKEN}")
        card = page.locator(f"#run-{run_id}")
        await expect(card.locator(".flow li")).to_have_text(
            ["script_writer", "media", "editor", "publisher"]
        )
        assert await page.evaluate("window.sameDocument === true"), "the card came without a reload"
        # The approval is the signed-in identity's: the form asks for no name.
        await expect(card.get_by_label("Your name")).to_have_count(0)
        await card.get_by_role("button", name="Approve").click()

        await expect(page.locator(".notice")).to_contain_text(
            f"approved at the workflow gate for {run_id} by admin"
        )
        # The daemon takes the approval up and runs the crew to the publish gate.
        await expect(card).to_have_attribute("data-gate", "publish")
        await expect(card.locator("video")).to_have_attribute("src", re.compile(r"\.mp4$"))
        # The structured request: everything the post will be, and the answers it takes.
        await expect(card.locator(".gallery img.preview")).to_have_count(1)
        # A real image, allowed by the page's CSP and decoded: not a broken preview.
        await decoded(card.locator(".gallery img.preview"))
        await expect(
            card.locator(".asks").filter(has_text="The script (its caption)")
        ).to_have_count(1)
        await expect(card.locator(".asks").filter(has_text="Posts to")).to_contain_text("tiktok")
        await expect(card.locator(".answers")).to_have_attribute(
            "data-answers", "accept edit respond ignore"
        )
        await screenshot(page, "inbox-publish-gate")
        [approved] = await approval_rows(conn, run_id)
        assert approved["approver"] == "admin" and approved["approver_ip"] == "127.0.0.1"

        await card.get_by_role("link", name=run_id, exact=True).click()
        summary = page.locator("#summary")
        await summary.get_by_role("button", name="Approve").click()
        await expect(summary.locator("h2 .badge")).to_have_text("published")
        await expect(page.locator("#artifacts .artifact")).to_have_count(5)
        await expect(page.locator("#artifacts img.preview")).to_have_count(1)
        await expect(page.locator("#timeline")).to_contain_text("Approved at the publish gate")
        await screenshot(page, "run-published")

        # Signing out ends the session: the inbox asks for the token again.
        await page.goto(f"{s.api}/")
        await page.get_by_role("button", name="Sign out").click()
        await page.goto(f"{s.api}/")
        await expect(page.get_by_label("Token")).to_be_visible()


async def test_reject_with_a_comment_then_approve_an_edited_workflow(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s, chromium() as page:
        s.daemon("w1")
        run_id = await create_run(s, "Cats and cardboard")
        await page.goto(f"{s.api}/")
        card = page.locator(f"#run-{run_id}")
        proposal = card.locator(".asks .flow li")
        await expect(proposal).to_have_text(["script_writer", "media", "editor", "publisher"])

        await card.get_by_label("Your name").fill("bo")
        await card.get_by_label("Comment").fill("skip media")
        # Another run arriving while bo types changes the page, not what bo typed.
        another = await create_run(s, "Cats and water")
        await expect(page.locator(f"#run-{another}")).to_be_visible()
        await expect(card.get_by_label("Comment")).to_have_value("skip media")
        await card.get_by_role("button", name="Reject").click()
        # Brendan reads the comment and proposes again, without media.
        await expect(proposal).to_have_text(["script_writer", "editor", "publisher"])

        await card.get_by_text("Change before approving").click()
        await card.get_by_role("checkbox", name="media").check()
        await screenshot(page, "inbox-editing-workflow")
        await card.get_by_role("button", name="Approve").click()
        await expect(card).to_have_attribute("data-gate", "publish")

        rejected, approved = await approval_rows(conn, run_id)
        assert (rejected["decision"], rejected["comment"]) == ("rejected", "skip media")
        edited = ["script_writer", "editor", "publisher", "media"]
        assert approved["payload"] == {"workflow": edited}
        await page.goto(f"{s.api}/console/runs/{run_id}")
        workflow = page.locator('#checkpoint dt:text-is("workflow") + dd .chip')
        await expect(workflow).to_have_text(edited)
        await screenshot(page, "run-edited-workflow")


async def test_create_pause_resume_backfill_and_delete_a_schedule(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s, chromium() as page:
        await page.goto(f"{s.api}/console/schedules")
        await expect(page.locator("#schedule-none")).to_be_visible()
        form = page.locator("#new-schedule")
        await form.get_by_label("Cron").fill("61 * * * *")
        await form.get_by_label("Timezone").fill("Europe/Berlin")
        await form.get_by_label("Project").fill("cats")
        await form.get_by_label("Overlap").select_option("buffer_one")
        await form.get_by_label("Brief").fill("Cats in the morning")
        await form.get_by_role("button", name="Create").click()
        # Refused on the page, naming the field, with what was typed kept.
        await expect(form.get_by_role("alert")).to_contain_text(
            "cron: '61 * * * *' is not a cron expression"
        )
        await expect(form.get_by_label("Cron")).to_have_attribute("aria-invalid", "true")
        await expect(form.get_by_label("Brief")).to_have_value("Cats in the morning")
        await expect(form.get_by_label("Overlap")).to_have_value("buffer_one")
        await screenshot(page, "schedules-refused")
        assert await schedules.list_schedules(conn) == []

        await form.get_by_label("Cron").fill("0 9 * * MON-FRI")
        await form.get_by_role("button", name="Create").click()
        await expect(page.locator(".notice")).to_contain_text("Created sch_")
        [created] = await schedules.list_schedules(conn)
        sid = created["schedule_id"]
        assert (created["project"], created["overlap"]) == ("cats", "buffer_one")
        row = page.locator(f"#schedule-{sid}")
        upcoming = row.locator(".upcoming")
        times = [f"{at:%Y-%m-%d %H:%M:%S} UTC" for at in schedules.upcoming(created)]
        await expect(upcoming).to_have_text(re.compile("\\s*".join(times)))
        await screenshot(page, "schedules-created")

        # Each change asks once more: opening it sends nothing.
        await row.get_by_text("Pause", exact=True).click()
        await expect(row.get_by_text("Stop firing until resumed")).to_be_visible()
        assert (await schedules.get_schedule(conn, sid))["paused"] is False
        await row.get_by_role("button", name="Yes, pause").click()
        await expect(page.locator(".notice")).to_have_text(f"Paused {sid}.")
        await expect(upcoming).to_have_text("paused")
        assert (await schedules.get_schedule(conn, sid))["paused"] is True

        await row.get_by_text("Resume", exact=True).click()
        await row.get_by_role("button", name="Yes, resume").click()
        await expect(page.locator(".notice")).to_have_text(f"Resumed {sid}.")
        await expect(upcoming).to_contain_text("UTC")
        assert (await schedules.get_schedule(conn, sid))["paused"] is False

        await row.get_by_text("Backfill", exact=True).click()
        await row.get_by_label("From").fill("2026-12-01T00:00+01:00")
        await row.get_by_label("To").fill("2026-11-30T00:00+01:00")
        await row.get_by_role("button", name="Start the runs").click()
        await expect(row.get_by_role("alert")).to_contain_text(
            "from: 2026-12-01T00:00:00+01:00 is after"
        )
        await expect(row.get_by_label("From")).to_have_attribute("aria-invalid", "true")
        await screenshot(page, "schedules-backfill-refused")
        await row.get_by_label("To").fill("2026-12-06T23:59+01:00")
        await row.get_by_role("button", name="Start the runs").click()
        await expect(page.locator(".notice")).to_have_text(
            f"Backfilled {sid}: 4 runs started for 4 fire times."  # Tuesday to Friday
        )

        await row.get_by_text("Delete", exact=True).click()
        await row.get_by_role("button", name="Yes, delete").click()
        await expect(page.locator(".notice")).to_have_text(f"Deleted {sid}.")
        await expect(row).to_have_count(0)
        await expect(page.locator("#schedule-none")).to_be_visible()
        assert await schedules.list_schedules(conn) == []


async def test_the_api_docs_render_with_no_network_beyond_loopback(
    db_url: str, tmp_path: Path
) -> None:
    """`/docs` is Swagger UI from the API's own assets: with every request off loopback
    refused, the page still lists the operations, and breaks none of its policy."""
    api, base = start_api(db_url, tmp_path)
    outside: list[str] = []
    errors: list[str] = []
    try:
        async with chromium() as page:

            async def loopback_only(route: Route) -> None:
                if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort("internetdisconnected")

            await page.route("**/*", loopback_only)
            # A script, style or image the policy refuses is reported as a console error.
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(f"{base}/docs")
            operations = page.locator(".opblock-summary-path")
            await expect(operations.first).to_be_visible()
            paths = await operations.evaluate_all("all => all.map(e => e.dataset.path)")
            assert {"/runs", "/runs/{run_id}/approvals", "/schedules"} <= set(paths), paths
            await expect(
                page.get_by_text("Approve or reject the gate a run waits at")
            ).to_be_visible()
            await screenshot(page, "api-docs")
    finally:
        api.close()
    assert outside == []
    assert errors == []
