"""Shotstack under `/shotstack/edit/{stage|v1}`: render an Edit, ask for it, get a callback.

Shotstack does not sign its callbacks, so neither does the sandbox. Errors
answer `{success: false, message, response: {error: <type>}}`.
"""

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from providers.sandbox.config import SandboxConfig
from providers.sandbox.files import file_url
from providers.sandbox.operations import ProviderRoute, Refusal, json_object, optional, required
from providers.sandbox.state import Job, MediaFile, Phase, Sandbox, new_id
from providers.sandbox.webhooks import Webhook, encode

INVALID = 400
ENVIRONMENTS = ("stage", "v1")  # each has its own renders, as each has its own keys
OWNER = "sandbox"
FAIL_MESSAGE = "sandbox: render failed (fail_jobs)"
FORMATS = ("mp4", "gif", "jpg", "png", "bmp", "mp3")
STATUSES = {
    Phase.QUEUED: "queued",
    Phase.RUNNING: "rendering",
    Phase.SUCCEEDED: "done",
    Phase.FAILED: "failed",
}
ERROR_TYPES = {
    400: "validation_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class ShotstackRoute(ProviderRoute):
    provider = "shotstack"
    key_header = "x-api-key"
    key_scheme = None

    def refusal_body(self, refusal: Refusal) -> dict[str, Any]:
        error_type = ERROR_TYPES.get(refusal.status_code, "api_error")
        return {"success": False, "message": refusal.message, "response": {"error": error_type}}


@dataclass(kw_only=True)
class Render(Job):
    provider = "shotstack"

    env: str
    edit: dict[str, Any]
    callback_url: str | None
    url: str
    poster: str | None
    thumbnail: str | None
    duration: float

    def webhooks(self, config: SandboxConfig) -> list[Webhook]:
        return [] if self.callback_url is None else [callback(self)]


router = APIRouter(prefix="/shotstack/edit/{env}", route_class=ShotstackRoute)


@router.post("/render", name="render", status_code=201)
async def render(env: str, request: Request, state: Sandbox) -> dict[str, Any]:
    check_environment(env)
    edit = await json_object(request, INVALID)
    tracks = required(edit, "timeline.tracks", list, INVALID)
    if not tracks:
        raise Refusal(INVALID, "timeline.tracks must hold at least one track")
    output = required(edit, "output", dict, INVALID)
    extension = optional(output, "format", str, INVALID) or "mp4"
    if extension not in FORMATS:
        raise Refusal(INVALID, f"output.format must be one of {', '.join(FORMATS)}")
    render_id = new_id()
    names = {"render": f"{render_id}.{extension}"}  # each file of the render by what it is
    if "poster" in output:
        names["poster"] = f"{render_id}-poster.jpg"
    if "thumbnail" in output:
        names["thumbnail"] = f"{render_id}-thumb.jpg"
    urls = {what: file_url(request, name) for what, name in names.items()}
    job = Render(
        id=render_id,
        timing=state.settings.timing(),
        env=env,
        edit=edit,
        callback_url=optional(edit, "callback", str, INVALID),
        url=urls["render"],
        poster=urls.get("poster"),
        thumbnail=urls.get("thumbnail"),
        duration=edit_duration(tracks),
    )
    caption = titles(tracks) or "Shotstack render"
    files = [
        MediaFile(name, caption, f"sandbox · Shotstack {what}") for what, name in names.items()
    ]
    state.add(job, files)
    return {
        "success": True,
        "message": "Created",
        "response": {"message": "Render Successfully Queued", "id": job.id},
    }


@router.get("/render/{render_id}", name="get_render")
async def get_render(env: str, render_id: str, state: Sandbox) -> dict[str, Any]:
    check_environment(env)
    job = state.find(Render, render_id)
    if job is None or job.env != env:
        raise Refusal(404, f"render {render_id} not found")
    phase = job.phase()
    done = phase in (Phase.SUCCEEDED, Phase.FAILED)
    succeeded = phase is Phase.SUCCEEDED
    return {
        "success": True,
        "message": "OK",
        "response": {
            "id": job.id,
            "owner": OWNER,
            "plan": "sandbox",
            "status": STATUSES[phase],
            "error": FAIL_MESSAGE if phase is Phase.FAILED else None,
            "duration": job.duration,
            "renderTime": round(job.timing.latency * 1000, 2) if done else None,
            "url": job.url if succeeded else None,
            "poster": job.poster if succeeded else None,
            "thumbnail": job.thumbnail if succeeded else None,
            "data": job.edit,
            "created": job.timing.created_at.isoformat(),
            "updated": (job.timing.completed_at if done else job.timing.created_at).isoformat(),
        },
    }


def check_environment(env: str) -> None:
    if env not in ENVIRONMENTS:
        raise Refusal(404, f"no such environment {env!r}: use stage or v1")


def edit_duration(tracks: list[Any]) -> float:
    """Where the last clip ends; clips timed `auto` or `end` are not counted."""
    ends = [
        float(clip["start"] + clip["length"])
        for track in tracks
        if isinstance(track, dict)
        for clip in track.get("clips") or []
        if isinstance(clip, dict)
        and isinstance(clip.get("start"), int | float)
        and isinstance(clip.get("length"), int | float)
    ]
    return max(ends, default=0.0)


def titles(tracks: list[Any]) -> str:
    """The text of the edit's title and text clips, in track order: what a poster shows."""
    texts = [
        clip["asset"]["text"]
        for track in tracks
        if isinstance(track, dict)
        for clip in track.get("clips") or []
        if isinstance(clip, dict)
        and isinstance(clip.get("asset"), dict)
        and isinstance(clip["asset"].get("text"), str)
    ]
    return " · ".join(text for text in texts if text.strip())


def callback(job: Render) -> Webhook:
    assert job.callback_url is not None
    succeeded = job.phase() is Phase.SUCCEEDED
    payload = {
        "type": "edit",
        "action": "render",
        "id": job.id,
        "owner": OWNER,
        "status": "done" if succeeded else "failed",
        "url": job.url if succeeded else None,
        "error": None if succeeded else FAIL_MESSAGE,
        "completed": job.timing.completed_at.isoformat(),
    }
    return Webhook(job.callback_url, encode(payload))
