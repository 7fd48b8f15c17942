"""Where notifications go: each Apprise URL (Slack, e-mail, Discord, Telegram, json://…)
and one webhook signed as Standard Webhooks say. Built from the settings when a daemon
starts, where a bad one stops it with one line; each is named without its secrets,
and what it reports of a failure has them cut out.
"""

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
import httpx
from apprise.utils.parse import parse_urls
from standardwebhooks import Webhook

from engine.runtime.webhook_targets import TargetRefused, ensure_public
from engine.settings import Settings

RUN_WEBHOOK = "run-webhook"  # the channel of each run's own webhook (migration 0018)
ERROR_CHARS = 500  # of a failure's description, as stored and logged
SECRET_BYTES = (24, 64)  # a Standard Webhooks secret's length, decoded
TITLES = {
    "gate": "waits for a decision",
    "reminder": "still waits for a decision",
    "timeout": "gate timed out",
    "failed": "failed",
    "published": "published",
    "cancelled": "cancelled",
}


@dataclass(frozen=True)
class Notice:
    """One notification, as every channel sends it."""

    id: str  # the same on every attempt and every sender: a receiver dedupes by it
    event: str
    run_id: str
    project: str
    gate: str | None
    message: str
    link: str  # the run's console page
    time: datetime  # when the event happened (a reminder: the time it was due)
    target: str | None = None  # the run's own webhook, if it has one

    @property
    def title(self) -> str:
        return f"[{self.project}] {self.run_id} {TITLES.get(self.event, self.event)}"

    @property
    def text(self) -> str:
        return f"{self.message}\n{self.link}"

    def as_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "event": self.event,
                "run_id": self.run_id,
                "project": self.project,
                "gate": self.gate,
                "link": self.link,
                "message": self.message,
                "time": self.time.isoformat(),
            }
        )


class DeliveryFailed(Exception):
    """The channel did not take the notice. The message holds none of its secrets."""


class Channel(Protocol):
    # Stable across restarts and free of secrets: the outbox, logs, metrics and the
    # console name the channel by it.
    name: str

    async def send(self, notice: Notice) -> None:
        """Deliver, or raise `DeliveryFailed` (any other exception counts as one too)."""


class Redactor:
    """Cuts every part of a URL that may be a secret (user, password, host, path
    segments, query values) out of a text about it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        userinfo, _, host = parts.netloc.rpartition("@")  # as written: hostname lower-cases
        found = {*userinfo.split(":"), host, host.rsplit(":", 1)[0], parts.fragment}
        found.update(parts.path.split("/"))
        found.update(value for _, value in parse_qsl(parts.query))
        words = found | {unquote(word) for word in found}
        self._words = sorted((w for w in words if len(w) >= 3), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for word in self._words:
            text = text.replace(word, "****")
        return text[:ERROR_CHARS]


class AppriseChannel:
    """One Apprise URL: Apprise's own client for the service, with its timeout."""

    def __init__(self, url: str, timeout: float) -> None:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        service = apprise.Apprise.instantiate(url)
        if service is None:
            shown = f"a {scheme}:// URL" if scheme else "an entry without a scheme://"
            raise ValueError(
                f"ORCHESTRATOR_NOTIFY_URLS: {shown} that Apprise cannot use "
                "(https://github.com/caronc/apprise/wiki lists every service's URL)"
            )
        # Apprise's id of the service: a hash of what identifies it (its credentials,
        # not its targets or options), so reordering or retuning a URL keeps its name.
        self.name = f"{scheme}:{service.url_id() or 'service'}"
        self._apprise = apprise.Apprise()
        self._apprise.add(service)
        self._timeout = timeout
        self._redact = Redactor(url)

    async def send(self, notice: Notice) -> None:
        result = await self._apprise.async_notify(
            body=notice.text, title=notice.title, timeout=self._timeout
        )
        if not result:
            said = "; ".join(entry.message for entry in result.logs())
            raise DeliveryFailed(self._redact(f"{result.status.name.lower()}: {said}"))


