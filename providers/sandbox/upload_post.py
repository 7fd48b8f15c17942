"""upload-post under `/upload-post`: publish a video, ask how it went, `upload_completed` webhooks.

The caller's `request_id` names the upload, so sending one again answers the
first upload instead of posting twice. Every answer carries rate-limit headers.

A `scheduled_date` (ISO 8601; without an offset it is UTC, as upload-post reads it
without a `timezone`) must lie in the future and at most 365 days ahead, else the
upload is refused; such an upload answers 202 with a scheduler `job_id`, stays
`pending` until that time, then posts. Its status answer echoes the
`scheduled_date` as received, so tests can see what the caller sent.
"""

import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile

from providers.sandbox.config import SandboxConfig
from providers.sandbox.operations import ProviderRoute, Refusal
from providers.sandbox.state import Job, Phase, Sandbox, SandboxState, new_id
from providers.sandbox.webhooks import Webhook, encode

INVALID = 400
PLATFORMS = (
    "tiktok",
    "instagram",
    "youtube",
    "linkedin",
    "facebook",
    "x",
    "threads",
    "pinterest",
    "bluesky",
    "reddit",
)
FAIL_MESSAGE = "sandbox: upload failed (fail_jobs)"
STATUSES = {
    Phase.QUEUED: "pending",
    Phase.RUNNING: "in_progress",
    Phase.SUCCEEDED: "completed",
    Phase.FAILED: "failed",
}
RATE_LIMIT = 100  # requests per window; reported, never enforced (a fault answers 429)
RATE_WINDOW = 60  # seconds
LONGEST_SCHEDULE = timedelta(days=365)


class UploadPostRoute(ProviderRoute):
    provider = "upload-post"
    key_header = "Authorization"
    key_scheme = "Apikey"

    def refusal_body(self, refusal: Refusal) -> dict[str, Any]:
        body: dict[str, Any] = {"success": False, "message": refusal.message}
        if refusal.hard_cap:
            body["violations"] = [{"type": "hard_cap", "message": "daily posting cap reached"}]
        return body

    def answer_headers(self, state: SandboxState, refusal: Refusal | None) -> dict[str, str]:
        now = time.time()
        window_start = now - now % RATE_WINDOW
        since = datetime.fromtimestamp(window_start, UTC)
        used = 1 + state.count_calls(self.provider, since)
        remaining, reset = max(RATE_LIMIT - used, 0), window_start + RATE_WINDOW
        if refusal is not None and refusal.status_code == 429:
            remaining, reset = 0, now + (refusal.retry_after or 0.0)
        return {
            **super().answer_headers(state, refusal),
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset)),  # a Unix time
        }

    async def idempotency_key(self, request: Request) -> str | None:
        """The `Idempotency-Key` header, else the upload's own `request_id`."""
        key = await super().idempotency_key(request)
        if key:
            return key
        if request.method != "POST":
            return request.query_params.get("request_id")
        async with request.form() as form:
            return request_id_of(request, form)


@dataclass(frozen=True)
class Post:
    platform: str
    url: str
    publish_id: str
    post_id: str


@dataclass(kw_only=True)
class Upload(Job):
    provider = "upload-post"

    user: str
    title: str
    description: str | None
    video: str
    posts: list[Post]
    scheduled_date: str | None = None  # as the caller sent it

    def results(self, ending: Phase | None) -> list[dict[str, Any]]:
        """Each platform's result once the upload has ended as `ending`."""
        failed = ending is Phase.FAILED
        return [
            {
                "platform": post.platform,
                "success": not failed,
                "url": None if failed else post.url,
                "publish_id": None if failed else post.publish_id,
                "post_id": None if failed else post.post_id,
                "error": FAIL_MESSAGE if failed else None,
            }
            for post in self.posts
        ]

    def webhooks(self, config: SandboxConfig) -> list[Webhook]:
        """One `upload_completed` per platform, signed when a secret is set."""
        if config.upload_post_webhook_url is None:
            return []
        sent = []
        for result in self.results(self.phase()):
            platform = result.pop("platform")
            payload = {
                "event": "upload_completed",
                "job_id": self.id,
                "request_id": self.id,
                "user": self.user,
                "platform": platform,
                "result": result,
                "created_at": datetime.now(UTC).isoformat(),
            }
            body = encode(payload)
            timestamp = str(int(time.time()))
            headers = {"X-Upload-Post-Delivery": new_id(), "X-Upload-Post-Timestamp": timestamp}
            if config.upload_post_webhook_secret is not None:
                headers["X-Upload-Post-Signature"] = signature(
                    config.upload_post_webhook_secret, timestamp, body
                )
            sent.append(Webhook(config.upload_post_webhook_url, body, headers))
        return sent


