"""The fleet server as a user runs it: `taskscope fleet serve` in its own process on 127.0.0.1, a
real DuckDB file, real HTTP(S) with httpx, the pages in headless Chromium, `fleet upload` of corpus runs.

Batches here are built by hand to the protocol (`taskscope.fleet.protocol`); the Dask plugin's own
tests (tests/test_fleet_dask.py) send real ones to this same server.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import httpx
import markupsafe
import pytest

import taskscope
from taskscope.analyses.runs import runs
from taskscope.fleet import api
from taskscope.fleet.protocol import INGEST_PATH, MAX_BATCH_BYTES, PROTOCOL_VERSION

from conftest import corpus_path, run_cli
from test_web import announced_url, browser, free_port  # noqa: F401 - browser is a fixture

REPO = Path(__file__).resolve().parent.parent
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `taskscope ARGS` in a fresh process with this worktree's sources first."""
    done = run_cli(*args, env=dict(os.environ, PYTHONPATH=str(REPO / "src")), timeout=180)
    if check and done.returncode != 0:
        pytest.fail(f"taskscope {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def make_token(store: Path, account: str, user: str, *options: str) -> str:
    cli("fleet", "account", "create", account, "--store", str(store))
    return json.loads(cli("fleet", "token", "create", "--account", account, "--user", user, "--store", str(store),
                          "--format", "json", *options).stdout)["token"]


class FleetServer:
    """`taskscope fleet serve` in a child process; `restart()` kills it hard (SIGKILL) and starts it again."""

    def __init__(self, store: Path, tls: tuple[Path, Path] | None = None, env: dict[str, str] | None = None):
        self.store, self.tls, self.env = store, tls, env or {}
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        args = [sys.executable, "-m", "taskscope.cli", "fleet", "serve", "--store", str(self.store),
                "--port", str(self.port)]
        if self.tls:
            args += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        self.process = subprocess.Popen(args, env=dict(os.environ, PYTHONPATH=str(REPO / "src"), **self.env),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"fleet serve exited: {self.process.stderr.read()}")
            try:
                httpx.get(self.url + "/login", timeout=2, verify=False)  # only: is it up?
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        pytest.fail("fleet serve did not answer within 60 s")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def post(self, token: str | None, body, **headers) -> httpx.Response:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.url + INGEST_PATH, content=content, timeout=60,
                          headers={"Content-Type": "application/json", **headers})

    def get(self, path: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=60)


def refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def dask_batch(cluster_id: str, user: str, *, exception_text: str = "ZeroDivisionError: division by zero",
               started: float | None = None) -> dict:
    """A batch as the Dask plugin sends it: start, two worker samples, a computation with two task
    groups, an exception, an event, an idle interval, a version mismatch, a stop."""
    t0 = started if started is not None else time.time() - 600
    return {
        "protocol": PROTOCOL_VERSION, "batch_id": uuid.uuid4().hex, "sent_at": t0 + 100,
        "cluster": {"cluster_id": cluster_id, "kind": "dask", "name": f"Scheduler-{cluster_id[:6]}", "user": user,
                    "host": "node01", "address": "tcp://127.0.0.1:8786"},
        "messages": [
            {"kind": "cluster.start", "ts": t0, "started": t0, "scheduler_id": f"Scheduler-{cluster_id[:6]}",
             "python": "3.11.7", "platform": "linux", "versions": {"dask": "2025.1.0", "numpy": "2.1.0"},
             "config": {"code.transmit": True}, "price_per_core_hour": 0.1, "price_per_gb_hour": 0.01},
            {"kind": "workers", "ts": t0, "n_workers": 2, "n_threads": 4, "memory_used": 2**30,
             "memory_total": 4 * 2**30, "tasks_processing": 0, "tasks_ready": 0},
            {"kind": "workers", "ts": t0 + 60, "n_workers": 1, "n_threads": 2, "memory_used": 2**30,
             "memory_total": 2 * 2**30, "tasks_processing": 3, "tasks_ready": 1},
            {"kind": "worker.add", "ts": t0, "worker": "tcp://127.0.0.1:4001", "name": "w0", "host": "node01",
             "nthreads": 2, "memory_limit": 2 * 2**30, "versions": {"dask": "2025.1.0", "numpy": "2.0.0"}},
            {"kind": "versions.mismatch", "ts": t0 + 1, "package": "numpy",
             "versions": {"scheduler": "2.1.0", "tcp://127.0.0.1:4001": "2.0.0"}},
            {"kind": "computation", "ts": t0 + 10, "computation_id": "comp-1", "start": t0 + 10, "stop": t0 + 40,
             "code": [{"filename": "analysis.py", "lineno": 12, "code_lineno": 3,
                       "code": 'def divide(x, y):\n    """<b>ratio</b>"""\n    total = (x / y).sum().compute()\n'
                               '    return total\n'}],
             "span_name": ["default"],  # Dask's name for "in no span": the page shows none
             "groups": [
                 {"name": "truediv-abc", "prefix": "truediv", "states": {"memory": 9, "erred": 1}, "n_tasks": 10,
                  "compute_s": 12.5, "transfer_s": 0.5, "disk_s": 0.0, "nbytes": 4096, "start": t0 + 10,
                  "stop": t0 + 38, "dependencies": ["from-array-def"]},
                 {"name": "from-array-def", "prefix": "from-array", "states": {"memory": 10}, "n_tasks": 10,
                  "compute_s": 2.5, "transfer_s": 0.0, "disk_s": 0.0, "nbytes": 8192, "start": t0 + 10,
                  "stop": t0 + 12, "dependencies": []}]},
            {"kind": "exception", "ts": t0 + 30, "key": "('truediv-abc', 3)", "task_group": "truediv-abc",
             "exception_text": exception_text, "traceback_text": f'File "analysis.py", line 12\n{exception_text}',
             "worker": "tcp://127.0.0.1:4001", "computation_id": "comp-1"},
            {"kind": "event", "ts": t0 + 31, "topic": "worker-lifecycle", "msg": {"action": "add", "note": exception_text}},
            {"kind": "idle", "ts": t0 + 40, "start": t0 + 40, "stop": t0 + 90},
            {"kind": "cluster.stop", "ts": t0 + 120, "stopped": t0 + 120},
        ],
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A server with accounts A (alice) and B (bob), each with one Dask cluster."""
    store = tmp_path_factory.mktemp("fleet") / "fleet.duckdb"
    tokens = {"alice": make_token(store, "team-a", "alice"), "bob": make_token(store, "team-b", "bob"),
              "lead": make_token(store, "team-a", "lead", "--admin")}
    server = FleetServer(store)
    clusters = {"alice": uuid.uuid4().hex, "bob": uuid.uuid4().hex}
    for user, cluster_id in clusters.items():
        reply = server.post(tokens[user], dask_batch(cluster_id, user, exception_text=f"{user} failed {HOSTILE}"))
        assert reply.status_code == 200, reply.text
    yield server, tokens, clusters
    server.stop()


def test_requests_without_a_valid_token_are_refused(fleet):
    server, tokens, clusters = fleet
    batch = dask_batch(uuid.uuid4().hex, "mallory")
    for token in (None, "tsf_not-a-token", tokens["alice"] + "x"):
        assert server.post(token, batch).status_code == 401
        assert server.get("/api/v1/clusters?since=", token).status_code == 401
        assert server.get(f"/api/v1/clusters/{clusters['alice']}/computations", token).status_code == 401
        assert server.get("/api/v1/exceptions", token).status_code == 401
        for path in ("/", "/clusters", f"/clusters/{clusters['alice']}"):
            refused = server.get(path, token)
            assert refused.status_code == 401 and 'name="token"' in refused.text and "alice" not in refused.text
    assert api.list_clusters(since=None, server=server.url, token=tokens["alice"])  # the batch was never stored
    assert "mallory" not in {c["user_name"] for c in api.list_clusters(since=None, server=server.url, token=tokens["alice"])}


def test_account_b_sees_none_of_account_a_through_the_api(fleet):
    server, tokens, clusters = fleet
    seen_by_bob = api.list_clusters(since=None, server=server.url, token=tokens["bob"])
    assert [c["cluster_id"] for c in seen_by_bob] == [clusters["bob"]]
    with pytest.raises(api.FleetAPIError, match="404"):
        api.list_computations(clusters["alice"], server=server.url, token=tokens["bob"])
    with pytest.raises(api.FleetAPIError, match="404"):
        api.list_events(clusters["alice"], server=server.url, token=tokens["bob"])
    assert api.list_exceptions(since=None, cluster_id=clusters["alice"], server=server.url, token=tokens["bob"]) == []
    assert {x["user_name"] for x in api.list_exceptions(since=None, server=server.url, token=tokens["bob"])} == {"bob"}
    assert server.get(f"/api/v1/clusters/{clusters['alice']}", tokens["bob"]).status_code == 404


def test_what_a_batch_says_reaches_the_api(fleet):
    server, tokens, clusters = fleet
    found = api.list_clusters(since="1 day", user="alice", server=server.url, token=tokens["alice"], as_frame=True)
    row = found.iloc[0]
    assert (row.cluster_id, row.workers, row.threads, row.computations, row.exceptions) == (clusters["alice"], 2, 4, 1, 1)
    # 4 threads for 60 s, then 2 threads until the stop at 120 s; 4 GiB then 2 GiB likewise
    assert row.core_seconds == pytest.approx(4 * 60 + 2 * 60)
    assert row.cost == pytest.approx((4 * 60 + 2 * 60) / 3600 * 0.1 + (4 * 60 + 2 * 60) / 3600 * 0.01)
    computation, = api.list_computations(clusters["alice"], server=server.url, token=tokens["alice"])
    assert computation["code"][0]["lineno"] == 12
    assert {g["name"]: g["states"] for g in computation["groups"]}["truediv-abc"] == {"memory": 9, "erred": 1}
    event, = api.list_events(clusters["alice"], server=server.url, token=tokens["alice"])
    assert event["topic"] == "worker-lifecycle" and event["msg"]["action"] == "add"
    exception, = api.list_exceptions(since="1 day", user="alice", server=server.url, token=tokens["alice"])
    assert exception["traceback_text"].startswith('File "analysis.py"')
    assert api.list_clusters(since="1 day", user="nobody", server=server.url, token=tokens["alice"]) == []


def test_api_reads_server_and_token_from_the_environment(fleet, monkeypatch):
    server, tokens, clusters = fleet
    monkeypatch.setenv(api.SERVER_ENV, server.url)
    monkeypatch.setenv(api.TOKEN_ENV, tokens["bob"])
    assert [c["cluster_id"] for c in taskscope.fleet.list_clusters(since=None)] == [clusters["bob"]]
    monkeypatch.delenv(api.TOKEN_ENV)
    with pytest.raises(api.FleetAPIError, match=api.TOKEN_ENV):
        api.list_clusters()


def test_a_resent_batch_is_stored_once(fleet):
    server, tokens, _ = fleet
    batch = dask_batch(uuid.uuid4().hex, "alice")
    first, again = server.post(tokens["alice"], batch), server.post(tokens["alice"], batch)
    assert first.status_code == again.status_code == 200
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    exceptions = api.list_exceptions(since=None, cluster_id=batch["cluster"]["cluster_id"], server=server.url,
                                     token=tokens["alice"])
    assert len(exceptions) == 1
    # a computation sent again (still running, then finished) is replaced, not doubled
    update = {**batch, "batch_id": uuid.uuid4().hex, "messages": [
        {**batch["messages"][5], "stop": batch["messages"][5]["stop"] + 5, "groups": batch["messages"][5]["groups"][:1]}]}
    assert server.post(tokens["alice"], update).status_code == 200
    computation, = api.list_computations(batch["cluster"]["cluster_id"], server=server.url, token=tokens["alice"])
    assert len(computation["groups"]) == 1 and computation["stop"] == batch["messages"][5]["stop"] + 5


@pytest.mark.parametrize("body, reason", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"protocol": 99, "batch_id": "x", "cluster": {}, "messages": []}).encode(), "unsupported protocol"),
    (json.dumps({"protocol": 1, "batch_id": "x", "cluster": {"cluster_id": "c", "kind": "spark"}, "messages": []}).encode(),
     "cluster.kind"),
    (json.dumps({"protocol": 1, "batch_id": "x", "cluster": {"cluster_id": "c", "kind": "dask"},
                 "messages": [{"kind": "workers"}]}).encode(), "numeric ts"),
    # a slash made a cluster that no page or API URL could reach
    (json.dumps({"protocol": 1, "batch_id": "x", "cluster": {"cluster_id": "team/a/ac2d", "kind": "dask"},
                 "messages": []}).encode(), "cluster.cluster_id must be 1 to 128 letters"),
])
def test_malformed_bodies_are_refused_with_400(fleet, body, reason):
    server, tokens, _ = fleet
    reply = server.post(tokens["bob"], body)
    assert reply.status_code == 400 and reason in reply.json()["error"]
    kept = server.get("/api/v1/rejected", tokens["bob"]).json()["rejected"][0]  # counted and kept aside
    assert (kept["status"], kept["reason"], kept["body"]) == (400, reply.json()["error"], body.decode())
    assert all(r["token_user"] == "alice" for r in server.get("/api/v1/rejected", tokens["alice"]).json()["rejected"])


def impossible_time_batch(cluster_id: str, message: str, sent_at: str = "1764547200.0") -> bytes:
    """A batch whose one message is given as raw JSON text (for Infinity, NaN and big integers)."""
    return (f'{{"protocol": 1, "batch_id": "{uuid.uuid4().hex}", "sent_at": {sent_at}, '
            f'"cluster": {{"cluster_id": "{cluster_id}", "kind": "dask"}}, "messages": [{message}]}}').encode()


@pytest.mark.parametrize("message, sent_at", [
    ('{"kind": "cluster.start", "ts": 1764547200, "started": 1e20}', "1764547200.0"),
    ('{"kind": "workers", "ts": 1e21, "n_workers": 1, "n_threads": 1}', "1764547200.0"),
    ('{"kind": "workers", "ts": 10000000000000000000000000000000000000000, "n_workers": 1}', "1764547200.0"),
    ('{"kind": "idle", "ts": 1764547200, "start": 1e30, "stop": null}', "1764547200.0"),
    ('{"kind": "computation", "ts": 1764547200, "computation_id": "c", "start": 1e20, "stop": null}', "1764547200.0"),
    ('{"kind": "computation", "ts": 1764547200, "computation_id": "c", "start": 1764547200, "stop": null, '
     '"groups": [{"name": "g", "start": -1e12, "stop": NaN}]}', "1764547200.0"),
    ('{"kind": "cluster.stop", "ts": Infinity}', "1764547200.0"),
    ('{"kind": "cluster.stop", "ts": 1764547200, "stopped": -Infinity}', "1764547200.0"),
    ('{"kind": "parsl.run", "ts": 1764547200, "start": NaN}', "1764547200.0"),
    ('{"kind": "profile", "ts": 1764547200, "start": 1764547200, "stop": 3e11}', "1764547200.0"),
    ('{"kind": "workers", "ts": 1764547200}', "1e300"),
])
def test_a_time_outside_years_1_to_9999_is_refused_and_kept_aside(fleet, message, sent_at):
    server, tokens, clusters = fleet
    cluster_id = uuid.uuid4().hex
    body = impossible_time_batch(cluster_id, message, sent_at)
    reply = server.post(tokens["alice"], body)
    assert reply.status_code == 400 and "must be epoch seconds within years 1-9999" in reply.json()["error"]
    kept = server.get("/api/v1/rejected", tokens["alice"]).json()["rejected"][0]
    assert (kept["status"], kept["reason"], kept["body"]) == (400, reply.json()["error"], body.decode())
    assert server.get(f"/api/v1/clusters/{cluster_id}", tokens["alice"]).status_code == 404
    for path in ("/", "/?since=", "/clusters?since=", f"/clusters/{clusters['alice']}"):  # the account's pages
        assert server.get(path, tokens["alice"]).status_code == 200, path


def test_the_first_and_last_second_of_years_1_to_9999_are_accepted(fleet):
    server, tokens, _ = fleet
    batch = dask_batch(uuid.uuid4().hex, "alice", started=-62135596800)
    batch["messages"][-1].update(ts=253402300799, stopped=253402300799)
    assert server.post(tokens["alice"], batch).status_code == 200
    for path in ("/?since=", "/clusters?since=", f"/clusters/{batch['cluster']['cluster_id']}"):
        assert server.get(path, tokens["alice"]).status_code == 200, path


@pytest.mark.parametrize("depth", [300, 5000])
def test_a_deeply_nested_body_is_refused_and_kept_aside(fleet, depth):
    server, tokens, _ = fleet
    cluster_id = uuid.uuid4().hex
    nested = "[" * depth + "]" * depth  # 300: Python parses it, the read API's encoder would not
    body = impossible_time_batch(cluster_id, f'{{"kind": "event", "ts": 1764547200, "topic": "t", "msg": {nested}}}')
    reply = server.post(tokens["alice"], body)
    assert reply.status_code == 400 and "nest at most 200 levels" in reply.json()["error"]
    kept = server.get("/api/v1/rejected", tokens["alice"]).json()["rejected"][0]
    assert (kept["status"], kept["reason"], kept["size"]) == (400, reply.json()["error"], len(body))
    assert kept["body"] == body[:1024].decode()  # the API shows the first KiB of what is kept
    assert server.get(f"/api/v1/clusters/{cluster_id}", tokens["alice"]).status_code == 404


@pytest.mark.parametrize("prices, refused", [
    ('"price_per_core_hour": 1' + "0" * 400, "price_per_core_hour"),  # no float holds it
    ('"price_per_core_hour": 0.05, "price_per_gb_hour": Infinity', "price_per_gb_hour"),
])
def test_prices_no_float_holds_are_refused_and_the_cluster_is_not_stored(fleet, prices, refused):
    server, tokens, _ = fleet
    cluster_id = uuid.uuid4().hex
    body = impossible_time_batch(cluster_id, '{"kind": "cluster.start", "ts": 1764547200, ' + prices + '}')
    reply = server.post(tokens["alice"], body)
    assert reply.status_code == 400 and f"{refused} must be a number from 0 to 1e+06" in reply.json()["error"]
    assert server.get(f"/api/v1/clusters/{cluster_id}", tokens["alice"]).status_code == 404


def test_oversized_bodies_are_refused_with_413(fleet):
    server, tokens, _ = fleet
    batch = dask_batch(uuid.uuid4().hex, "alice")
    batch["messages"][0]["padding"] = "x" * (MAX_BATCH_BYTES + 10)
    assert server.post(tokens["alice"], batch).status_code == 413
    kept = server.get("/api/v1/rejected", tokens["alice"]).json()["rejected"][0]
    assert kept["status"] == 413 and kept["size"] > MAX_BATCH_BYTES and kept["body"] is None
    # small on the wire, too large once decompressed
    assert server.post(tokens["alice"], gzip.compress(json.dumps(batch).encode()),
                       **{"Content-Encoding": "gzip"}).status_code == 413
    assert batch["cluster"]["cluster_id"] not in {
        c["cluster_id"] for c in api.list_clusters(since=None, server=server.url, token=tokens["alice"])}
    batch["messages"][0].pop("padding")
    assert server.post(tokens["alice"], gzip.compress(json.dumps(batch).encode()),
                       **{"Content-Encoding": "gzip"}).status_code == 200


def test_pages_show_only_the_logged_in_account_and_text_stays_text(fleet, browser):
    server, tokens, clusters = fleet
    for user, other in (("alice", "bob"), ("bob", "alice")):
        context = browser.new_context()
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/clusters")
        page.fill("input[name=token]", tokens[user])
        page.click("button[type=submit]")
        page.wait_for_load_state()
        page.goto(server.url + "/clusters?since=")
        shown = {href.rsplit("/", 1)[1] for href in page.eval_on_selector_all(
            "a.cluster-link", "links => links.map(a => a.getAttribute('href'))")}
        expected = {c["cluster_id"] for c in api.list_clusters(since=None, server=server.url, token=tokens[user])}
        assert clusters[user] in shown and shown == expected and clusters[other] not in shown
        page.click(f"a.cluster-link[href='/clusters/{clusters[user]}']")
        page.wait_for_load_state()
        assert clusters[user] in page.url
        exceptions = page.locator("#exceptions")
        assert exceptions.inner_text().count(f"{user} failed <script>") == 1  # the traceback is folded
        exceptions.locator("details summary").click()
        assert exceptions.inner_text().count(f"{user} failed <script>") == 2  # text and traceback
        assert page.evaluate("window.__pwned") is None
        check_cluster_page_reads(page, dask_batch("any", user))
        rows = {cells[0]: cells[1:5] for cells in page.eval_on_selector_all(
            "section.computation tbody tr", "rows => rows.map(r => Array.from(r.cells, c => c.innerText.trim()))")}
        sent = [g for m in dask_batch("any", user)["messages"] if m["kind"] == "computation" for g in m["groups"]]
        assert {g["name"]: [str(g["n_tasks"]), str(g["states"].get("memory", 0)), str(g["states"].get("erred", 0)), ""]
                for g in sent} == rows  # tasks, done, erred, other (nothing else)
        page.wait_for_selector("#chart-workers .main-svg")
        legends = [page.locator(f"{chart} .legend").text_content() for chart in ("#chart-workers", "#chart-memory")]
        assert all(legends) and not [text for text in legends if "_" in text]  # named for people too
        page.goto(server.url + f"/clusters/{clusters[other]}")
        assert "no cluster" in page.inner_text("main") and other + " failed" not in page.content()
        page.goto(server.url + "/")
        page.wait_for_selector("#chart-cost .main-svg")
        body = page.inner_text("main")
        assert not [h for h in page.eval_on_selector_all("main th", "cells => cells.map(c => c.innerText)") if "_" in h]
        assert user in body and other not in body
        cookie, = [c for c in context.cookies() if c["name"] == "taskscope_fleet_token"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""
        assert errors == []
        context.close()


def check_cluster_page_reads(page, batch: dict) -> None:
    """The cluster page marks the line that called compute, names columns for people and shows sizes in GiB."""
    sent = {m["kind"]: m for m in batch["messages"]}
    frame, = sent["computation"]["code"]
    calling = page.locator("pre.code .calling")
    assert calling.count() == 1
    assert calling.inner_text() == frame["code"].splitlines()[frame["code_lineno"] - 1]
    assert calling.get_attribute("data-lineno") == str(frame["lineno"])
    assert page.locator("pre.code").inner_text().splitlines() == frame["code"].splitlines()  # <b> stays text
    assert " span " not in page.locator("section.computation h3").inner_text()
    headers = page.eval_on_selector_all("main th", "cells => cells.map(c => c.innerText.trim())")
    assert headers and not [h for h in headers if "_" in h]  # no raw column names
    limit = page.locator("#worker-changes tbody td").nth(6).inner_text()
    assert limit == f"{sent['worker.add']['memory_limit'] / 2**30:.2f} GiB"


def test_login_with_a_bad_token_is_refused(fleet, browser):
    server, _, _ = fleet
    page = browser.new_page()
    page.goto(server.url + "/login")
    page.fill("input[name=token]", "tsf_wrong")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "unknown or revoked token" in page.inner_text("main")
    assert page.context.cookies() == []
    page.close()


def test_a_restart_loses_nothing_acknowledged_and_tokens_are_stored_hashed(tmp_path):
    store = tmp_path / "fleet.duckdb"
    token = make_token(store, "team-a", "alice")
    server = FleetServer(store)
    try:
        acknowledged = []
        for _ in range(5):
            batch = dask_batch(uuid.uuid4().hex, "alice")
            assert server.post(token, batch).status_code == 200
            acknowledged.append(batch["cluster"]["cluster_id"])
        server.restart()  # SIGKILL: no clean shutdown, no checkpoint
        seen = {c["cluster_id"] for c in api.list_clusters(since=None, server=server.url, token=token)}
        assert seen == set(acknowledged)
    finally:
        server.stop()
    with duckdb.connect(str(store), read_only=True) as con:
        stored = con.execute("SELECT token_sha256, token_start FROM tokens").fetchall()
        texts = [str(v) for table, in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
                 for row in con.execute(f'SELECT * FROM "{table}"').fetchall() for v in row]
    assert len(stored) == 1 and len(stored[0][0]) == 64 and token not in stored[0][0]
    assert not any(token in text for text in texts)
    assert token.encode() not in store.read_bytes()


def test_a_revoked_token_is_refused(tmp_path):
    store = tmp_path / "fleet.duckdb"
    token = make_token(store, "team-a", "alice")
    assert "revoked" in cli("fleet", "token", "revoke", token, "--store", str(store)).stdout
    server = FleetServer(store)
    try:
        assert server.post(token, dask_batch(uuid.uuid4().hex, "alice")).status_code == 401
    finally:
        server.stop()


def test_the_python_calls_the_json_api_and_the_pages_look_back_90_days_unless_told(tmp_path):
    """One default `since` everywhere (before: 7 days for the Python calls and the JSON API, 90 for
    the pages, so a run uploaded a month after it ran was on the page and in no list)."""
    store = tmp_path / "fleet.duckdb"
    token = make_token(store, "team-a", "alice")
    server = FleetServer(store)
    try:
        clusters = {}
        for days_ago in (1, 30, 180):
            batch = dask_batch(uuid.uuid4().hex, "alice", started=time.time() - days_ago * 86400)
            assert server.post(token, batch).status_code == 200
            clusters[days_ago] = batch["cluster"]
        recent, everything = {clusters[1]["cluster_id"], clusters[30]["cluster_id"]}, \
            {c["cluster_id"] for c in clusters.values()}

        def ids(rows: list[dict]) -> set[str]:
            return {row["cluster_id"] for row in rows}

        def on_page(path: str) -> set[str]:
            page = server.get(path, token).text
            return {c["cluster_id"] for c in clusters.values() if f'href="/clusters/{c["cluster_id"]}"' in page}

        assert ids(api.list_clusters(server=server.url, token=token)) == recent
        assert ids(server.get("/api/v1/clusters", token).json()["clusters"]) == recent
        assert on_page("/clusters") == recent
        assert 'value="90 days"' in server.get("/clusters", token).text
        assert 'value="90 days"' in server.get("/", token).text
        assert ids(api.list_exceptions(server=server.url, token=token)) == recent
        assert ids(server.get("/api/v1/exceptions", token).json()["exceptions"]) == recent
        # and all of them when asked
        assert ids(api.list_clusters(since=None, server=server.url, token=token)) == everything
        assert ids(server.get("/api/v1/clusters?since=", token).json()["clusters"]) == everything
        assert on_page("/clusters?since=") == everything
        assert ids(api.list_exceptions(since=None, server=server.url, token=token)) == everything
    finally:
        server.stop()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself (its own CA bundle) and its key, made by openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_https_with_a_self_signed_certificate(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    store = tmp_path / "fleet.duckdb"
    token = make_token(store, "team-a", "alice")
    admin = make_token(store, "team-a", "lead", "--admin")
    server = FleetServer(store, tls=(cert, key))
    try:
        batch = dask_batch(uuid.uuid4().hex, "alice")
        reply = httpx.post(server.url + INGEST_PATH, json=batch, headers={"Authorization": f"Bearer {token}"},
                           verify=ssl.create_default_context(cafile=str(cert)), timeout=60)
        assert reply.status_code == 200
        seen = api.list_clusters(since=None, server=server.url, token=token, verify=str(cert))
        assert [c["cluster_id"] for c in seen] == [batch["cluster"]["cluster_id"]]
        with pytest.raises(api.FleetAPIError, match="cannot reach"):  # an unknown certificate is not trusted
            api.list_clusters(server=server.url, token=token)
        # an admin makes and revokes tokens through the HTTPS server, trusting its CA
        untrusted = cli("fleet", "token", "create", "--user", "carol", "--server", server.url, "--token", admin,
                        check=False)
        assert untrusted.returncode == 2 and "cannot reach" in untrusted.stderr
        made = cli("fleet", "token", "create", "--user", "carol", "--server", server.url, "--token", admin,
                   "--ca-bundle", str(cert), "--format", "json")
        carol = json.loads(made.stdout)["token"]
        assert api.list_clusters(since=None, server=server.url, token=carol, verify=str(cert)) is not None
        cli("fleet", "token", "revoke", carol, "--server", server.url, "--token", admin, "--ca-bundle", str(cert))
        with pytest.raises(api.FleetAPIError, match="401"):
            api.list_clusters(server=server.url, token=carol, verify=str(cert))
    finally:
        server.stop()


@pytest.mark.parametrize("run_name, has_failures", [("parsl-htex-jsonlog", True), ("parsl-mixed-textlog", False)])
def test_fleet_upload_shows_a_parsl_run_with_its_counts(fleet, run_name, has_failures, tmp_path):
    server, tokens, _ = fleet
    runinfo = corpus_path(run_name)
    event_store = tmp_path / "events.duckdb"
    done = cli("fleet", "upload", str(runinfo), "--server", server.url, "--token", tokens["bob"],
               "--store", str(event_store), "--format", "json")
    uploaded = json.loads(done.stdout)
    with taskscope.open(str(event_store), read_only=True) as opened:
        expected = runs(opened.con).set_index("run_id")
    assert {u["run_id"] for u in uploaded} == set(expected.index)
    assert {u["kind"] for u in uploaded} == {"parsl"}
    clusters = {c["name"]: c for c in api.list_clusters(since=None, user=None, server=server.url, token=tokens["bob"])
                if c["kind"] == "parsl"}
    for run_id, run in expected.iterrows():
        assert (clusters[run_id]["tasks"], clusters[run_id]["tasks_failed"]) == (run.tasks, run.tasks_failed)
        # the token's user, whoever the run says ran it (kept as claimed_user)
        assert (clusters[run_id]["user_name"], clusters[run_id]["claimed_user"]) == ("bob", run.user)
        assert clusters[run_id]["compute_s"] > 0 and clusters[run_id]["cost"] > 0
        check_parsl_failures(server, tokens["bob"], clusters[run_id])
        assert "<h2>Parsl run</h2>" in server.get(f"/clusters/{clusters[run_id]['cluster_id']}", tokens["bob"]).text
    assert expected.tasks.sum() > 0 and (expected.tasks_failed.sum() > 0) == has_failures
    # uploading again replaces the summary: still one cluster per run
    cli("fleet", "upload", str(runinfo), "--server", server.url, "--token", tokens["bob"], "--store", str(event_store))
    names = [c["name"] for c in api.list_clusters(since=None, server=server.url, token=tokens["bob"])]
    assert sorted(n for n in names if n in expected.index) == sorted(expected.index)
    assert not any(c["name"] in expected.index for c in api.list_clusters(since=None, server=server.url,
                                                                          token=tokens["alice"]))
    for run_id in expected.index:  # the failures were replaced, not added again
        [cluster] = [c for c in api.list_clusters(since=None, server=server.url, token=tokens["bob"])
                     if c["name"] == run_id]
        check_parsl_failures(server, tokens["bob"], cluster)


def check_parsl_failures(server: FleetServer, token: str, cluster: dict) -> None:
    """The cluster list's exception count is what list_exceptions returns, each with its message,
    and the run's failures by type carry the message of their first failure, shown on the page."""
    found = api.list_exceptions(since=None, cluster_id=cluster["cluster_id"], server=server.url, token=token)
    assert cluster["exceptions"] == len(found)
    run = api.call("GET", f"/api/v1/clusters/{cluster['cluster_id']}", server=server.url, token=token)["parsl_run"]
    assert sum(failure["count"] for failure in run["failures"]) == len(found)
    page = server.get(f"/clusters/{cluster['cluster_id']}", token).text
    for failure in run["failures"]:
        texts = [x["exception_text"] for x in found if x["exception_text"].startswith(failure["exception_type"])]
        assert texts and failure["message"] in texts
        assert failure["message"] != failure["exception_type"]  # the message, not only the type
        assert str(markupsafe.escape(failure["message"])) in page
    for exception in found:
        assert "\n" not in exception["exception_text"] and len(exception["exception_text"]) <= 300


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    store = tmp_path / "fleet.duckdb"
    done = cli("fleet", "token", "create", "--account", "nope", "--user", "u", "--store", str(store), check=False)
    assert done.returncode == 2 and "no account 'nope'" in done.stderr and "Traceback" not in done.stderr
    done = cli("fleet", "upload", str(tmp_path / "missing"), "--server", "http://127.0.0.1:9", "--token", "t", check=False)
    assert done.returncode == 2 and "no such folder" in done.stderr
    done = cli("fleet", "serve", "--store", str(store), "--tls-cert", str(tmp_path / "c.pem"), check=False)
    assert done.returncode == 2 and "--tls-key" in done.stderr
    done = cli("fleet", "token", "revoke", "tsf_nothing", "--store", str(store), check=False)
    assert done.returncode == 2 and done.stderr.strip() == "error: no such live token"


def test_a_port_outside_0_to_65535_is_a_usage_error(tmp_path):
    for port in ("70000", "65536", "-1"):
        done = cli("fleet", "serve", "--store", str(tmp_path / "fleet.duckdb"), "--port", port, check=False)
        assert done.returncode == 2 and "Invalid value for '--port'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "fleet server on" not in done.stderr
    assert not (tmp_path / "fleet.duckdb").exists()


def test_an_unusable_ca_bundle_is_one_line_with_exit_2(fleet, tmp_path):
    server, tokens, _ = fleet
    missing = tmp_path / "missing.pem"
    done = cli("fleet", "upload", str(corpus_path("parsl-htex-jsonlog")), "--server", server.url, "--token",
               tokens["bob"], "--ca-bundle", str(missing), check=False)
    assert done.returncode == 2 and done.stderr.strip() == f"error: no such file: {missing} (--ca-bundle)"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    for bundle in (missing, not_pem):  # the Python API says so too, as its own error
        with pytest.raises(api.FleetAPIError, match="as a CA bundle"):
            api.list_clusters(server=server.url, token=tokens["bob"], verify=str(bundle))


def test_every_fleet_command_has_help_with_an_example():
    for command in (["serve"], ["account", "create"], ["token", "create"], ["token", "revoke"], ["upload"]):
        done = cli("fleet", *command, "--help")
        assert "taskscope fleet " + " ".join(command) in done.stdout, command


def test_serving_beyond_loopback_warns(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "fleet", "serve", "--store",
                                str(tmp_path / "fleet.duckdb"), "--host", "0.0.0.0", "--port", str(port)],
                               env=dict(os.environ, PYTHONPATH=str(REPO / "src")), stderr=subprocess.PIPE, text=True)
    try:
        warning = process.stderr.readline() + process.stderr.readline()  # "fleet server on ...", then the warning
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "warning: listening on 0.0.0.0, not a loopback address" in warning and "--tls-cert" in warning


