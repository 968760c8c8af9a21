"""The fleet server: the ingest endpoint, the read API and the pages, over one `FleetDB`.

Every request names its account only through its token (``Authorization: Bearer`` for the API
and ingest, an HttpOnly cookie for the pages); nothing a sender or reader says can reach
another account's rows. A batch is answered 200 only once it is committed.

>>> serve("fleet.duckdb", port=8090)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import socket
import sys
import zlib

import duckdb
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from taskscope.fleet import pages, routes
from taskscope.fleet.auth import Caller, NotAuthenticated, api_caller
from taskscope.fleet.db import BatchRefused, FleetDB
from taskscope.fleet.security import FailedLogins
from taskscope.web.security import SecurityHeaders
from taskscope.fleet.protocol import INGEST_PATH, MAX_BATCH_BYTES, TOO_DEEP, ProtocolError, validate_batch
from taskscope.web.server import is_loopback, open_listener


#: the unit of costs on the pages and in the API unless the server is told otherwise
DEFAULT_CURRENCY = "USD"
#: environment variable naming the currency of costs (e.g. EUR) for `taskscope fleet serve`
CURRENCY_ENV = "TASKSCOPE_FLEET_CURRENCY"


class RejectedBatch(Exception):
    """A body refused with `status` (400 or 413); `kept` is what is kept aside of it (None above the limit)."""

    def __init__(self, status: int, reason: str, kept: bytes | None, size: int):
        super().__init__(reason)
        self.status, self.reason, self.kept, self.size = status, reason, kept, size


async def read_batch(request: Request) -> dict:
    """The request's JSON batch, decompressed and validated; `RejectedBatch` (413 above
    `MAX_BATCH_BYTES`, before or after decompression; 400 if it is not the protocol) otherwise."""
    too_large = f"a batch may be at most {MAX_BATCH_BYTES} bytes"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BATCH_BYTES:
        raise RejectedBatch(413, too_large, None, int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BATCH_BYTES:
            raise RejectedBatch(413, too_large, None, len(body))
    plain = bytes(body)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        plain = _gunzip_bounded(plain)
    try:
        return validate_batch(json.loads(plain))
    except RecursionError:  # Python's decoder gives up before `validate_batch` can count the levels
        raise RejectedBatch(400, TOO_DEEP, plain, len(plain))
    except (ValueError, UnicodeDecodeError) as exc:  # ProtocolError and JSONDecodeError are ValueErrors
        reason = str(exc) if isinstance(exc, ProtocolError) else f"the body is not JSON: {exc}"
        raise RejectedBatch(400, reason, plain, len(plain))


def _gunzip_bounded(body: bytes) -> bytes:
    # decompress at most one byte past the limit, so a small "gzip bomb" cannot fill the memory
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        plain = inflater.decompress(body, MAX_BATCH_BYTES + 1)
    except zlib.error as exc:
        raise RejectedBatch(400, f"the body is not gzip: {exc}", body, len(body))
    if len(plain) > MAX_BATCH_BYTES:
        raise RejectedBatch(413, f"a batch may be at most {MAX_BATCH_BYTES} bytes after decompression", None,
                            len(plain))
    return plain


class Accepted(BaseModel):
    """The reply to a stored batch (`duplicate`: it had been stored before)."""

    accepted: int
    batch_id: str
    duplicate: bool


#: the ingest body as the schema says it (read by hand: JSON, optionally gzip, see `read_batch`)
BATCH_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["protocol", "batch_id", "cluster", "messages"],
    "properties": {"protocol": {"type": "integer"}, "batch_id": {"type": "string"}, "sent_at": {"type": "number"},
                   "cluster": {"type": "object"}, "messages": {"type": "array", "items": {"type": "object"}}}}}}}}


def create_app(db: FleetDB, currency: str = DEFAULT_CURRENCY) -> FastAPI:
    """The FastAPI app over `db`: ingest, the `/api/v1/...` reads and the pages; costs are said to be
    in `currency` (the prices the plugins send are taken to be in it).

    >>> app = create_app(FleetDB("fleet.duckdb"), currency="EUR")  # doctest: +SKIP
    """
    # no Swagger page: it needs inline scripts and a CDN, which the Content-Security-Policy forbids
    app = FastAPI(title="taskscope fleet", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.db = db
    app.state.currency = currency
    app.state.failed_logins = FailedLogins()
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(NotAuthenticated)
    def not_authenticated(request: Request, exc: NotAuthenticated):
        return _refuse(request)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.post(INGEST_PATH, responses=routes.replies(400, 409, 413, ok=Accepted), openapi_extra=BATCH_BODY)
    async def ingest(request: Request, caller: Caller = Depends(api_caller)):
        """Store one batch (idempotent by batch_id); 200 only once it is committed.

        A refused body (400, 409 for another user's cluster, 413) is counted and kept aside for the
        account (`/api/v1/rejected`).
        """
        try:
            batch = await read_batch(request)
        except RejectedBatch as rejected:
            await run_in_threadpool(db.store_rejected, caller.account, caller.user, rejected.status,
                                    rejected.reason, rejected.size, rejected.kept)
            return JSONResponse({"error": rejected.reason}, status_code=rejected.status)
        try:
            stored = await run_in_threadpool(db.store_batch, caller.account, caller.user, batch)
        except BatchRefused as refused:  # another user's cluster (409), figures contradicting the stored (400)
            return await _keep_aside(db, caller, batch, refused.status, refused.reason)
        # a value the store cannot hold: the body's fault, not the server's
        except (duckdb.ConversionException, duckdb.InvalidInputException) as exc:
            reason = f"a value could not be stored: {str(exc).splitlines()[0][:300]}"
            return await _keep_aside(db, caller, batch, 400, reason)
        return {"accepted": len(batch["messages"]), "batch_id": batch["batch_id"], "duplicate": not stored}

    _add_routes(app)
    return app


async def _keep_aside(db: FleetDB, caller: Caller, batch: dict, status: int, reason: str) -> JSONResponse:
    """Refuse a decoded batch with `status`, keeping it aside for the caller's account."""
    body = json.dumps(batch).encode()
    await run_in_threadpool(db.store_rejected, caller.account, caller.user, status, reason, len(body), body)
    return JSONResponse({"error": reason}, status_code=status)


def _add_routes(app: FastAPI) -> None:
    app.include_router(routes.router)
    pages.install(app)


def _refuse(request: Request):
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": "a valid token is required (Authorization: Bearer <token>)"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return pages.login_refusal(request)


def serve(store: str, host: str = "127.0.0.1", port: int = 8090,
          tls_cert: str | None = None, tls_key: str | None = None, currency: str | None = None,
          sock: socket.socket | None = None) -> None:
    """Run the fleet server with uvicorn until interrupted (warns when `host` is not loopback),
    on `sock` (from `taskscope.web.server.open_listener`) or else on `host:port`.

    `currency` names the unit of costs (default: the environment variable `CURRENCY_ENV`, else USD).

    >>> serve("fleet.duckdb", host="0.0.0.0", port=8443, tls_cert="cert.pem", tls_key="key.pem")  # doctest: +SKIP
    """
    if not is_loopback(host):
        plain = "" if tls_cert else " over plain HTTP (tokens travel in clear: give --tls-cert/--tls-key)"
        print(f"warning: listening on {host}, not a loopback address{plain}", file=sys.stderr)
    sock = sock if sock is not None else open_listener(host, port)
    db = FleetDB(store)
    try:
        app = create_app(db, currency or os.environ.get(CURRENCY_ENV) or DEFAULT_CURRENCY)
        # proxy_headers off: uvicorn otherwise takes any local client's X-Forwarded-For as its
        # address, and the login limiter would count each made-up address apart
        config = uvicorn.Config(app, log_level="warning", ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                                proxy_headers=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        db.close()