class WebhookChannel:
    """A POST of the notice as JSON, signed: `webhook-id` (the notice's stable id),
    `webhook-timestamp` and `webhook-signature`, as the `standardwebhooks` library
    verifies them."""

    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("ORCHESTRATOR_NOTIFY_WEBHOOK_URL: give an http:// or https:// URL")
        self._url = url
        self._poster = SignedPost(secret, "ORCHESTRATOR_NOTIFY_WEBHOOK_SECRET", timeout)

    async def send(self, notice: Notice) -> None:
        await self._poster.post(self._url, notice)


class RunWebhookChannel:
    """The same signed POST to the run's own webhook (`runs.webhook_url`), checked
    again before each delivery: a name that now resolves to an internal address is
    not called (`engine.runtime.webhook_targets`)."""

    name = RUN_WEBHOOK

    def __init__(self, secret: str, timeout: float, *, allow_private: bool) -> None:
        self._poster = SignedPost(secret, "ORCHESTRATOR_RUN_WEBHOOK_SECRET", timeout)
        self._allow_private = allow_private

    async def send(self, notice: Notice) -> None:
        if notice.target is None:
            raise DeliveryFailed("the run has no webhook")
        try:
            await ensure_public(notice.target, "webhook", allow_private=self._allow_private)
        except TargetRefused as refused:
            raise DeliveryFailed(Redactor(notice.target)(str(refused))) from None
        await self._poster.post(notice.target, notice)


class SignedPost:
    """POSTs a notice as JSON, signed per Standard Webhooks with one secret."""

    def __init__(self, secret: str, setting: str, timeout: float) -> None:
        self._signer = Webhook(_secret_key(secret, setting))
        self._timeout = timeout

    async def post(self, url: str, notice: Notice) -> None:
        body = notice.as_json()
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": notice.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(notice.id, now, body),
        }
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise DeliveryFailed(Redactor(url)(f"{type(error).__name__}: {error}")) from None
        if not response.is_success:
            raise DeliveryFailed(f"HTTP {response.status_code}")


def _secret_key(secret: str, setting: str) -> bytes:
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        key = b""
    if not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
        raise ValueError(
            f"{setting}: give whsec_ and the base64 of "
            f"{SECRET_BYTES[0]} to {SECRET_BYTES[1]} random bytes "
            "(say, whsec_ followed by what `openssl rand -base64 32` prints)"
        )
    return key


def channels_from(settings: Settings) -> list[Channel]:
    """The channels the settings configure; ValueError naming the setting for a bad one
    (never showing its value)."""
    channels: list[Channel] = []
    if settings.notify_urls is not None:
        urls: Iterable[str] = parse_urls(settings.notify_urls.get_secret_value())
        channels.extend(AppriseChannel(url, settings.notify_timeout) for url in urls)
    url, secret = settings.notify_webhook_url, settings.notify_webhook_secret
    if (url is None) != (secret is None):
        missing = "SECRET" if secret is None else "URL"
        raise ValueError(
            f"ORCHESTRATOR_NOTIFY_WEBHOOK_{missing}: the webhook needs both its URL and its secret"
        )
    if url is not None and secret is not None:
        channels.append(
            WebhookChannel(
                url.get_secret_value(), secret.get_secret_value(), settings.notify_timeout
            )
        )
    if settings.run_webhook_secret is not None:
        channels.append(
            RunWebhookChannel(
                settings.run_webhook_secret.get_secret_value(),
                settings.notify_timeout,
                allow_private=settings.run_webhook_allow_private,
            )
        )
    names = [channel.name for channel in channels]
    if twice := next((name for name in names if names.count(name) > 1), None):
        raise ValueError(
            f"ORCHESTRATOR_NOTIFY_URLS: two URLs are the same Apprise service ({twice}); "
            "give its targets in one URL"
        )
    return channels