def test_serve_on_port_0_announces_the_port_it_listens_on(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "fleet", "serve", "--store",
                                str(tmp_path / "fleet.duckdb"), "--port", "0"],
                               env=dict(os.environ, PYTHONPATH=str(REPO / "src")), stderr=subprocess.PIPE, text=True)
    try:
        url = announced_url(process, "fleet server on ")
        assert not url.endswith(":0")
        # at once: the port listens from the URL line on
        assert httpx.get(url + "/login", timeout=60).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_on_a_taken_port_says_so_in_one_line_before_announcing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("fleet", "serve", "--store", str(tmp_path / "fleet.duckdb"), "--port", str(port), timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port} on 127.0.0.1 is in use" in lines[0], done.stderr
    assert not (tmp_path / "fleet.duckdb").exists()  # a server that never ran leaves no store behind


def test_oddly_typed_fields_are_stored_without_breaking_the_pages(fleet):
    server, tokens, _ = fleet
    batch = dask_batch(uuid.uuid4().hex, "alice")
    odd = {"versions": "dask 1.0", "config": [1], "states": ["memory"], "dependencies": "x", "code": "print()",
           "groups": [{"name": {"a": 1}, "states": 3, "n_tasks": "ten", "dependencies": [1, None]}, "group"],
           "span_name": "s", "apps": [{"tasks": "x"}, 1], "failures": "none", "msg": ["a", {"b": None}]}
    for message in batch["messages"]:
        message.update({key: value for key, value in odd.items() if key in message or key in ("msg", "apps")})
    batch["messages"].append({"kind": "parsl.run", "ts": 1.0, "apps": odd["apps"], "failures": odd["failures"],
                              "tasks": "many"})
    sampled = batch["messages"][0]["started"] + 1.5  # inside the cluster's life: the sample is kept
    batch["messages"].append({"kind": "workers", "ts": sampled, "n_workers": "lots"})
    stamp = f'"ts": {json.dumps(sampled)}'.encode()
    body = json.dumps(batch).encode().replace(stamp, stamp + b', "note": "\\ud800 lone"')
    lone = json.dumps({"kind": "exception", "ts": 3.0, "exception_text": "x"}).replace('"x"', '"\\ud800 lone"')
    body = body.replace(b'"messages": [', b'"messages": [' + lone.encode() + b", ")
    assert server.post(tokens["alice"], body).status_code == 200
    cluster_id = batch["cluster"]["cluster_id"]
    idle_only = dask_batch(uuid.uuid4().hex, "alice")  # no computation: no compute time at all
    idle_only["messages"] = [m for m in idle_only["messages"] if m["kind"] != "computation"]
    assert server.post(tokens["alice"], idle_only).status_code == 200
    for path in (f"/clusters/{cluster_id}", f"/clusters/{idle_only['cluster']['cluster_id']}", "/clusters?since=", "/"):
        shown = httpx.get(server.url + path, cookies={"taskscope_fleet_token": tokens["alice"]}, timeout=60)
        assert shown.status_code == 200, path
        for figure in re.findall(r'class="figure" data-target="[^"]+">(.*?)</script>', shown.text, re.S):
            json.loads(figure, parse_constant=refuse_constant)  # what the browser's JSON.parse accepts: no NaN
    computation, = api.list_computations(cluster_id, server=server.url, token=tokens["alice"])
    assert computation["code"] == [] and computation["groups"][0]["dependencies"] == ["1", "None"]
    texts = [x["exception_text"] for x in api.list_exceptions(since=None, cluster_id=cluster_id, server=server.url,
                                                              token=tokens["alice"])]
    assert "? lone" in texts  # a lone surrogate (valid JSON, invalid UTF-8) stored as "?"


