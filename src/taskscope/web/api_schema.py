"""What the OpenAPI schema (`/api/openapi.json`) says a route may answer besides 200, so that the
schema is honest to a client or a fuzzer (`tests/test_fuzz.py` holds the apps to it).

The dashboard's routes answer a bad parameter with 400 (422 when FastAPI's own validation refuses
it under `/api/`) and an unknown run, task or report with 404; its pages answer in HTML, errors
included (`taskscope.web.app`), its `/api/` routes in JSON.
"""

from __future__ import annotations

from fastapi import FastAPI

#: the body of a JSON error: ``{"error": "..."}`` (ours) or ``{"detail": ...}`` (FastAPI's)
ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}, "detail": {}},
                "anyOf": [{"required": ["error"]}, {"required": ["detail"]}]}
JSON_ERROR = {"application/json": {"schema": ERROR_SCHEMA}}
HTML = {"text/html": {"schema": {"type": "string"}}}


def declare_error_replies(app: FastAPI) -> None:
    """Make `app`'s OpenAPI schema say that every operation with parameters may answer 400 and 404
    (in HTML for a page, in JSON under `/api/`), and that a page answers in HTML.

    >>> from fastapi import FastAPI
    >>> app = FastAPI()
    >>> @app.get("/api/runs/{run}")
    ... def run(run: str): ...
    >>> declare_error_replies(app)
    >>> sorted(app.openapi()["paths"]["/api/runs/{run}"]["get"]["responses"])
    ['200', '400', '404', '422']
    """
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    _declare(operation, page=not path.startswith("/api/"))
        return app.openapi_schema

    app.openapi = openapi


def _declare(operation: dict, page: bool) -> None:
    replies = operation.setdefault("responses", {})
    if page and "200" in replies:
        replies["200"]["content"] = HTML
    if operation.get("parameters") or operation.get("requestBody"):
        for status, name in (("400", "Bad Request"), ("404", "Not Found")):
            replies.setdefault(status, {"description": name, "content": HTML if page else JSON_ERROR})
