"""The usage runs table (`taskscope.usage.rollups`): every report read through it equals the same
report derived from the events alone, on the 24-month synthetic history of test_usage_history
sent to a real collector in two parts (ends of runs whose starts came in the first), under
filters, with and without the release-date table it was derived with, after retention deletes
events, and with events written behind the collector's back."""

from __future__ import annotations

import duckdb
import pytest
from test_usage import stop_and_open, wait_until
from test_usage_history import (
    MYTOOL_RELEASES,
    epoch,
    history,
    invalid_runs,
    mytool_runs,
)

from taskscope.usage import protocol, reports, rollups
from taskscope.usage.collector import Collector
from taskscope.usage.storage import delete_usage_before

# filters of every kind: none, a product, bounds that are not day boundaries, an empty window
FILTERS = [
    {},
    {"product": "parsl"},
    {"product": "mytool"},
    {"since": epoch("2025-03-14") + 3 * 3600 + 17, "until": epoch("2026-02-02") + 11 * 3600},
    {"product": "parsl", "since": epoch("2025-10-01"), "period": "month", "weeks": 30},
    {"since": epoch("2030-01-01")},
]


def release_table(tmp_path):
    path = tmp_path / "releases.csv"
    path.write_text("product,version,released\n" + "".join(
        f"mytool,{version},{date}\n" for version, date in MYTOOL_RELEASES.items()))
    return reports.release_dates(path)


def events_only(con) -> duckdb.DuckDBPyConnection:
    """A new in-memory database holding a copy of the store's events and nothing else (no runs table)."""
    copy = duckdb.connect()
    rows = con.execute("SELECT * FROM events").df()  # noqa: F841 - read by name below
    copy.execute("CREATE TABLE events AS SELECT * REPLACE (attrs::JSON AS attrs) FROM rows")
    copy.execute("SET TimeZone = 'UTC'")
    return copy


def every_report(con, releases, **where) -> dict[str, str]:
    options = {"period": where.pop("period", "week"), "weeks": where.pop("weeks", 12)}
    return {name: reports.report(con, name, releases=releases, **options, **where).to_csv(index=False)
            for name in reports.REPORTS}


def assert_equal_to_events(con, releases, table_used: bool = True) -> None:
    """Each report under each of FILTERS read from `con` equals it derived from a copy of the events."""
    if table_used:
        assert rollups.runs_source(con, releases).startswith(f"SELECT * FROM {rollups.RUNS_TABLE}")
    truth = events_only(con)
    assert rollups.runs_source(truth, releases) == reports._RUNS
    for where in FILTERS:
        got, want = every_report(con, releases, **where), every_report(truth, releases, **where)
        for name in reports.REPORTS:
            assert got[name] == want[name], (name, where)


def send(collector, datagrams: list[bytes]) -> None:
    """Send `datagrams` to the collector and wait until it has stored them all."""
    import socket
    import time

    before = collector.stats.parsed + collector.stats.rejected
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, collector.address)
            time.sleep(0.0002)  # paced: loopback UDP must not overrun the receiver on a busy machine
    assert wait_until(lambda: collector.stats.parsed + collector.stats.rejected >= before + len(datagrams), 60)


def split_history() -> tuple[list[bytes], list[bytes]]:
    """The history's datagrams in two parts: the second holds every end message (and a third of
    the rest), so runs started in the first part end in the second."""
    parsl_messages, _ = history()
    tool_messages, _ = mytool_runs()
    first, second = [], []
    for number, message in enumerate(parsl_messages + tool_messages):
        (second if "end" in message or number % 3 == 0 else first).append(protocol.encode(message))
    return first + invalid_runs(), second