def test_an_admin_token_manages_its_own_accounts_tokens_while_the_server_runs(fleet):
    server, tokens, clusters = fleet
    created = cli("fleet", "token", "create", "--user", "carol", "--server", server.url, "--token", tokens["lead"],
                  "--format", "json")
    carol = json.loads(created.stdout)["token"]
    assert [c["cluster_id"] for c in api.list_clusters(since=None, server=server.url, token=carol)
            if c["cluster_id"] in clusters.values()] == [clusters["alice"]]  # team-a's, not team-b's
    refused = cli("fleet", "token", "create", "--user", "eve", "--server", server.url, "--token", tokens["alice"],
                  check=False)
    assert refused.returncode == 2 and "403" in refused.stderr and "admin" in refused.stderr
    other_account = cli("fleet", "token", "revoke", tokens["bob"], "--server", server.url, "--token", tokens["lead"],
                        check=False)
    assert other_account.returncode == 2 and "404" in other_account.stderr
    assert api.list_clusters(since=None, server=server.url, token=tokens["bob"])  # bob's token still works
    cli("fleet", "token", "revoke", carol, "--server", server.url, "--token", tokens["lead"])
    with pytest.raises(api.FleetAPIError, match="401"):
        api.list_clusters(server=server.url, token=carol)
    locked = cli("fleet", "token", "create", "--account", "team-a", "--user", "x", "--store", str(server.store),
                 check=False)
    assert locked.returncode == 2 and "in use by another process" in locked.stderr


