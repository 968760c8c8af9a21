"""The fleet pages: login, team overview, clusters, one cluster."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse


def install(app: FastAPI) -> None:
    """Add the pages to `app`."""


def login_redirect(request: Request) -> RedirectResponse:
    """Send a visitor without a valid session to the login form."""
    return RedirectResponse("/login", status_code=303)
