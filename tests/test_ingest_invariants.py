"""Invariants that hold whatever SQL the ingest uses inside: the proof that a faster rewrite
of a stage (JSON parse, text record split, rules, templates, relate) changed no result.

Checked on every corpus run (three releases' log formats, JSON and text): every line of every
log file is accounted for exactly once, as a line of one event's message or as a bad line;
events are unique per (file, line); the SQL templates equal their Python twin line by line.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

import taskscope
from taskscope.templates import template_of, with_template_sql

from conftest import corpus_path, run_cli


def test_every_line_of_a_log_file_is_in_one_event_or_bad_line(store, corpus_run):
    store.ingest(corpus_run)
    accounted = store.sql(
        """SELECT f.file, f.source, f.lines_read,
                  coalesce(e.message_lines, 0) AS message_lines, coalesce(e.events, 0) AS events,
                  coalesce(b.bad, 0) AS bad
           FROM ingested_files f
           LEFT JOIN (SELECT file_id, count(*) AS events,
                             sum(length(message) - length(replace(message, chr(10), '')) + 1) AS message_lines
                      FROM events GROUP BY 1) e USING (file_id)
           LEFT JOIN (SELECT file_id, count(*) AS bad FROM bad_lines GROUP BY 1) b USING (file_id)
           WHERE f.source IN ('parsl_textlog', 'parsl_jsonlog', 'jsonlines')"""
    )
    assert len(accounted) >= 4
    json_files = accounted[accounted.source != "parsl_textlog"]
    text_files = accounted[accounted.source == "parsl_textlog"]
    # a JSON line is one event (its message may hold newlines of its own); a text record is
    # its header line and its continuation lines
    assert (json_files.events + json_files.bad == json_files.lines_read).all(), json_files
    assert (text_files.message_lines + text_files.bad == text_files.lines_read).all(), text_files
    assert accounted.lines_read.sum() > 1000


def test_events_are_unique_per_file_and_line_and_fully_named(store, corpus_run):
    store.ingest(corpus_run)
    duplicated = store.sql("SELECT file, line, count(*) AS n FROM events GROUP BY 1, 2 HAVING n > 1")
    assert duplicated.empty, duplicated
    unnamed = store.sql(
        "SELECT file, line FROM events WHERE event IS NULL OR ts IS NULL OR source IS NULL OR line IS NULL"
    )
    assert unnamed.empty, unnamed
    # `ts` holds microseconds, whatever the source (Python's `created` in a JSON log is a double
    # with more digits: 1796686992.7558203 was stored as such)
    finer = store.sql("SELECT file, line, ts FROM events WHERE ts <> round(ts, 6)")
    assert finer.empty, finer


def test_sql_templates_equal_the_python_twin_on_every_corpus_line(store, corpus_run):
    """The SQL skips a mask's regex on lines without its guard substring; Python never does."""
    store.ingest(corpus_run)
    lines = store.sql(
        "SELECT DISTINCT split_part(coalesce(message, ''), chr(10), 1) AS first_line FROM events"
    ).first_line.tolist()
    store.con.execute("CREATE TEMP TABLE corpus_lines (first_line VARCHAR)")
    store.con.executemany("INSERT INTO corpus_lines VALUES (?)", [[line] for line in lines])
    in_sql = dict(store.con.execute(
        with_template_sql("SELECT first_line FROM corpus_lines", "first_line", "template_text")
    ).fetchall())
    assert len(in_sql) == len(lines) > 100
    differing = {line: (in_sql[line], template_of(line)) for line in lines if in_sql[line] != template_of(line)}
    assert not differing, list(differing.items())[:5]


