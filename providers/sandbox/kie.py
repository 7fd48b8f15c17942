"""kie.ai under `/kie`: the market `createTask` API, Veo, 4o image, and their callbacks.

kie.ai reports errors in the body's `code`; the sandbox also answers with that
code as the HTTP status, so a client sees the error whichever one it reads.
"""

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request

from providers.sandbox.config import SandboxConfig
from providers.sandbox.files import file_url
from providers.sandbox.operations import ProviderRoute, Refusal, json_object, optional, required
from providers.sandbox.state import Job, MediaFile, Phase, Sandbox, SandboxState, new_id
from providers.sandbox.webhooks import Webhook, encode

INVALID = 422
FAIL_CODE = 501  # kie.ai's "generation failed"
FAIL_MESSAGE = "sandbox: generation failed (fail_jobs)"
# Market models whose results are videos; any other model yields an image.
VIDEO_MODEL_HINTS = ("video", "veo", "kling", "hailuo", "seedance", "sora", "wan")
VEO_MODELS = ("veo3", "veo3_fast")
VEO_ASPECT_RATIOS = ("16:9", "9:16", "Auto")
GPT4O_SIZES = ("1:1", "3:2", "2:3")
GPT4O_VARIANTS = (1, 2, 4)

MARKET_STATES = {
    Phase.QUEUED: "waiting",
    Phase.RUNNING: "generating",
    Phase.SUCCEEDED: "success",
    Phase.FAILED: "fail",
}
SUCCESS_FLAGS = {Phase.QUEUED: 0, Phase.RUNNING: 0, Phase.SUCCEEDED: 1, Phase.FAILED: 2}
GPT4O_STATUSES = {
    Phase.QUEUED: "GENERATING",
    Phase.RUNNING: "GENERATING",
    Phase.SUCCEEDED: "SUCCESS",
    Phase.FAILED: "GENERATE_FAILED",
}
PROGRESS = {
    Phase.QUEUED: "0.00",
    Phase.RUNNING: "0.50",
    Phase.SUCCEEDED: "1.00",
    Phase.FAILED: "1.00",
}

Kind = Literal["market", "veo", "gpt4o_image"]
T = TypeVar("T")


class KieRoute(ProviderRoute):
    provider = "kie"
    key_header = "Authorization"
    key_scheme = "Bearer"

    def refusal_body(self, refusal: Refusal) -> dict[str, Any]:
        return {"code": refusal.status_code, "msg": refusal.message, "data": None}


@dataclass(kw_only=True)
class KieTask(Job):
    provider = "kie"

    kind: Kind
    model: str
    params: dict[str, Any]  # the request body, echoed as `param`/`paramJson`
    callback_url: str | None
    result_urls: list[str]

    def succeeded(self) -> bool:
        return self.phase() is Phase.SUCCEEDED

    def failed(self) -> bool:
        return self.phase() is Phase.FAILED

    def webhooks(self, config: SandboxConfig) -> list[Webhook]:
        if self.callback_url is None:
            return []
        return [callback(self, config.kie_webhook_secret)]


router = APIRouter(prefix="/kie/api/v1", route_class=KieRoute)


@router.post("/jobs/createTask", name="createTask")
async def create_task(request: Request, state: Sandbox) -> dict[str, Any]:
    body = await json_object(request, INVALID)
    model = required(body, "model", str, INVALID)
    required(body, "input", dict, INVALID)
    extension = "mp4" if any(hint in model.lower() for hint in VIDEO_MODEL_HINTS) else "png"
    return accepted(submit(request, state, "market", model, body, extension))


@router.get("/jobs/recordInfo", name="recordInfo")
async def record_info(request: Request, state: Sandbox) -> dict[str, Any]:
    return answer(market_data(find_task(request, state, "market")))


@router.post("/veo/generate", name="veo_generate")
async def veo_generate(request: Request, state: Sandbox) -> dict[str, Any]:
    body = await json_object(request, INVALID)
    required(body, "prompt", str, INVALID)
    model = choice(body, "model", VEO_MODELS, default="veo3_fast")
    choice(body, "aspectRatio", VEO_ASPECT_RATIOS, default="16:9")
    image_urls = optional(body, "imageUrls", list, INVALID) or []
    if not all(isinstance(url, str) for url in image_urls):
        raise Refusal(INVALID, "imageUrls must be a list of URLs")
    return accepted(submit(request, state, "veo", model, body, "mp4"))


@router.get("/veo/record-info", name="veo_record_info")
async def veo_record_info(request: Request, state: Sandbox) -> dict[str, Any]:
    task = find_task(request, state, "veo")
    return answer(
        {
            **common_data(task),
            "response": veo_response(task) if task.succeeded() else None,
            "fallbackFlag": False,
        }
    )


@router.post("/gpt4o-image/generate", name="gpt4o_image_generate")
async def gpt4o_image_generate(request: Request, state: Sandbox) -> dict[str, Any]:
    body = await json_object(request, INVALID)
    required(body, "prompt", str, INVALID)
    choice(body, "size", GPT4O_SIZES)
    variants = choice(body, "nVariants", GPT4O_VARIANTS, default=1)
    return accepted(submit(request, state, "gpt4o_image", "gpt4o-image", body, "png", variants))