@pytest.mark.slow
def test_every_report_through_the_runs_table_equals_the_events(tmp_path):
    releases = release_table(tmp_path)
    running = Collector(tmp_path / "usage.duckdb", port=0, commit_interval=0.1, releases=releases).start()
    try:
        first, second = split_history()
        send(running, first)
        assert wait_until(lambda: rollups.runs_source(running.store.con.cursor(), releases)
                          == f"SELECT * FROM {rollups.RUNS_TABLE}", 30)
        assert_equal_to_events(running.store.con.cursor(), releases)
        # more runs, and the ends of runs already in the table: updated in place
        send(running, second)
        reader = running.store.con.cursor()
        assert_equal_to_events(reader, releases)
        assert_equal_to_events(reader, None, table_used=False)  # another release-date table: from the events
    finally:
        store = stop_and_open(running)
    with store:
        con = store.con
        assert rollups.runs_source(con, releases) == f"SELECT * FROM {rollups.RUNS_TABLE}"  # covered at stop
        assert reports.totals(con, releases=releases).runs[0] == con.execute(
            "SELECT count(DISTINCT run_id) FROM events WHERE source = 'usage'").fetchall()[0][0]

        # events written behind the collector's back: the runs they touch are derived on the fly
        con.execute("""INSERT INTO events (ts, source, file, line, event, run_id, attrs)
            SELECT ts + 1, source, 'elsewhere', line, 'usage.end', run_id, json_object('correlator', run_id,
                   'end', 1767225600 + line, 'execution_time', 7)
            FROM events WHERE source = 'usage' AND event = 'usage.start' AND line % 5 = 0""")
        assert "UNION ALL" in rollups.runs_source(con, releases)
        assert_equal_to_events(con, releases)
        rollups.refresh(con, releases)
        assert_equal_to_events(con, releases)

        # retention: the runs that lost messages derived again in the same transaction
        arrived = sorted(row[0] for row in con.execute("SELECT ts FROM events WHERE source = 'usage'").fetchall())
        delete_usage_before(con, arrived[len(arrived) // 2], releases)
        assert_equal_to_events(con, releases)

        # a deletion behind its back: the reports no longer trust the table, and stay exact
        con.execute("DELETE FROM events WHERE source = 'usage' AND line % 7 = 0 AND file <> 'elsewhere'")
        assert rollups.runs_source(con, releases) == reports._RUNS
        assert_equal_to_events(con, releases, table_used=False)
        rollups.refresh(con, releases)  # rebuilt
        assert_equal_to_events(con, releases)


@pytest.mark.slow
def test_collect_releases_dates_the_dashboard_and_the_runs_table(tmp_path):
    """`usage collect --releases FILE`: the running collector's reports age mytool's versions from the
    file (only "1.2", absent from it, by first seen), and the runs table it keeps is derived with it."""
    import json
    import socket
    import subprocess
    import sys

    from test_usage_collector_ui import CollectorProcess

    csv = tmp_path / "releases.csv"
    csv.write_text("product,version,released\n" + "".join(
        f"mytool,{version},{date}\n" for version, date in MYTOOL_RELEASES.items()))
    bad = tmp_path / "bad.csv"
    bad.write_text("product,version\nmytool,1.0\n")
    refused = subprocess.run([sys.executable, "-m", "taskscope.cli", "usage", "collect", "--store",
                              str(tmp_path / "other.duckdb"), "--port", "0", "--releases", str(bad)],
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode != 0 and "lacks the column(s) released" in refused.stderr

    store = tmp_path / "usage.duckdb"
    running = CollectorProcess(store, "--releases", str(csv))
    try:
        messages, _ = mytool_runs()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for message in messages:
                sock.sendto(protocol.encode(message), ("127.0.0.1", running.port))
        assert wait_until(lambda: running.json("/api/usage/totals.json")["rows"][0]["runs"] == len(messages), 60)
        ages = running.json("/api/usage/installation-age.json?product=mytool")["rows"]
    finally:
        running.stop()
    assert sum(row["runs"] for row in ages) == len(messages)
    assert sum(row["runs_first_seen"] for row in ages) == 1  # "1.2" only; without the table all four
    import taskscope

    with taskscope.open(store, read_only=True) as opened:
        table = reports.release_dates(csv)
        assert rollups.runs_source(opened.con, table) == f"SELECT * FROM {rollups.RUNS_TABLE}"
        assert rollups.runs_source(opened.con, None) == reports._RUNS  # another table: derived from events
        assert json.loads(reports.installation_age(opened, product="mytool", releases=table).to_json(orient="records")) \
            == ages


@pytest.mark.slow
def test_a_store_without_the_runs_table_gets_it_when_a_collector_starts(tmp_path):
    """A store an older collector wrote (events, no runs table): reports derive runs from the
    events until a collector starts on it, which builds the table; the figures are the same."""
    import taskscope

    path = tmp_path / "usage.duckdb"
    running = Collector(path, port=0, commit_interval=0.05).start()
    first, _ = split_history()
    send(running, first)
    with stop_and_open(running) as store:
        for table in (rollups.STATE_TABLE, rollups.FILES_TABLE, rollups.RUNS_TABLE):
            store.con.execute(f"DROP TABLE {table}")
    with taskscope.open(path, read_only=True) as store:
        assert rollups.runs_source(store.con, None) == reports._RUNS
        before = every_report(store.con, None)
    Collector(path, port=0).start().stop()
    with taskscope.open(path, read_only=True) as store:
        assert rollups.runs_source(store.con, None) == f"SELECT * FROM {rollups.RUNS_TABLE}"
        assert every_report(store.con, None) == before
        assert_equal_to_events(store.con, None)
