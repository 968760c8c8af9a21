"""The read API (`/api/v1/...`): Coiled-style list calls, each scoped to the token's account.

Every route takes the caller from its bearer token and passes only that account to
`taskscope.fleet.reads`; a cluster of another account is answered 404, like one that does not exist.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from taskscope.fleet import reads
from taskscope.fleet.auth import Caller, api_caller
from taskscope.fleet.db import AccountError
from taskscope.fleet.protocol import DEFAULT_SINCE
from taskscope.web.render import json_response

class ErrorReply(BaseModel):
    """Every refusal of the API: ``{"error": "..."}`` (a refused parameter is FastAPI's 422 ``detail``)."""

    error: str


def replies(*statuses: int, ok: type[BaseModel] | None = None) -> dict:
    """The `responses` of a route: its 200 body `ok` and the refusals it may answer (always 401).

    >>> sorted(replies(404))
    [401, 404]
    """
    declared: dict = {status: {"model": ErrorReply} for status in (401, *statuses)}
    if ok is not None:
        declared[200] = {"model": ok}
    return declared


Rows = list[dict[str, Any]]


class TokenMade(BaseModel):
    account: str
    user: str
    admin: bool
    token: str


class Revoked(BaseModel):
    revoked: bool


class Whoami(BaseModel):
    account: str
    user: str
    admin: bool


class Clusters(BaseModel):
    clusters: Rows
    currency: str


class Cluster(BaseModel):
    """A row of the cluster list plus versions, config, the Parsl run summary and the currency."""

    model_config = ConfigDict(extra="allow")
    cluster_id: str
    currency: str
    parsl_run: Optional[dict[str, Any]]


class Computations(BaseModel):
    computations: Rows


class Events(BaseModel):
    events: Rows


class Workers(BaseModel):
    samples: Rows
    changes: Rows
    version_mismatches: Rows
    idle: Rows


class Profile(BaseModel):
    computation_id: Optional[str]
    profiles: int
    nodes: Rows
    hottest: Rows


class Rejected(BaseModel):
    rejected: Rows


class Exceptions(BaseModel):
    exceptions: Rows


router = APIRouter(prefix="/api/v1")


def _since(since: Optional[str]) -> float | None:
    try:
        return reads.parse_since(since)
    except ValueError as exc:
        raise HTTPException(400, str(exc))


def _known_cluster(request: Request, caller: Caller, cluster_id: str) -> dict:
    try:
        return reads.cluster(request.app.state.db, caller.account, cluster_id)
    except LookupError as exc:
        raise HTTPException(404, str(exc))


class NewToken(BaseModel):
    user: str
    admin: bool = False
    #: when given it must be the admin token's own account (a token is never made in another)
    account: Optional[str] = None


class TokenToRevoke(BaseModel):
    token: str


def _admin(caller: Caller = Depends(api_caller)) -> Caller:
    if not caller.admin:
        raise HTTPException(403, "only an admin token may manage tokens (taskscope fleet token create --admin)")
    return caller


def admin_body(model: type[BaseModel]):
    """FastAPI dependency: the JSON body as `model`, read only once the caller is known to be an
    admin (so a caller without a valid token is told 401, whatever it sent); 400 if it is not one.

    >>> admin_body(NewToken)  # doctest: +ELLIPSIS
    <function admin_body.<locals>.parsed at ...>
    """

    async def parsed(request: Request, caller: Caller = Depends(_admin)) -> BaseModel:
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the body"
            raise HTTPException(400, f"the body is not a valid {model.__name__} ({where}: {first['msg']})")

    return parsed


def json_body(model: type[BaseModel]) -> dict:
    """The `openapi_extra` that declares a route's JSON body as `model` (read by `admin_body`)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


@router.post("/tokens", responses=replies(400, 403, ok=TokenMade), openapi_extra=json_body(NewToken))
def create_token(request: Request, new: NewToken = Depends(admin_body(NewToken)), caller: Caller = Depends(_admin)):
    """A new token for a user of the caller's account (admin tokens only); shown in this reply only.
    An `account` other than the caller's is refused (403), never quietly replaced by the caller's."""
    if new.account is not None and new.account != caller.account:
        raise HTTPException(403, f"this admin token is of account {caller.account!r}: it cannot create tokens "
                                 f"in account {new.account!r}")
    try:
        token = request.app.state.db.create_token(caller.account, new.user, admin=new.admin)
    except AccountError as exc:
        raise HTTPException(400, str(exc))
    return {"account": caller.account, "user": new.user, "admin": new.admin, "token": token}


@router.post("/tokens/revoke", responses=replies(400, 403, 404, ok=Revoked), openapi_extra=json_body(TokenToRevoke))
def revoke_token(request: Request, revoked: TokenToRevoke = Depends(admin_body(TokenToRevoke)),
                 caller: Caller = Depends(_admin)):
    """Revoke a token of the caller's account (admin tokens only); 404 for any other token."""
    if not request.app.state.db.revoke_token(revoked.token, account=caller.account):
        raise HTTPException(404, "no such live token in this account")
    return {"revoked": True}


@router.get("/whoami", responses=replies(ok=Whoami))
def whoami(caller: Caller = Depends(api_caller)):
    """The token's account and user."""
    return {"account": caller.account, "user": caller.user, "admin": caller.admin}


@router.get("/clusters", responses=replies(400, ok=Clusters))
def list_clusters(request: Request, since: Optional[str] = DEFAULT_SINCE, user: Optional[str] = None,
                  caller: Caller = Depends(api_caller)):
    """Clusters active since `since` ("7 days", "2026-01-31", epoch s; default "90 days", empty for all),
    optionally of one user."""
    table = reads.clusters(request.app.state.db, caller.account, since=_since(since), user=user)
    return json_response({"clusters": table, "currency": request.app.state.currency})


@router.get("/clusters/{cluster_id}", responses=replies(404, ok=Cluster))
def get_cluster(request: Request, cluster_id: str, caller: Caller = Depends(api_caller)):
    """One cluster with its versions, config, cost and (for Parsl) the run summary."""
    found = _known_cluster(request, caller, cluster_id)
    found["parsl_run"] = reads.parsl_run(request.app.state.db, caller.account, cluster_id)
    found["currency"] = request.app.state.currency
    return json_response(found)


@router.get("/clusters/{cluster_id}/computations", responses=replies(404, ok=Computations))
def list_computations(request: Request, cluster_id: str, caller: Caller = Depends(api_caller)):
    """The cluster's computations with code and task groups."""
    _known_cluster(request, caller, cluster_id)
    return json_response({"computations": reads.computations(request.app.state.db, caller.account, cluster_id)})


@router.get("/clusters/{cluster_id}/events", responses=replies(404, ok=Events))
def list_events(request: Request, cluster_id: str, caller: Caller = Depends(api_caller)):
    """The cluster's events (the topics its plugin was allowed to send)."""
    _known_cluster(request, caller, cluster_id)
    return json_response({"events": reads.events(request.app.state.db, caller.account, cluster_id)})


@router.get("/clusters/{cluster_id}/workers", responses=replies(404, ok=Workers))
def list_workers(request: Request, cluster_id: str, caller: Caller = Depends(api_caller)):
    """Worker samples over time, workers added/removed, version mismatches and idle intervals."""
    _known_cluster(request, caller, cluster_id)
    db, account = request.app.state.db, caller.account
    return json_response({"samples": reads.worker_samples(db, account, cluster_id),
                          "changes": reads.worker_changes(db, account, cluster_id),
                          "version_mismatches": reads.version_mismatches(db, account, cluster_id),
                          "idle": reads.idle_intervals(db, account, cluster_id)})


@router.get("/clusters/{cluster_id}/profile", responses=replies(404, ok=Profile))
def get_profile(request: Request, cluster_id: str, computation_id: Optional[str] = None,
                caller: Caller = Depends(api_caller)):
    """The cluster's statistical profile (or one computation's) as a tree of frames, hottest first in
    ``hottest`` (needs ``taskscope.fleet.profile.transmit`` on the cluster)."""
    _known_cluster(request, caller, cluster_id)
    return json_response(reads.profile(request.app.state.db, caller.account, cluster_id, computation_id))


@router.get("/rejected", responses=replies(ok=Rejected))
def list_rejected(request: Request, caller: Caller = Depends(api_caller)):
    """Batches of this account the server refused (400, 413), newest first, with the start of each body."""
    return json_response({"rejected": reads.rejected(request.app.state.db, caller.account)})


@router.get("/exceptions", responses=replies(400, ok=Exceptions))
def list_exceptions(request: Request, since: Optional[str] = DEFAULT_SINCE, user: Optional[str] = None,
                    cluster_id: Optional[str] = None, caller: Caller = Depends(api_caller)):
    """Task exceptions with tracebacks, newest first, since `since` (default "90 days", empty for all)."""
    found = reads.exceptions(request.app.state.db, caller.account, since=_since(since), user=user,
                               cluster_id=cluster_id)
    return json_response({"exceptions": found})
