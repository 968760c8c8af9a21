"""Usage tracking: the client, the Parsl adapter with real Parsl runs, the collector, the reports."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import parsl
import pytest

from conftest import invoke, parsl_env
import taskscope
from taskscope.usage import UsageTracker, protocol, reports
from taskscope.usage.collector import Collector
from taskscope.usage.storage import stored_counts
from taskscope.usage.spool import SpoolWriter
from taskscope.usage.spool import record as spool_record

PROJECT = "taskscope-usage-test"

PARSL_RUN = r"""
import json, sys
import parsl
from parsl.config import Config
from taskscope.parsl.usage import enable, messages

endpoint, level, executor, run_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
enable(endpoint=endpoint)
if executor == "htex":
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider
    executors = [HighThroughputExecutor(label="htex", max_workers_per_node=1, address="127.0.0.1",
                                        provider=LocalProvider(init_blocks=1, max_blocks=1))]
else:
    from parsl.executors.threads import ThreadPoolExecutor
    executors = [ThreadPoolExecutor(label="threads", max_threads=2)]

@parsl.python_app
def double(x):
    return 2 * x

@parsl.python_app
def fails():
    raise ValueError("meant to fail")

with parsl.load(Config(executors=executors, usage_tracking=level, project_name=%(project)r, run_dir=run_dir)) as dfk:
    futures = [double(i) for i in range(4)] + [fails()]
    for future in futures:
        try:
            future.result()
        except ValueError:
            pass
    correlator = dfk.usage_tracker.correlator_uuid
print(json.dumps({"correlator": correlator, "messages": messages(), "apps": len(futures), "fails": 1,
                  "executor": type(executors[0]).__module__ + "." + type(executors[0]).__name__}))
""" % {"project": PROJECT}


@pytest.fixture
def collector(tmp_path):
    running = Collector(tmp_path / "usage.duckdb", port=0, commit_interval=0.1).start()
    yield running
    running.stop()


def endpoint_of(collector: Collector) -> str:
    return "%s:%d" % collector.address


def stop_and_open(collector: Collector):
    collector.stop()
    return taskscope.open(collector.store_path)


def usage_events(store) -> list[dict]:
    rows = store.con.execute(
        "SELECT event, run_id, attrs FROM events WHERE source = 'usage' ORDER BY file, line").fetchall()
    return [{"event": event, "run_id": run_id, "attrs": json.loads(attrs)} for event, run_id, attrs in rows]


def wait_until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def run_parsl(endpoint: str, level: int, executor: str, run_dir: Path) -> dict:
    env = parsl_env()
    env.pop("DO_NOT_TRACK", None)
    env.pop("TASKSCOPE_USAGE", None)
    done = subprocess.run([sys.executable, "-c", PARSL_RUN, endpoint, str(level), executor, str(run_dir)],
                          capture_output=True, text=True, timeout=240, env=env)
    if done.returncode != 0:
        pytest.fail(f"Parsl run failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- Parsl ------------------------------------------------------------------------------------

def test_real_parsl_runs_at_levels_1_2_3_are_delivered_and_joined(collector, tmp_path):
    runs = {level: run_parsl(endpoint_of(collector), level, executor, tmp_path / f"runinfo{level}")
            for level, executor in [(1, "threads"), (2, "htex"), (3, "threads")]}
    store = stop_and_open(collector)
    stored = usage_events(store)
    assert collector.stats.rejected == 0

    for level, run in runs.items():
        mine = [e for e in stored if e["run_id"] == run["correlator"]]
        # every message Parsl built is stored, field for field, once
        assert [e["attrs"] for e in mine] == run["messages"]
        assert [e["event"] for e in mine] == ["usage.start"] + (["usage.end"] if level == 3 else [])
        start = mine[0]["attrs"]
        assert start["parsl_v"] == parsl.__version__
        assert start["python_v"] == platform.python_version()
        assert start["platform.system"] == platform.system()
        assert start["tracking_level"] == level
        assert start["project_name"] == PROJECT
        assert ("components" in start) == (level >= 2)
        assert ("start" in start) == (level == 3)
        if level >= 2:
            names = [c["c"] if isinstance(c, dict) else c for c in start["components"]]
            assert run["executor"] in names
        if level == 2:
            assert "parsl.providers.local.local.LocalProvider" in names
            assert "parsl.launchers.launchers.SingleNodeLauncher" in names

    # start and end of the level-3 run are one run with the task counts of the end message
    by_correlator = reports.usage_runs(store).set_index("correlator")
    assert set(by_correlator.index) == {run["correlator"] for run in runs.values()}
    level3 = by_correlator.loc[runs[3]["correlator"]]
    assert bool(level3.has_start) and bool(level3.has_end)
    assert (level3.task_count, level3.failures) == (runs[3]["apps"], runs[3]["fails"])
    assert level3.version == parsl.__version__ and level3.tracking_level == 3
    assert not by_correlator.loc[runs[1]["correlator"]].has_end

    board = reports.leaderboard(store)
    assert board.project_name.tolist() == [PROJECT]
    assert int(board.points[0]) == sum(2 if level == 3 else 1 for level in runs)
    assert int(board.runs[0]) == len(runs)
    store.close()


def test_parsl_sender_fails_to_pickle_and_the_adapter_delivers(collector):
    """Parsl issue #4038 as it is in this Parsl, then the same call through the adapter."""
    import parsl.usage_tracking.usage as parsl_usage

    from taskscope.parsl import usage as adapter

    host, port = collector.address
    message = protocol.encode({"correlator": "pickle-check", "parsl_v": parsl.__version__, "tracking_level": 1})
    with pytest.raises(pickle.PicklingError, match="not the same object"):
        parsl_usage.udp_messenger(host, port, 1, message)
    assert adapter.enable()  # no endpoint: send where Parsl asks
    try:
        handle = parsl_usage.udp_messenger(host, port, 1, message)
        handle.join(5)
        assert not handle.is_alive()
    finally:
        adapter.disable()
    assert parsl_usage.udp_messenger.__qualname__.startswith("async_process")
    store = stop_and_open(collector)
    assert [(e["run_id"], e["attrs"]["parsl_v"]) for e in usage_events(store)] == [("pickle-check", parsl.__version__)]
    store.close()


