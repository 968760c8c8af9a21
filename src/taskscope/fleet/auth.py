"""Who a fleet request is from: its token (``Authorization: Bearer`` for the API and ingest,
an HttpOnly session cookie for the pages) looked up in the `FleetDB`, as a `Caller`.

>>> Caller(account="lab", user="ada").admin
False
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

#: the cookie that carries a page visitor's token (re-hashed and looked up on every request)
SESSION_COOKIE = "taskscope_fleet_token"


@dataclass(frozen=True)
class Caller:
    """Who a request is from: the account its token belongs to, the token's user, whether it is an admin token."""

    account: str
    user: str
    admin: bool = False


class NotAuthenticated(Exception):
    """A request without a valid token (401: JSON for the API, the login form for pages)."""


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def api_caller(request: Request) -> Caller:
    """FastAPI dependency: the caller of an API request, from its bearer token (else 401)."""
    found = request.app.state.db.account_for_token(bearer_token(request))
    if found is None:
        raise NotAuthenticated()
    return Caller(*found)


def page_caller(request: Request) -> Caller:
    """FastAPI dependency: the caller of a page, from the session cookie or a bearer token."""
    token = request.cookies.get(SESSION_COOKIE) or bearer_token(request)
    found = request.app.state.db.account_for_token(token)
    if found is None:
        raise NotAuthenticated()
    return Caller(*found)
