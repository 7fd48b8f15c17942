"""Signing in to the console: a token given once opens a session; the cookie holds its id.

The cookie is the session id signed and timestamped (never the token): it
expires with the session, signing out revokes it in the database, and
revoking the token that opened it ends it. `HttpOnly`, so page scripts never
see it; `SameSite=Strict`, so no other site's page sends it; `Secure` behind
TLS (the scheme as a trusted proxy reports it).
"""

from fastapi import Request, Response

from engine.db.connections import Pool
from engine.service.access.guard import SESSION_COOKIE, Guard, identity_of
from engine.service.access.identities import Identity, Role, close_session, identify, open_session

APPROVER_COOKIE = "orchestrator_approver"
_YEAR = 365 * 24 * 3600


class SignInRefused(Exception):
    """The token is not valid (`retry_after` None) or this client must wait first."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("sign-in refused")
        self.retry_after = retry_after


class Auth:
    def __init__(self, guard: Guard, pool: Pool) -> None:
        self._guard = guard
        self._pool = pool

    @staticmethod
    def required(request: Request) -> bool:
        return bool(request.state.auth_required)

    def signed_in(self, request: Request) -> bool:
        return not self.required(request) or identity_of(request) is not None

    def allows(self, request: Request, role: Role) -> bool:
        """Whether this request may do what needs `role` (with no sign-in: anyone)."""
        identity = identity_of(request)
        return not self.required(request) or (identity is not None and identity.allows(role))

    async def sign_in(self, request: Request, response: Response, token: str) -> Identity:
        if (wait := self._guard.refused_sign_in(request, token)) is not None:
            raise SignInRefused(wait)
        async with self._pool.connection() as conn:
            identity = await identify(conn, token, self._guard.bootstrap)
            if identity is None:
                self._guard.failed_sign_in(request, token)
                raise SignInRefused(None)
            session = await open_session(conn, identity, self._guard.session_ttl)
        response.set_cookie(
            SESSION_COOKIE,
            self._guard.sign(session),
            max_age=int(self._guard.session_ttl.total_seconds()),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return identity

    async def sign_out(self, request: Request, response: Response) -> None:
        if (session := self._guard.session_of(request)) is not None:
            async with self._pool.connection() as conn:
                await close_session(conn, session)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def remember_approver(response: Response, request: Request, name: str) -> None:
    """The name an approver typed, offered again next time (open mode only)."""
    response.set_cookie(
        APPROVER_COOKIE,
        name,
        max_age=_YEAR,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def approver_of(request: Request) -> str:
    identity = identity_of(request)
    return identity.name if identity is not None else request.cookies.get(APPROVER_COOKIE, "")