# -- client -----------------------------------------------------------------------------------

def test_client_levels_and_correlated_end(collector):
    sent = {}
    for level in (1, 2, 3):
        with UsageTracker("mytool", "1.2", level=level, project_name="p", endpoint=endpoint_of(collector),
                          components=["mytool.Pool"]) as tracker:
            for failed in (False, False, True):
                tracker.record_task(failed=failed)
        sent[tracker.correlator] = tracker.messages
    store = stop_and_open(collector)
    runs = reports.usage_runs(store).set_index("correlator")
    for correlator, messages in sent.items():
        level = messages[0]["tracking_level"]
        assert len(messages) == (2 if level == 3 else 1)
        assert [e["attrs"] for e in usage_events(store) if e["run_id"] == correlator] == messages
        run = runs.loc[correlator]
        assert (run["product"], run["version"], run["tracking_level"]) == ("mytool", "1.2", level)
        if level == 3:
            assert (run.task_count, run.failures) == (3, 1)
    assert int(reports.leaderboard(store).points[0]) == 1 + 1 + 2
    store.close()


@pytest.mark.parametrize("variable, value", [("DO_NOT_TRACK", "1"), ("TASKSCOPE_USAGE", "0")])
def test_opt_out_variables_send_nothing(collector, monkeypatch, variable, value):
    from taskscope.parsl import usage as adapter

    monkeypatch.setenv(variable, value)
    tracker = UsageTracker("mytool", "1.2", level=3, endpoint=endpoint_of(collector))
    assert tracker.level == 0 and tracker.off_reason == f"{variable}={value}"
    assert tracker.start() is None and tracker.end() is None and tracker.messages == []
    adapter.enable(endpoint=endpoint_of(collector))
    try:
        import parsl.usage_tracking.usage as parsl_usage

        handle = parsl_usage.udp_messenger("ignored", 1, 1, protocol.encode({"correlator": "x", "tracking_level": 1}))
        handle.join(5)
        assert "not sent" in handle.delivery.outcome
    finally:
        adapter.disable()
    # a control datagram shows the collector was listening all along
    monkeypatch.delenv(variable)
    control = UsageTracker("mytool", "1.2", level=1, endpoint=endpoint_of(collector))
    control.start()
    assert control.close(5)
    assert wait_until(lambda: collector.stats.parsed >= 1)
    store = stop_and_open(collector)
    assert [e["run_id"] for e in usage_events(store)] == [control.correlator]
    store.close()


def test_local_mode_records_and_logs_without_sending(collector, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="taskscope.usage")
    local = UsageTracker("mytool", "1.2", level=3, endpoint="local")
    with local:
        local.record_task()
    monkeypatch.setenv("TASKSCOPE_USAGE", "local")
    forced = UsageTracker("mytool", "1.2", level=2, endpoint=endpoint_of(collector))
    forced.start()
    assert [m.get("tracking_level") for m in local.messages] == [3, None] and "end" in local.messages[1]
    assert forced.local and forced.messages[0]["components"] == [] and forced.deliveries == []
    logged = [r.getMessage() for r in caplog.records if "local mode, not sent" in r.getMessage()]
    assert len(logged) == 3 and all(m["correlator"] in text for m, text in zip(local.messages, logged))
    store = stop_and_open(collector)
    assert collector.stats.received == 0 and usage_events(store) == []
    store.close()


def test_unresolvable_host_never_raises():
    tracker = UsageTracker("mytool", "1.2", level=3, endpoint="no-such-host.invalid:50077", dns_timeout=60)
    assert tracker.start() is not None
    assert tracker.end(task_count=1) is not None
    assert tracker.close(timeout=70)
    outcomes = [d.outcome for d in tracker.deliveries]
    # the lookup fails at once (.invalid never resolves): the outcome says so, not that it timed out
    assert all("did not resolve: " in outcome and "within" not in outcome for outcome in outcomes), outcomes


def test_bad_level_or_endpoint_is_a_value_error():
    with pytest.raises(ValueError):
        UsageTracker("mytool", "1.2", level=4)
    with pytest.raises(ValueError):
        UsageTracker("mytool", "1.2", level=1, endpoint="host:99999")


def _send_from_child(tracker: UsageTracker, results) -> None:
    tracker.start()
    results.put((os.getpid(), tracker.correlator, tracker.close(5)))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_client_works_in_forked_and_spawned_children(collector, method):
    parent = UsageTracker("mytool", "1.2", level=1, endpoint=endpoint_of(collector))
    parent.start()  # the parent's sender thread exists before the child is made
    assert parent.close(5)
    context = multiprocessing.get_context(method)
    results = context.Queue()
    child_tracker = UsageTracker("mytool", "1.2", level=1, endpoint=endpoint_of(collector))
    child = context.Process(target=_send_from_child, args=(child_tracker, results))
    child.start()
    pid, correlator, closed = results.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0 and closed and pid != os.getpid()
    assert correlator == child_tracker.correlator  # the tracker crossed over intact
    assert wait_until(lambda: collector.stats.parsed >= 2)
    store = stop_and_open(collector)
    assert sorted(e["run_id"] for e in usage_events(store)) == sorted([parent.correlator, correlator])
    store.close()


