"""The dashboard while the collector runs: a real `taskscope usage collect --ui-port` subprocess,
real client datagrams at levels 1, 2 and 3, the page over HTTP and in headless Chromium following
each commit, the pages queried while datagrams arrive (none lost), and `taskscope ui` on the
store the collector holds (one line, exit 2)."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import taskscope
from taskscope.usage import UsageTracker
from taskscope.presenters.format import percent
from test_usage import free_udp_port, wait_until
from test_usage_web import CLIENT_RUNS, expected_leaderboard, table_rows, watched  # noqa: F401 (watched is a fixture)
from test_web import browser, free_port  # noqa: F401 (browser is a fixture)

FIRST, SECOND = CLIENT_RUNS[:3], CLIENT_RUNS[3:]  # levels 1, 2, 3; then levels 3, 2, 3
BULK = 3000  # raw datagrams sent while the pages are being queried


class CollectorProcess:
    """`taskscope usage collect --ui-port 0` in a subprocess; the dashboard's URL read from stderr."""

    def __init__(self, store: Path, *options: str):
        self.store = store
        self.port = free_udp_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "taskscope.cli", "usage", "collect", "--store", str(store),
                   "--port", str(self.port), "--ui-port", "0", "--format", "json", *options]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        said = self._wait_for(r"usage dashboard on (http://\S+)/usage")
        self.url = said.group(1)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self._lines.put(line)

    def _wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.stderr.append(self._lines.get(timeout=0.2))
            except queue.Empty:
                assert self.process.poll() is None, "".join(self.stderr)
            found = re.search(pattern, " ".join(self.stderr))
            if found:
                return found
        raise AssertionError(f"collector never said {pattern!r}: {''.join(self.stderr)}")

    def json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def stop(self) -> dict:
        """SIGTERM; the collector's final counts (its JSON line on stdout)."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, "".join(self.stderr)
        return json.loads(out.strip().splitlines()[-1])


def send_client_runs(endpoint: str, runs: list[tuple]) -> int:
    """The real client's messages for `runs`; how many it sent (level 3: a start and an end)."""
    for product, version, level, project, tasks in runs:
        with UsageTracker(product, version, level=level, project_name=project, endpoint=endpoint,
                          components=[f"{product}.executors.Pool"]) as tracker:
            for failed in tasks:
                tracker.record_task(failed=failed)
        assert tracker.close(5)
    return sum(2 if run[2] == 3 else 1 for run in runs)


def shown_counts(page) -> tuple[int, int]:
    return int(page.locator("#total-runs").inner_text()), int(page.locator("#total-messages").inner_text())


@pytest.fixture
def collector(tmp_path):
    running = CollectorProcess(tmp_path / "usage.duckdb")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.communicate(timeout=30)


def test_dashboard_follows_the_running_collector(collector, watched, tmp_path):
    page = watched.page
    sent = send_client_runs(collector.endpoint, FIRST)
    assert wait_until(lambda: collector.json("/api/usage")["collected"]["messages"] == sent, 30)
    watched.visit(collector.url + "/usage")
    assert shown_counts(page) == (len(FIRST), sent) == (3, 4)
    assert page.locator("div.chart.js-plotly-plot").count() == 9
    with urllib.request.urlopen(collector.url + "/usage", timeout=60) as response:
        assert f'id="total-runs">{len(FIRST)}<' in response.read().decode()

    # more messages, and a bad datagram: the page and the JSON (cached per commit) follow
    sent += send_client_runs(collector.endpoint, SECOND)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"1{not json", ("127.0.0.1", collector.port))
    assert wait_until(lambda: collector.json("/api/usage")["collected"]["rejected"] == 1
                      and collector.json("/api/usage")["collected"]["messages"] == sent, 30)
    data = collector.json("/api/usage")
    assert data["summary"]["runs"] == len(CLIENT_RUNS) and data["summary"]["level3_runs"] == 3
    watched.visit(collector.url + "/usage")
    assert shown_counts(page) == (len(CLIENT_RUNS), sent) == (6, 9)
    assert int(page.locator("#total-rejected").inner_text()) == 1
    shown_board = table_rows(page, "#leaderboard")
    assert [[str(r[c]) for c in ("rank", "project_name", "runs", "level3_runs", "points")]
            for r in data["reports"]["leaderboard"]] == shown_board
    assert len(collector.json("/api/usage/runs")["rows"]) == len(CLIENT_RUNS)

    # the runs pages work on this store too (usage correlators are not workflow runs)
    watched.visit(collector.url + "/")

    stats = collector.stop()
    assert stats["parsed"] == sent and stats["rejected"] == 1
    with pytest.raises(OSError):  # the dashboard stopped with the collector
        urllib.request.urlopen(collector.url + "/usage", timeout=5)
    with taskscope.open(collector.store, read_only=True) as store:
        assert shown_board == expected_leaderboard(store)


def test_pages_queried_while_datagrams_arrive_lose_none(collector):
    """A page query never holds up the receiver: every datagram sent while pages load is stored."""
    port = collector.port
    stop_querying = threading.Event()
    answers: list[int] = []

    def query_pages() -> None:
        while not stop_querying.is_set():
            answers.append(collector.json("/api/usage")["collected"]["messages"])

    reader = threading.Thread(target=query_pages, daemon=True)
    reader.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for number in range(BULK):
            body = {"correlator": f"bulk-{number}", "product": "bulk", "version": "1", "level": 1}
            sock.sendto(b"1" + json.dumps(body).encode(), ("127.0.0.1", port))
            if number % 100 == 99:
                time.sleep(0.05)  # paced (about 2,000/s), so only the UI could make the kernel drop any
    assert wait_until(lambda: answers and answers[-1] == BULK, 60), answers[-5:]
    stop_querying.set()
    reader.join(60)
    assert len(answers) >= 2 and answers == sorted(answers)  # pages saw the count grow, never shrink
    stats = collector.stop()
    assert stats["received"] == stats["parsed"] == BULK and stats["rejected"] == 0


def test_ui_on_the_collectors_store_says_what_to_do(collector):
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "taskscope.cli", "ui", "--store", str(collector.store),
                           "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"--ui-port {port}" in lines[0] and f"PID {collector.process.pid}" in lines[0]
    assert collector.stop()["received"] == 0


def test_share_columns_are_percentages_on_the_page_and_fractions_in_json(collector, watched):
    send_client_runs(collector.endpoint, CLIENT_RUNS)
    assert wait_until(lambda: collector.json("/api/usage")["summary"]["runs"] == len(CLIENT_RUNS), 30)
    versions = collector.json("/api/usage/versions")["rows"]
    assert all(0 < row["share"] <= 1 for row in versions)
    watched.visit(collector.url + "/usage")
    shown = [row[3] for row in table_rows(watched.page, "#versions")]
    assert shown == [percent(row["share"]) for row in versions]
    assert "75 %" in shown and "25 %" in shown  # mytool: 1.1 in 3 of its 4 runs, 1.0 in 1
    failures = collector.json("/api/usage/failures")["rows"]
    rates = [row[5] for row in table_rows(watched.page, "#failures")]
    assert rates == [percent(row["failure_rate"]) for row in failures] and all(r.endswith(" %") for r in rates)
    collector.stop()
