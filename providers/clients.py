"""The three provider clients over one `httpx.AsyncClient`, opened and closed together.

One connection pool serves all providers; the sandbox serves all three from
one port, so sharing it also shares its keep-alive connections.
"""

from types import TracebackType

import httpx

from providers.http import RetryPolicy
from providers.kie import KieClient
from providers.settings import ProviderSettings
from providers.shotstack import ShotstackClient
from providers.upload_post import UploadPostClient


class ProviderClients:
    """`async with ProviderClients(settings) as clients: await clients.kie.create_task(...)`."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(timeout=timeout or settings.provider_timeout)
        retry = retry or RetryPolicy.from_settings(settings)
        self.kie = KieClient(self._http, settings, retry=retry)
        self.shotstack = ShotstackClient(self._http, settings, retry=retry)
        self.upload_post = UploadPostClient(self._http, settings, retry=retry)

    def __repr__(self) -> str:
        return f"ProviderClients({self.kie!r}, {self.shotstack!r}, {self.upload_post!r})"

    async def __aenter__(self) -> "ProviderClients":
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