def test_client_import_stays_light():
    code = ("import sys, taskscope.usage; heavy = {'parsl', 'dask', 'duckdb', 'pandas', 'pyarrow'} & set(sys.modules); "
            "print(sorted(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- collector --------------------------------------------------------------------------------

def fuzz_datagrams(seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    valid = protocol.encode(protocol.start_message("fuzz-ok", "parsl", "2026.10.26", 3, "p", ["a.B"], 1))
    datagrams = [rng.randbytes(rng.randrange(0, 1500)) for _ in range(300)]
    datagrams += [valid[:cut] for cut in range(0, len(valid), 3)]                      # truncated JSON
    datagrams += [b"1" + b"{" + rng.randbytes(65000) for _ in range(3)]                 # 64 KB payloads
    datagrams += [b"1" + json.dumps({"correlator": "big", "pad": "x" * 64000}).encode()]
    datagrams += [bytes([version]) + valid[1:] for version in b"0239\x00\xff"]          # wrong version byte
    datagrams += [b"1[1, 2]", b"1{\"correlator\": 5}", b"1{\"a\": NaN}", b"1\xc3\x28{}", b"{\"uuid\": \"legacy\"}",
                  b"1{\"correlator\": \"nan\", \"x\": NaN}"]
    datagrams += [protocol.encode({"correlator": f"ok-{i}", "tracking_level": 1}) for i in range(50)]
    rng.shuffle(datagrams)
    return datagrams + [valid]


@pytest.mark.parametrize("use_recvmmsg", [True, False], ids=["recvmmsg", "recv"])
def test_fuzzed_datagrams_are_all_accounted_for(tmp_path, use_recvmmsg):
    collector = Collector(tmp_path / "usage.duckdb", port=0, commit_interval=0.1, use_recvmmsg=use_recvmmsg).start()
    datagrams = fuzz_datagrams()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for number, datagram in enumerate(datagrams):
            sock.sendto(datagram, collector.address)
            if number % 50 == 0:
                time.sleep(0.005)
    assert wait_until(lambda: collector.stats.parsed + collector.stats.rejected == len(datagrams))
    store = stop_and_open(collector)
    stats = collector.stats
    assert stats.received == len(datagrams) == stats.parsed + stats.rejected
    counts = stored_counts(store)
    assert (counts["events"], counts["rejected"]) == (stats.parsed, stats.rejected)

    # each datagram's fate, by its place in the spool, agrees with protocol.decode (the same rules in Python)
    fate = dict(store.con.execute(
        "SELECT line, NULL FROM events WHERE source = 'usage' UNION ALL SELECT record, reason FROM usage_rejected"
    ).fetchall())
    expected = {}
    for record, datagram in enumerate(datagrams, start=1):
        try:
            protocol.decode(datagram)
            expected[record] = None
        except protocol.MalformedDatagram as exc:
            expected[record] = exc.reason
    assert fate == expected
    reasons = Counter(reason for reason in expected.values() if reason)
    assert {protocol.OVERSIZED, protocol.UNKNOWN_VERSION, protocol.BAD_JSON, protocol.NOT_UTF8} <= set(reasons)
    assert stats.reasons == dict(reasons)
    assert store.con.execute("SELECT count(*) FROM usage_rejected WHERE head IS NULL AND size > 0").fetchall() == [(0,)]
    store.close()


def test_a_burst_is_stored_whole_with_its_text_compressed(tmp_path):
    """While the writer is behind (datagrams arriving faster than it stores them) every datagram
    received is stored, fields intact, and the messages' text is ZSTD-compressed on disk."""
    burst = Collector(tmp_path / "usage.duckdb", port=0, commit_rows=300, commit_interval=5.0).start()
    messages = [protocol.start_message(f"burst-{n}", "mytool", "1.0", 2, "p", ["mytool.executors.X"], 1795300000 + n)
                for n in range(3000)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for message in messages:
            sock.sendto(protocol.encode(message), burst.address)
    store = stop_and_open(burst)
    stats = burst.stats
    assert stats.received > 300 and stats.rejected == 0 and stats.parsed == stats.received
    stored = {e["run_id"]: e["attrs"] for e in usage_events(store)}
    assert len(stored) == stats.received and all(stored[m["correlator"]] == m for m in messages if m["correlator"] in stored)
    store.con.execute("CHECKPOINT")
    methods = {row[0] for row in store.con.execute(
        "SELECT compression FROM pragma_storage_info('events') WHERE column_name = 'attrs' AND segment_type <> 'VALIDITY'"
    ).fetchall()}
    assert methods == {"ZSTD"}
    store.close()


def test_an_older_store_format_keeps_duckdbs_own_compression(tmp_path):
    """ZSTD for text needs storage v1.2: on an older file forcing it would store text uncompressed."""
    import duckdb
    from taskscope.usage.storage import storage_compression

    con = duckdb.connect()
    con.execute(f"ATTACH '{tmp_path / 'old.duckdb'}' AS old (STORAGE_VERSION 'v0.10.2')")
    con.execute("USE old")
    assert storage_compression(con) == "auto"
    assert storage_compression(duckdb.connect(str(tmp_path / "new.duckdb"))) == "zstd"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_cli_collector(store: Path, port: int, datagrams: list[bytes], stop_signal: int) -> dict:
    spool_dir = Path(str(store) + ".spool")
    segments_before = list(spool_dir.glob("*.spool"))
    process = subprocess.Popen(
        [sys.executable, "-m", "taskscope.cli", "usage", "collect", "--port", str(port), "--store", str(store),
         "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the collector makes a new spool segment once it has bound the port
        assert wait_until(lambda: len(list(spool_dir.glob("*.spool"))) > len(segments_before) or process.poll(), 60)
        assert process.poll() is None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", port))
        time.sleep(0.2)
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_collector_restart_loses_nothing(tmp_path):
    store_path = tmp_path / "usage.duckdb"
    port = free_udp_port()
    first = [protocol.encode({"correlator": f"first-{i}", "tracking_level": 1}) for i in range(200)] + [b"junk"]
    stats = run_cli_collector(store_path, port, first, signal.SIGINT)
    assert stats["received"] == len(first) and (stats["parsed"], stats["rejected"]) == (200, 1)

    # a collector killed after spooling but before storing: its segment is on disk, not in the store
    crashed = SpoolWriter(Path(str(store_path) + ".spool"))
    orphans = [protocol.encode({"correlator": f"orphan-{i}", "tracking_level": 2}) for i in range(30)]
    crashed.write([spool_record(time.time(), orphan) for orphan in orphans])
    crashed.file.write(b"\x00\x01")  # and the first bytes of a record it never finished
    crashed.close()

    second = [protocol.encode({"correlator": f"second-{i}", "tracking_level": 3, "end": 1}) for i in range(100)]
    stats = run_cli_collector(store_path, port, second, signal.SIGTERM)
    assert stats["received"] == len(second) and stats["replayed"] == len(orphans)
    assert stats["parsed"] == len(second) + len(orphans)

    with taskscope.open(store_path, read_only=True) as store:
        correlators = [row[0] for row in store.con.execute(
            "SELECT run_id FROM events WHERE source = 'usage'").fetchall()]
        assert Counter(c.split("-")[0] for c in correlators) == {"first": 200, "orphan": 30, "second": 100}
        assert len(set(correlators)) == len(correlators)  # nothing stored twice
        assert store.con.execute("SELECT count(DISTINCT (file, line)) FROM events").fetchall() == [(330,)]


def test_a_store_with_the_older_progress_table_keeps_its_progress(tmp_path):
    """Stores written before commits were recorded one row each had `usage_spool` as a table
    (one row per segment, updated in place). The collector moves it to `usage_spool_commits`,
    so it replays only what that table said was not yet stored."""
    import duckdb

    store_path = tmp_path / "usage.duckdb"
    spool_dir = Path(str(store_path) + ".spool")
    segment = SpoolWriter(spool_dir)
    messages = [protocol.encode({"correlator": f"old-{i}", "tracking_level": 1}) for i in range(15)]
    _, _, _, end_of_ten = segment.write([spool_record(time.time(), message) for message in messages[:10]])
    segment.write([spool_record(time.time(), message) for message in messages[10:]])
    segment.close()
    with duckdb.connect(str(store_path)) as old:  # the older layout, as an older taskscope made it
        old.execute("""CREATE TABLE usage_spool (segment VARCHAR PRIMARY KEY, bytes_parsed BIGINT,
                       records_parsed BIGINT, parsed BIGINT, rejected BIGINT, updated_at DOUBLE)""")
        old.execute("INSERT INTO usage_spool VALUES (?, ?, 10, 10, 0, 0)", [segment.segment, end_of_ten])

    stats = Collector(store_path, port=0).start().stop()
    assert stats.replayed == 5 and stats.parsed == 5
    with taskscope.open(store_path, read_only=True) as store:
        stored = sorted(row[0] for row in store.con.execute("SELECT run_id FROM events WHERE source = 'usage'").fetchall())
        assert stored == [f"old-{i}" for i in range(10, 15)]
        kind = store.con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'usage_spool'").fetchall()
        assert kind == [("VIEW",)]
        progress = store.con.execute(
            "SELECT records_parsed, parsed FROM usage_spool WHERE segment = ?", [segment.segment]).fetchall()
        assert progress == [(15, 15)]


def test_two_writers_commit_in_spool_order(tmp_path):
    """Writers insert side by side but commit in the order the batches were received: every
    commit's records follow the previous commit's, with no gap, whatever finished first."""
    collector = Collector(tmp_path / "usage.duckdb", port=0, commit_interval=0.05, writers=2).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # a big burst, a quiet spell (the receiver hands it off), a small one: one writer takes
        # each, and the small one is inserted first
        for burst in range(12):
            for i in range(20000 if burst % 2 == 0 else 10):
                sock.sendto(protocol.encode({"correlator": f"w-{burst}-{i}", "tracking_level": 1}), collector.address)
            time.sleep(0.07 if burst % 2 == 0 else 0.5)
    store = stop_and_open(collector)
    commits = store.con.execute(
        "SELECT segment, first_record, last_record, end_offset, parsed + rejected FROM usage_spool_commits "
        "ORDER BY rowid").fetchall()
    store.close()
    assert len(commits) > 5  # several commits, so the order could have gone wrong
    for (segment, first, last, end, count), (next_segment, next_first, _, next_end, _) in zip(commits, commits[1:]):
        assert next_segment == segment and next_first == last + 1 and next_end > end
    assert commits[0][1] == 1 and sum(c[4] for c in commits) == collector.stats.received > 0


def test_a_burst_across_many_spool_segments_is_stored_whole(tmp_path):
    """Segments roll over past ~20 KB (checked before each write) during a burst: each batch the receiver hands on lies in one
    segment, every datagram is stored once, and each segment is recorded as stored to its end."""
    collector = Collector(tmp_path / "usage.duckdb", port=0, commit_interval=0.05)
    collector.spool = SpoolWriter(collector.spool_dir, max_bytes=20_000)  # before anything is received
    collector.start()
    sent = [protocol.encode({"correlator": f"seg-{i}", "tracking_level": 1, "pad": "x" * 300}) for i in range(3000)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for wave in range(0, len(sent), 100):
            for datagram in sent[wave:wave + 100]:
                sock.sendto(datagram, collector.address)
            # each wave (~37 KB) is read before the next is sent, so it starts a new segment however
            # much a starved receiver would otherwise drain per call
            assert wait_until(lambda: collector.stats.received == wave + 100)
    store = stop_and_open(collector)
    stats = collector.stats
    stored = [row[0] for row in store.con.execute(
        "SELECT run_id FROM events WHERE source = 'usage' ORDER BY file, line").fetchall()]
    progress = store.con.execute("SELECT segment, bytes_parsed, records_parsed FROM usage_spool").fetchall()
    store.close()
    assert stats.received == len(stored) == len(set(stored)) == stats.parsed > 1000 and stats.rejected == 0
    assert set(stored) <= {f"seg-{i}" for i in range(3000)}
    segment_files = {path.name: path.stat().st_size for path in collector.spool_dir.glob("*.spool")}
    assert len(progress) > 10  # the burst did span many segments
    for segment, bytes_parsed, records in progress:
        assert bytes_parsed == segment_files[segment] and records > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness per thread is Linux's")
def test_storing_yields_the_cpu_to_receiving(tmp_path):
    """The writers and DuckDB's threads run at a lower priority than the receiver, which keeps the
    niceness of the thread that started the collector."""
    from taskscope.usage.collector import WRITER_NICENESS

    started_at = os.getpriority(os.PRIO_PROCESS, 0)
    collector = Collector(tmp_path / "usage.duckdb", port=0).start()
    try:
        expected = {max(started_at, WRITER_NICENESS)}
        assert wait_until(lambda: all(writer.native_id for writer in collector._writers))
        # each writer lowers its own priority as it starts
        assert wait_until(lambda: {os.getpriority(os.PRIO_PROCESS, writer.native_id)
                                   for writer in collector._writers} == expected)
        niceness = {int(task): os.getpriority(os.PRIO_PROCESS, int(task)) for task in os.listdir("/proc/self/task")}
        writers = {writer.native_id for writer in collector._writers}
        assert {niceness[thread] for thread in writers} == expected
        assert niceness[collector._receiver.native_id] == started_at
        assert os.getpriority(os.PRIO_PROCESS, 0) == started_at  # this thread is untouched
        # DuckDB's worker threads, started when the store was opened, took the lower priority too
        duckdb_workers = [task for task, nice in niceness.items()
                          if task not in writers and task != collector._receiver.native_id and nice != started_at]
        assert duckdb_workers
    finally:
        collector.stop()


def test_the_write_ahead_log_is_folded_in_between_bursts(tmp_path):
    """Commits smaller than a row group go to DuckDB's WAL. The collector raises DuckDB's own
    checkpoint threshold (which would stall a commit mid-burst) and checkpoints once the writers
    are idle: after a burst of small commits the WAL is folded into the file, collector running."""
    from taskscope.usage.collector import QUIET_CHECKPOINT_WAL_BYTES

    store_path = tmp_path / "usage.duckdb"
    collector = Collector(store_path, port=0, commit_rows=4000, commit_interval=0.05).start()
    try:
        setting = collector.store.con.cursor().execute("SELECT current_setting('checkpoint_threshold')").fetchall()
        assert setting[0][0].replace(" ", "") in {"1GB", "1.0GB", "1000.0MB", "953.6MiB"}
        sent = 40_000  # ~26 MB of WAL: past the quiet threshold, far below DuckDB's raised one
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for number in range(sent):
                sock.sendto(protocol.encode({"correlator": f"wal-{number}", "tracking_level": 1, "pad": "y" * 400}),
                            collector.address)
                if number % 200 == 0:
                    time.sleep(0.002)
        assert wait_until(lambda: collector.stats.parsed == collector.stats.received > 30_000, timeout=60)
        assert collector.stats.commits > 5  # many small commits: WAL-bound
        wal = Path(str(store_path) + ".wal")
        assert wait_until(lambda: not wal.exists() or wal.stat().st_size < QUIET_CHECKPOINT_WAL_BYTES, timeout=30)
    finally:
        collector.stop()


def test_spool_records_read_back_whole_and_checked(tmp_path):
    """What the writers read back from the spool is what was written; lengths that disagree with
    the records' headers are an error, not silently shifted payloads."""
    import numpy as np
    from taskscope.usage.spool import read_records

    rng = random.Random(11)
    payloads = [b"", b"1{}", rng.randbytes(65507)] + [rng.randbytes(rng.randrange(0, 2000)) for _ in range(2000)]
    writer = SpoolWriter(tmp_path)
    times = [1_700_000_000.0 + number / 7 for number in range(len(payloads))]
    segment, first, start, end = writer.write([spool_record(ts, payload) for ts, payload in zip(times, payloads)])
    assert (first, start) == (1, len(b"TSUSPOOL1\n"))
    lengths = np.array([len(payload) for payload in payloads], dtype=np.uint32)
    read_times, read_payloads = read_records(tmp_path / segment, start, end, lengths)
    assert read_times.tolist() == times and read_payloads.to_pylist() == payloads
    wrong = lengths.copy()
    wrong[[1, 2]] = wrong[[2, 1]]  # same total, shifted boundaries
    with pytest.raises(ValueError, match="do not match"):
        read_records(tmp_path / segment, start, end, wrong)
    with pytest.raises(ValueError, match="records need"):
        read_records(tmp_path / segment, start, end - 1, lengths)


def test_retention_deletes_old_usage_and_spool(tmp_path):
    store_path = tmp_path / "usage.duckdb"
    spool_dir = Path(str(store_path) + ".spool")
    with Collector(store_path, port=0, commit_interval=0.05) as running:
        UsageTracker("mytool", "1", level=1, endpoint=endpoint_of(running)).start()
        assert wait_until(lambda: running.stats.parsed == 1)
    old_segments = list(spool_dir.glob("*.spool"))
    with taskscope.open(store_path) as store:  # make that run, and its spool segment, 40 days old
        store.con.execute("UPDATE events SET ts = ts - 40 * 86400 WHERE source = 'usage'")
    for path in old_segments:
        os.utime(path, (time.time() - 40 * 86400,) * 2)
    with Collector(store_path, port=0, retention_days=30, commit_interval=0.05) as running:
        recent = UsageTracker("mytool", "1", level=1, endpoint=endpoint_of(running))
        recent.start()
        assert wait_until(lambda: running.stats.parsed == 1)
    with taskscope.open(store_path, read_only=True) as store:
        assert [e["run_id"] for e in usage_events(store)] == [recent.correlator]
    assert not any(path.exists() for path in old_segments)


def test_spool_keeps_no_empty_segment_and_by_default_drops_stored_ones_after_a_week(tmp_path):
    from taskscope.usage.collector import DEFAULT_SPOOL_RETENTION_DAYS

    store_path = tmp_path / "usage.duckdb"
    spool_dir = Path(str(store_path) + ".spool")
    for _ in range(3):  # starts and stops without a datagram leave no segment behind
        Collector(store_path, port=0).start().stop()
    assert list(spool_dir.glob("*.spool")) == []

    with Collector(store_path, port=0, commit_interval=0.05) as running:
        UsageTracker("mytool", "1", level=1, endpoint=endpoint_of(running)).start()
        assert wait_until(lambda: running.stats.parsed == 1)
    stored = list(spool_dir.glob("*.spool"))
    assert len(stored) == 1
    os.utime(stored[0], (time.time() - (DEFAULT_SPOOL_RETENTION_DAYS - 1) * 86400,) * 2)
    Collector(store_path, port=0).start().stop()  # no --retention-days: a 6-day-old segment stays
    assert stored[0].exists()
    os.utime(stored[0], (time.time() - (DEFAULT_SPOOL_RETENTION_DAYS + 1) * 86400,) * 2)
    Collector(store_path, port=0).start().stop()  # 8 days old and in the store: deleted
    assert not stored[0].exists() and list(spool_dir.glob("*.spool")) == []
    with taskscope.open(store_path, read_only=True) as store:
        assert len(usage_events(store)) == 1  # the store keeps everything


# -- queries ----------------------------------------------------------------------------------

def synthetic_runs(seed: int = 3) -> list[dict]:
    """Runs with known fields and times: versions appear on different days, some datagrams lost."""
    rng = random.Random(seed)
    base = 1_780_000_000.0
    versions = {"2026.1.1": 0, "2026.2.1": 30, "2026.3.1": 60}
    runs = []
    for number in range(80):
        version = rng.choice([v for v, day in versions.items()])
        day = versions[version] + rng.randrange(0, 50)
        level = rng.choice([1, 2, 3])
        tasks = rng.choice([0, 3, 40, 700, 12000])
        runs.append({
            "correlator": f"run-{number}", "ts": base + day * 86400 + rng.randrange(0, 86400),
            "product": rng.choice(["parsl", "parsl", "mytool"]), "version": version,
            "python_v": rng.choice(["3.10.4", "3.11.7", "3.12.1"]), "platform": rng.choice(["Linux", "Darwin"]),
            "level": level, "project": rng.choice([None, "alpha", "beta"]),
            "components": rng.sample(["x.executors.A", "x.providers.B", "x.launchers.C", "x.Config"], 2),
            "tasks": tasks, "failures": rng.randrange(0, tasks + 1), "duration": rng.choice([0.5, 5, 100, 5000, 90000]),
            "lose": rng.choice([None, None, None, "start", "end"]) if level == 3 else None,
        })
    return runs


def store_synthetic(runs: list[dict]):
    store = taskscope.open(":memory:")
    rows = []
    for run in runs:
        product = run["product"]
        start = protocol.start_message(run["correlator"], product, run["version"], run["level"], run["project"],
                                       run["components"], int(run["ts"]))
        start["python_v"], start["platform.system"] = run["python_v"], run["platform"]
        if product == "parsl":  # Parsl's own shape: no product field, parsl_v
            del start["product"]
        if run["lose"] != "start":
            rows.append((run["ts"], "usage.start", run["correlator"], json.dumps(start)))
        if run["level"] == 3 and run["lose"] != "end":
            end = protocol.end_message(run["correlator"], product, run["project"], run["components"], int(run["ts"]),
                                       int(run["ts"] + run["duration"]), run["tasks"], run["failures"])
            if product == "parsl":
                del end["product"]
                end["components"][0]["c"] = "parsl.dataflow.dflow.DataFlowKernel"
            rows.append((run["ts"] + run["duration"], "usage.end", run["correlator"], json.dumps(end)))
    store.con.executemany("INSERT INTO events (ts, source, event, run_id, attrs) VALUES (?, 'usage', ?, ?, ?)", rows)
    return store


@pytest.fixture(scope="module")
def synthetic():
    runs = synthetic_runs()
    store = store_synthetic(runs)
    yield runs, store
    store.close()


def test_queries_counts_shares_and_leaderboard(synthetic):
    runs, store = synthetic
    seen = [r for r in runs]  # every run has a start or an end
    python = reports.python_versions(store).set_index("python_version").runs.to_dict()
    assert python == Counter(r["python_v"].rsplit(".", 1)[0] for r in seen if r["lose"] != "start")
    assert reports.platforms(store).set_index("platform").runs.to_dict() == Counter(
        r["platform"] for r in seen if r["lose"] != "start")
    assert reports.levels(store).set_index("tracking_level").runs.to_dict() == Counter(r["level"] for r in seen)
    assert reports.levels(store).share.sum() == pytest.approx(1.0)
    versions = reports.product_versions(store).set_index(["product", "version"]).runs.to_dict()
    assert versions == Counter((r["product"], r["version"]) for r in seen if r["lose"] != "start")

    points = Counter()
    for r in seen:
        if r["project"]:
            points[r["project"]] += 2 if r["level"] == 3 else 1
    board = reports.leaderboard(store)
    assert board.set_index("project_name").points.to_dict() == points
    assert board.points.is_monotonic_decreasing
    assert reports.leaderboard(store, product="mytool").set_index("project_name").runs.to_dict() == Counter(
        r["project"] for r in seen if r["project"] and r["product"] == "mytool")

    used = Counter(c for r in seen if r["level"] >= 2 for c in r["components"])
    table = reports.components(store).set_index("component")
    assert table.runs.to_dict() == used
    assert table.kind.to_dict()["x.executors.A"] == "executor" and table.kind.to_dict()["x.Config"] == "other"


def test_queries_level3_distributions_and_failures(synthetic):
    runs, store = synthetic
    ended = [r for r in runs if r["level"] == 3 and r["lose"] != "end"]
    times = reports.execution_times(store)
    assert times.runs.sum() == len(ended)
    assert times.set_index("bucket").runs.to_dict()[">= 1 day"] == sum(r["duration"] >= 86400 for r in ended)
    assert times.set_index("bucket").runs.to_dict()["< 1 s"] == sum(r["duration"] < 1 for r in ended)
    counts = reports.task_counts(store).set_index("lower_tasks").runs.to_dict()
    assert counts == Counter(0 if r["tasks"] == 0 else 10 ** (len(str(r["tasks"])) - 1) for r in ended)
    rates = reports.failure_rates(store)
    assert rates.runs.sum() == len(ended)
    for row in rates.dropna(subset=["version"]).itertuples():  # a run whose start was lost has no version
        product, version = row.product, row.version
        mine = [r for r in ended if (r["product"], r["version"]) == (product, version) and r["lose"] != "start"]
        assert (row.runs, row.tasks, row.failures) == (len(mine), sum(r["tasks"] for r in mine),
                                                      sum(r["failures"] for r in mine))
        assert row.runs_with_failures == sum(r["failures"] > 0 for r in mine)


def installed_days(run: dict, first_seen: dict) -> float:
    """A run's installation age: since its release (Parsl's versions are dates), else since first seen."""
    if run["product"] == "parsl":
        released = datetime.strptime(run["version"], "%Y.%m.%d").replace(tzinfo=timezone.utc).timestamp()
    else:
        released = first_seen[(run["product"], run["version"])]
    return (run["ts"] - released) / 86400


def test_queries_over_time_age_and_adoption(synthetic):
    runs, store = synthetic
    started = [r for r in runs if r["lose"] != "start"]

    def seen_at(r):  # a run whose start was lost is seen when its end arrives
        return r["ts"] if r["lose"] != "start" else r["ts"] + r["duration"]

    per_day = reports.runs_over_time(store, period="day")
    assert per_day.runs.sum() == len(runs)
    assert per_day.groupby("product").runs.sum().to_dict() == Counter(r["product"] for r in runs)
    with pytest.raises(ValueError):
        reports.runs_over_time(store, period="fortnight")

    first_seen = {}
    for r in started:
        key = (r["product"], r["version"])
        first_seen[key] = min(first_seen.get(key, r["ts"]), r["ts"])
    ages = [installed_days(r, first_seen) for r in started]
    age = reports.installation_age(store).set_index("bucket")
    assert age.runs.sum() == len(started)
    assert age.runs["< 1 week"] == sum(a < 7 for a in ages) and age.runs["1-4 weeks"] == sum(7 <= a < 28 for a in ages)
    assert age.runs_first_seen.sum() == sum(r["product"] == "mytool" for r in started)  # no release-date table

    adoption = reports.version_adoption(store, product="parsl", weeks=4)
    row = adoption[(adoption.version == "2026.2.1") & (adoption.week == 1)].iloc[0]
    start = first_seen[("parsl", "2026.2.1")] + 7 * 86400
    window = [r for r in runs if r["product"] == "parsl" and start <= seen_at(r) < start + 7 * 86400]
    assert row.product_runs == len(window)
    assert row.runs == sum(r["version"] == "2026.2.1" and r["lose"] != "start" for r in window)


def test_adoption_summary_equals_a_hand_count_for_release_dates_and_first_seen(synthetic):
    """Weeks until 25/50/75 % of a week's runs used a release or a newer one, counted by hand: for
    Parsl's releases (dated at midnight by their version, the per-day path) and for mytool's (first
    seen at any second of a day, the per-run path)."""
    runs, store = synthetic
    started = [r for r in runs if r["lose"] != "start"]  # a run whose start was lost has no version
    first_seen: dict[tuple, float] = {}
    for r in started:
        first_seen[(r["product"], r["version"])] = min(first_seen.get((r["product"], r["version"]), r["ts"]), r["ts"])

    def released(product: str, version: str) -> float:
        if product != "parsl":
            return first_seen[(product, version)]
        return datetime.strptime(version, "%Y.%m.%d").replace(tzinfo=timezone.utc).timestamp()

    summary = reports.adoption_summary(store).set_index(["product", "version"])
    assert set(summary.index) == set(first_seen)
    assert any(released(*key) % 86400 for key in first_seen) and any(not released(*key) % 86400 for key in first_seen)
    for product, version in first_seen:
        since = released(product, version)
        weeks: dict[int, list[bool]] = {}
        for r in started:
            if r["product"] == product and r["ts"] >= since:
                weeks.setdefault(int((r["ts"] - since) // (7 * 86400)), []).append(
                    released(product, r["version"]) >= since)
        for share, column in zip(reports.ADOPTION_SHARES, ["weeks_to_25", "weeks_to_50", "weeks_to_75"]):
            reached = [week for week, newer in weeks.items() if sum(newer) / len(newer) >= share]
            got = summary.loc[(product, version), column]
            assert (None if pd.isna(got) else int(got)) == (min(reached) if reached else None), (product, version)


def test_queries_since_keeps_later_runs_but_first_seen_counts_all(synthetic):
    runs, store = synthetic
    since = 1_780_000_000.0 + 45 * 86400

    def seen_at(r):
        return r["ts"] if r["lose"] != "start" else r["ts"] + r["duration"]

    later = [r for r in runs if seen_at(r) >= since]
    assert 0 < len(later) < len(runs)
    assert reports.runs_over_time(store, since=since).runs.sum() == len(later)
    assert reports.leaderboard(store, since=since).set_index("project_name").runs.to_dict() == Counter(
        r["project"] for r in later if r["project"])
    first_seen = {}
    for r in runs:
        if r["lose"] != "start":
            key = (r["product"], r["version"])
            first_seen[key] = min(first_seen.get(key, r["ts"]), r["ts"])
    ages = [installed_days(r, first_seen) for r in later if r["lose"] != "start"]
    age = reports.installation_age(store, since=since).set_index("bucket").runs.to_dict()
    assert age["< 1 week"] == sum(a < 7 for a in ages) and sum(age.values()) == len(ages)
    adopted = set(map(tuple, reports.version_adoption(store, since=since)[["product", "version"]].values))
    assert adopted == {key for key, first in first_seen.items() if first >= since}
    assert reports.parse_since("2026-06-01") == reports.parse_since("2026-06-01T00:00:00+00:00") == 1780272000.0
    with pytest.raises(ValueError, match="since must be"):
        reports.parse_since("last tuesday")


def test_cli_report_matches_the_query(synthetic, tmp_path):
    runs, store = synthetic
    path = tmp_path / "usage.duckdb"
    store.con.execute(f"ATTACH '{path}' AS copy")
    store.con.execute("CREATE TABLE copy.events AS SELECT * FROM events")
    store.con.execute("CREATE TABLE copy.ingested_files AS SELECT * FROM ingested_files")
    store.con.execute("DETACH copy")
    done = subprocess.run([sys.executable, "-m", "taskscope.cli", "usage", "report", "leaderboard", "--store", str(path),
                           "--format", "json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    printed = {row["project_name"]: row["points"] for row in json.loads(done.stdout)}
    assert printed == reports.leaderboard(store).set_index("project_name").points.to_dict()


def test_report_tables_show_dates_as_dates(collector, tmp_path):
    """A release date and a period of days are dates: a table shows `2025-06-02`, not `00:00:00.000`
    with the day only in its title; JSON and CSV keep them as they were."""
    releases = tmp_path / "releases.csv"
    releases.write_text("product,version,released\nmytool,1.2.0,2025-06-02\n")
    with UsageTracker("mytool", "1.2.0", level=3, endpoint=endpoint_of(collector)) as tracker:
        tracker.record_task()
    stop_and_open(collector).close()
    store = str(collector.store_path)

    def report(*args: str) -> str:
        done = invoke("usage", "report", *args, "--store", store, "--releases", releases, env={"COLUMNS": "250"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    def column(table: str, header: str) -> list[str]:
        lines = table.splitlines()
        [head] = [number for number, line in enumerate(lines) if re.search(rf"\b{header}\b", line)]
        start = lines[head].index(header)
        return [line[start:].split("  ")[0].strip() for line in lines[head + 2:] if line.strip()]

    json_runs = json.loads(report("runs", "--format", "json"))
    day = datetime.fromtimestamp(json_runs[0]["ts"], timezone.utc).strftime("%Y-%m-%d")
    assert json_runs[0]["version_released"] == datetime(2025, 6, 2, tzinfo=timezone.utc).timestamp()
    assert column(report("runs"), "version_released") == ["2025-06-02"]
    assert column(report("adoption-summary"), "released") == ["2025-06-02"]
    for period in ("day", "month"):
        start = day if period == "day" else day[:8] + "01"
        assert column(report("over-time", "--period", period), "period") == [start]
        assert json.loads(report("over-time", "--period", period, "--format", "json"))[0]["period"] == \
            f"{start}T00:00:00+00:00"
        assert report("over-time", "--period", period, "--format", "csv").splitlines()[1].startswith(
            f"{start} 00:00:00+00:00,mytool,1")


def test_segments_rolled_over_during_a_long_replay_are_stored_once(tmp_path):
    """An earlier run's spool takes a while to replay; meanwhile this run's burst fills and rolls
    over segments of its own. Those must not be replayed too: each datagram is stored once."""
    store_path = tmp_path / "usage.duckdb"
    crashed = SpoolWriter(Path(str(store_path) + ".spool"))
    orphans = [protocol.encode({"correlator": f"orphan-{i}", "tracking_level": 1}) for i in range(60_000)]
    crashed.write([spool_record(time.time(), orphan) for orphan in orphans])
    crashed.close()

    collector = Collector(store_path, port=0, commit_interval=0.05)
    collector.spool = SpoolWriter(collector.spool_dir, max_bytes=20_000)  # rolls over every ~20 KB
    collector.start()
    sent = [protocol.encode({"correlator": f"burst-{i}", "tracking_level": 1, "pad": "x" * 300}) for i in range(2000)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for number, datagram in enumerate(sent):
            sock.sendto(datagram, collector.address)
            if number % 100 == 0:
                time.sleep(0.01)
    store = stop_and_open(collector)
    stats = collector.stats
    stored = [row[0] for row in store.con.execute("SELECT run_id FROM events WHERE source = 'usage'").fetchall()]
    store.close()
    assert stats.replayed == len(orphans)
    assert len(stored) == len(set(stored)) == stats.received + len(orphans) == stats.parsed
