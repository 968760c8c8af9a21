"""Bad input loses nothing good: it is counted, kept aside with file and line, and the rest is read."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
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
    # ... and after the good lines, a time no timestamp can hold
    out_of_range = b'{"created": 1e300, "msg": "far future", "formatted": "far future"}\n'
    parsl_log.write_bytes(junk_lines + good + out_of_range + b'{"created": 1795294600.0, "msg": "trunc')
    (folder / "random_binary.log").write_bytes(bytes(range(256)) * 40)
    (folder / "empty.log").write_bytes(b"")
    (folder / "empty.jsonlog").write_bytes(b"")
    (folder / "notes.txt").write_text("not a log at all\n")
    (folder / "results.csv").write_text("a,b\n1,2\n")
    # valid UTF-8 beyond ASCII in lines that are not records (their head is kept as UTF-8 bytes)
    (folder / "résumé.log").write_text("Résumé of the run ✓\n")
    (folder / "extra.jsonlog").write_text('{"bad json é\n')
    # an application's SQLite file whose `node` table is not Parsl's
    app_db = sqlite3.connect(folder / "results.db")
    app_db.execute("CREATE TABLE node (id INTEGER, name TEXT)")
    app_db.execute("INSERT INTO node VALUES (1, 'a')")
    app_db.commit()
    app_db.close()
    return run


def test_bad_lines_are_kept_aside_and_good_ones_read(messy_run):
    clean = taskscope.open(":memory:")
    clean.ingest(CLEAN)
    store = taskscope.open(":memory:")
    report = store.ingest(messy_run)

    assert store.sql("SELECT count(*) AS n FROM events").n[0] == clean.sql("SELECT count(*) AS n FROM events").n[0]
    bad = store.sql("SELECT file, line, reason, head FROM bad_lines ORDER BY file, line")
    parsl_bad = bad[bad.file == "000/parsl.jsonlog"]
    n_good = len(CLEAN.joinpath("000", "parsl.jsonlog").read_bytes().splitlines())
    assert parsl_bad.line.tolist() == [1, 2, 3, 4, 5, 5 + n_good + 1]
    assert parsl_bad.reason.tolist() == [
        "invalid UTF-8", "JSON value is not an object", "invalid JSON", "line longer than 1 MiB",
        "binary data (NUL byte)", "time outside years 1-9999",
    ]
    # line numbers count the 10 MB line once: the good lines are lines 6 to 5 + n_good
    lines = store.sql("SELECT min(line) AS lo, max(line) AS hi FROM events WHERE file = '000/parsl.jsonlog'")
    assert (lines.lo[0], lines.hi[0]) == (6, 5 + n_good)
    assert store.runs().tasks.sum() == clean.runs().tasks.sum()  # the far-future line broke nothing
    unicode_bad = bad[bad.file.isin(["000/résumé.log", "000/extra.jsonlog"])]
    assert [bytes(head) for head in unicode_bad["head"]] == ['{"bad json é'.encode()]
    assert all(len(head) <= 200 for head in bad["head"])
    assert report.bad_lines == len(bad)
    # `.log` files that are no log taskscope knows (a line of prose, random bytes) are listed
    # with a note, and make neither events nor bad lines
    files = store.sql("SELECT file, source, note, pending_bytes FROM ingested_files").set_index("file")
    for unknown in ("000/random_binary.log", "000/résumé.log"):
        assert unknown not in set(bad.file)
        assert pd.isna(files.loc[unknown, "source"]) and "unknown format" in files.loc[unknown, "note"]
        assert any(note.startswith(f"{unknown}: unknown format") for note in report.notes)
        assert store.sql("SELECT count(*) AS n FROM events WHERE file = ?", [unknown]).n[0] == 0
    # the truncated last line of parsl.jsonlog waits; unrelated files are skipped
    assert report.partial_lines == 1
    assert files.loc["000/parsl.jsonlog", "pending_bytes"] == len(b'{"created": 1795294600.0, "msg": "trunc')
    assert pd.isna(files.loc["000/notes.txt", "source"]) and files.loc["000/notes.txt", "note"]
    assert "000/results.csv" in files.index and "000/empty.log" in files.index
    assert "not in Parsl's layout" in files.loc["000/results.db", "note"]
    assert report.files_skipped >= 2 + 4  # notes.txt, results.csv, submit scripts, log_config.pkl


def test_cli_warns_once_and_exits_zero_on_bad_input(messy_run, tmp_path):
    store = tmp_path / "s.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "taskscope.cli", "ingest", str(messy_run), "--store", str(store)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one line: no per-file notes, no empty progress line
    assert done.stderr.startswith("warning:") and "bad lines kept aside" in done.stderr
    assert "files with a note" in done.stderr and "partial line" in done.stderr
    verbose = subprocess.run(
        [sys.executable, "-m", "taskscope.cli", "ingest", str(messy_run), "--store", str(tmp_path / "v.duckdb"),
         "--verbose"],
        capture_output=True, text=True,
    )
    notes = [line for line in verbose.stderr.splitlines() if line.startswith("note: ")]
    assert any("000/results.db" in note for note in notes) and any("résumé.log" in note for note in notes)


def test_a_cut_last_line_is_said_once_and_a_files_note_outlives_its_growth(tmp_path):
    """A killed program's log ends in a partial line: the next ingests, with nothing new, call
    it unchanged instead of warning again. A note stored for a file (read again from the start
    after a copytruncate) stays when the file then grows (it was wiped by the next read)."""
    lines = (CLEAN / "000" / "parsl.jsonlog").read_bytes().splitlines(keepends=True)
    log = tmp_path / "000" / "parsl.jsonlog"
    log.parent.mkdir()
    log.write_bytes(b"".join(lines[:40]) + lines[40][:25])
    with taskscope.open(str(tmp_path / "s.duckdb")) as store:
        assert store.ingest(tmp_path).partial_lines == 1
        again = store.ingest(tmp_path)
        assert (again.partial_lines, again.files_unchanged, again.files_read) == (0, 1, 0)
        log.write_bytes(b"".join(lines[:10]))  # truncated in place, shorter than what was read
        restarted = store.ingest(tmp_path)
        assert any("read again from the start" in note for note in restarted.notes), restarted.notes
        stored_note = "SELECT note FROM ingested_files WHERE file = '000/parsl.jsonlog'"
        assert "read again from the start" in store.sql(stored_note).note[0]
        with open(log, "ab") as handle:
            handle.write(b"".join(lines[10:20]))
        assert store.ingest(tmp_path).lines == 10
        assert "read again from the start" in store.sql(stored_note).note[0]


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
    assert set(events.source) == {"jsonl"} and events.task_id[0] == "3"
    assert events.event[2] == "custom.thing"
    assert [json.loads(attrs) for attrs in events["attrs"]] == records[:3]  # the records as logged
    bad = store.sql("SELECT line, reason FROM bad_lines")
    assert bad.line.tolist() == [4] and bad.reason[0] == "no readable time field"


def _without_root_powers(command: list[str]) -> list[str]:
    """`command` so that permission bits apply to it: as root (which no bit stops), through
    `setpriv` with the capabilities that bypass them dropped."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]


