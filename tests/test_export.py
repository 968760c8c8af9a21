"""Exports round-trip on real runs: Parquet reads back as the events, the Perfetto trace is valid
Trace Event Format with the run's tries and phases, OTLP lines parse as LogsData with the same
records; and the `taskscope export` command."""

from __future__ import annotations

import base64
import errno
import json
import math
import os
from fractions import Fraction
from collections import defaultdict
from pathlib import Path
from urllib.parse import quote

import duckdb
import pytest

import taskscope
from conftest import CORPUS_RUNS, corpus_path, invoke, run_cli, tiny_filesystem
from taskscope.export.otlp import export_otlp
from taskscope.export.parquet import export_parquet
from taskscope.export.perfetto import export_perfetto
from taskscope.analyses.states import states
from taskscope.export.summary import ExportError
from taskscope.schema import EVENT_COLUMN_NAMES

#: a generic application's JSON lines: no run id, values of every JSON type
APP_EVENTS = [
    {"ts": 1795294500.25, "level": "INFO", "message": "stage in started", "files": 3, "ok": True, "ratio": 0.5},
    {"ts": 1795294500.5, "level": "WARNING", "message": "slow disk", "offset": -7, "tags": ["a", 1, 2.5, False]},
    {"ts": 1795294501.0, "level": "ERROR", "message": "stage in failed", "detail": {"path": "/x", "code": 13,
                                                                                  "nested": {"deep": 1}},
     "nothing": None},
]


def read_events(store, run_id=None):
    where = "" if run_id is None else "WHERE run_id = ?"
    return store.con.execute(f"SELECT * FROM events {where}", [] if run_id is None else [run_id])


@pytest.fixture(scope="module", params=CORPUS_RUNS)
def corpus_store(request):
    """A store holding one corpus run (ingested once per module)."""
    store = taskscope.open(":memory:")
    store.ingest(corpus_path(request.param))
    yield store
    store.close()


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory, text_run, json_two_htex_run):
    """Two fresh real runs plus a generic app's JSON lines with no run id."""
    folder = tmp_path_factory.mktemp("app")
    (folder / "app.jsonl").write_text("".join(json.dumps(event) + "\n" for event in APP_EVENTS))
    store = taskscope.open(":memory:")
    store.ingest(text_run, json_two_htex_run, folder / "app.jsonl")
    yield store
    store.close()


# ---------------------------------------------------------------- Parquet


def assert_parquet_equals_events(store, folder: Path, run_id=None) -> None:
    con = store.con
    source = f"read_parquet('{folder}/events/**/*.parquet', hive_partitioning = true)"
    read_back = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    stored = con.execute("DESCRIBE SELECT * FROM events").fetchall()
    assert [(row[0], row[1]) for row in read_back] == [(row[0], row[1]) for row in stored]
    assert [row[0] for row in read_back] == EVENT_COLUMN_NAMES
    run_filter = "" if run_id is None else "WHERE run_id = $run"
    for left, right in ((f"SELECT * FROM events {run_filter}", f"SELECT * FROM {source}"),
                        (f"SELECT * FROM {source}", f"SELECT * FROM events {run_filter}")):
        extra = con.execute(f"SELECT count(*) FROM ({left} EXCEPT ALL {right})", {"run": run_id} if run_id else {}).fetchall()
        assert extra == [(0,)], f"rows of {left!r} missing from {right!r}"
    count = con.execute(f"SELECT count(*) FROM events {run_filter}", {"run": run_id} if run_id else {}).fetchall()
    assert con.execute(f"SELECT count(*) FROM {source}").fetchall() == count


def test_parquet_reads_back_as_the_events(corpus_store, tmp_path):
    summary = export_parquet(corpus_store, tmp_path / "export")
    assert_parquet_equals_events(corpus_store, tmp_path / "export")
    assert summary.events == read_events(corpus_store).fetchall().__len__()