def test_an_older_store_is_migrated_to_the_tokens_user_in_place(tmp_path):
    from taskscope.fleet import db as fleet_db

    store = tmp_path / "old.duckdb"
    old_schema = fleet_db.SCHEMA.replace(" claimed_user VARCHAR, send_interval DOUBLE,", "").replace(
        ", allowed_failures BIGINT", "")
    assert old_schema != fleet_db.SCHEMA
    with duckdb.connect(str(store)) as con:
        con.execute(old_schema)
        con.execute("INSERT INTO clusters (account, cluster_id, kind, user_name) VALUES ('lab', 'c1', 'dask', 'root')")
        con.execute("INSERT INTO batches (account, batch_id, cluster_id, token_user, received) VALUES "
                    "('lab', 'b2', 'c1', 'bob', 2.0), ('lab', 'b1', 'c1', 'alice', 1.0)")
    migrated = fleet_db.FleetDB(str(store))
    try:
        assert migrated.query("SELECT user_name, claimed_user FROM clusters").values.tolist() == [["alice", "root"]]
        assert migrated.query("SELECT count(allowed_failures) FROM exceptions").values.tolist() == [[0]]
    finally:
        migrated.close()
    reopened = fleet_db.FleetDB(str(store))  # a second open changes nothing
    try:
        assert reopened.query("SELECT user_name, claimed_user FROM clusters").values.tolist() == [["alice", "root"]]
    finally:
        reopened.close()


