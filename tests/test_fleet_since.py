"""A `since` the fleet server cannot read is refused, on the pages and in the JSON API alike, with a
message naming `since` and the forms it takes: never read as another period (the pages once showed
the default 90 days for `?since=yesterdayish`, and everything took `?since=-5` as 1969).

A real `taskscope fleet serve` on 127.0.0.1 over a real DuckDB file, as in tests/test_fleet_server.py.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlencode

import markupsafe
import pytest

from taskscope.fleet import api

from test_fleet_server import FleetServer, dask_batch, make_token

#: what a user may mistype: words, negative or non-finite numbers, a unit since does not know,
#: a time beyond year 9999, and markup (escaped on the page)
BAD_SINCE = ["yesterdayish", "-5", "-1 days", "nan", "inf", "1e400", "2 fortnights", "99999999999999",
             "<b>7 days</b>"]
PAGES = ["/", "/clusters"]
API = ["/api/v1/clusters", "/api/v1/exceptions"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with one Dask cluster of alice's that ran two days ago (in the default 90 days)."""
    store = tmp_path_factory.mktemp("fleet-since") / "fleet.duckdb"
    token = make_token(store, "team-a", "alice")
    server = FleetServer(store)
    batch = dask_batch(uuid.uuid4().hex, "alice", started=time.time() - 2 * 86400)
    assert server.post(token, batch).status_code == 200
    yield server, token, batch["cluster"]["cluster_id"]
    server.stop()


def refusal_says_what_since_takes(message: str, since: str) -> None:
    assert message.startswith("since must be like '7 days', '12 hours', '2 weeks', '2026-01-31' (UTC)"), message
    assert "epoch seconds (0 or more)" in message and "empty for everything" in message
    assert message.endswith(f"not {since!r}"), message


@pytest.mark.parametrize("since", BAD_SINCE)
def test_a_page_refuses_a_since_it_cannot_read_with_an_escaped_message(served, since):
    server, token, cluster_id = served
    for path in PAGES:
        reply = server.get(f"{path}?{_query(since)}", token)
        assert reply.status_code == 400, (path, reply.status_code)
        assert reply.headers["content-type"].startswith("text/html")
        [shown] = [line for line in reply.text.splitlines() if "since must be" in line]
        refusal_says_what_since_takes(markupsafe.Markup(shown.split('class="error">')[1].split("</p>")[0]).unescape(),
                                      since)
        assert "<b>" not in reply.text  # the value is shown escaped, never as markup
        assert not shows_cluster(path, reply.text, cluster_id)  # no period's clusters, the default's neither


@pytest.mark.parametrize("since", BAD_SINCE)
def test_the_api_refuses_a_since_it_cannot_read_with_json(served, since):
    server, token, _ = served
    for path in API:
        reply = server.get(f"{path}?{_query(since)}", token)
        assert reply.status_code == 400, (path, reply.status_code)
        refusal_says_what_since_takes(reply.json()["error"], since)
    with pytest.raises(api.FleetAPIError, match="HTTP 400: since must be like '7 days'"):
        api.list_clusters(since=since, server=server.url, token=token)


def test_the_python_api_refuses_a_negative_number(served):
    server, token, _ = served
    for call in (api.list_clusters, api.list_exceptions):
        with pytest.raises(api.FleetAPIError, match=r"HTTP 400: since must be .* not '-5.0'"):
            call(since=-5.0, server=server.url, token=token)


@pytest.mark.parametrize("since, listed", [("", True), ("   ", True), ("7 days", True), ("3d", True), ("0", True),
                                           ("2000-01-01", True), ("1 hour", False), ("2999-01-01", False)])
def test_every_form_since_takes_still_filters(served, since, listed):
    """The forms the refusal names are read as that period: the cluster (it ran two days ago) is
    listed for a period that covers it and left out for one that does not, on pages and API alike."""
    server, token, cluster_id = served
    for path in PAGES + API:
        reply = server.get(f"{path}?{_query(since)}", token)
        assert reply.status_code == 200, (path, reply.text[:300])
        assert shows_cluster(path, reply.text, cluster_id) == listed, path


def shows_cluster(path: str, text: str, cluster_id: str) -> bool:
    """Whether the reply to `path` shows the cluster: the overview sums its members' clusters in
    tables (with none, it says so), the others list the cluster by id."""
    if path == "/":
        return "<h2>Members</h2>" in text and "No clusters or Parsl runs in this period." not in text
    return cluster_id in text


def _query(since: str) -> str:
    return urlencode({"since": since})