router = APIRouter(prefix="/upload-post/api", route_class=UploadPostRoute)


@router.post("/upload", name="upload", response_model=None)
async def upload(request: Request, state: Sandbox) -> dict[str, Any] | JSONResponse:
    async with request.form() as form:
        request_id = request_id_of(request, form) or new_id()
        upload = state.find(Upload, request_id)
        if upload is None:
            upload = new_upload(state, request_id, form)
    if upload.scheduled_date is not None:
        scheduled = {
            "success": True,
            "request_id": upload.id,
            "job_id": f"scheduler_{upload.id}",
            "scheduled_date": upload.scheduled_date,
        }
        return JSONResponse(scheduled, status_code=202)
    # The answer a synchronous upload gives once done: how the upload will end.
    results = upload.results(upload.timing.ending)
    return {
        "success": True,
        "request_id": upload.id,
        "results": {result.pop("platform"): result for result in results},
    }


@router.get("/uploadposts/status", name="upload_status")
async def upload_status(request: Request, state: Sandbox) -> dict[str, Any]:
    request_id = request.query_params.get("request_id")
    if not request_id:
        raise Refusal(INVALID, "request_id is required")
    upload = state.find(Upload, request_id)
    if upload is None:
        return {"success": True, "request_id": request_id, "status": "not_found", "results": []}
    phase = upload.phase()
    done = phase in (Phase.SUCCEEDED, Phase.FAILED)
    answer = {
        "success": True,
        "request_id": request_id,
        "status": STATUSES[phase],
        "results": upload.results(phase) if done else [],
    }
    if upload.scheduled_date is not None:
        answer["scheduled_date"] = upload.scheduled_date
    return answer


def new_upload(state: SandboxState, request_id: str, form: FormData) -> Upload:
    user, title = text(form, "user"), text(form, "title")
    video = form.get("video")
    video_name = video.filename if isinstance(video, UploadFile) else text(form, "video")
    platforms = [str(value) for value in form.getlist("platform[]") or form.getlist("platform")]
    if not (user and title and video_name and platforms):
        raise Refusal(INVALID, "user, title, video and platform[] are required")
    unknown = [platform for platform in platforms if platform not in PLATFORMS]
    if unknown:
        raise Refusal(INVALID, f"unsupported platform: {', '.join(unknown)}")
    scheduled_date = text(form, "scheduled_date")
    starts_in = seconds_until(scheduled_date) if scheduled_date is not None else 0.0
    upload = Upload(
        id=request_id,
        timing=state.settings.timing(starts_in),
        user=user,
        title=title,
        description=text(form, "description"),
        video=video_name,
        posts=[new_post(platform, user) for platform in dict.fromkeys(platforms)],
        scheduled_date=scheduled_date,
    )
    state.add(upload)
    return upload


def seconds_until(scheduled_date: str) -> float:
    """How far ahead a `scheduled_date` lies; a refusal, as upload-post's, for one that
    is not ISO 8601, not in the future or more than 365 days ahead."""
    try:
        moment = datetime.fromisoformat(scheduled_date)
    except ValueError:
        raise Refusal(INVALID, "scheduled_date must be an ISO-8601 date/time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # no `timezone` field: upload-post reads UTC
    ahead = moment - datetime.now(UTC)
    if ahead <= timedelta(0):
        raise Refusal(INVALID, f"scheduled_date {scheduled_date} must be in the future")
    if ahead > LONGEST_SCHEDULE:
        raise Refusal(INVALID, f"scheduled_date {scheduled_date} is more than 365 days ahead")
    return ahead.total_seconds()


def new_post(platform: str, user: str) -> Post:
    post_id = new_id()
    # `.invalid` never resolves: a post URL that cannot be mistaken for a real one.
    url = f"https://{platform}.sandbox.invalid/{user}/{post_id}"
    return Post(platform, url, publish_id=f"pub_{post_id[:16]}", post_id=post_id)


def request_id_of(request: Request, form: FormData) -> str | None:
    return text(form, "request_id") or request.headers.get("X-Request-Id") or None


def text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise Refusal(INVALID, f"{name} must be a text field")
    return value or None


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"
