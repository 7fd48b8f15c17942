"""What a failed provider call raises, classified by whether trying again can help.

Callers (the personas' provider steps) decide on `retryable` alone: a retryable
error that survived the client's own retries fails the step for the engine to
retry later; anything else fails it clearly with the provider's own message.
"""


class ProviderError(Exception):
    """A provider call that failed; `message` is the provider's own words, never a secret.

    `retry_after` is the provider's hint, in seconds from when the answer arrived,
    before asking again (`Retry-After`, `X-RateLimit-Reset`), uncapped: a daily
    posting cap reports the whole remaining window so a caller can sleep that long.
    """

    retryable: bool = False

    def __init__(
        self,
        provider: str,
        operation: str,
        status_code: int | None,
        message: str,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.operation = operation
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        status = f" ({self.status_code})" if self.status_code is not None else ""
        return f"{self.provider} {self.operation} failed{status}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class RetryableProviderError(ProviderError):
    """Worth asking again later: 455 maintenance, 5xx, a timeout, a dropped connection."""

    retryable = True


class RateLimited(ProviderError):
    """HTTP 429. Retryable unless it is a hard cap (upload-post's daily posting limit),
    which no amount of retrying within the window can lift."""

    def __init__(
        self,
        provider: str,
        operation: str,
        status_code: int | None,
        message: str,
        *,
        retry_after: float | None = None,
        hard_cap: bool = False,
    ) -> None:
        self.hard_cap = hard_cap
        self.retryable = not hard_cap
        super().__init__(provider, operation, status_code, message, retry_after=retry_after)


class PermanentProviderError(ProviderError):
    """The request itself is wrong or not allowed (401, 402, 404, 422, 505, ...):
    sending it again gives the same answer."""
