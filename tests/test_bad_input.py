"""Bad input loses nothing good: it is counted, kept aside with file and line, and the rest is read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

import taskscope
from conftest import corpus_path

CLEAN = corpus_path("parsl-htex-jsonlog")


@pytest.fixture
def messy_run(tmp_path):
    """The JSON corpus run plus every kind of bad input, in the places a user would find it."""
    run = tmp_path / "messy"
    shutil.copytree(CLEAN, run)
    folder = run / "000"
    parsl_log = folder / "parsl.jsonlog"
    good = parsl_log.read_bytes()
    # invalid UTF-8, a non-object, broken JSON, a 10 MB line, NUL junk, then the good lines, then a truncated line
    junk_lines = (
        b'{"created": 1795294503.1, "msg": "\xff\xfe not utf-8"}\n'
        b"[1, 2, 3]\n"
        b'{"created": 1795294503.1, "msg": "unterminated\n'
        + b'{"created": 1795294503.1, "msg": "' + b"x" * (10 << 20) + b'"}\n'
        + b"\x00\x01\x02 binary junk\n"
    )
    parsl_log.write_bytes(junk_lines + good + b'{"created": 1795294600.0, "msg": "trunc')
    (folder / "random_binary.log").write_bytes(bytes(range(256)) * 40)
    (folder / "empty.log").write_bytes(b"")
    (folder / "empty.jsonlog").write_bytes(b"")
    (folder / "notes.txt").write_text("not a log at all\n")
    (folder / "results.csv").write_text("a,b\n1,2\n")
    return run


def test_bad_lines_are_kept_aside_and_good_ones_read(messy_run):
    clean = taskscope.open(":memory:")
    clean.ingest(CLEAN)
    store = taskscope.open(":memory:")
    report = store.ingest(messy_run)

    assert store.sql("SELECT count(*) AS n FROM events").n[0] == clean.sql("SELECT count(*) AS n FROM events").n[0]
    bad = store.sql("SELECT file, line, reason, head FROM bad_lines ORDER BY file, line")
    parsl_bad = bad[bad.file == "000/parsl.jsonlog"]
    assert parsl_bad.line.tolist() == [1, 2, 3, 4, 5]
    assert parsl_bad.reason.tolist() == [
        "invalid UTF-8", "JSON value is not an object", "invalid JSON", "line longer than 1 MiB",
        "binary data (NUL byte)",
    ]
    assert all(len(head) <= 200 for head in bad["head"])
    assert report.bad_lines == len(bad)
    # the random binary file: every line of it is kept aside, none becomes an event
    binary = bad[bad.file == "000/random_binary.log"]
    assert len(binary) > 0
    assert store.sql("SELECT count(*) AS n FROM events WHERE file = '000/random_binary.log'").n[0] == 0
    # the truncated last lines (parsl.jsonlog's, and the binary file's tail) wait; unrelated files are skipped
    assert report.partial_lines == 2
    files = store.sql("SELECT file, source, note, pending_bytes FROM ingested_files").set_index("file")
    assert files.loc["000/parsl.jsonlog", "pending_bytes"] == len(b'{"created": 1795294600.0, "msg": "trunc')
    assert pd.isna(files.loc["000/notes.txt", "source"]) and files.loc["000/notes.txt", "note"]
    assert "000/results.csv" in files.index and "000/empty.log" in files.index
    assert report.files_skipped >= 2 + 4  # notes.txt, results.csv, submit scripts, log_config.pkl


def test_cli_warns_once_and_exits_zero_on_bad_input(messy_run, tmp_path):
    store = tmp_path / "s.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "taskscope.cli", "ingest", str(messy_run), "--store", str(store)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "bad lines kept aside" in warnings[0]


def test_growing_file_adds_only_new_complete_lines(tmp_path):
    source = (CLEAN / "000" / "parsl.jsonlog").read_bytes()
    lines = source.splitlines(keepends=True)
    log = tmp_path / "000" / "parsl.jsonlog"
    log.parent.mkdir()
    half = len(lines) // 2
    log.write_bytes(b"".join(lines[:half]) + lines[half][:25])  # half, then a partial line

    store = taskscope.open(str(tmp_path / "s.duckdb"))
    first = store.ingest(tmp_path)
    assert first.lines == half and first.partial_lines == 1
    with open(log, "ab") as handle:  # the writer finishes the line and goes on
        handle.write(lines[half][25:] + b"".join(lines[half + 1 :]))
    second = store.ingest(tmp_path)
    assert second.lines == len(lines) - half
    assert store.sql("SELECT count(*) AS n FROM events").n[0] == len(lines)
    assert store.sql("SELECT count(DISTINCT line) AS n FROM events").n[0] == len(lines)
    assert store.sql("SELECT count(*) AS n FROM bad_lines").n[0] == 0
    third = store.ingest(tmp_path)
    assert third.events == 0


def test_text_record_split_across_ingests_is_joined(tmp_path):
    log = tmp_path / "000" / "parsl.log"
    log.parent.mkdir()
    header = "1795294613.949292 2026-11-21 20:56:53 MainProcess-4245 MainThread-1 parsl.dataflow.dflow:123 __init__ INFO: "
    log.write_text(header + "Starting with config\nConfig(\n")
    store = taskscope.open(str(tmp_path / "s.duckdb"))
    store.ingest(tmp_path)
    with open(log, "a") as handle:
        handle.write("    retries=2\n)\n" + header.replace("INFO", "DEBUG") + "next record\n")
    store.ingest(tmp_path)
    messages = store.sql("SELECT message FROM events ORDER BY line").message.tolist()
    assert messages == ["Starting with config\nConfig(\n    retries=2\n)", "next record"]


def test_generic_json_lines_with_any_time_field(tmp_path):
    path = tmp_path / "app.jsonl"
    records = [
        {"time": "2026-11-21T20:55:03.5Z", "message": "iso time", "task_id": 3, "stage": "load"},
        {"timestamp": 1795294503500, "msg": "epoch ms", "level": "WARNING"},
        {"ts": 1795294503.25, "event": "custom.thing", "nested": {"a": [1, 2]}},
        {"no_time": True},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    store = taskscope.open(":memory:")
    store.ingest(path)
    events = store.sql("SELECT ts, source, event, message, task_id, attrs FROM events ORDER BY line")
    assert events.ts.round(3).tolist() == [1795294503.5, 1795294503.5, 1795294503.25]
    assert set(events.source) == {"jsonl"} and events.task_id[0] == 3
    assert events.event[2] == "custom.thing"
    assert json.loads(events["attrs"][0]) == {"stage": "load"}
    assert json.loads(events["attrs"][2]) == {"nested": {"a": [1, 2]}}
    bad = store.sql("SELECT line, reason FROM bad_lines")
    assert bad.line.tolist() == [4] and bad.reason[0] == "no readable time field"
