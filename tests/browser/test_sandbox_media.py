"""Chromium shows the sandbox's media: its images decode at their size, its video plays."""

from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser.test_console_browser import CHROMIUM, chromium
from tests.helpers import sandbox_serving
from tests.unit.test_sandbox import kie_record, kie_submit, poll

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}")


async def test_chromium_shows_a_sandbox_image_and_plays_its_video() -> None:
    async with sandbox_serving() as settings, chromium() as page:
        base = f"http://127.0.0.1:{settings.sandbox_port}"
        async with httpx.AsyncClient(base_url=base) as client:
            image_id = await kie_submit(
                client, "gpt4o-image/generate", {"prompt": "a cat", "size": "3:2"}
            )
            video_id = await kie_submit(client, "veo/generate", {"prompt": "a cat"})
            image = await poll(
                lambda: kie_record(client, "gpt4o-image/record-info", image_id),
                lambda d: d["status"] == "SUCCESS",
            )
            video = await poll(
                lambda: kie_record(client, "veo/record-info", video_id),
                lambda d: d["successFlag"] == 1,
            )
        # A page of the sandbox's own origin: no other page's policy is in the way.
        await page.goto(f"{base}/_sandbox/config")
        await page.set_content(
            f'<img src="{urlsplit(image["response"]["resultUrls"][0]).path}">'
            f'<video muted src="{urlsplit(video["response"]["resultUrls"][0]).path}"></video>'
        )
        await page.wait_for_function("document.images[0].complete")
        size = await page.evaluate(
            "[document.images[0].naturalWidth, document.images[0].naturalHeight]"
        )
        await page.wait_for_function("document.querySelector('video').readyState >= 2")
        duration = await page.evaluate("document.querySelector('video').duration")
        await page.evaluate("document.querySelector('video').play()")
        await page.wait_for_function("document.querySelector('video').currentTime > 0")

    assert size == [640, 360]
    assert 1 < duration < 10