@pytest.mark.parametrize("move_rows", [None, 7], ids=["staged-until-commit", "moved-every-chunk"])
def test_a_file_read_in_many_chunks_gives_the_same_events(store, monkeypatch, move_rows):
    """Large files are read in chunks (64 MiB); a record whose continuation lines (a config
    dump, a traceback) fall in the next chunk must still come out whole. In 3 KB chunks some
    of this run's multi-line records cross a boundary (their lines were lost before the fix).
    With `move_rows`, staged records are moved to `events` after (almost) every chunk, so a
    continuation must reach its record there."""
    import functools

    import taskscope
    import taskscope.ingest as ingest_module
    from taskscope.ingest.lines import read_new_lines

    corpus_run = corpus_path("parsl-mixed-textlog")
    store.ingest(corpus_run)
    whole = store.sql("SELECT file, line, event, message, task_id FROM events ORDER BY file, line")

    monkeypatch.setattr(ingest_module, "read_new_lines", functools.partial(read_new_lines, chunk_bytes=3000))
    if move_rows is not None:
        monkeypatch.setattr(ingest_module, "MOVE_ROWS", move_rows)
    with taskscope.open(":memory:") as chunked_store:
        chunked_store.ingest(corpus_run)
        chunked = chunked_store.sql("SELECT file, line, event, message, task_id FROM events ORDER BY file, line")
        chunks_read = chunked_store.sql("SELECT max(lines_read) AS n FROM ingested_files").n[0]

    assert chunks_read > 100
    assert len(whole) > 1000
    multi_line = whole[whole.message.str.contains("\n", regex=False, na=False)]
    assert len(multi_line) > 0
    assert chunked.equals(whole), chunked.compare(whole).head()


def test_files_ingested_one_at_a_time_get_the_same_ids_as_one_ingest(store, corpus_run):
    """An ingest relates only the runs of the files it read. Read the executor logs first, the
    DFK log (which names the run) last and monitoring.db after: every id must still arrive."""
    import taskscope

    store.ingest(corpus_run)
    logs = sorted(
        (path for path in (corpus_run / "000").rglob("*") if path.suffix in (".log", ".jsonlog")),
        key=lambda path: (path.name.startswith("parsl."), str(path)),
    )
    assert logs[-1].name.startswith("parsl.") and len(logs) >= 5
    columns = ("regexp_extract(file, '[^/]+$') AS base, line, run_id, task_id, try_id, app_name, executor_label, "
               "executor_task_id, block_id, manager_id, worker_id, host, event")
    query = f"SELECT {columns} FROM events WHERE source <> 'monitoring' ORDER BY base, line"
    with taskscope.open(":memory:") as piecewise:
        for path in logs:
            piecewise.ingest(path)
        before_monitoring = piecewise.sql("SELECT count(*) AS n FROM events WHERE task_id IS NOT NULL").n[0]
        piecewise.ingest(corpus_run)  # the logs are unchanged: this reads monitoring.db
        assert piecewise.sql(query).equals(store.sql(query))
        links = "SELECT file_id IS NOT NULL AS f, line, run_id, executor_task_id, task_id, try_id FROM event_task_links ORDER BY line, executor_task_id"
        assert piecewise.sql(links).equals(store.sql(links))
    assert before_monitoring > 100


def test_overlapping_paths_read_each_file_once(store):
    """`taskscope ingest runinfo/ runinfo/000 runinfo/000/parsl.log`: each file once, named as the
    first path given names it."""
    import taskscope

    run = corpus_path("parsl-mixed-textlog")
    report = store.ingest(run, run / "000", run / "000" / "parsl.log")
    query = "SELECT file, line, event, task_id FROM events ORDER BY file, line"
    with taskscope.open(":memory:") as once:
        once.ingest(run)
        assert store.sql(query).equals(once.sql(query))
    assert report.files_unchanged == 0 and report.files_read == store.sql(
        "SELECT count(*) AS n FROM ingested_files WHERE source IS NOT NULL").n[0]


