"""What every provider endpoint shares: faults, the key check, error answers, the call log.

Each provider's router uses a `ProviderRoute` subclass; the route's name is the
operation that the call log records and that a fault names.
"""

import asyncio
import http
import math
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from providers.sandbox.state import Call, Fault, SandboxState, state_of

RUN_ID_HEADER = "X-Orchestrator-Run-Id"
# A 429 fault that names no `retry_after` still tells the client when to come back.
DEFAULT_RETRY_AFTER = 1.0


class Refusal(Exception):
    """An error answer, rendered in the provider's own format by its route."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        retry_after: float | None = None,
        hard_cap: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        self.hard_cap = hard_cap

    @classmethod
    def from_fault(cls, fault: Fault) -> "Refusal":
        retry_after = fault.retry_after
        if retry_after is None and fault.status_code == 429:
            retry_after = seconds_to_utc_midnight() if fault.hard_cap else DEFAULT_RETRY_AFTER
        return cls(
            fault.status_code,
            f"{status_phrase(fault.status_code)} (sandbox fault)",
            retry_after=retry_after,
            hard_cap=fault.hard_cap,
        )


class ProviderRoute(APIRoute):
    provider: ClassVar[str]
    key_header: ClassVar[str]
    key_scheme: ClassVar[str | None]  # "Bearer" in `Authorization: Bearer <key>`

    def refusal_body(self, refusal: Refusal) -> dict[str, Any]:
        raise NotImplementedError

    def answer_headers(self, state: SandboxState, refusal: Refusal | None) -> dict[str, str]:
        """Headers for every answer of this provider."""
        if refusal is None or refusal.retry_after is None:
            return {}
        return {"Retry-After": format_seconds(refusal.retry_after)}

    async def idempotency_key(self, request: Request) -> str | None:
        return request.headers.get("Idempotency-Key")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_recorded(request: Request) -> Response:
            state = state_of(request)
            refusal: Refusal | None = None
            try:
                self._admit(request, state)
                response = await handle(request)
            except Refusal as error:
                refusal = error
                response = JSONResponse(self.refusal_body(error), status_code=error.status_code)
            response.headers.update(self.answer_headers(state, refusal))
            state.record(
                Call(
                    provider=self.provider,
                    operation=self.name,
                    idempotency_key=await self.idempotency_key(request),
                    run_id=request.headers.get(RUN_ID_HEADER),
                    method=request.method,
                    path=request.url.path,
                    status_code=response.status_code,
                    at=datetime.now(UTC),
                )
            )
            if state.settings.response_delay:
                await asyncio.sleep(state.settings.response_delay)
            return response

        return handle_recorded

    def _admit(self, request: Request, state: SandboxState) -> None:
        fault = state.take_fault(self.provider, self.name)
        if fault is not None:
            raise Refusal.from_fault(fault)
        value = request.headers.get(self.key_header, "")
        if self.key_scheme is not None:
            scheme, _, value = value.partition(" ")
            if scheme.lower() != self.key_scheme.lower():
                value = ""
        if not value.strip():
            raise Refusal(401, f"missing or invalid API key in {self.key_header}")


async def json_object(request: Request, status_code: int) -> dict[str, Any]:
    """The request's JSON object body, or a refusal with the provider's validation status."""
    try:
        body = await request.json()
    except ValueError:
        raise Refusal(status_code, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Refusal(status_code, "body must be a JSON object")
    return body


T = TypeVar("T")


def optional(body: Mapping[str, Any], path: str, kind: type[T], status_code: int) -> T | None:
    """`body["a"]["b"]` for path `a.b`, checked to be a `kind`; a blank string counts as absent."""
    value: Any = body
    for key in path.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None or value == "":
        return None
    if not isinstance(value, kind):
        raise Refusal(status_code, f"{path} must be of type {kind.__name__}")
    return value


def required(body: Mapping[str, Any], path: str, kind: type[T], status_code: int) -> T:
    value = optional(body, path, kind, status_code)
    if value is None:
        raise Refusal(status_code, f"{path} is required")
    return value


def status_phrase(status_code: int) -> str:
    try:
        return http.HTTPStatus(status_code).phrase
    except ValueError:
        return "Under Maintenance" if status_code == 455 else f"Error {status_code}"


def format_seconds(seconds: float) -> str:
    """`2` rather than `2.0`; fractions are kept so tests can ask for short waits."""
    return str(int(seconds)) if seconds == int(seconds) else str(seconds)


def seconds_to_utc_midnight() -> float:
    """When a daily cap rolls over."""
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return float(math.ceil((midnight - now).total_seconds()))
