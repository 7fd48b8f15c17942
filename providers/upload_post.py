"""upload-post: publish one video to several platforms, and ask what became of a post.

Posting is public and cannot be undone, so every upload carries our own
`request_id` (form field, `X-Request-Id` and `Idempotency-Key`): a re-executed
publish step first asks `status(request_id)` whether the post already exists.

An upload given a `scheduled_date` is held by upload-post and posted at that time
(ISO 8601 in UTC, e.g. `2026-12-31T23:45:00Z`; in the future, at most 365 days ahead).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from providers.config import api_key, base_urls
from providers.http import Credentials, ProviderHTTP, RetryPolicy, dig
from providers.settings import ProviderSettings

DONE_STATUSES = frozenset({"completed", "failed"})
# How far ahead upload-post takes a `scheduled_date`.
LONGEST_SCHEDULE = timedelta(days=365)


@dataclass(frozen=True)
class PlatformResult:
    """How one platform took the post; one platform failing does not fail the others."""

    platform: str
    success: bool
    url: str | None = None
    publish_id: str | None = None
    post_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Upload:
    """The answer to an upload. With `async_upload` the per-platform results usually
    come later (webhook or `status`), so `results` may be empty."""

    request_id: str
    success: bool
    results: tuple[PlatformResult, ...] = ()
    message: str | None = None


@dataclass(frozen=True)
class UploadStatus:
    """`status` is one of pending, queued, processing, in_progress, completed, failed,
    not_found; not_found means upload-post never received this request_id."""

    request_id: str
    status: str
    results: tuple[PlatformResult, ...] = ()

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "completed"

    @property
    def exists(self) -> bool:
        return self.status != "not_found"


class UploadPostClient:
    """upload-post over the shared HTTP client; `Authorization: Apikey <key>`."""

    provider = "upload-post"

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
            base_url=base_urls(settings).upload_post,
            credentials=Credentials(
                "Authorization", "Apikey", api_key(settings.upload_post_api_key)
            ),
            retry=retry or RetryPolicy.from_settings(settings),
        )

    def __repr__(self) -> str:
        return f"UploadPostClient({self.http.base_url!r})"

    async def upload(
        self,
        *,
        user: str,
        platforms: Sequence[str],
        video_url: str,
        title: str,
        description: str | None = None,
        request_id: str,
        scheduled_date: datetime | None = None,
        run_id: str | None = None,
    ) -> Upload:
        form = [("user", user), *(("platform[]", platform) for platform in platforms)]
        form += [("video", video_url), ("title", title)]
        if description is not None:
            form.append(("description", description))
        if scheduled_date is not None:
            form.append(("scheduled_date", schedule_text(scheduled_date)))
        form += [("request_id", request_id), ("async_upload", "true")]
        answer = await self.http.request(
            "POST",
            "/api/upload",
            operation="upload",
            form=form,
            idempotency_key=request_id,
            run_id=run_id,
            headers={"X-Request-Id": request_id},
        )
        results = _platform_results(dig(answer, "results"))
        success = dig(answer, "success") is True
        message = _text(dig(answer, "message"))
        if not success and not results:
            raise self.http.error("upload", message or "answer has success=false and no results")
        return Upload(request_id=request_id, success=success, results=results, message=message)

    async def status(self, request_id: str, *, run_id: str | None = None) -> UploadStatus:
        answer = await self.http.request(
            "GET",
            "/api/uploadposts/status",
            operation="status",
            params={"request_id": request_id},
            run_id=run_id,
        )
        status = dig(answer, "status")
        if not isinstance(status, str) or not status:
            raise self.http.error("status", f"answer for request {request_id} has no status")
        results = _platform_results(dig(answer, "results"))
        return UploadStatus(request_id=request_id, status=status, results=results)


def schedule_text(moment: datetime) -> str:
    """`moment` as upload-post's `scheduled_date` takes it: UTC, whole seconds, `Z`.
    A fraction of a second is rounded up, so the post never goes out before `moment`."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"scheduled_date: {moment.isoformat()} has no UTC offset")
    utc = moment.astimezone(UTC)
    whole = utc.replace(microsecond=0) + (timedelta(seconds=1) if utc.microsecond else timedelta(0))
    return whole.strftime("%Y-%m-%dT%H:%M:%SZ")


def _platform_results(value: object) -> tuple[PlatformResult, ...]:
    """`{platform: result}` from an upload, `[{platform, ...}]` from a status query."""
    if isinstance(value, Mapping):
        items: list[tuple[object, object]] = list(value.items())
    elif isinstance(value, list):
        items = [(dig(result, "platform"), result) for result in value]
    else:
        return ()
    return tuple(
        _platform_result(str(platform), result)
        for platform, result in items
        if isinstance(result, Mapping) and platform
    )


def _platform_result(platform: str, result: Mapping[str, Any]) -> PlatformResult:
    return PlatformResult(
        platform=platform,
        success=result.get("success") is True,
        url=_text(result.get("url")),
        publish_id=_text(result.get("publish_id")),
        post_id=_text(result.get("post_id")),
        error=_text(result.get("error")),
    )


def _text(value: object) -> str | None:
    """Ids arrive as numbers or strings; an empty value means none."""
    if value is None or value == "" or isinstance(value, (dict, list)):
        return None
    return str(value)
