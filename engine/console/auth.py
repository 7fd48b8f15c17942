"""Who may approve: the API's bearer token, given once in a form and kept in a cookie.

With no `api_token` configured nobody signs in, as with the API. Reading is
open either way (the API's GET endpoints are); approving and rejecting need
the token.
"""

import hmac

from fastapi import Request, Response
from pydantic import SecretStr

TOKEN_COOKIE = "orchestrator_token"
APPROVER_COOKIE = "orchestrator_approver"
_YEAR = 365 * 24 * 3600


class Auth:
    def __init__(self, token: SecretStr | None) -> None:
        self._token = token.get_secret_value().encode() if token is not None else None

    @property
    def required(self) -> bool:
        return self._token is not None

    def matches(self, given: str) -> bool:
        return self._token is not None and hmac.compare_digest(given.encode(), self._token)

    def signed_in(self, request: Request) -> bool:
        if self._token is None:
            return True
        given = request.cookies.get(TOKEN_COOKIE)
        return given is not None and self.matches(given)

    def keep(self, response: Response, request: Request, token: str) -> None:
        """Remember the token for this browser: HttpOnly, so page scripts never see it;
        SameSite=Lax, so another site cannot post an approval with it."""
        _set(response, request, TOKEN_COOKIE, token, max_age=30 * 24 * 3600)

    @staticmethod
    def forget(response: Response) -> None:
        response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="lax")


def from_another_site(request: Request) -> bool:
    """The browser says another site sent this form (`Sec-Fetch-Site`). The token cookie is
    SameSite already; this also guards a console that has no token configured."""
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def remember_approver(response: Response, request: Request, name: str) -> None:
    _set(response, request, APPROVER_COOKIE, name, max_age=_YEAR)


def approver_of(request: Request) -> str:
    return request.cookies.get(APPROVER_COOKIE, "")


def _set(response: Response, request: Request, key: str, value: str, *, max_age: int) -> None:
    response.set_cookie(
        key,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
