"""Run and task ids in URLs: ids are text from the logs (`a/b`, `r?x=1`, `r#1`, `r%2F`), so
every link percent-encodes them whole (`url_id`, the templates' `url_id` filter) and every id
reaches its page.

A task id is the end of its path (`/runs/{run}/tasks/{task_id:path}`), so a decoded `/` in it is
no trouble. A run id sits in the middle (`/runs/{run}/tasks`), and the router matches the
decoded path, where `/runs/a%2Fb/tasks` would read as run `a`: `RawRunSegment` hands the router
the run's segment as the client sent it (still encoded) and the `run_id` path convertor decodes
it once, for the page. Routes take the run as ``{run:run_id}``.

>>> url_id("a/b?x=1#2")
'a%2Fb%3Fx%3D1%232'
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send


def url_id(value) -> str:
    """`value` (a run or task id) as one URL path segment: every character but letters, digits
    and ``-._~`` percent-encoded, ``/`` too."""
    return quote(str(value), safe="")


class RunIdConvertor(Convertor):
    """A run id as `RawRunSegment` leaves it in the path (one encoded segment), decoded once."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return url_id(value)


register_url_convertor("run_id", RunIdConvertor())

#: the run segment of a page or API path, in the raw (still encoded) path
_RUN_PATH = re.compile(r"^(/api)?/runs/([^/]+)(/.*)?$")


class RawRunSegment:
    """ASGI middleware: in `/runs/RUN...` and `/api/runs/RUN...`, route on the run segment as sent
    (`a%2Fb`), the rest of the path decoded as usual (see the module docstring)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw:
            match = _RUN_PATH.match(raw.decode("latin-1"))
            if match:
                api, run, rest = match.groups()
                scope = {**scope, "path": f"{api or ''}/runs/{run}{unquote(rest or '')}"}
        await self.app(scope, receive, send)
