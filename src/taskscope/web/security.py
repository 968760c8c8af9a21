"""Security headers for every taskscope web app: `taskscope ui` (and the usage pages, which the
same app serves, also from `taskscope usage collect --ui-port`) and the fleet server.

`SecurityHeaders` is plain ASGI middleware (no per-request task or body copy, so the fleet
server's ingest keeps its speed) that adds to every response ``X-Content-Type-Options: nosniff``
and ``Referrer-Policy: same-origin``, and to every HTML response a Content-Security-Policy
without inline scripts, ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``. Any
Starlette/FastAPI app can use it:

>>> from fastapi import FastAPI
>>> app = FastAPI()
>>> app.add_middleware(SecurityHeaders)

Pages may therefore load scripts only from their own server (`/static/...`) and carry data for
them in ``<script type="application/json">`` blocks; no inline script or ``on...=`` handler runs.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: scripts only from this server (charts.js reads the figures from JSON data blocks); Plotly sets
#: inline styles, so styles may be inline; images may be data: URIs (Plotly's PNG export)
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
                           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
EVERY_RESPONSE = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"))
HTML_RESPONSE = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()), (b"x-frame-options", b"DENY"))


class SecurityHeaders:
    """ASGI middleware adding the security headers (see the module docstring) to every HTTP response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, with_headers)


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` (raw ASGI pairs) plus the security headers they lack, the HTML ones if the
    content type is HTML.

    >>> names = [name for name, _ in with_security_headers([(b"content-type", b"text/html")])]
    >>> b"content-security-policy" in names, b"x-content-type-options" in names
    (True, True)
    >>> len(with_security_headers([(b"content-type", b"application/json")]))
    3
    """
    present = {name.lower() for name, _ in headers}
    content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
    added = EVERY_RESPONSE + (HTML_RESPONSE if content_type.startswith(b"text/html") else ())
    return headers + [(name, value) for name, value in added if name not in present]
