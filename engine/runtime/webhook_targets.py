"""Where a run's webhook may point: http(s), a bounded URL, and (unless a setting allows
it) no loopback, link-local, private or otherwise internal address, so that a run's
creator cannot make the daemons call into the network they run in (SSRF).

A name is resolved and every address it resolves to checked, when the run is created
and again before each delivery (a name may be pointed elsewhere in between).
"""

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from engine.runtime.store import InvalidInput
from engine.settings import Settings

MAX_URL = 2048


class TargetRefused(InvalidInput):
    """A webhook URL the daemons will not call; the message names the field."""


def checked_url(url: str, field: str) -> str:
    """`url` if it is an absolute http(s) URL of a bounded length with a host."""
    if len(url) > MAX_URL:
        raise TargetRefused(f"{field}: at most {MAX_URL} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"{field}: give an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise TargetRefused(f"{field}: no credentials in the URL (the POST is signed)")
    return url


async def ensure_public(url: str, field: str, *, allow_private: bool) -> None:
    """Raise `TargetRefused` unless every address `url`'s host resolves to is public
    (with `allow_private`, only that it resolves)."""
    parts = urlsplit(checked_url(url, field))
    host = parts.hostname or ""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError) as error:
        raise TargetRefused(f"{field}: {host!r} does not resolve ({error})") from None
    if allow_private:
        return
    for *_, address in found:
        ip = ipaddress.ip_address(address[0])
        if not ip.is_global or ip.is_multicast:
            raise TargetRefused(
                f"{field}: {host!r} is {ip}, a loopback, link-local or private address "
                "(ORCHESTRATOR_RUN_WEBHOOK_ALLOW_PRIVATE=true allows it)"
            )


async def run_webhook(
    url: str | None, default: str | None, settings: Settings, field: str
) -> str | None:
    """The webhook a new run carries: `url`, else the setting's or the App's `default`;
    `TargetRefused` naming `field` when it is one the daemons will not call, or when
    nothing here could sign its POSTs."""
    chosen = url or settings.run_webhook_default or default
    if chosen is None:
        return None
    if settings.run_webhook_secret is None:
        raise TargetRefused(
            f"{field}: set ORCHESTRATOR_RUN_WEBHOOK_SECRET first: runs' webhooks are signed"
        )
    await ensure_public(chosen, field, allow_private=settings.run_webhook_allow_private)
    return chosen
