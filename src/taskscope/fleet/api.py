"""Python API over a fleet server: Coiled-style list calls returning lists of dicts (or DataFrames).

The server and token come from the arguments, else from the environment variables
``TASKSCOPE_FLEET_SERVER`` and ``TASKSCOPE_FLEET_TOKEN``. Every call sees only the token's account.

>>> from taskscope.fleet import api
>>> api.list_clusters(since="7 days", user="alice", server="http://127.0.0.1:8090", token="tsf_...")  # doctest: +SKIP
[{'cluster_id': '...', 'kind': 'dask', 'user_name': 'alice', 'workers': 4, 'cost': 0.12, ...}]
"""

from __future__ import annotations

import os
import ssl
from typing import Any
from urllib.parse import quote

import pandas as pd

from taskscope.fleet.protocol import DEFAULT_SINCE

SERVER_ENV = "TASKSCOPE_FLEET_SERVER"
TOKEN_ENV = "TASKSCOPE_FLEET_TOKEN"
TIMEOUT_S = 30.0


class FleetAPIError(RuntimeError):
    """The server refused the call (bad token, unknown cluster, bad argument) or could not be reached."""


def list_clusters(since: str | float | None = DEFAULT_SINCE, user: str | None = None, *, server: str | None = None,
                  token: str | None = None, as_frame: bool = False, verify: bool | str = True):
    """Clusters (Dask and Parsl runs) active since `since` ("7 days", "2026-01-31", epoch s; None for all),
    newest first. `since` defaults to `DEFAULT_SINCE` ("90 days"), as the JSON API and the pages do.

    >>> list_clusters(since="30 days", user="alice", as_frame=True)  # doctest: +SKIP
    """
    found = _get("/api/v1/clusters", {"since": "" if since is None else since, "user": user}, server, token, verify)
    return _shaped(found["clusters"], as_frame)


def list_computations(cluster_id: str, *, server: str | None = None, token: str | None = None,
                      as_frame: bool = False, verify: bool | str = True):
    """The computations of one cluster, each with `code` and `groups` (task groups).

    >>> [c["computation_id"] for c in list_computations("3f2a...")]  # doctest: +SKIP
    """
    found = _get(f"/api/v1/clusters/{_segment(cluster_id)}/computations", {}, server, token, verify)
    return _shaped(found["computations"], as_frame)


def list_events(cluster_id: str, *, server: str | None = None, token: str | None = None,
                as_frame: bool = False, verify: bool | str = True):
    """The events of one cluster (topic, msg, ts).

    >>> list_events("3f2a...", as_frame=True).topic.value_counts()  # doctest: +SKIP
    """
    found = _get(f"/api/v1/clusters/{_segment(cluster_id)}/events", {}, server, token, verify)
    return _shaped(found["events"], as_frame)


def list_exceptions(since: str | float | None = DEFAULT_SINCE, user: str | None = None, cluster_id: str | None = None, *,
                    server: str | None = None, token: str | None = None, as_frame: bool = False,
                    verify: bool | str = True):
    """Task exceptions with their tracebacks, newest first, since `since` (default "90 days"; None for all).

    >>> list_exceptions(cluster_id="3f2a...")[0]["exception_text"]  # doctest: +SKIP
    """
    params = {"since": "" if since is None else since, "user": user, "cluster_id": cluster_id}
    return _shaped(_get("/api/v1/exceptions", params, server, token, verify)["exceptions"], as_frame)


def list_profiles(cluster_id: str, computation_id: str | None = None, *, server: str | None = None,
                  token: str | None = None, verify: bool | str = True) -> list[dict]:
    """The frames of a cluster's statistical profile (or one computation's), parents first, each with
    function, filename, line_number, count and self_count (samples with it on top).

    >>> max(list_profiles("3f2a..."), key=lambda frame: frame["self_count"])["function"]  # doctest: +SKIP
    'hot_loop'
    """
    params = {"computation_id": computation_id} if computation_id is not None else {}
    return _get(f"/api/v1/clusters/{_segment(cluster_id)}/profile", params, server, token, verify)["nodes"]


