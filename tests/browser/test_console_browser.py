"""The console in a real browser (Debian's Chromium, driven by Playwright) against the
whole system as processes: sandbox providers, API and a daemon.

Screenshots are saved under tests/artifacts/console/ (not committed).
"""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from tests.conftest import ROOT
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
        await screenshot(page, "inbox-publish-gate")
        [approved] = await approval_rows(conn, run_id)
        assert approved["approver"] == "admin" and approved["approver_ip"] == "127.0.0.1"

        await card.get_by_role("link", name=run_id).click()
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
