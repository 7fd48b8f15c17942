"""The one request path every provider client uses: headers, error classification, retries.

Retries happen here, with tenacity, and only for errors that can heal by
themselves (429, 455, 5xx, timeouts, dropped connections). Every attempt keeps
to the provider's limits across all daemons (`engine.wait_for_request`), and a
429 with a reset pauses every daemon's requests to it until then
(`engine.pause_requests`; docs/flow-control.md#limits). A POST that timed
out may still have reached the provider, so submits always carry an
`Idempotency-Key`: retrying is then safe wherever the provider honours it, and
the sandbox records it so the tests can prove each call was sent once per key.
"""

import email.utils
import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from engine import pause_requests, wait_for_request
from engine.runtime.tracing import provider_call
from providers.errors import (
    PermanentProviderError,
    ProviderError,
    RateLimited,
    RetryableProviderError,
)
from providers.settings import ProviderSettings

log = logging.getLogger(__name__)

# Rate limits and kie.ai's 455 "maintenance" pass, and so do server errors, except
# 505, which kie.ai uses for "feature disabled" (and HTTP for a version it won't speak).
RETRYABLE_STATUSES = frozenset({429, 455}) | (frozenset(range(500, 600)) - {505})
EPOCH_THRESHOLD = 1_000_000_000  # X-RateLimit-Reset above this is a Unix time, not a delay
MESSAGE_LIMIT = 500