def test_the_dask_plugin_delivers_over_tls_to_a_private_ca_given_verify(tmp_path, caplog):
    pytest.importorskip("distributed")
    import dask.bag
    from distributed import Client, LocalCluster

    from taskscope.fleet.dask import register
    from taskscope.fleet.sender import Sender

    cert, key = self_signed_certificate(tmp_path)
    store = tmp_path / "fleet.duckdb"
    token = make_token(store, "team-a", "alice")
    admin = make_token(store, "team-a", "lead", "--admin")
    server = FleetServer(store, tls=(cert, key))
    try:
        with LocalCluster(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            register(client, server=server.url, token=token, verify=str(cert), spool_directory=str(tmp_path / "a"),
                     interval=0.5)
            scheduler_id = client.scheduler_info()["id"]
            assert dask.bag.from_sequence(range(10), npartitions=2).sum().compute() == 45
        [found] = api.list_clusters(since=None, server=server.url, token=token, verify=str(cert))
        assert found["name"] == scheduler_id and found["stopped"] is not None and found["tasks"] > 0
        with pytest.raises(ValueError, match="CA bundle"):
            register(server=server.url, token=token, verify=str(tmp_path / "missing.pem"))

        # without the CA: refused, kept in the spool, and said once as a WARNING however often it retries
        caplog.set_level("INFO", logger="taskscope.fleet.sender")
        sender = Sender(server.url, token, {"cluster_id": uuid.uuid4().hex, "kind": "dask"}, spool_dir=tmp_path / "b",
                        retry_max_s=0.2)
        sender.submit([{"kind": "workers", "ts": time.time(), "n_workers": 1}])
        assert not sender.flush(timeout=30) and not sender.flush(timeout=30)
        assert not sender.close(timeout=30)
        refusals = [r for r in caplog.records if r.name == "taskscope.fleet.sender" and "TLS" in r.getMessage()]
        assert [r.levelname for r in refusals] == ["WARNING"] and "CERTIFICATE_VERIFY_FAILED" in refusals[0].getMessage()
        assert sender.stats.send_failures >= 3 and sender.stats.batches_sent == 0
        assert len(api.list_clusters(since=None, server=server.url, token=token, verify=str(cert))) == 1
    finally:
        server.stop()


def page_figure(page: str, chart_id: str) -> dict:
    """The Plotly figure a page draws in the element `chart_id`."""
    found = re.search(r'<script type="application/json" class="figure" data-target="' + chart_id + r'">(.*?)</script>',
                      page, re.S)
    assert found, chart_id
    return json.loads(found.group(1))


def test_the_team_chart_compares_core_hours_and_costs_say_their_currency(fleet, tmp_path):
    server, tokens, clusters = fleet
    overview = server.get("/?since=", tokens["alice"]).text
    assert "estimated cost (USD)" in overview and "(USD) per member per week" in overview
    assert api.call("GET", "/api/v1/clusters?since=", server=server.url, token=tokens["alice"])["currency"] == "USD"
    page = server.get(f"/clusters/{clusters['alice']}", tokens["alice"]).text
    assert "USD per core-hour" in page and "USD per GiB-hour" in page and "GB-hour" not in page

    store = tmp_path / "fleet.duckdb"  # a team with one cluster, on a server counting in euros
    token = make_token(store, "team-a", "alice")
    euros = FleetServer(store, env={"TASKSCOPE_FLEET_CURRENCY": "EUR"})
    try:
        assert euros.post(token, dask_batch(uuid.uuid4().hex, "alice")).status_code == 200
        assert api.call("GET", "/api/v1/clusters?since=", server=euros.url, token=token)["currency"] == "EUR"
        assert "estimated cost (EUR)" in euros.get("/clusters?since=", token).text
        figure = page_figure(euros.get("/?since=", token).text, "chart-time")
    finally:
        euros.stop()
    assert figure["layout"]["yaxis"]["title"]["text"] == "core-hours"
    traces = {trace["name"].split(" (")[0]: trace for trace in figure["data"]}
    held, computing = traces["core-hours held"], traces["core-hours computing"]
    assert held["x"] == computing["x"] == ["alice"]
    # dask_batch: 4 threads for 60 s then 2 threads for 60 s; task groups computing 12.5 s + 2.5 s
    assert held["y"] == [pytest.approx((4 * 60 + 2 * 60) / 3600, abs=1e-4)]
    assert computing["y"] == [pytest.approx(15 / 3600, abs=1e-4)]


def test_a_cluster_page_says_why_no_code_arrived(fleet):
    server, tokens, clusters = fleet
    assert 'id="no-code"' not in server.get(f"/clusters/{clusters['alice']}", tokens["alice"]).text  # it has code
    batch = dask_batch(uuid.uuid4().hex, "alice")
    for message in batch["messages"]:
        if message["kind"] == "computation":
            message["code"] = []  # a client that did not set distributed.diagnostics.computations.nframes
    assert server.post(tokens["alice"], batch).status_code == 200
    page = server.get(f"/clusters/{batch['cluster']['cluster_id']}", tokens["alice"]).text
    hint = page.split('id="no-code">')[1].split("</p>")[0]
    assert "distributed.diagnostics.computations.nframes" in hint and "--preload" in hint


def check_security_headers(reply: httpx.Response) -> None:
    """Every response: nosniff and same-origin referrers; an HTML one also a CSP with no inline script and no framing."""
    assert reply.headers["x-content-type-options"] == "nosniff", reply.url
    assert reply.headers["referrer-policy"] == "same-origin", reply.url
    if reply.headers["content-type"].startswith("text/html"):
        policy = dict(part.strip().split(" ", 1) for part in reply.headers["content-security-policy"].split(";"))
        assert "unsafe-inline" not in policy["script-src"] and "unsafe-eval" not in policy["script-src"]
        assert policy["frame-ancestors"] == "'none'" and reply.headers["x-frame-options"] == "DENY"
        assert not re.search(r"<script(?![^>]*\b(src=|type=\"application/json\"))", reply.text), reply.url


def test_every_response_carries_security_headers(fleet):
    server, tokens, clusters = fleet
    alice = tokens["alice"]
    pages = ["/", "/?since=", "/clusters", f"/clusters/{clusters['alice']}", f"/clusters/{clusters['alice']}/profile",
             "/clusters/no-such-cluster"]
    api_paths = ["/api/v1/whoami", "/api/v1/clusters?since=", f"/api/v1/clusters/{clusters['alice']}",
                 f"/api/v1/clusters/{clusters['alice']}/profile", "/api/v1/clusters/no-such-cluster"]
    replies = [server.get(path, alice) for path in pages + api_paths]
    replies += [server.get(path, None) for path in pages + api_paths + ["/login", "/api/openapi.json"]]
    replies += [server.post(alice, dask_batch(uuid.uuid4().hex, "alice")), server.post(None, b"{}"),
                server.post(alice, b"not json")]
    assert {reply.status_code for reply in replies} >= {200, 400, 401, 404}
    for reply in replies:
        check_security_headers(reply)
    assert any("content-security-policy" in reply.headers for reply in replies)


def test_login_refuses_other_sites_and_slows_repeated_failures_but_never_a_valid_token(tmp_path):
    store = tmp_path / "fleet.duckdb"
    token = make_token(store, "team-a", "alice")
    server = FleetServer(store)
    try:
        def login(value: str, **headers) -> httpx.Response:
            return httpx.post(server.url + "/login", data={"token": value}, headers=headers, timeout=30,
                              follow_redirects=False)

        forged = login(token, origin="https://evil.example")
        assert forged.status_code == 403 and "set-cookie" not in forged.headers
        assert login(token, referer="https://evil.example/page").status_code == 403
        assert login(token, origin=server.url).status_code == 303
        assert [login("tsf_wrong").status_code for _ in range(10)] == [401] * 10
        slowed = login("tsf_wrong", origin=server.url)
        assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) >= 1
        check_security_headers(slowed)
        # the address is the connection's own: a client naming another does not escape the limit
        assert [login("tsf_wrong", **{"x-forwarded-for": f"203.0.113.{n}"}).status_code
                for n in range(3)] == [429] * 3
        welcome = login(token)  # still accepted while this client is slowed
        assert welcome.status_code == 303 and "taskscope_fleet_token=" in welcome.headers["set-cookie"]
        assert httpx.post(server.url + "/logout", headers={"origin": "https://evil.example"}, timeout=30).status_code == 403
    finally:
        server.stop()