def test_parquet_reads_in_pandas_and_pyarrow_as_the_docs_say(mixed_store, tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    export_parquet(mixed_store, tmp_path / "export")
    stored = mixed_store.con.execute("SELECT run_id, count(*) FROM events GROUP BY ALL").fetchall()
    frame = pd.read_parquet(tmp_path / "export" / "events", partitioning=None)
    assert list(frame.columns) == EVENT_COLUMN_NAMES
    read = frame.groupby("run_id").size().to_dict() | {None: int(frame.run_id.isna().sum())}
    assert read == dict(stored)
    table = pq.read_table(tmp_path / "export" / "events", partitioning=None)
    assert table.num_rows == len(frame) and str(table.schema.field("run_id").type) == "string"


def test_parquet_has_one_partition_per_run_and_one_for_no_run(mixed_store, tmp_path):
    export_parquet(mixed_store, tmp_path / "export")
    assert_parquet_equals_events(mixed_store, tmp_path / "export")
    runs = [row[0] for row in mixed_store.con.execute("SELECT DISTINCT run_id FROM events WHERE run_id IS NOT NULL").fetchall()]
    assert len(runs) == 2
    partitions = {path.name for path in (tmp_path / "export" / "events").iterdir()}
    assert partitions == {f"run_id={quote(run, safe='-')}" for run in runs} | {"run_id=__HIVE_DEFAULT_PARTITION__"}
    for run in runs:  # each partition holds that run and nothing else
        rows = mixed_store.con.execute(
            f"SELECT DISTINCT run_id FROM read_parquet('{tmp_path}/export/events/run_id={run}/*.parquet')"
        ).fetchall()
        assert rows == [(run,)]
    no_run = mixed_store.con.execute(
        f"SELECT count(*), count(run_id) FROM read_parquet('{tmp_path}/export/events/run_id=__HIVE_DEFAULT_PARTITION__/*.parquet')"
    ).fetchall()
    assert no_run == [(len(APP_EVENTS), 0)]


def test_parquet_side_tables_make_the_export_usable_alone(mixed_store, tmp_path):
    export_parquet(mixed_store, tmp_path / "export")
    con = mixed_store.con
    for table in ("event_task_links", "run_dirs"):
        path = f"{tmp_path}/export/{table}/**/*.parquet" if table == "event_task_links" else f"{tmp_path}/export/{table}.parquet"
        stored = con.execute(f"SELECT count(*) FROM {table}").fetchall()
        assert stored[0][0] > 0, f"the fresh runs should have {table} rows"
        assert con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchall() == stored
        difference = con.execute(
            f"SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL SELECT * FROM read_parquet('{path}'))"
        ).fetchall()
        assert difference == [(0,)]


def test_parquet_of_one_run_and_re_export(mixed_store, tmp_path):
    run_id = mixed_store.con.execute("SELECT max(run_id) FROM events").fetchall()[0][0]
    folder = tmp_path / "export"
    summary = export_parquet(mixed_store, folder, run=run_id[:8])
    assert summary.runs == 1
    assert_parquet_equals_events(mixed_store, folder, run_id)
    assert [path.name for path in (folder / "events").iterdir()] == [f"run_id={run_id}"]

    with pytest.raises(ExportError, match="--overwrite"):
        export_parquet(mixed_store, folder)
    export_parquet(mixed_store, folder, overwrite=True)  # replaces, never mixes or duplicates
    assert_parquet_equals_events(mixed_store, folder)

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a taskscope export"):
        export_parquet(mixed_store, foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------- Perfetto

PHASES = {"B", "E", "X", "i", "I", "C", "b", "e", "n", "M"}


def trace_problems(trace: dict) -> list[str]:
    """What is wrong with `trace` per the Trace Event Format (and Perfetto's JSON importer)."""
    problems = []
    if trace.get("displayTimeUnit") not in ("ms", "ns"):
        problems.append("displayTimeUnit must be ms or ns")
    events = trace["traceEvents"]
    open_async: dict[tuple, list[str]] = defaultdict(list)
    complete: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for index, event in enumerate(events):
        where = f"event {index} {event.get('name')!r}"
        for key in ("ph", "ts", "pid", "tid", "name"):
            if key not in event:
                problems.append(f"{where}: no {key}")
        if event.get("ph") not in PHASES:
            problems.append(f"{where}: unknown ph {event.get('ph')!r}")
            continue
        if not isinstance(event.get("ts"), int) or not isinstance(event.get("pid"), int) or not isinstance(event.get("tid"), int):
            problems.append(f"{where}: ts, pid and tid must be integers (µs, ids)")
            continue
        if event["ph"] != "M" and (event["pid"] <= 0 or event["tid"] <= 0):
            problems.append(f"{where}: pid and tid must be positive")
        if "args" in event and not isinstance(event["args"], dict):
            problems.append(f"{where}: args must be an object")
        if event["ph"] == "X":
            if not isinstance(event.get("dur"), int) or event["dur"] < 0:
                problems.append(f"{where}: X needs a non-negative integer dur")
                continue
            complete[(event["pid"], event["tid"])].append((event["ts"], event["ts"] + event["dur"]))
        elif event["ph"] in ("b", "e"):
            key = (event["pid"], event.get("cat"), json.dumps(event.get("id2", event.get("id"))))
            if event.get("id2") is None and event.get("id") is None:
                problems.append(f"{where}: async event without id")
            if event["ph"] == "b":
                open_async[key].append(event["name"])
            elif not open_async[key] or open_async[key].pop() != event["name"]:
                problems.append(f"{where}: 'e' does not close the innermost open 'b' of its id")
        elif event["ph"] == "C":
            if not event.get("args") or not all(isinstance(v, (int, float)) for v in event["args"].values()):
                problems.append(f"{where}: counter needs numeric args")
        elif event["ph"] == "M" and event["name"] in ("process_name", "thread_name") and "name" not in event.get("args", {}):
            problems.append(f"{where}: metadata without args.name")
    problems += [f"async slices never closed: {key}" for key, stack in open_async.items() if stack]
    for track, spans in complete.items():
        spans.sort()
        for (start_a, end_a), (start_b, _) in zip(spans, spans[1:]):
            if start_b < end_a:
                problems.append(f"complete events overlap on track {track}: {start_a}-{end_a} and {start_b}")
    return problems


def load_trace(path: Path) -> dict:
    trace = json.loads(path.read_text())
    problems = trace_problems(trace)
    assert not problems, "\n".join(problems[:20])
    return trace


def worker_tries(trace: dict) -> dict[tuple, dict]:
    return {
        (e["args"]["run_id"], e["args"].get("task_id"), e["args"].get("try_id")): e
        for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "worker"
    }


def test_perfetto_trace_is_valid_and_has_every_worker_try(corpus_store, tmp_path):
    summary = export_perfetto(corpus_store, tmp_path / "run.json")
    trace = load_trace(tmp_path / "run.json")
    assert summary.details["trace_events"] == len(trace["traceEvents"])
    ran = corpus_store.con.execute(
        "SELECT DISTINCT run_id, task_id, try_id FROM events WHERE event = 'htex.worker.received'"
    ).fetchall()
    assert ran
    tries = worker_tries(trace)
    assert set(tries) == set(ran)
    assert len(tries) == sum(1 for e in trace["traceEvents"] if e["ph"] == "X")  # one complete event per try

    # every process and thread drawn on is named
    named = {(e["pid"], e["tid"]) for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    named_pids = {e["pid"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    for event in trace["traceEvents"]:
        if event["ph"] in ("X", "i"):
            assert (event["pid"], event["tid"]) in named
        assert event["pid"] in named_pids


def test_perfetto_try_duration_is_microseconds_of_the_logged_times(corpus_store, tmp_path):
    export_perfetto(corpus_store, tmp_path / "run.json")
    tries = worker_tries(load_trace(tmp_path / "run.json"))
    rows = corpus_store.con.execute(
        """SELECT run_id, task_id, try_id, min(ts) FILTER (WHERE event = 'htex.worker.received'),
                  min(ts) FILTER (WHERE event = 'htex.worker.finished')
           FROM events WHERE event IN ('htex.worker.received', 'htex.worker.finished')
           GROUP BY ALL HAVING count(*) = 2 ORDER BY task_id"""
    ).fetchall()
    assert rows
    for run_id, task_id, try_id, received, finished in rows:
        event = tries[(run_id, task_id, try_id)]
        assert abs(event["ts"] - received * 1e6) <= 0.5
        assert abs(event["dur"] - (finished - received) * 1e6) <= 1
        assert event["args"]["end"] == "htex.worker.finished"


def test_perfetto_dfk_phases_follow_the_logged_states(corpus_store, tmp_path):
    export_perfetto(corpus_store, tmp_path / "run.json")
    trace = load_trace(tmp_path / "run.json")
    drawn: dict[str, list[str]] = defaultdict(list)
    for event in trace["traceEvents"]:
        if event["ph"] == "b" and event["cat"] == "dfk" and "state" in event["args"]:
            drawn[event["args"]["task_id"]].append(event["name"])
    curve = states(corpus_store)  # the DFK state changes the states analysis finds in the logs
    entered = curve[curve.change > 0].sort_values("step")
    expected: dict[str, list[str]] = defaultdict(list)
    for task_id, state in zip(entered.task_id, entered.state):
        expected[task_id].append(state)
    # every state but the final one is a phase (all these runs completed)
    assert drawn == {task: sequence[:-1] for task, sequence in expected.items()}


def test_perfetto_failures_are_instants(corpus_store, tmp_path):
    export_perfetto(corpus_store, tmp_path / "run.json")
    trace = load_trace(tmp_path / "run.json")
    failed = {row[0] for row in corpus_store.con.execute("SELECT task_id FROM events WHERE event = 'task.try_failed'").fetchall()}
    assert failed, "every corpus run has a failing app"
    marked = {e["args"].get("task_id") for e in trace["traceEvents"] if e["ph"] == "i" and e["name"] == "task.try_failed"}
    assert marked == failed


def test_perfetto_queue_counters(mixed_store, tmp_path):
    export_perfetto(mixed_store, tmp_path / "run.json")
    trace = load_trace(tmp_path / "run.json")
    counters = defaultdict(list)
    for event in trace["traceEvents"]:
        if event["ph"] == "C":
            counters[(event["pid"], event["name"])].append(event["args"]["tasks"])
    names = {name for _, name in counters}
    assert {"waiting in DFK", "running on worker"} <= names
    slots = defaultdict(int)
    for event in trace["traceEvents"]:
        if event["ph"] == "M" and event["name"] == "thread_name" and event["args"]["name"].startswith("worker "):
            slots[event["pid"]] += 1
    for (pid, name), values in counters.items():
        assert min(values) >= 0
        if name == "running on worker":  # never more tasks running than worker slots in the run
            assert max(values) <= sum(slots.values())
    dfk_pids = {e["pid"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"
                and e["args"]["name"].endswith("· DFK")}
    assert {pid for pid, _ in counters} == dfk_pids and len(dfk_pids) == 2


def test_perfetto_one_run_of_several(mixed_store, tmp_path):
    run_id = mixed_store.con.execute("SELECT min(run_id) FROM events").fetchall()[0][0]
    summary = export_perfetto(mixed_store, tmp_path / "run.json", run=run_id)
    trace = load_trace(tmp_path / "run.json")
    assert summary.runs == 1
    assert {e["args"]["run_id"] for e in trace["traceEvents"] if "run_id" in e.get("args", {})} == {run_id}


def test_perfetto_moves_overlapping_tries_to_their_own_lane(tmp_path):
    """A worker whose log lost a finish line (clock skew, a killed process) can make a try seem to
    last into the next one on its slot; the trace must still never overlap on a track."""
    store = taskscope.open(":memory:")
    store.ingest(corpus_path("parsl-htex-jsonlog"))
    slot = store.con.execute(
        """SELECT manager_id, worker_id, list(executor_task_id ORDER BY ts) FROM events
           WHERE event = 'htex.worker.received' GROUP BY ALL HAVING count(*) >= 2 LIMIT 1"""
    ).fetchall()[0]
    first, second = slot[2][0], slot[2][1]
    next_start = store.con.execute(
        "SELECT ts FROM events WHERE event = 'htex.worker.received' AND executor_task_id = ?", [second]
    ).fetchall()[0][0]
    store.con.execute(
        "UPDATE events SET ts = ? WHERE event = 'htex.worker.finished' AND executor_task_id = ?", [next_start + 0.5, first]
    )
    summary = export_perfetto(store, tmp_path / "run.json")
    trace = load_trace(tmp_path / "run.json")  # asserts no overlap on any track
    assert summary.details["overlapping_tries"] >= 1
    lanes = {(e["pid"], e["tid"]) for e in trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name" and e["args"]["name"].startswith("overlapping tries")}
    moved = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["args"]["executor_task_id"] == second]
    assert len(moved) == 1 and (moved[0]["pid"], moved[0]["tid"]) in lanes
    assert len(worker_tries(trace)) == store.con.execute(
        "SELECT count(*) FROM events WHERE event = 'htex.worker.received'").fetchall()[0][0]


# ---------------------------------------------------------------- OTLP

#: OpenTelemetry logs data model, SeverityNumber: the first number of each range
SPEC_SEVERITY = {"DEBUG": 5, "INFO": 9, "WARNING": 13, "ERROR": 17, "CRITICAL": 21}


def parse_logs_data(line: str):
    """One OTLP/JSON line as a `LogsData` message (OTLP/JSON ids are hex; protobuf JSON wants base64)."""
    json_format = pytest.importorskip("google.protobuf.json_format")
    logs_pb2 = pytest.importorskip("opentelemetry.proto.logs.v1.logs_pb2")
    data = json.loads(line)
    for resource_logs in data["resourceLogs"]:
        for scope_logs in resource_logs["scopeLogs"]:
            for record in scope_logs["logRecords"]:
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64encode(bytes.fromhex(record[key])).decode()
    return json_format.Parse(json.dumps(data), logs_pb2.LogsData())


def any_value(value):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def otlp_records(path: Path, batch: int) -> list[dict]:
    records = []
    lines = path.read_text().splitlines()
    for line in lines:
        data = parse_logs_data(line)
        in_line = 0
        for resource_logs in data.resource_logs:
            resource = {kv.key: any_value(kv.value) for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    in_line += 1
                    records.append({
                        "resource": resource, "scope": scope_logs.scope.name, "time": record.time_unix_nano,
                        "severity_number": record.severity_number, "severity_text": record.severity_text,
                        "body": record.body.string_value if record.HasField("body") else None,
                        "trace_id": record.trace_id.hex(), "event_name": record.event_name,
                        "attributes": {kv.key: any_value(kv.value) for kv in record.attributes},
                    })
        assert 0 < in_line <= batch
    assert len(lines) == math.ceil(len(records) / batch)
    return records


def test_otlp_lines_parse_as_logs_data_and_round_trip(corpus_store, tmp_path):
    summary = export_otlp(corpus_store, tmp_path / "logs.jsonl", batch=500)
    records = otlp_records(tmp_path / "logs.jsonl", 500)
    rows = corpus_store.con.execute(
        "SELECT ts, level, message, source, host, pid, logger, file, line, run_id, task_id, event FROM events"
    ).fetchall()
    assert summary.events == len(records) == len(rows)

    assert sorted((row[1] or "", row[2] or "") for row in rows) == sorted((r["severity_text"], r["body"] or "") for r in records)
    by_place = {(r["attributes"]["file"], r["attributes"]["line"]): r for r in records}
    for ts, level, message, source, host, pid, logger, file, line, run_id, task_id, event in rows:
        record = by_place[(file, line)]
        assert float(Fraction(record["time"], 10**9)) == ts  # nanoseconds that read back as the very same float
        assert (record["severity_text"], record["body"]) == (level or "", message)
        assert record["severity_number"] == SPEC_SEVERITY.get(level, 0)  # 0: unspecified (monitoring rows)
        assert record["resource"]["service.name"] == source
        assert record["resource"].get("host.name") == host and record["resource"].get("process.pid") == pid
        assert record["scope"] == (logger or "")
        assert record["attributes"].get("run_id") == run_id and record["attributes"].get("task_id") == task_id
        assert record["attributes"]["event"] == event
        assert record["trace_id"] == run_id.replace("-", "")  # Parsl run ids are UUIDs


def test_otlp_types_the_attrs_of_a_generic_app(mixed_store, tmp_path):
    export_otlp(mixed_store, tmp_path / "logs.jsonl")
    records = otlp_records(tmp_path / "logs.jsonl", 1000)
    app = {r["body"]: r for r in records if r["resource"]["service.name"] == "jsonl"}
    assert set(app) == {event["message"] for event in APP_EVENTS}
    started, slow, failed = app["stage in started"], app["slow disk"], app["stage in failed"]
    assert started["attributes"]["files"] == 3 and started["attributes"]["ok"] is True
    assert started["attributes"]["ratio"] == 0.5
    assert slow["attributes"]["offset"] == -7 and slow["attributes"]["tags"] == ["a", 1, 2.5, False]
    assert slow["severity_number"] == SPEC_SEVERITY["WARNING"]
    assert failed["attributes"]["detail"] == {"path": "/x", "code": 13, "nested": '{"deep":1}'}
    assert failed["attributes"]["nothing"] is None and "nothing" in failed["attributes"]
    assert all(r["trace_id"] == "" and "run_id" not in r["attributes"] for r in app.values())


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def store_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "run.duckdb")
    done = invoke("ingest", str(corpus_path("parsl-2025-textlog")), "--store", path)
    assert done.returncode == 0, done.stderr
    return path


def test_cli_exports_each_format(store_file, tmp_path):
    events = taskscope.open(store_file, read_only=True)
    count = events.con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    events.close()
    for fmt, out in (("parquet", tmp_path / "pq"), ("perfetto", tmp_path / "t.json"), ("otlp", tmp_path / "l.jsonl")):
        done = invoke("export", "--format", fmt, "--out", str(out), "--run", "000", "--store", store_file)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"wrote {fmt} to {out}: {count:,} events of 1 run"), done.stdout
        assert out.exists()
    load_trace(tmp_path / "t.json")
    summary = json.loads(invoke("export", "-f", "otlp", "-o", str(tmp_path / "m.jsonl"), "--batch", "100",
                                "--json", "-s", store_file).stdout)
    assert summary["events"] == count and summary["lines"] == math.ceil(count / 100)


def test_cli_export_errors_are_clean(store_file, tmp_path):
    bad_format = invoke("export", "--format", "xml", "--out", str(tmp_path / "x"), "--store", store_file)
    assert bad_format.returncode == 2 and "parquet" in bad_format.stderr and "Traceback" not in bad_format.stderr
    for out in (tmp_path / "missing" / "t.json", Path("/proc/taskscope-trace.json")):
        done = invoke("export", "--format", "perfetto", "--out", str(out), "--store", store_file)
        assert done.returncode == 2, done.stdout
        assert done.stderr.startswith("error: cannot write") and len(done.stderr.strip().splitlines()) == 1
    assert invoke("export", "-f", "parquet", "-o", str(tmp_path / "pq"), "-s", store_file).returncode == 0
    again = invoke("export", "-f", "parquet", "-o", str(tmp_path / "pq"), "-s", store_file)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    unknown_run = invoke("export", "-f", "otlp", "-o", str(tmp_path / "l.jsonl"), "--run", "nope", "-s", store_file)
    assert unknown_run.returncode == 2 and "no run matches" in unknown_run.stderr


# ---------------------------------------------------------------- a full disk

#: what the full filesystem has left: less than either export of the corpus run needs
FREE_BYTES = 12 * 1024


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a real, nearly full filesystem (a 64 KiB tmpfs with FREE_BYTES left), so a
    write fails with ENOSPC part-way."""
    with tiny_filesystem(tmp_path / "full") as folder:
        space = os.statvfs(folder)
        (folder / "filler").write_bytes(b"\0" * (space.f_bavail * space.f_frsize - FREE_BYTES))
        space = os.statvfs(folder)
        assert space.f_bavail * space.f_frsize == FREE_BYTES
        yield folder


def test_cli_export_to_a_full_disk_leaves_no_file(store_file, full_disk):
    for fmt, name in (("perfetto", "t.json"), ("otlp", "o.jsonl")):
        done = run_cli("export", "--format", fmt, "--out", str(full_disk / name), "--store", store_file)
        assert done.returncode == 2, done.stdout
        assert done.stderr == f"error: cannot write {full_disk / name}: No space left on device\n"
        assert sorted(os.listdir(full_disk)) == ["filler"]  # neither the output nor its temporary file


def test_export_to_a_full_disk_keeps_the_previous_file(store_file, full_disk):
    store = taskscope.open(store_file, read_only=True)
    try:
        for export, name in ((export_perfetto, "t.json"), (export_otlp, "o.jsonl")):
            (full_disk / name).write_bytes(b"previous export\n")
            with pytest.raises(OSError) as failed:
                export(store, full_disk / name)
            assert failed.value.errno == errno.ENOSPC
            assert (full_disk / name).read_bytes() == b"previous export\n"
        assert sorted(os.listdir(full_disk)) == ["filler", "o.jsonl", "t.json"]
    finally:
        store.close()


def test_export_replaces_a_file_whole(store_file, tmp_path):
    store = taskscope.open(store_file, read_only=True)
    try:
        for export, name in ((export_perfetto, "t.json"), (export_otlp, "o.jsonl")):
            (tmp_path / name).write_bytes(b"previous export\n")
            export(store, tmp_path / name)
            assert (tmp_path / name).read_bytes().startswith(b'{"')
        assert sorted(os.listdir(tmp_path)) == ["o.jsonl", "t.json"]
        load_trace(tmp_path / "t.json")
    finally:
        store.close()


def test_an_existing_folder_given_as_a_file_is_named_a_folder_first(store_file, tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    for fmt in ("perfetto", "otlp"):
        for extra in ([], ["--overwrite"]):
            done = invoke("export", "-f", fmt, "-o", str(folder), *extra, "-s", store_file)
            assert done.returncode == 2, done.stdout
            assert done.stderr == f"error: {folder} is a folder: give a file name\n", (fmt, extra, done.stderr)


def test_parquet_of_an_empty_store_reads_back_as_an_empty_table_with_every_column(tmp_path):
    empty = tmp_path / "empty.duckdb"
    taskscope.open(str(empty)).close()
    done = invoke("export", "-f", "parquet", "-o", str(tmp_path / "pq"), "-s", str(empty))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote parquet to {tmp_path / 'pq'}: 0 events of 0 runs"), done.stdout
    con = duckdb.connect()
    for table, store_table in (("events", "events"), ("event_task_links", "event_task_links")):
        read = con.execute(f"SELECT * FROM read_parquet('{tmp_path / 'pq' / table}/**/*.parquet', "
                           "hive_partitioning = true)")
        assert read.fetchall() == [], table
        with taskscope.open(str(empty), read_only=True) as store:
            expected = store.con.execute(f"SELECT * FROM {store_table} LIMIT 0").description
        assert [c[0] for c in read.description] == [c[0] for c in expected], table
