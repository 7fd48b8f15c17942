"""Rendering: the Jinja environment, its filters, and the console's static files."""

from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from engine.app import App
from engine.db.status import PENDING_PREFIX, statuses
from engine.runtime.timers import time_left
from engine.service.access.guard import identity_of
from engine.service.access.identities import Role
from engine.service.console import actions, forms, views
from engine.service.console.auth import Auth, approver_of
from engine.service.previews import pretty, pruned
from engine.service.requests import allowed_answers

_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class Pages:
    def __init__(self, auth: Auth, served: App) -> None:
        self.auth = auth
        self.env = Environment(
            loader=PackageLoader("engine.service.console", "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            when=when,
            precise=precise,
            pretty=pretty,
            age=age,
            left=left,
            lasted=lasted,
            so_far=so_far,
        )
        self.env.tests.update(link=views.is_link)
        self.env.globals.update(
            media_kind=views.media_kind,
            written=views.written,
            pruned=pruned,
            gate_spec=served.gate,
            allowed_answers=allowed_answers,
            edit_fields=forms.edit_fields,
            shown=forms.shown,
            statuses=statuses(served.gate_names()),
            pending_prefix=PENDING_PREFIX,
            takes=actions.takes,
        )

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(
            path=request.url.path,
            signed_in=self.auth.signed_in(request),
            auth_required=self.auth.required(request),
            identity=identity_of(request),
            approver=approver_of(request),
            admin=self.auth.allows(request, Role.ADMIN),
            # set for full pages by the console's router (`count_inbox`)
            inbox_count=getattr(request.state, "inbox_count", None),
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def error(
        self, request: Request, status_code: int, message: str, *, back: str = "/"
    ) -> HTMLResponse:
        return self.render(
            request, "error.html", status_code, code=status_code, message=message, back=back
        )


def static_files() -> dict[str, tuple[str, bytes]]:
    """File name -> (content type, bytes) of everything under `static/`."""
    folder = resources.files("engine.service.console").joinpath("static")
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if suffix in _STATIC_TYPES:
            files[entry.name] = (_STATIC_TYPES[suffix], entry.read_bytes())
    return files


def when(value: object) -> str:
    """A timestamp in UTC to the second; anything else as it is."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "—" if value is None else str(value)


def precise(moment: datetime) -> str:
    """UTC to the millisecond: steps a few milliseconds apart stay apart."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def left(moment: datetime) -> str:
    """How long until `moment` (or since), by this server's clock."""
    return time_left(moment, datetime.now(UTC))


def lasted(seconds: float) -> str:
    """A step's duration: to the millisecond while short, then to the unit people read."""
    if seconds < 60:
        return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 48 * 3600:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} days {whole % 86400 // 3600} h"


def so_far(moment: datetime) -> str:
    """How long a step still going has taken until now, by this server's clock."""
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    return f"{lasted(seconds) if seconds >= 60 else f'{seconds} s'} so far"


def age(minutes: float) -> str:
    whole = int(minutes)
    if whole < 60:
        return f"{whole} min"
    if whole < 48 * 60:
        return f"{whole // 60} h {whole % 60} min"
    return f"{whole // (24 * 60)} days"
