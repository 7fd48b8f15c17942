"""kie.ai: image and video generation, as the generic market API and the Veo and 4o-image APIs.

Every flavour ends in the same `KieTask`, so a persona polls or wakes on a
callback the same way whichever model made the media. kie.ai reports some
failures inside an HTTP 200 (`{"code": 422, "msg": ...}`); `kie_body_status`
makes the shared request path treat that `code` as the status.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from providers.config import api_key, base_urls
from providers.http import Credentials, ProviderHTTP, RetryPolicy, dig
from providers.settings import ProviderSettings

DONE_STATES = frozenset({"success", "fail"})
# Veo's successFlag: 0 generating, 1 success, 2 and 3 failed (at creation or generation).
VEO_STATES = {0: "generating", 1: "success", 2: "fail", 3: "fail"}
GPT4O_IMAGE_STATES = {
    "GENERATING": "generating",
    "SUCCESS": "success",
    "CREATE_TASK_FAILED": "fail",
    "GENERATE_FAILED": "fail",
}


@dataclass(frozen=True)
class KieTask:
    """A generation task; `state` is one of waiting, queuing, generating, success, fail.

    Result URLs expire (24 h typical): copy what must outlast the run.
    """

    task_id: str
    state: str
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_msg: str | None = None

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "success"


def kie_body_status(body: Any) -> tuple[int, str] | None:
    """kie.ai's status inside a 200 answer, when it says something went wrong."""
    code = dig(body, "code")
    if isinstance(code, int) and not isinstance(code, bool) and code != 200:
        msg = dig(body, "msg")
        return code, msg if isinstance(msg, str) and msg else f"code {code}"
    return None


class KieClient:
    """kie.ai over the shared HTTP client; `Authorization: Bearer <key>`."""

    provider = "kie"

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
            base_url=base_urls(settings).kie,
            credentials=Credentials("Authorization", "Bearer", api_key(settings.kie_api_key)),
            retry=retry or RetryPolicy.from_settings(settings),
            body_status=kie_body_status,
        )

    def __repr__(self) -> str:
        return f"KieClient({self.http.base_url!r})"

    async def create_task(
        self,
        model: str,
        input: Mapping[str, Any],
        *,
        callback_url: str | None = None,
        idempotency_key: str,
        run_id: str | None = None,
    ) -> str:
        """Start a market-API task; its taskId."""
        body = {"model": model, "input": dict(input), **_callback(callback_url)}
        return await self._submit(
            "/api/v1/jobs/createTask", body, "createTask", idempotency_key, run_id
        )

    async def record_info(self, task_id: str, *, run_id: str | None = None) -> KieTask:
        operation = "recordInfo"
        data = await self._status("/api/v1/jobs/recordInfo", task_id, operation, run_id)
        return KieTask(
            task_id=task_id,
            state=_text(data.get("state")) or "waiting",
            result_urls=self._result_json_urls(data.get("resultJson"), operation),
            fail_code=_text(data.get("failCode")),
            fail_msg=_text(data.get("failMsg")),
        )

    async def veo_generate(
        self,
        prompt: str,
        *,
        model: str = "veo3_fast",
        aspect_ratio: str = "16:9",
        image_urls: Sequence[str] = (),
        callback_url: str | None = None,
        idempotency_key: str,
        run_id: str | None = None,
    ) -> str:
        """Start a Veo video; its taskId."""
        body: dict[str, Any] = {"prompt": prompt, "model": model, "aspectRatio": aspect_ratio}
        if image_urls:
            body["imageUrls"] = list(image_urls)
        body.update(_callback(callback_url))
        return await self._submit(
            "/api/v1/veo/generate", body, "veoGenerate", idempotency_key, run_id
        )

    async def veo_record_info(self, task_id: str, *, run_id: str | None = None) -> KieTask:
        data = await self._status("/api/v1/veo/record-info", task_id, "veoRecordInfo", run_id)
        flag = _text(data.get("successFlag"))
        state = VEO_STATES.get(int(flag), "waiting") if flag and flag.isdigit() else "waiting"
        return self._task_with_response(data, task_id, state)

    async def gpt4o_image_generate(
        self,
        prompt: str,
        *,
        size: str = "1:1",
        callback_url: str | None = None,
        idempotency_key: str,
        run_id: str | None = None,
    ) -> str:
        """Start a 4o image; its taskId."""
        body = {"prompt": prompt, "size": size, **_callback(callback_url)}
        return await self._submit(
            "/api/v1/gpt4o-image/generate", body, "gpt4oImageGenerate", idempotency_key, run_id
        )

    async def gpt4o_image_record_info(self, task_id: str, *, run_id: str | None = None) -> KieTask:
        operation = "gpt4oImageRecordInfo"
        data = await self._status("/api/v1/gpt4o-image/record-info", task_id, operation, run_id)
        state = GPT4O_IMAGE_STATES.get(_text(data.get("status")) or "", "waiting")
        return self._task_with_response(data, task_id, state)

    async def _submit(
        self,
        path: str,
        body: Mapping[str, Any],
        operation: str,
        idempotency_key: str,
        run_id: str | None,
    ) -> str:
        answer = await self.http.request(
            "POST",
            path,
            operation=operation,
            json_body=body,
            idempotency_key=idempotency_key,
            run_id=run_id,
        )
        task_id = dig(answer, "data", "taskId")
        if not isinstance(task_id, str) or not task_id:
            raise self.http.error(operation, "answer has no data.taskId")
        return task_id

    async def _status(
        self, path: str, task_id: str, operation: str, run_id: str | None
    ) -> Mapping[str, Any]:
        answer = await self.http.request(
            "GET", path, operation=operation, params={"taskId": task_id}, run_id=run_id
        )
        data = dig(answer, "data")
        if not isinstance(data, Mapping):
            raise self.http.error(operation, f"answer for task {task_id} has no data")
        return data

    def _task_with_response(self, data: Mapping[str, Any], task_id: str, state: str) -> KieTask:
        """Veo and 4o image keep results in `data.response` and errors in `errorCode`."""
        urls = dig(data, "response", "resultUrls") or dig(data, "response", "result_urls")
        return KieTask(
            task_id=task_id,
            state=state,
            result_urls=_urls(urls),
            fail_code=_text(data.get("errorCode")),
            fail_msg=_text(data.get("errorMessage")),
        )

    def _result_json_urls(self, result_json: object, operation: str) -> tuple[str, ...]:
        """The market API nests its results as a JSON *string*: `'{"resultUrls": [...]}'`."""
        if not result_json:
            return ()
        if isinstance(result_json, str):
            try:
                result_json = json.loads(result_json)
            except json.JSONDecodeError as exc:
                raise self.http.error(operation, "resultJson is not valid JSON") from exc
        return _urls(dig(result_json, "resultUrls"))


def _callback(callback_url: str | None) -> dict[str, str]:
    return {"callBackUrl": callback_url} if callback_url else {}


def _text(value: object) -> str | None:
    """kie.ai sends codes as numbers or strings, and empty strings for "none"."""
    if value is None or value == "":
        return None
    return str(value)


def _urls(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(url for url in value if isinstance(url, str))