# ---- an admin token makes tokens in its own account only ------------------------------------------
@pytest.mark.parametrize("output", [(), ("--format", "json")])
def test_an_admin_token_refuses_to_create_a_token_in_another_account(fleet, output):
    server, tokens, _ = fleet
    refused = cli("fleet", "token", "create", "--user", "spy", "--account", "team-b", "--server", server.url,
                  "--token", tokens["lead"], *output, check=False)
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout
    [line] = refused.stderr.strip().splitlines()
    assert "403" in line and "'team-a'" in line and "'team-b'" in line and "Traceback" not in line
    made = cli("fleet", "token", "create", "--user", "dave", "--account", "team-a", "--server", server.url,
               "--token", tokens["lead"], "--format", "json")
    dave = json.loads(made.stdout)
    assert dave["account"] == "team-a"
    assert server.get("/api/v1/whoami", dave["token"]).json() == {"account": "team-a", "user": "dave", "admin": False}


# ---- a cluster belongs to the user whose token sent it first ----------------------------------------
def test_a_batch_for_another_members_cluster_is_refused_with_409_and_kept_aside(fleet, tmp_path):
    from taskscope.fleet.sender import Sender

    server, tokens, clusters = fleet
    before = server.get(f"/api/v1/clusters/{clusters['alice']}", tokens["alice"]).json()
    hijack = dask_batch(clusters["alice"], "mallory")  # lead is a member of alice's account, not its sender
    hijack["cluster"]["name"] = "taken-over"
    reply = server.post(tokens["lead"], hijack)
    assert reply.status_code == 409 and "belongs to alice" in reply.json()["error"]
    kept = server.get("/api/v1/rejected", tokens["lead"]).json()["rejected"][0]
    assert (kept["status"], kept["token_user"], kept["reason"]) == (409, "lead", reply.json()["error"])
    after = server.get(f"/api/v1/clusters/{clusters['alice']}", tokens["alice"]).json()
    for field in ("name", "user_name", "claimed_user", "core_seconds", "cost", "stopped"):
        assert after[field] == before[field], field
    # the sender sets such a batch aside (it would be refused again), it does not resend it
    sender = Sender(server.url, tokens["lead"], hijack["cluster"], spool_dir=tmp_path)
    sender.submit([{"kind": "workers", "ts": time.time(), "n_workers": 1, "n_threads": 1}])
    assert sender.close(timeout=60)
    assert (sender.stats.batches_rejected, sender.stats.batches_sent) == (1, 0)
    # alice herself still adds to her cluster
    own = {**dask_batch(clusters["alice"], "alice"), "messages": [{"kind": "event", "ts": time.time(), "topic": "t"}]}
    assert server.post(tokens["alice"], own).status_code == 200