# Given a successful response's JSON, a provider may still report failure inside it
# (kie.ai answers HTTP 200 with `{"code": 422, "msg": ...}`): (status, message) or None.
BodyStatus = Callable[[Any], tuple[int, str] | None]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call tries: attempts in all, and the waits between them.

    Without a hint the wait is exponential with full jitter (up to `backoff`,
    then twice that, ... at most `backoff_max`); a provider's own hint is used
    instead when it sends one, capped at `hint_max` so one call never sleeps long.
    """

    max_attempts: int = 5
    backoff: float = 1.0
    backoff_max: float = 30.0
    hint_max: float = 60.0

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> "RetryPolicy":
        return cls(max_attempts=settings.provider_max_attempts)

    def wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, ProviderError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.hint_max)
        return float(wait_random_exponential(multiplier=self.backoff, max=self.backoff_max)(state))


@dataclass(frozen=True)
class Credentials:
    """The auth header of one provider; the key stays a `SecretStr` until it is sent."""

    header: str
    scheme: str | None
    key: SecretStr

    def headers(self) -> dict[str, str]:
        secret = self.key.get_secret_value()
        return {self.header: f"{self.scheme} {secret}" if self.scheme else secret}

    def redact(self, text: str) -> str:
        """A provider that echoes our request back must not leak the key into an error."""
        secret = self.key.get_secret_value()
        return text.replace(secret, "**********") if secret else text


def retry_after_hint(
    headers: Mapping[str, str], now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait according to the provider, or None when it gave no usable hint.

    `Retry-After` is seconds or an HTTP date. `X-RateLimit-Reset` is seconds from
    now by some providers and a Unix time by others: a value too large to be a
    delay (after 2001 as a timestamp) is taken as a time.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    retry_after = lowered.get("retry-after", "").strip()
    if retry_after:
        seconds = _number(retry_after)
        if seconds is None:
            try:
                seconds = email.utils.parsedate_to_datetime(retry_after).timestamp() - now()
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None:
            return max(seconds, 0.0)
    reset = _number(lowered.get("x-ratelimit-reset", "").strip())
    if reset is None:
        return None
    if reset > EPOCH_THRESHOLD * 1000:  # milliseconds since the epoch
        reset /= 1000
    return max(reset - now() if reset > EPOCH_THRESHOLD else reset, 0.0)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def dig(body: object, *keys: str) -> object:
    """`body[k1][k2]...`, or None where any level is missing or not an object."""
    for key in keys:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body


class ProviderHTTP:
    """One provider's view of the shared `httpx.AsyncClient`."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        provider: str,
        base_url: str,
        credentials: Credentials,
        retry: RetryPolicy,
        body_status: BodyStatus | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._credentials = credentials
        self._retry = retry
        self._body_status = body_status

    def __repr__(self) -> str:
        return f"ProviderHTTP({self.provider!r}, {self.base_url!r})"

    def error(self, operation: str, message: str) -> PermanentProviderError:
        """A successful answer we cannot use (a missing id, an unknown state)."""
        return PermanentProviderError(self.provider, operation, None, message)

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        form: Sequence[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
        run_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one call, retrying what may heal; the parsed JSON of a 2xx answer.

        `form` is sent as multipart/form-data (repeat a name for an array field).
        """
        sent_headers = {**self._credentials.headers(), **(headers or {})}
        if idempotency_key is not None:
            sent_headers["Idempotency-Key"] = idempotency_key
        if run_id is not None:
            sent_headers["X-Orchestrator-Run-Id"] = run_id
        files = [(name, (None, value.encode())) for name, value in form] if form else None
        # Traced without the query (it may carry ids or keys) and without any userinfo.
        url = httpx.URL(self.base_url + path)
        traced_url = str(url.copy_with(query=None, userinfo=b""))
        resends = itertools.count()

        async def attempt() -> Any:
            await wait_for_request(self.provider)
            with provider_call(
                self.provider,
                operation,
                method,
                url=traced_url,
                server_address=url.host,
                server_port=url.port or {"https": 443, "http": 80}.get(url.scheme),
                resend_count=next(resends),
            ) as call:
                try:
                    response = await self._client.request(
                        method,
                        url,
                        params=params,
                        json=json_body,
                        files=files,
                        headers=sent_headers,
                    )
                except httpx.TimeoutException as exc:
                    raise RetryableProviderError(
                        self.provider, operation, None, f"timed out ({type(exc).__name__})"
                    ) from exc
                except httpx.UnsupportedProtocol as exc:
                    raise self.error(operation, f"bad base URL {self.base_url!r}") from exc
                except httpx.TransportError as exc:
                    raise RetryableProviderError(
                        self.provider, operation, None, f"connection failed ({type(exc).__name__})"
                    ) from exc
                call.responded(response.status_code)
                try:
                    return self._result(response, operation)
                except RateLimited as limited:
                    # A daily cap is one platform's, not a pause of the provider.
                    if limited.retry_after is not None and not limited.hard_cap:
                        await pause_requests(self.provider, limited.retry_after)
                    raise

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.max_attempts),
            wait=self._retry.wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, ProviderError) and exc.retryable),
            before_sleep=lambda state: self._log_retry(state, run_id),
            reraise=True,
        )
        return await retrying(attempt)

    def _result(self, response: httpx.Response, operation: str) -> Any:
        try:
            body: Any = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        status = response.status_code
        message = self._message(body, response)
        if response.is_success and self._body_status is not None:
            status, message = self._body_status(body) or (status, message)
        if 200 <= status < 300:
            if body is None:
                raise PermanentProviderError(self.provider, operation, status, "answer is not JSON")
            return body
        raise self._classify(status, message, body, response, operation)

    def _message(self, body: Any, response: httpx.Response) -> str:
        """The provider's own explanation, whichever key it uses for it."""
        texts = (dig(body, key) for key in ("msg", "message", "error", "detail"))
        text = next((t for t in texts if isinstance(t, str) and t), None)
        if text is None and body is None:
            text = response.text.strip()  # a proxy's HTML page, a plain-text error
        text = text or response.reason_phrase or "no message"
        return self._credentials.redact(text[:MESSAGE_LIMIT])

    def _classify(
        self, status: int, message: str, body: Any, response: httpx.Response, operation: str
    ) -> ProviderError:
        hint = retry_after_hint(response.headers) if status in RETRYABLE_STATUSES else None
        if status == 429:
            return RateLimited(
                self.provider,
                operation,
                status,
                message,
                retry_after=hint,
                hard_cap=_is_hard_cap(body),
            )
        if status in RETRYABLE_STATUSES:
            return RetryableProviderError(
                self.provider, operation, status, message, retry_after=hint
            )
        return PermanentProviderError(self.provider, operation, status, message)

    def _log_retry(self, state: RetryCallState, run_id: str | None) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "provider call failed, retrying",
            extra={
                "action": "provider_retry",
                "provider": self.provider,
                "operation": getattr(error, "operation", None),
                "status_code": getattr(error, "status_code", None),
                "error": str(error),
                "attempt": state.attempt_number,
                "wait": state.upcoming_sleep,
                "run_id": run_id,
            },
        )


def _is_hard_cap(body: Any) -> bool:
    """upload-post's daily per-platform posting cap: `violations[].type == "hard_cap"`."""
    violations = dig(body, "violations")
    return isinstance(violations, list) and any(
        dig(violation, "type") == "hard_cap" for violation in violations
    )
