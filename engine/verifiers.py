"""What the webhook ingress asks of an App: one verifier per provider, and its verdicts."""

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol


class Verification(Protocol):
    """What a provider's verifier (one per provider, given by the App) says about a delivery."""

    @property
    def status(self) -> str: ...
    @property
    def delivery_id(self) -> str | None: ...
    @property
    def job_id(self) -> str | None: ...


KnownJob = Callable[[str], Awaitable[bool]]


class Verifier(Protocol):
    """`known(job_id)`: whether a live run waits on that job of this provider."""

    def __call__(
        self, headers: Mapping[str, str], body: bytes, *, known: KnownJob
    ) -> Awaitable[Verification]: ...
