"""Login security for the fleet server: a same-origin check and login slowing (the response
headers every taskscope web app sends are `taskscope.web.security.SecurityHeaders`).

`same_origin` refuses a form posted from another site (login CSRF); `FailedLogins` counts failed
logins per client so that, past a limit, further failures are answered 429 (a valid token is
always accepted).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from urllib.parse import urlsplit

#: failed logins from one client within `LOGIN_WINDOW_S` before further failures are refused with 429
MAX_FAILED_LOGINS = 10
LOGIN_WINDOW_S = 60.0


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
