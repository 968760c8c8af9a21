"""Ctrl-C during an ingest: one line, exit 130, and a store that kept whole files only.

A real `taskscope ingest` process is sent SIGINT at several moments of an ingest of a runinfo
of many runs (the corpus runs, copied). Whatever the moment, it prints one line saying what
was kept, exits 130, and the store holds every file it kept whole with its offsets and nothing
of the others; the same ingest run again then gives exactly the events of an uninterrupted one.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import taskscope
from taskscope.ingest import IngestInterrupted, ingest
from taskscope.rules import load_rules
from conftest import CORPUS_RUNS, corpus_path, run_cli

COPIES = 3  # of each corpus run: an ingest of some seconds
#: when to interrupt, as shares of an uninterrupted ingest's time (from the store's creation on)
MOMENTS = (0.1, 0.45, 0.8)
EVENTS = ("SELECT file, line, event, run_id, task_id, try_id, app_name, executor_task_id, task_state "
          "FROM events ORDER BY file, line")
FILES = "SELECT file, source, bytes_read, lines_read, events FROM ingested_files WHERE source IS NOT NULL"


@pytest.fixture(scope="module")
def runinfo(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many") / "runinfo"
    for copy in range(COPIES):
        for name in CORPUS_RUNS:
            shutil.copytree(corpus_path(name), folder / f"{name}-{copy}")
            made_distinct(folder / f"{name}-{copy}", copy)
    return folder


def made_distinct(folder: Path, copy: int) -> None:
    """Each copy's files end differently: a file with the same bytes as one read before is not
    read again (its events would be stored twice), and this test needs every copy's events."""
    for log in folder.rglob("*.log"):
        with log.open("a") as appended:
            appended.write(f"copy {copy}\n")  # continues the last record
    for log in folder.rglob("*.jsonlog"):
        with log.open("a") as appended:
            appended.write(json.dumps({"created": 1_795_294_600.0 + copy, "name": "copy", "levelname": "INFO",
                                       "msg": f"copy {copy}", "formatted": f"copy {copy}"}) + "\n")
    for database in folder.rglob("monitoring.db"):
        with sqlite3.connect(database) as db:
            db.execute("UPDATE workflow SET workflow_name = workflow_name || ?", [f" copy {copy}"])


def ingest_process(runinfo: Path, store: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "taskscope.cli", "ingest", str(runinfo), "--store", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def started(process: subprocess.Popen, store: Path) -> float:
    """Wait until the process has created its store (its imports are done, the ingest begins)."""
    while not store.exists() and process.poll() is None:
        time.sleep(0.01)
    return time.monotonic()


def interrupt_after(runinfo: Path, tmp_path: Path, number: int, delay: float,
                    attempts: int = 4) -> tuple[Path, subprocess.Popen, str, str]:
    """Start an ingest into a fresh store and send it Ctrl-C `delay` seconds after it began. An
    ingest that ended first (it ran faster than the reference, as it does when the machine's
    other load drops) is tried again with half the delay, up to `attempts` times."""
    for attempt in range(attempts):
        store = tmp_path / f"interrupted-{number}-{attempt}.duckdb"
        process = ingest_process(runinfo, store)
        time.sleep(max(0.0, started(process, store) + delay - time.monotonic()))
        process.send_signal(signal.SIGINT)
        out, err = process.communicate()
        if process.returncode != 0:
            break
        delay /= 2
    return store, process, out, err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_at_any_moment_keeps_whole_files_and_one_line(runinfo, tmp_path):
    reference_store = tmp_path / "reference.duckdb"
    process = ingest_process(runinfo, reference_store)
    began = started(process, reference_store)
    out, err = process.communicate()
    duration = time.monotonic() - began
    assert process.returncode == 0, err
    with taskscope.open(str(reference_store), read_only=True) as reference:
        expected_events = reference.sql(EVENTS)
        expected_files = reference.sql(FILES).set_index("file")
    assert len(expected_events) > 20_000

    interrupted = 0
    for number, share in enumerate(MOMENTS):
        store, process, out, err = interrupt_after(runinfo, tmp_path, number, share * duration)
        if process.returncode == 0:  # it ended before the signal came, every time: nothing to check
            continue
        interrupted += 1
        assert process.returncode == 130, err
        assert err.count("\n") == 1 and err.startswith("interrupted: ") and "Traceback" not in err, err
        assert "nothing partial was stored" in err and out == ""

        with taskscope.open(str(store), read_only=True) as opened:
            kept = opened.sql(f"{FILES} AND size IS NOT NULL").set_index("file")
            # every file kept is kept whole, with its offsets; no event lacks its file's record
            if len(kept):
                pd.testing.assert_frame_equal(kept.sort_index(), expected_files.loc[kept.index].sort_index(),
                                              check_dtype=False)
            assert opened.sql("SELECT count(*) AS n FROM events").n[0] == kept.events.sum()
            said = re.search(r"kept (\d+) files", err)
            if said:  # an interrupt in the file loop counts what it kept
                assert int(said[1]) == len(kept), err
            elif "kept nothing of this ingest" in err:
                assert kept.empty, err

        again = run_cli("ingest", str(runinfo), "--store", str(store))
        assert again.returncode == 0, again.stderr
        with taskscope.open(str(store), read_only=True) as opened:
            assert opened.sql(EVENTS).equals(expected_events)  # ids related as if never interrupted
            assert opened.sql("SELECT count(*) AS n FROM files_to_relate").n[0] == 0
    assert interrupted >= len(MOMENTS) - 1, "the ingest ended before most interrupts: make the input bigger"


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.08])
def test_ctrl_c_after_the_summary_is_printed_changes_nothing(tmp_path, delay):
    """Python takes a moment to tear down after the summary; a Ctrl-C then must not turn a
    finished ingest into a death by signal (exit -2) or a traceback."""
    store = tmp_path / "store.duckdb"
    process = ingest_process(corpus_path(CORPUS_RUNS[0]), store)
    summary = process.stdout.readline()
    assert summary.startswith("ingested "), summary
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate()
    assert process.returncode == 0 and err == "", (process.returncode, err)
    with taskscope.open(str(store), read_only=True) as opened:
        assert opened.sql("SELECT count(*) AS n FROM events").n[0] > 0