def test_on_commit_is_called_once_each_commit_of_new_events_is_visible_to_other_connections(tmp_path, monkeypatch):
    """A live dashboard keys what it derives by a generation that grows at each commit: at every
    call, another connection already sees what that commit kept, and the last call sees it all."""
    import taskscope
    import taskscope.ingest as ingest_module

    monkeypatch.setattr(ingest_module, "COMMIT_SECONDS", 0)  # a commit after every file: many calls
    store = taskscope.open(tmp_path / "s.duckdb")
    reader = store.con.cursor()
    seen: list[tuple[int, int]] = []

    def visible() -> tuple[int, int]:
        return reader.execute("SELECT count(*), count(run_id) FROM events").fetchall()[0]

    report = store.ingest(corpus_path("parsl-htex-jsonlog"), on_commit=lambda: seen.append(visible()))
    final = visible()
    assert len(seen) >= report.files_read + 1  # one per file's batch, then relate and the digests
    assert seen == sorted(seen) and seen[-1] == final and final[0] == report.events
    # relate ties the events to their run after the batches: a call after it sees them tied
    assert final[1] == final[0] and seen[0][1] < seen[0][0]
    # an ingest that finds nothing new commits nothing new: what a dashboard derived stays good
    calls = len(seen)
    assert store.ingest(corpus_path("parsl-htex-jsonlog"), on_commit=lambda: seen.append(visible())).events == 0
    assert len(seen) == calls
    store.close()


def test_a_text_log_ingested_while_it_grows_gives_the_same_events_as_read_once(tmp_path):
    """A live run's parsl.log is ingested every few seconds: a record's continuation lines (the
    config dump at its start) that arrive by a later ingest join that record, and no line is
    taken for a bad one (they were, with a false note 'not a Parsl text log', once no line of
    the new part started a record)."""
    import taskscope

    source = corpus_path("parsl-2025-textlog") / "000" / "parsl.log"
    content = source.read_bytes()
    log = tmp_path / "runinfo" / "000" / "parsl.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"")
    query = "SELECT file, line, event, message, task_id FROM events ORDER BY file, line"
    with taskscope.open(str(tmp_path / "grown.duckdb")) as grown:
        for end in (1000, 1500, 2200, 50_000, 130_000, len(content)):
            log.write_bytes(content[:end])
            report = grown.ingest(tmp_path / "runinfo")
            assert not [note for note in report.notes if "not a Parsl text log" in note]
        stepped = grown.sql(query)
        stepped_bad = grown.sql("SELECT count(*) AS n FROM bad_lines").n[0]
    with taskscope.open(":memory:") as once:
        once.ingest(tmp_path / "runinfo")
        whole = once.sql(query)
        assert stepped_bad == once.sql("SELECT count(*) AS n FROM bad_lines").n[0] == 0
    assert len(whole) > 100 and whole.message.str.contains("\n", regex=False).any()
    assert stepped.equals(whole), stepped.compare(whole).head()


def test_a_changed_monitoring_db_counts_only_its_new_events_as_new(tmp_path):
    """A live run's monitoring.db is read whole again when it changes: the summary line tells its
    new events from those read again (it said "301 events" for one new status row)."""
    runinfo = shutil.copytree(corpus_path("parsl-htex-jsonlog"), tmp_path / "runinfo")
    store = str(tmp_path / "s.duckdb")
    assert run_cli("ingest", str(runinfo), "--store", store).returncode == 0
    with sqlite3.connect(runinfo / "monitoring.db") as db:
        run_id, = db.execute("SELECT run_id FROM workflow").fetchone()
        db.execute("INSERT INTO status VALUES (0, 'running', '2030-01-01 00:00:00.000000', ?, 0)", [run_id])
    with taskscope.open(store) as before:
        stored = before.sql("SELECT count(*) AS n FROM events").n[0]
    done = run_cli("ingest", str(runinfo), "--store", store)
    assert done.returncode == 0, done.stderr
    with taskscope.open(store) as after:
        added = after.sql("SELECT count(*) AS n FROM events").n[0] - stored
        monitoring = after.sql("SELECT count(*) AS n FROM events WHERE source = 'monitoring'").n[0]
    assert added == 1
    assert f"1 new event and {monitoring - 1:,} read again (monitoring.db changed) from 0 lines" in done.stdout
