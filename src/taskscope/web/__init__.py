"""The taskscope web dashboard: `taskscope ui`, or `create_app` / `serve` from Python.

One FastAPI app, one module per page under `taskscope.web.pages`, each page an HTML view and a
JSON twin under `/api/...`, all aggregation done in DuckDB. See `taskscope.web.app`.
"""

from taskscope.web.app import Dashboard, create_app, serve

__all__ = ["Dashboard", "create_app", "serve"]
