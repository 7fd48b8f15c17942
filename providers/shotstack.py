"""Shotstack: render an edit (timeline + output) into a video, and ask how the render is going.

Shotstack's callbacks are unsigned, so `get_render` is also how a webhook is
verified: only what our key can fetch back is trusted (see `providers.webhooks`).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from providers.config import api_key, base_urls
from providers.http import Credentials, ProviderHTTP, RetryPolicy, dig
from providers.settings import ProviderSettings

DONE_STATUSES = frozenset({"done", "failed"})


@dataclass(frozen=True)
class Render:
    """`status` is one of queued, fetching, rendering, saving, done, failed.

    `url` is temporary (24 h): copy the video if it must last.
    """

    id: str
    status: str
    url: str | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "done"


class ShotstackClient:
    """The Edit API over the shared HTTP client; `x-api-key: <key>` (one key per environment)."""

    provider = "shotstack"

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: ProviderSettings,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.http = ProviderHTTP(
            client,
            provider=self.provider,
            base_url=base_urls(settings).shotstack,
            credentials=Credentials("x-api-key", None, api_key(settings.shotstack_api_key)),
            retry=retry or RetryPolicy.from_settings(settings),
        )

    def __repr__(self) -> str:
        return f"ShotstackClient({self.http.base_url!r})"

    async def render(
        self, edit: Mapping[str, Any], *, idempotency_key: str, run_id: str | None = None
    ) -> str:
        """Queue a render of `edit` (put a `callback` URL in it to be called back); its id."""
        answer = await self.http.request(
            "POST",
            "/render",
            operation="render",
            json_body=edit,
            idempotency_key=idempotency_key,
            run_id=run_id,
        )
        render_id = dig(answer, "response", "id")
        if not isinstance(render_id, str) or not render_id:
            raise self.http.error("render", "answer has no response.id")
        return render_id

    async def get_render(self, render_id: str, *, run_id: str | None = None) -> Render:
        answer = await self.http.request(
            "GET", f"/render/{quote(render_id, safe='')}", operation="getRender", run_id=run_id
        )
        status = dig(answer, "response", "status")
        if not isinstance(status, str) or not status:
            raise self.http.error("getRender", f"answer for render {render_id} has no status")
        return Render(
            id=render_id,
            status=status,
            url=_text(dig(answer, "response", "url")),
            error=_text(dig(answer, "response", "error")),
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
