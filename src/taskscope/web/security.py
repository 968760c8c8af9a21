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

import ipaddress

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


class LoopbackHostsOnly:
    """ASGI middleware answering 403 to a request whose `Host` is not a loopback name or address.

    A dashboard listening on 127.0.0.1 has no login: its only guard is that other machines cannot
    reach it. A web page the user visits can: it points its own name at 127.0.0.1 (DNS rebinding)
    and reads the dashboard as its own origin. Such a request names the page's host, not this one.

    >>> from fastapi import FastAPI
    >>> app = FastAPI()
    >>> app.add_middleware(LoopbackHostsOnly)
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_loopback_host(_host_header(scope)):
            await self.app(scope, receive, send)
            return
        body = (b"taskscope answers only to a loopback host name (127.0.0.1, localhost, [::1]): "
                b"this request names another (a DNS rebinding page does)\n")
        await send({"type": "http.response.start", "status": 403,
                    "headers": with_security_headers([(b"content-type", b"text/plain; charset=utf-8"),
                                                      (b"content-length", str(len(body)).encode())])})
        await send({"type": "http.response.body", "body": body})


def _host_header(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            return value.decode("latin-1")
    return ""


def is_loopback_host(host: str) -> bool:
    """True for a `Host` header naming this machine by a loopback name or address (any port).

    >>> [is_loopback_host(h) for h in ("127.0.0.1:8080", "localhost", "[::1]:80", "app.localhost", "evil.example", "")]
    [True, True, True, True, False, False]
    """
    name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