def test_unreadable_file_and_folder_are_reported_and_the_rest_read(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(CLEAN, run)
    worker_log = next(run.rglob("worker_0.jsonlog"))
    os.chmod(worker_log, 0)
    os.chmod(run / "000" / "submit_scripts", 0)
    store = tmp_path / "s.duckdb"
    try:
        done = subprocess.run(
            _without_root_powers([sys.executable, "-m", "taskscope.cli", "ingest", str(run), "--store", str(store),
                                  "--format", "json"]),
            capture_output=True, text=True,
        )
    finally:
        os.chmod(worker_log, 0o644)
        os.chmod(run / "000" / "submit_scripts", 0o755)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["files_unreadable"] == 2
    notes = " | ".join(report["notes"])
    assert "worker_0.jsonlog: cannot be read: Permission denied" in notes
    assert "submit_scripts: folder cannot be read: Permission denied" in notes
    with taskscope.open(str(store), read_only=True) as opened, taskscope.open(":memory:") as clean:
        clean.ingest(run)
        expected = clean.sql("SELECT count(*) AS n FROM events WHERE file NOT LIKE '%worker_0.jsonlog'").n[0]
        assert opened.sql("SELECT count(*) AS n FROM events").n[0] == expected


@pytest.mark.timeout(120)  # opening the FIFO would block forever: fail instead of stalling the suite
def test_linked_run_folders_are_followed_and_odd_entries_skipped(tmp_path):
    runinfo = tmp_path / "runinfo"
    runinfo.mkdir()
    (runinfo / "000").symlink_to(CLEAN / "000")  # a run kept on scratch space, linked in
    (runinfo / "loop").symlink_to(runinfo)  # a link back up: must not be walked forever
    (runinfo / "again").symlink_to(CLEAN / "000")  # the same folder twice: read once
    (runinfo / "dangling.log").symlink_to(tmp_path / "gone.log")
    os.mkfifo(runinfo / "pipe.log")  # opening it would block the ingest
    with taskscope.open(":memory:") as store, taskscope.open(":memory:") as clean:
        report = store.ingest(runinfo)
        clean.ingest(CLEAN / "000")
        assert store.sql("SELECT count(*) AS n FROM events").n[0] == clean.sql("SELECT count(*) AS n FROM events").n[0]
        assert report.files_unreadable == 1 and "dangling.log: cannot be read" in " ".join(report.notes)
        notes = dict(store.sql("SELECT file, note FROM ingested_files WHERE source IS NULL").values)
        assert notes["pipe.log"].startswith("not a regular file")


def test_file_replaced_by_another_is_read_again(tmp_path):
    folder = tmp_path / "000" / "htex_local" / "block-0" / "m1"
    folder.mkdir(parents=True)
    workers = sorted((CLEAN / "000").rglob("worker_*.jsonlog"))
    first, second = workers[0].read_bytes(), workers[1].read_bytes()
    log = folder / "worker_0.jsonlog"
    log.write_bytes(first)
    with taskscope.open(str(tmp_path / "s.duckdb")) as store:
        store.ingest(tmp_path)
        log.write_bytes(second + first)  # another file, at least as large, under the same name
        report = store.ingest(tmp_path)
        assert any("file was replaced" in note for note in report.notes)
        stored = store.sql("SELECT count(*) AS n, max(line) AS last FROM events")
        assert (stored.n[0], stored.last[0]) == (len((second + first).splitlines()),) * 2
        assert store.sql("SELECT count(*) AS n FROM bad_lines").n[0] == 0
        assert store.sql("SELECT events FROM ingested_files WHERE file LIKE '%worker_0.jsonlog'").events[0] == stored.n[0]


def test_file_replaced_by_another_of_the_same_size_is_read_again(tmp_path):
    log = tmp_path / "app.jsonl"
    lines = [{"ts": 1796090400 + i, "message": f"A{i:03d}"} for i in range(20)]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with taskscope.open(str(tmp_path / "s.duckdb")) as store:
        store.ingest(log)
        size = log.stat().st_size
        log.write_text("".join(json.dumps({**line, "message": "B" + line["message"][1:]}) + "\n" for line in lines))
        assert log.stat().st_size == size  # the same size: only the content tells
        report = store.ingest(log)
        assert report.files_unchanged == 0 and any("file was replaced" in note for note in report.notes)
        assert list(store.sql("SELECT message FROM events ORDER BY line").message) == [
            "B" + line["message"][1:] for line in lines]


def test_a_file_that_becomes_unreadable_loses_nothing(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(CLEAN, run)
    worker_log = next(run.rglob("worker_0.jsonlog"))
    lines = worker_log.read_bytes().splitlines(keepends=True)
    store = tmp_path / "s.duckdb"
    ingest = [sys.executable, "-m", "taskscope.cli", "ingest", str(run), "--store", str(store)]
    count = "SELECT count(*) AS n FROM events WHERE file LIKE '%worker_0.jsonlog'"
    assert subprocess.run(ingest, capture_output=True).returncode == 0
    with open(worker_log, "ab") as handle:  # the worker goes on logging...
        handle.writelines(lines[:10])
    os.chmod(worker_log, 0)  # ...and the file's permissions change
    try:
        done = subprocess.run(_without_root_powers(ingest), capture_output=True, text=True)
    finally:
        os.chmod(worker_log, 0o644)
    assert done.returncode == 0 and "could not be read" in done.stderr, done.stderr
    with taskscope.open(str(store), read_only=True) as opened:
        assert opened.sql(count).n[0] == len(lines)  # what was read before is still there
    assert subprocess.run(ingest, capture_output=True).returncode == 0
    with taskscope.open(str(store), read_only=True) as opened:
        assert opened.sql(count).n[0] == len(lines) + 10
