"""The checks every HTTP request passes before any route: Host, Origin, identity, headers.

- With no token at all (the embedded default) the API serves loopback only:
  a request whose `Host` is neither loopback nor an allowed host is refused
  (DNS rebinding: a page on evil.example resolving to 127.0.0.1).
- Every state-changing request from a browser must come from this origin
  (`Origin`, else `Sec-Fetch-Site`): CSRF, with or without a session.
- With a token configured every endpoint needs an identity, a bearer token or
  a console session, except health, readiness, the webhooks (signed by their
  providers), sign-in, the console's static files and, when a setting says so,
  `/metrics`. Failed sign-ins are limited per client and per identity.
- Every response says `nosniff`; HTML pages get a Content-Security-Policy
  without inline script and may not be framed.
"""

import hashlib
import hmac
import logging
import secrets
import time
from datetime import timedelta
from urllib.parse import quote

import psycopg
from fastapi import Request
from itsdangerous import BadSignature, TimestampSigner
from psycopg_pool import PoolTimeout
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.db.connections import SHOWING, Pool
from engine.service.access import LOOPBACK
from engine.service.access.failures import FailureLimit
from engine.service.access.identities import Identity, any_live_token, claimed_id, identify
from engine.service.access.identities import session_identity as stored_session
from engine.settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "orchestrator_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def page_policy(media_sources: list[str]) -> str:
    """The pages' Content-Security-Policy: everything from the console itself, previews
    (images, video) also from https: and from `media_sources` (origins such as the
    loopback provider's, `ORCHESTRATOR_CONSOLE_MEDIA_SOURCES`)."""
    extra = "".join(f" {source}" for source in media_sources)
    return (
        f"default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src 'self' https: data:{extra}; media-src 'self' https:{extra}; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


MODE_TTL = 5.0  # seconds between looks at whether any named token exists
MODE_WAIT = 2.0  # seconds a request waits for that look (health must answer in an outage)


class Guarded:
    """The ASGI middleware: every request passes `guard` first."""

    def __init__(self, app: ASGIApp, guard: "Guard") -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        SHOWING.set(True)  # this request's own context: what it reads, it shows
        await self.guard.handle(self.app, scope, receive, send)


class Guard:
    def __init__(self, settings: Settings, pool: Pool, media_sources: list[str]) -> None:
        self._pool = pool
        self.bootstrap = settings.api_token
        self._allowed_hosts = frozenset(h.lower() for h in settings.allowed_hosts)
        self._policy = page_policy(media_sources)
        self._public = {"/healthz", "/readyz", "/console/login"} | (
            {"/metrics"} if settings.metrics_public else set()
        )
        self._signer = TimestampSigner(_session_key(settings), salt="orchestrator-console")
        self._own_key = settings.session_secret is None and settings.api_token is None
        self.session_ttl = timedelta(seconds=settings.session_ttl)
        self._failures = FailureLimit(settings.auth_failures, settings.auth_failure_window)
        self._tokens_checked_at = -MODE_TTL
        self._named_tokens = False

    async def required(self) -> bool:
        """Whether requests need an identity: a bootstrap token or any named one exists."""
        if self.bootstrap is not None:
            return True
        now = time.monotonic()
        if now - self._tokens_checked_at > MODE_TTL:
            known = self._tokens_checked_at >= 0
            self._tokens_checked_at = now
            try:
                async with self._pool.connection(timeout=MODE_WAIT) as conn:
                    self._named_tokens = await any_live_token(conn)
            except (psycopg.Error, PoolTimeout):
                # An outage: keep what was last known, or if nothing was, stay
                # closed (an outage must not open the API); ask again in MODE_TTL.
                self._named_tokens = self._named_tokens or not known
        return self._named_tokens

    async def handle(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request = Request(scope)
        required = await self.required()
        refusal = self._foreign(request, required)
        identity: Identity | None = None
        if refusal is None and required and not self._is_public(request):
            try:
                identity, refusal = await self._identify(request)
            except (psycopg.Error, PoolTimeout):
                refusal = _error(503, "the database is unreachable: try again", "database")
        scope.setdefault("state", {})["identity"] = identity
        scope["state"]["auth_required"] = required
        if refusal is not None:
            _secure(refusal.headers, self._policy)
            await refusal(scope, receive, send)
            return

        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                _secure(MutableHeaders(scope=message), self._policy)
            await send(message)

        await app(scope, receive, headed)

    def sign(self, session_id: str) -> str:
        if self._own_key:
            log.warning(
                "no ORCHESTRATOR_SESSION_SECRET: console sessions last until this process "
                "stops and are not shared with other replicas",
                extra={"action": "session_secret_missing"},
            )
            self._own_key = False
        return self._signer.sign(session_id).decode()

    def session_of(self, request: Request) -> str | None:
        """The session id in the request's cookie, if its signature holds and it is fresh."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        try:
            unsigned = self._signer.unsign(cookie, max_age=int(self.session_ttl.total_seconds()))
        except BadSignature:
            return None
        return unsigned.decode()

    def _is_public(self, request: Request) -> bool:
        path = request.url.path
        return (
            path in self._public
            or path.startswith("/webhooks/")
            or path.startswith("/console/static/")
        )

    def _foreign(self, request: Request, required: bool) -> Response | None:
        """A refusal for a request from somewhere this API does not serve, if it is one."""
        host = (request.url.hostname or "").lower()
        peer = request.client.host if request.client else ""
        if not required and peer not in LOOPBACK:
            return _error(
                403, "client: with no token the API answers loopback clients only", "client"
            )
        if not required and host not in LOOPBACK and host not in self._allowed_hosts:
            return _error(
                421,
                f"host: {host[:100]!r} is not served here; with no token the API answers "
                "loopback only (ORCHESTRATOR_ALLOWED_HOSTS adds names)",
                "host",
            )
        if request.method in SAFE_METHODS or request.url.path.startswith("/webhooks/"):
            return None
        if request.headers.get("authorization", "").startswith("Bearer "):
            return None  # a browser never adds a bearer token by itself: no CSRF
        origin = request.headers.get("origin")
        if origin is not None:
            own = f"{request.url.scheme}://{request.url.netloc}"
            if origin != own:
                return _error(403, f"origin: {origin[:100]!r} may not send requests here", "origin")
        elif request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return _error(403, "origin: this request was sent from another site", "origin")
        return None

    async def _identify(self, request: Request) -> tuple[Identity | None, Response | None]:
        given = request.headers.get("authorization", "")
        if given:
            token = given.removeprefix("Bearer ").strip()
            keys = self._failure_keys(request, token)
            if (wait := self._failures.retry_after(*keys)) is not None:
                return None, _too_many(wait)
            async with self._pool.connection() as conn:
                identity = await identify(conn, token, self.bootstrap)
            if identity is None:
                self._failures.failed(*keys)
                return None, _unauthorized("a valid bearer token is required")
            return identity, None
        if (session := self.session_of(request)) is not None:
            async with self._pool.connection() as conn:
                identity = await stored_session(conn, session)
            if identity is not None:
                return identity, None
        if _wants_page(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            login = f"/console/login?next={quote(target, safe='/')}"
            return None, RedirectResponse(login, status_code=303)
        return None, _unauthorized("sign in or send a bearer token")

    def refused_sign_in(self, request: Request, token: str) -> float | None:
        """Seconds the console's sign-in must wait for this client and identity, or None."""
        return self._failures.retry_after(*self._failure_keys(request, token))

    def failed_sign_in(self, request: Request, token: str) -> None:
        self._failures.failed(*self._failure_keys(request, token))

    @staticmethod
    def _failure_keys(request: Request, token: str) -> list[str]:
        """What a failed sign-in counts against: the client, and the identity it names."""
        client = f"client {request.client.host if request.client else '?'}"
        return [client, *([f"identity {i}"] if (i := claimed_id(token)) else [])]


def identity_of(request: Request) -> Identity | None:
    """Who sent this request (None when the API needs no identity)."""
    identity: Identity | None = request.state.identity
    return identity


def _session_key(settings: Settings) -> bytes:
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    if settings.api_token is not None:
        # Changing the bootstrap token ends every session signed with the old one.
        return hmac.new(
            settings.api_token.get_secret_value().encode(), b"console-session", hashlib.sha256
        ).digest()
    # Only named tokens (or none: then nobody signs in). Sessions signed with a
    # key of this process's own end with it; `Guard.sign` says so once.
    return secrets.token_bytes(32)


def _wants_page(request: Request) -> bool:
    path = request.url.path
    return request.method in SAFE_METHODS and (path == "/" or path.startswith("/console"))


def _error(status: int, message: str, field: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _unauthorized(message: str) -> JSONResponse:
    response = _error(401, message, "authorization")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _too_many(wait: float) -> JSONResponse:
    response = _error(429, "too many failed sign-ins: wait before trying again", "authorization")
    response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    return response


def _secure(headers: MutableHeaders, policy: str) -> None:
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if headers.get("content-type", "").startswith("text/html"):
        headers.setdefault("Content-Security-Policy", policy)
        headers.setdefault("X-Frame-Options", "DENY")
