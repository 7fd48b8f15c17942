"""upload-post under `/upload-post`: publish a video, ask how it went, `upload_completed` webhooks.

The caller's `request_id` names the upload, so sending one again answers the
first upload instead of posting twice. Every answer carries rate-limit headers.
"""

import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
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
        used = 1 + sum(
            1 for call in state.calls if call.provider == self.provider and call.at >= since
        )
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


router = APIRouter(prefix="/upload-post/api", route_class=UploadPostRoute)


@router.post("/upload", name="upload")
async def upload(request: Request, state: Sandbox) -> dict[str, Any]:
    async with request.form() as form:
        request_id = request_id_of(request, form) or new_id()
        upload = state.find(Upload, request_id)
        if upload is None:
            upload = new_upload(state, request_id, form)
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
    return {
        "success": True,
        "request_id": request_id,
        "status": STATUSES[phase],
        "results": upload.results(phase) if done else [],
    }


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
    upload = Upload(
        id=request_id,
        timing=state.settings.timing(),
        user=user,
        title=title,
        description=text(form, "description"),
        video=video_name,
        posts=[new_post(platform, user) for platform in dict.fromkeys(platforms)],
    )
    state.add(upload)
    if state.config.upload_post_webhook_url is not None:
        config = state.config
        state.webhooks.schedule(upload.timing.finishes_at, lambda: webhooks(upload, config))
    return upload


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


def webhooks(upload: Upload, config: SandboxConfig) -> list[Webhook]:
    """One `upload_completed` per platform, signed when a secret is set."""
    assert config.upload_post_webhook_url is not None
    sent = []
    for result in upload.results(upload.phase()):
        platform = result.pop("platform")
        payload = {
            "event": "upload_completed",
            "job_id": upload.id,
            "request_id": upload.id,
            "user": upload.user,
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


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"