class InterruptedAfterCommit:
    """A real DuckDB connection on which Ctrl-C comes just as the first COMMIT has returned
    (the moment the signal's check after the call would raise it)."""

    def __init__(self, con):
        self._con, self._commits = con, 0

    def execute(self, query, *args, **kwargs):
        done = self._con.execute(query, *args, **kwargs)
        if isinstance(query, str) and query.strip().upper() == "COMMIT":
            self._commits += 1
            if self._commits == 1:
                raise KeyboardInterrupt
        return done

    def __getattr__(self, name):
        return getattr(self._con, name)


def test_ctrl_c_as_a_commit_returns_counts_what_that_commit_kept(tmp_path):
    path = tmp_path / "store.duckdb"
    with taskscope.open(str(path)) as store:
        with pytest.raises(IngestInterrupted) as raised:
            ingest(InterruptedAfterCommit(store.con), [str(corpus_path(CORPUS_RUNS[0]))], rules=load_rules())
        kept = store.sql(f"{FILES} AND size IS NOT NULL")
        events = store.sql("SELECT count(*) AS n FROM events").n[0]
    assert len(kept) > 0 and events > 0
    assert (raised.value.files_kept, raised.value.events_kept) == (len(kept), events), str(raised.value)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_ctrl_c_during_the_dashboards_first_ingest_says_what_was_kept(runinfo, tmp_path):
    for attempt, delay in enumerate((0.8, 0.4, 0.2, 0.1)):
        store = tmp_path / f"ui-{attempt}.duckdb"
        process = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "ui", str(runinfo), "--store", str(store),
                                    "--port", str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(max(0.0, started(process, store) + delay - time.monotonic()))
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
        if "taskscope dashboard on" not in err:  # interrupted before it served
            break
    assert process.returncode == 130, err
    assert "Traceback" not in err and re.search(r"^interrupted: .*nothing partial was stored", err, re.M), err


def test_a_store_another_process_holds_names_that_process(tmp_path):
    store = tmp_path / "held.duckdb"
    assert run_cli("ingest", str(corpus_path("parsl-htex-jsonlog")), "--store", str(store)).returncode == 0
    holder = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "ui", str(corpus_path("parsl-htex-jsonlog")),
                               "--store", str(store), "--port", str(free_port())],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while "taskscope dashboard on" not in holder.stderr.readline():
            assert holder.poll() is None, "the dashboard did not start"
        refused = run_cli("runs", "--store", str(store))
        second = run_cli("ui", "--store", str(store), "--port", str(free_port()))
    finally:
        holder.terminate()
        holder.wait(timeout=60)
    for answer in (refused, second):
        assert answer.returncode == 2 and answer.stderr.count("\n") == 1, answer.stderr
        assert f"(PID {holder.pid}: taskscope ui " in answer.stderr, answer.stderr
        assert "usage collect" not in answer.stderr and "--ui-port" not in answer.stderr