def connection(server: str | None, token: str | None) -> tuple[str, str]:
    """The server URL and token to use: the arguments, else the environment (FleetAPIError if neither)."""
    server = server or os.environ.get(SERVER_ENV)
    token = token or os.environ.get(TOKEN_ENV)
    if not server:
        raise FleetAPIError(f"no fleet server: pass server=... or set {SERVER_ENV}")
    if not token:
        raise FleetAPIError(f"no fleet token: pass token=... or set {TOKEN_ENV}")
    return server.rstrip("/"), token


def tls_verification(verify: bool | str):
    """What httpx takes as `verify`: True/False, or a CA bundle path turned into an SSL context."""
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except OSError as exc:  # no such file, or no certificate in it (ssl.SSLError is an OSError)
            raise FleetAPIError(f"cannot use {verify} as a CA bundle: {exc}") from exc
    return verify


def _get(path: str, params: dict, server: str | None, token: str | None, verify: bool | str) -> dict:
    kept = {key: value for key, value in params.items() if value is not None}
    return call("GET", path, server=server, token=token, verify=verify, params=kept)


def call(method: str, path: str, *, server: str | None = None, token: str | None = None, verify: bool | str = True,
         timeout_s: float = TIMEOUT_S, **request) -> dict:
    """One request to the server with the bearer token; its JSON reply, or FleetAPIError with the reason.

    >>> call("POST", "/api/v1/tokens", json={"user": "carol"}, token=admin_token)["token"]  # doctest: +SKIP
    """
    import httpx  # the `fleet` extra: imported here so that the rest of taskscope works without it

    base, token = connection(server, token)
    try:
        reply = httpx.request(method, base + path, headers={"Authorization": f"Bearer {token}"},
                              timeout=timeout_s, verify=tls_verification(verify), **request)
    except httpx.HTTPError as exc:
        raise FleetAPIError(f"cannot reach {base}: {exc}") from exc
    if reply.status_code != 200:
        raise FleetAPIError(f"{base}{path}: HTTP {reply.status_code}: {_error_text(reply)}")
    return reply.json()


def create_token(user: str, admin: bool = False, *, account: str | None = None, server: str | None = None,
                 token: str | None = None, verify: bool | str = True) -> str:
    """A new token for `user` of the account of `token`, which must be an admin token (the server may be running).
    An `account` that is not the admin token's is refused (FleetAPIError, HTTP 403).

    >>> create_token("carol", server="http://127.0.0.1:8090", token=admin_token)  # doctest: +SKIP
    'tsf_...'
    """
    return token_made(user, admin, account=account, server=server, token=token, verify=verify)["token"]


def token_made(user: str, admin: bool = False, *, account: str | None = None, server: str | None = None,
               token: str | None = None, verify: bool | str = True) -> dict:
    """`create_token`, answered with the server's whole reply: the account it was made in, user, admin, token.

    >>> token_made("carol", server="http://127.0.0.1:8090", token=admin_token)["account"]  # doctest: +SKIP
    'physics'
    """
    body = {"user": user, "admin": admin, **({"account": account} if account is not None else {})}
    return call("POST", "/api/v1/tokens", json=body, server=server, token=token, verify=verify)


def revoke_token(revoked: str, *, server: str | None = None, token: str | None = None, verify: bool | str = True) -> None:
    """Revoke a token of the account of `token` (an admin token) on a running server."""
    call("POST", "/api/v1/tokens/revoke", json={"token": revoked}, server=server, token=token, verify=verify)


def _error_text(reply) -> str:
    try:
        return str(reply.json().get("error"))
    except ValueError:
        return reply.text[:200]


def _segment(cluster_id: str) -> str:
    return quote(str(cluster_id), safe="")


def _shaped(rows: list[dict], as_frame: bool) -> Any:
    if not as_frame:
        return rows
    return pd.DataFrame(rows)
