"""Task ids are text: any system's ids ingest, values that do not fit a typed column stay in
attrs (counted), tasks order naturally, stores of the previous release migrate in place on open,
and a file that is not a store is refused before DuckDB opens it."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import duckdb
import pytest
from conftest import run_cli

import taskscope
from taskscope.emit import WideEventHandler, bind
from taskscope.schema import natural_sort_key
from taskscope.store_format import SCHEMA_VERSION

DATA = Path(__file__).parent / "data"
ID_COLUMNS = ("task_id", "executor_task_id")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


# ---- ids as text, values that do not fit ---------------------------------------------------


def test_text_ids_ingest_and_unfit_values_stay_in_attrs(tmp_path, store):
    events = write_jsonl(tmp_path / "events.jsonl", [
        {"ts": 1_700_000_000.0, "message": "start", "task_id": "sample-A", "try_id": "x", "pid": "w-1"},
        {"ts": 1_700_000_001.0, "message": "done", "task_id": "sample-A", "try_id": 2, "pid": 4242,
         "executor_task_id": "k-7"},
        {"ts": 1_700_000_002.0, "message": "int id", "task_id": 358, "try_id": "3.5"},
    ])
    report = store.ingest(events)
    assert report.values_in_attrs == 3  # "x", "w-1", "3.5": each counted once
    rows = store.sql("""SELECT message, task_id, try_id IS NULL AS no_try, pid IS NULL AS no_pid, try_id, pid,
                               executor_task_id, attrs FROM events ORDER BY ts""")
    first, second, third = rows.itertuples(index=False)
    assert (first.task_id, first.no_try, first.no_pid) == ("sample-A", True, True)
    assert json.loads(first.attrs)["try_id"] == "x"
    assert json.loads(first.attrs)["pid"] == "w-1"
    assert (second.task_id, int(second.try_id), int(second.pid), second.executor_task_id) == ("sample-A", 2, 4242, "k-7")
    assert third.task_id == "358"  # an integer id is stored as its text
    assert json.loads(third.attrs)["try_id"] == "3.5"  # not rounded to 4
    types = dict(store.sql("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_name = 'events'").itertuples(index=False))
    assert types["task_id"] == types["executor_task_id"] == "VARCHAR"


def test_an_array_object_or_boolean_is_no_id_and_stays_in_attrs(tmp_path, store):
    events = write_jsonl(tmp_path / "events.jsonl", [
        {"ts": 1_700_000_000.0, "message": "a", "run_id": ["r"], "task_id": "ok-1"},
        {"ts": 1_700_000_001.0, "message": "b", "run_id": "r", "parsl.task": [1, 2]},
        {"ts": 1_700_000_002.0, "message": "c", "task_id": {"a": 1}, "app_name": True},
        {"ts": 1_700_000_003.0, "message": "d", "task_id": 1.5, "executor_task_id": "[x]", "run_id": "true"},
        {"ts": 1_700_000_004.0, "message": "e", "task_id": [1], "parsl.task": 7},  # the next candidate key fills it
    ])
    report = store.ingest(events)
    assert report.values_in_attrs == 5  # ["r"], [1, 2], {"a": 1}, true, [1]
    rows = store.sql("SELECT message, run_id, task_id, app_name, executor_task_id, attrs FROM events ORDER BY ts")
    got = [tuple(None if value is None or value != value else value for value in row[:5])
           for row in rows.itertuples(index=False)]
    assert got == [("a", None, "ok-1", None, None), ("b", "r", None, None, None), ("c", None, None, None, None),
                   ("d", "true", "1.5", None, "[x]"), ("e", None, "7", None, None)]  # strings that read like JSON stay
    assert json.loads(rows["attrs"].iloc[2])["task_id"] == {"a": 1}


def test_a_whole_number_written_as_a_float_is_the_same_id(tmp_path, store):
    """`11.0` and `1e3` (a JavaScript or pandas writer's integers) name tasks `11` and `1000`, as
    `11` does; a fraction, a string and the record as logged stay as written."""
    events = write_jsonl(tmp_path / "events.jsonl", [
        {"ts": 1_700_000_000.0, "message": "a", "task_id": 11},
        {"ts": 1_700_000_001.0, "message": "b", "task_id": 11.0, "executor_task_id": -4.0},
        {"ts": 1_700_000_002.0, "message": "c", "parsl.task": 1e3},
        {"ts": 1_700_000_003.0, "message": "d", "task_id": "11.0"},
        {"ts": 1_700_000_004.0, "message": "e", "task_id": 11.5, "worker_id": 2.0},
    ])
    report = store.ingest(events)
    assert report.values_in_attrs == 0
    rows = store.sql("SELECT task_id, executor_task_id, worker_id, attrs FROM events ORDER BY ts")
    assert rows.task_id.tolist() == ["11", "11", "1000", "11.0", "11.5"]
    assert rows.executor_task_id.tolist()[1] == "-4"
    assert rows.worker_id.tolist()[4] == "2"
    assert json.loads(rows["attrs"].iloc[1])["task_id"] == 11.0  # the record as logged
    assert store.sql("SELECT count(DISTINCT task_id) AS n FROM events WHERE task_id LIKE '11%'").n.iloc[0] == 3


def test_numeric_levels_read_as_python_numbers_them(tmp_path, store):
    """Python's JSON formatters often write `levelno`: 40 is ERROR (a name beside it wins)."""
    events = write_jsonl(tmp_path / "events.jsonl", [
        {"ts": 1_700_000_000.0, "message": "a", "level": 20},
        {"ts": 1_700_000_001.0, "message": "b", "level": 40, "levelname": "ERROR"},
        {"ts": 1_700_000_002.0, "message": "c", "levelname": 10},
        {"ts": 1_700_000_003.0, "message": "d", "level": 25},
        {"ts": 1_700_000_004.0, "message": "e", "level": 40, "levelname": "Oops"},
    ])
    store.ingest(events)
    assert store.sql("SELECT level FROM events ORDER BY ts").level.tolist() == [
        "INFO", "ERROR", "DEBUG", "LEVEL 25", "OOPS"]


def test_cli_summary_counts_values_kept_in_attrs_once(tmp_path):
    events = write_jsonl(tmp_path / "events.jsonl", [
        {"ts": 1_700_000_000.0, "message": "start", "run_id": "r1", "task_id": "sample-A", "try_id": "x", "pid": "w-1"},
    ])
    done = run_cli("ingest", str(events), "--store", str(tmp_path / "s.duckdb"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("2 values kept in attrs: did not fit their column") == 1
    shown = run_cli("timeline", "--task", "sample-A", "--store", str(tmp_path / "s.duckdb"))
    assert shown.returncode == 0, shown.stderr
    assert "=== About task sample-A ===" in shown.stdout and "start" in shown.stdout


def test_timeline_of_a_task_whose_events_name_no_run(tmp_path):
    events = write_jsonl(tmp_path / "events.jsonl", [
        {"ts": 1_700_000_000.0, "message": "load", "task_id": "sample-A"},
        {"ts": 1_700_000_001.0, "message": "other task", "task_id": "sample-B"},
        {"ts": 1_700_000_002.0, "message": "save", "task_id": "sample-A"},
    ])
    store = str(tmp_path / "s.duckdb")
    assert run_cli("ingest", str(events), "--store", store).returncode == 0
    shown = run_cli("timeline", "--task", "sample-A", "--store", store)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:2] == ["=== About task sample-A ===", "run (none: its events name no run)"]
    assert [line.split("  ")[-2] for line in lines[2:]] == ["load", "save"]


def test_emit_bind_with_a_text_task_id(tmp_path, store):
    path = tmp_path / "app.jsonlog"
    handler = WideEventHandler(path)
    logger = logging.getLogger(f"test.ids_as_text.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        with bind(run_id="r1", task_id="sample-A", try_id="first", pid="w-1"):
            logger.info("working on %s", "sample-A")
        with bind(run_id="r1", task_id="sample-10"):
            logger.info("working")
        with bind(run_id="r1", task_id="sample-2"):
            logger.info("working")
    finally:
        logger.removeHandler(handler)
        handler.close()
    report = store.ingest(path)
    assert report.values_in_attrs == 2  # try_id "first" and pid "w-1"
    row = store.sql("SELECT task_id, try_id IS NULL AS no_try, pid, attrs FROM events WHERE message = 'working on sample-A'")
    assert (row.task_id[0], bool(row.no_try[0])) == ("sample-A", True)
    attrs = json.loads(row["attrs"][0])
    assert (attrs["try_id"], attrs["pid"]) == ("first", "w-1")
    assert row.pid[0] == os.getpid()  # the record's next candidate key that fits (`process`) fills the column
    listed = store.sql("SELECT task_id FROM events WHERE task_id IS NOT NULL GROUP BY task_id "
                       "ORDER BY natural_key(task_id)").task_id.tolist()
    assert listed == ["sample-2", "sample-10", "sample-A"]


@pytest.mark.parametrize("ids", [
    ["10", "9", "1", "100", "2"],
    ["sample-10", "sample-2", "sample-1", "a", "sample-02x"],
    ["x1y22", "x1y3", "123456789012345678901234567890", "99", "", "007", "8"],
])
def test_natural_order_in_sql_and_python_agree(ids, store):
    in_sql = [row[0] for row in store.con.execute(
        "SELECT t FROM unnest(?) u(t) ORDER BY natural_key(t), t", [ids]).fetchall()]
    assert in_sql == sorted(ids, key=lambda t: (natural_sort_key(t), t))
    if "9" in ids:
        assert in_sql[:5] == ["1", "2", "9", "10", "100"]
    if "sample-2" in ids:
        assert in_sql.index("sample-2") < in_sql.index("sample-10")


# ---- migration of a store made by the previous release ---------------------------------------


def _events_as_text(con: duckdb.DuckDBPyConnection, table: str, order: str) -> list[tuple]:
    """Every row of `table`, ids as text and attrs as JSON text, in a fixed order."""
    columns = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
    select = ", ".join(
        f"CAST({name} AS VARCHAR)" if name in ID_COLUMNS or name == "attrs" else name for name in columns)
    return con.execute(f"SELECT {select} FROM {table} ORDER BY {order}").fetchall()


@pytest.fixture
def old_store(tmp_path) -> Path:
    """A copy of the previous release's store (see tests/data/README.md)."""
    path = tmp_path / "store-v1.duckdb"
    with gzip.open(DATA / "store-v1.duckdb.gz") as packed, open(path, "wb") as unpacked:
        shutil.copyfileobj(packed, unpacked)
    return path


@pytest.mark.parametrize("read_only", [False, True])
def test_a_store_of_the_previous_release_migrates_in_place(old_store, read_only):
    with duckdb.connect(str(old_store), read_only=True) as con:
        assert con.execute("SELECT data_type FROM information_schema.columns "
                           "WHERE table_name = 'events' AND column_name = 'task_id'").fetchall() == [("BIGINT",)]
        before = _events_as_text(con, "events", "file_id, line")
        links_before = _events_as_text(con, "event_task_links", "file_id, line, executor_task_id")
        assert con.execute("SELECT count(*) FROM run_digests").fetchall()[0][0] > 0
    assert len(before) > 8000 and links_before

    with taskscope.open(old_store, read_only=read_only) as store:
        types = dict(store.sql("SELECT table_name || '.' || column_name AS c, data_type FROM information_schema.columns "
                               "WHERE column_name IN ('task_id', 'executor_task_id')").itertuples(index=False))
        assert types == {"events.task_id": "VARCHAR", "events.executor_task_id": "VARCHAR",
                         "event_task_links.task_id": "VARCHAR", "event_task_links.executor_task_id": "VARCHAR"}
        assert store.sql("SELECT value FROM taskscope_meta WHERE key = 'schema_version'").value[0] == str(SCHEMA_VERSION)
        assert _events_as_text(store.con, "events", "file_id, line") == before
        assert _events_as_text(store.con, "event_task_links", "file_id, line, executor_task_id") == links_before
        assert store.sql("SELECT count(*) AS n FROM run_digests").n[0] == 0  # made from integer ids: recomputed
        assert store.sql("SELECT count(*) AS n FROM events WHERE task_id = '3'").n[0] > 0

    with taskscope.open(old_store) as store:  # opening again changes nothing
        assert _events_as_text(store.con, "events", "file_id, line") == before


def test_a_migrated_store_takes_new_ingests(old_store, tmp_path):
    events = write_jsonl(tmp_path / "more.jsonl", [{"ts": 1_700_000_000.0, "message": "m", "task_id": "sample-A"}])
    with taskscope.open(old_store) as store:
        store.ingest(events)
        assert store.sql("SELECT count(*) AS n FROM events WHERE task_id = 'sample-A'").n[0] == 1
        runs = store.runs()
        assert len(runs) == 2


# ---- a file that is not a store --------------------------------------------------------------


@pytest.mark.parametrize("command", [["runs"], ["ingest", "{input}"]])
def test_a_sqlite_file_is_refused_as_a_store(tmp_path, command):
    database = tmp_path / "monitoring.db"
    with sqlite3.connect(database) as con:
        con.execute("CREATE TABLE workflow (run_id TEXT)")
    content = database.read_bytes()
    (tmp_path / "in.jsonl").write_text('{"ts": 1, "message": "m"}\n')
    args = [part.replace("{input}", str(tmp_path / "in.jsonl")) for part in command]
    done = run_cli(*args, "--store", str(database))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: {database} is a SQLite database, not a taskscope store "
        "(to read a Parsl monitoring.db, ingest it: taskscope ingest monitoring.db)"]
    assert "extension" not in done.stderr + done.stdout
    assert database.read_bytes() == content
    assert not Path(str(database) + ".wal").exists()


@pytest.mark.parametrize("content", [b"", b"2026-01-01 00:00:00 a log line\n", b"\x00" * 4096])
def test_a_file_that_is_not_duckdb_is_refused_as_a_store(tmp_path, content):
    path = tmp_path / "not-a-store"
    path.write_bytes(content)
    done = run_cli("runs", "--store", str(path))
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1
    assert "is not a taskscope store" in done.stderr
    assert path.read_bytes() == content


def test_a_sqlite_file_is_refused_as_the_fleet_store(tmp_path):
    database = tmp_path / "fleet.sqlite"
    with sqlite3.connect(database) as con:
        con.execute("CREATE TABLE accounts (account TEXT)")
    content = database.read_bytes()
    done = run_cli("fleet", "serve", "--store", str(database), "--port", "1", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {database} is a SQLite database, not a fleet store"]
    assert database.read_bytes() == content
