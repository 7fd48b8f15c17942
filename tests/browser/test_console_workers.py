"""The workers page in a real browser, against the whole system as processes."""

import re
from pathlib import Path

import pytest
from playwright.async_api import expect
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.runtime import store
from tests.browser.test_console_browser import CHROMIUM, chromium, screenshot
from tests.stack import stack

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
)
Conn = AsyncConnection[DictRow]


async def test_the_workers_page_lists_the_daemons_live_and_the_runs_none_can_take(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s, chromium() as page:
        s.daemon("w1")
        # A run of a workflow that no daemon has (retired from the App, say).
        retired = await store.create_run(conn, project="cats", payload={}, workflow="retired")
        await page.goto(f"{s.api}/console/workers")
        await page.evaluate("window.sameDocument = true")
        row = page.locator("#worker-w1")
        await expect(row).to_have_class("live")
        await expect(row).to_contain_text("production")
        await expect(row.locator(".seen")).to_have_text(re.compile(r"^(just now|\d+ s ago)$"))
        await expect(page.locator("#unrunnable h2")).to_contain_text("1")
        await expect(page.locator("#unrunnable")).to_contain_text("no live worker runs retired")

        # A second daemon shows up without a reload: the page polls its live twin.
        s.daemon("w2")
        await expect(page.locator("#worker-w2")).to_have_class("live")
        assert await page.evaluate("window.sameDocument === true"), "w2 came without a reload"
        await screenshot(page, "workers")

        await page.get_by_role("link", name=retired["run_id"]).click()
        await expect(page.locator("#summary .unrunnable")).to_have_text(
            "no live worker runs retired"
        )