# ---- figures that cannot be true are refused, never summed ------------------------------------------
def with_messages(batch: dict, change) -> dict:
    batch["messages"] = change(batch["messages"])
    return batch


@pytest.mark.parametrize("change, reason", [
    (lambda ms: [{**m, "n_workers": -5} if m["kind"] == "workers" else m for m in ms],
     "messages[1].n_workers must be a number from 0 to 9e+18, not -5"),
    (lambda ms: [{**m, "n_threads": -5} if m["kind"] == "workers" else m for m in ms],
     "messages[1].n_threads must be a number from 0 to 9e+18, not -5"),
    (lambda ms: [{**m, "groups": [{**m["groups"][0], "compute_s": -1.0}]} if m["kind"] == "computation" else m
                 for m in ms], "messages[5].groups[0].compute_s must be a number from 0"),
    (lambda ms: [{**m, "stop": m["start"] - 5} if m["kind"] == "computation" else m for m in ms],
     "is before its start"),
    (lambda ms: [{**m, "stopped": m["stopped"] - 1000} if m["kind"] == "cluster.stop" else m for m in ms],
     "would stop"),
    (lambda ms: [*ms, {"kind": "workers", "ts": ms[-1]["stopped"] + 60, "n_workers": 2, "n_threads": 4,
                       "memory_total": 2**30}], "after the cluster's stop"),
    # a sample from before the start would bill time the cluster did not run (1e8 core-seconds of a 10 s cluster)
    (lambda ms: [*ms, {"kind": "workers", "ts": ms[0]["started"] - 10 * 86400, "n_workers": 1, "n_threads": 100,
                       "memory_total": 2**30}], "before the cluster's start"),
    # figures no cluster has: the costs summed from them would be infinite
    (lambda ms: [{**m, "price_per_core_hour": 1e308} if m["kind"] == "cluster.start" else m for m in ms],
     "messages[0].price_per_core_hour must be a number from 0 to 1e+06, not 1e+308"),
    (lambda ms: [{**m, "n_threads": 1e300} if m["kind"] == "workers" else m for m in ms],
     "messages[1].n_threads must be a number from 0 to 9e+18"),
])
def test_impossible_figures_are_refused_with_a_reason_and_kept_aside(fleet, change, reason):
    server, tokens, _ = fleet
    batch = with_messages(dask_batch(uuid.uuid4().hex, "alice"), change)
    reply = server.post(tokens["alice"], batch)
    assert reply.status_code == 400 and reason in reply.json()["error"], reply.text
    kept = server.get("/api/v1/rejected", tokens["alice"]).json()["rejected"][0]
    assert (kept["status"], kept["reason"]) == (400, reply.json()["error"])
    assert server.get(f"/api/v1/clusters/{batch['cluster']['cluster_id']}", tokens["alice"]).status_code == 404


def test_a_later_batch_contradicting_a_stopped_cluster_is_refused_and_its_figures_stay(fleet):
    server, tokens, _ = fleet
    batch = dask_batch(uuid.uuid4().hex, "alice")
    assert server.post(tokens["alice"], batch).status_code == 200
    cluster_id = batch["cluster"]["cluster_id"]
    stopped = batch["messages"][-1]["stopped"]
    before = server.get(f"/api/v1/clusters/{cluster_id}", tokens["alice"]).json()
    late = {**batch, "batch_id": uuid.uuid4().hex, "messages": [
        {"kind": "workers", "ts": stopped + 120, "n_workers": 2, "n_threads": 4, "memory_total": 4 * 2**30}]}
    early_stop = {**batch, "batch_id": uuid.uuid4().hex, "messages": [
        {"kind": "cluster.stop", "ts": stopped, "stopped": batch["messages"][0]["started"] - 100}]}
    for refused, reason in ((late, "after the cluster's stop"), (early_stop, "would stop")):
        reply = server.post(tokens["alice"], refused)
        assert reply.status_code == 400 and reason in reply.json()["error"], reply.text
    after = server.get(f"/api/v1/clusters/{cluster_id}", tokens["alice"]).json()
    assert (after["core_seconds"], after["duration_s"]) == (before["core_seconds"], before["duration_s"]) == (360, 120)


# ---- a Parsl run's apps: the mean run time, against monitoring's own record -------------------------
def test_a_parsl_runs_apps_show_their_mean_run_time_as_monitoring_recorded_it(fleet):
    server, tokens, _ = fleet
    runinfo = corpus_path("parsl-htex-jsonlog")
    cli("fleet", "upload", str(runinfo), "--server", server.url, "--token", tokens["bob"])
    with sqlite3.connect(runinfo / "monitoring.db") as monitoring:  # each task's last try: running to returned
        [run_id] = [row[0] for row in monitoring.execute("SELECT run_id FROM workflow")]
        truth = dict(monitoring.execute(
            "SELECT t.task_func_name, avg((julianday(r.task_try_time_returned) - julianday(r.task_try_time_running))"
            " * 86400) FROM task t JOIN try r ON r.run_id = t.run_id AND r.task_id = t.task_id AND r.try_id = "
            "(SELECT max(try_id) FROM try x WHERE x.run_id = t.run_id AND x.task_id = t.task_id) GROUP BY 1"))
    [cluster] = [c for c in api.list_clusters(since=None, server=server.url, token=tokens["bob"])
                 if c["kind"] == "parsl" and c["name"] == run_id]
    run = server.get(f"/api/v1/clusters/{cluster['cluster_id']}", tokens["bob"]).json()["parsl_run"]
    apps = {app["app_name"]: app for app in run["apps"]}
    assert set(apps) == set(truth)
    for name, seconds in truth.items():
        assert apps[name]["mean_run_s"] == pytest.approx(seconds, abs=0.02), name
        assert apps[name]["mean_duration_s"] > 10 * seconds  # submit to end: mostly waiting for a worker
    page = server.get(f"/clusters/{cluster['cluster_id']}", tokens["bob"]).text
    assert "<th>mean run time</th>" in page and "<th>mean time from submit to end</th>" in page
    assert f"{apps['inc']['mean_run_s']:.3f} s" in page

