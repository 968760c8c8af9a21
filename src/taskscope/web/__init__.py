"""The taskscope web dashboard: `taskscope ui`, or `create_app` / `serve` from Python.

One FastAPI app, one module per page under `taskscope.web.pages`, each page an HTML view and a
JSON twin under `/api/...`, all aggregation done in DuckDB: `taskscope.web.dashboard` (what pages
share), `taskscope.web.app` (the FastAPI app), `taskscope.web.server` (serving it).
"""

from taskscope.web.app import create_app
from taskscope.web.dashboard import Dashboard
from taskscope.web.server import serve

__all__ = ["Dashboard", "create_app", "serve"]
