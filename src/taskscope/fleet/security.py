"""Security for a web app meant to be exposed: response headers, a same-origin check, login slowing.

`SecurityHeaders` is plain ASGI middleware (no per-request task or body copy, so ingest keeps its
speed) that adds to every response ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
same-origin``, and to every HTML response a Content-Security-Policy without inline scripts,
``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``. Any Starlette/FastAPI app can use it:

>>> from fastapi import FastAPI
>>> app = FastAPI()
>>> app.add_middleware(SecurityHeaders)

`same_origin` refuses a form posted from another site (login CSRF); `FailedLogins` counts failed
logins per client so that, past a limit, further failures are answered 429 (a valid token is
always accepted).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: scripts only from this server (charts.js reads the figures from JSON data blocks); Plotly sets
#: inline styles, so styles may be inline; images may be data: URIs (Plotly's PNG export)
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
                           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
EVERY_RESPONSE = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"))
HTML_RESPONSE = ((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()), (b"x-frame-options", b"DENY"))
#: failed logins from one client within `LOGIN_WINDOW_S` before further failures are refused with 429
MAX_FAILED_LOGINS = 10
LOGIN_WINDOW_S = 60.0


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
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
                added = EVERY_RESPONSE + (HTML_RESPONSE if content_type.startswith(b"text/html") else ())
                message["headers"] = headers + [(name, value) for name, value in added if name not in present]
            await send(message)

        await self.app(scope, receive, with_headers)


def same_origin(headers, url) -> bool:
    """False when a request says it comes from another site (``Origin``, else ``Referer``, differs
    from the server's own scheme://host:port); True when it comes from here or says nothing
    (a browser always sends ``Origin`` with a cross-site form post).

    >>> same_origin({"origin": "https://evil.example"}, urlsplit("https://fleet.lab:8443/login"))
    False
    >>> same_origin({"origin": "https://fleet.lab:8443"}, urlsplit("https://fleet.lab:8443/login"))
    True
    """
    claimed = headers.get("origin") or headers.get("referer")
    if not claimed:
        return True
    if claimed == "null":  # a sandboxed or privacy-stripped origin: not provably this site
        return False
    origin = urlsplit(claimed)
    return (origin.scheme, origin.netloc) == (url.scheme, url.netloc)


class FailedLogins:
    """Failed logins per client in a sliding window; `limited` once there were `limit` of them.

    >>> failures = FailedLogins(limit=2, window_s=60)
    >>> failures.add("10.0.0.1", now=0); failures.add("10.0.0.1", now=1); failures.limited("10.0.0.1", now=2)
    True
    >>> failures.limited("10.0.0.1", now=62), failures.limited("10.0.0.2", now=2)
    (False, False)
    """

    def __init__(self, limit: int = MAX_FAILED_LOGINS, window_s: float = LOGIN_WINDOW_S):
        self.limit, self.window_s = limit, window_s
        self._times: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def add(self, client: str, now: float | None = None) -> None:
        """Count one failed login of `client`."""
        with self._lock:
            self._times[client].append(time.monotonic() if now is None else now)

    def limited(self, client: str, now: float | None = None) -> bool:
        """Whether `client` failed `limit` times within the window (older failures are forgotten)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._times.get(client)
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if times is not None and not times:
                del self._times[client]
            return bool(times) and len(times) >= self.limit

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Whole seconds until the oldest counted failure of `client` leaves the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._times.get(client)
            return max(1, int(times[0] + self.window_s - now) + 1) if times else 1