@router.get("/gpt4o-image/record-info", name="gpt4o_image_record_info")
async def gpt4o_image_record_info(request: Request, state: Sandbox) -> dict[str, Any]:
    task = find_task(request, state, "gpt4o_image")
    phase = task.phase()
    return answer(
        {
            **common_data(task),
            "response": {"resultUrls": task.result_urls} if task.succeeded() else None,
            "status": GPT4O_STATUSES[phase],
            "progress": PROGRESS[phase],
        }
    )


def choice(body: dict[str, Any], name: str, allowed: tuple[T, ...], default: T | None = None) -> T:
    value = body.get(name, default)
    for option in allowed:
        if value == option:
            return option
    raise Refusal(INVALID, f"{name} must be one of {', '.join(map(str, allowed))}")


def submit(
    request: Request,
    state: SandboxState,
    kind: Kind,
    model: str,
    params: dict[str, Any],
    extension: str,
    count: int = 1,
) -> KieTask:
    task_id = new_id()
    names = (
        [f"{task_id}.{extension}"]
        if count == 1
        else [f"{task_id}-{n}.{extension}" for n in range(1, count + 1)]
    )
    task = KieTask(
        id=task_id,
        timing=state.settings.timing(),
        kind=kind,
        model=model,
        params=params,
        callback_url=optional(params, "callBackUrl", str, INVALID),
        result_urls=[file_url(request, name) for name in names],
    )
    caption, label = prompt_of(params) or model, f"sandbox · kie.ai {model}"
    files = [
        MediaFile(name, caption, label if count == 1 else f"{label} · {n} of {count}")
        for n, name in enumerate(names, 1)
    ]
    state.add(task, files)
    return task


def prompt_of(params: dict[str, Any]) -> str | None:
    """The prompt: at the top for Veo and 4o image, in `input` for a market model."""
    nested = params.get("input")
    prompt = params.get("prompt") or (nested.get("prompt") if isinstance(nested, dict) else None)
    return prompt if isinstance(prompt, str) else None


def find_task(request: Request, state: SandboxState, kind: Kind) -> KieTask:
    task_id = request.query_params.get("taskId")
    if not task_id:
        raise Refusal(INVALID, "taskId is required")
    task = state.find(KieTask, task_id)
    if task is None or task.kind != kind:
        raise Refusal(404, f"task {task_id} not found")
    return task


def accepted(task: KieTask) -> dict[str, Any]:
    return answer({"taskId": task.id})


def answer(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": data}


def market_data(task: KieTask) -> dict[str, Any]:
    phase = task.phase()
    done = phase in (Phase.SUCCEEDED, Phase.FAILED)
    return {
        "taskId": task.id,
        "model": task.model,
        "state": MARKET_STATES[phase],
        "param": json.dumps(task.params),
        "resultJson": json.dumps({"resultUrls": task.result_urls}) if task.succeeded() else None,
        "failCode": str(FAIL_CODE) if task.failed() else None,
        "failMsg": FAIL_MESSAGE if task.failed() else None,
        "costTime": round(task.timing.latency * 1000) if done else None,
        "completeTime": millis(task.timing.completed_at) if done else None,
        "createTime": millis(task.timing.created_at),
    }


def common_data(task: KieTask) -> dict[str, Any]:
    """What the Veo and 4o image record-info answers share."""
    phase = task.phase()
    done = phase in (Phase.SUCCEEDED, Phase.FAILED)
    return {
        "taskId": task.id,
        "paramJson": json.dumps(task.params),
        "successFlag": SUCCESS_FLAGS[phase],
        "errorCode": FAIL_CODE if task.failed() else None,
        "errorMessage": FAIL_MESSAGE if task.failed() else None,
        "completeTime": millis(task.timing.completed_at) if done else None,
        "createTime": millis(task.timing.created_at),
    }


def veo_response(task: KieTask) -> dict[str, Any]:
    aspect_ratio = task.params.get("aspectRatio", "16:9")
    return {
        "taskId": task.id,
        "resultUrls": task.result_urls,
        # Veo keeps the unreframed original only when it had to change the aspect ratio.
        "originUrls": [] if aspect_ratio == "16:9" else task.result_urls,
        "resolution": "1080p" if aspect_ratio == "16:9" else "720p",
    }


def callback(task: KieTask, secret: str | None) -> Webhook:
    """The POST to `callBackUrl` once the task has finished."""
    assert task.callback_url is not None
    if task.kind == "market":
        data = market_data(task)
    elif task.succeeded():
        response = veo_response(task)
        info = (
            {key: response[key] for key in ("resultUrls", "originUrls", "resolution")}
            if task.kind == "veo"
            else {"result_urls": task.result_urls}
        )
        data = {"taskId": task.id, "info": info}
    else:
        data = {"taskId": task.id}  # a failed Veo or 4o image task has no `info`
    payload = {
        "code": 200 if task.succeeded() else FAIL_CODE,
        "msg": "success" if task.succeeded() else FAIL_MESSAGE,
        "data": data,
    }
    headers = signature_headers(secret, task.id) if secret is not None else {}
    return Webhook(task.callback_url, encode(payload), headers)


def signature_headers(secret: str, task_id: str) -> dict[str, str]:
    """kie.ai signs the task id and the time, not the body."""
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return {
        "X-Webhook-Timestamp": timestamp,
        "X-Webhook-Signature": base64.b64encode(digest).decode(),
    }


def millis(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)
