"""Inputs are known by content: each source recognises its files, the rest are listed, not misread.

A `*.log` is a Parsl log only if its lines are Parsl records; a text log of any program whose
lines start with a time becomes generic events; anything else is listed as "unknown format"
and makes no bad lines. Other packages add sources through the `taskscope.sources` entry points.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import taskscope
from conftest import corpus_path, make_real_run, run_cli
from taskscope.sources import Sample, recognising_source

SNAKEMAKE_LOG = """\
Building DAG of jobs...
Using shell: /usr/bin/bash
Provided cores: 4
Job stats:
job      count
-----  -------
all          1
[Mon Nov 23 10:00:01 2026]
rule align:
    input: reads.fq
    output: out.bam
    jobid: 1
Finished job 1.
1 of 1 steps (100%) done
"""

RAY_LOG = """\
2026-11-23 10:00:00,120\tINFO worker.py:1642 -- Started a local Ray instance.
2026-11-23 10:00:01,004\tINFO scripts.py:820 -- Task sample-A scheduled on node 3
2026-11-23 10:00:02,500\tWARNING worker.py:2040 -- Task sample-B retried
Traceback (most recent call last):
  File "job.py", line 3, in <module>
ValueError: bad input
2026-11-23 10:00:03,750\tERROR worker.py:2041 -- Task sample-B failed
"""


def test_logs_of_other_programs_make_no_bad_lines(tmp_path):
    (tmp_path / "snakemake.log").write_text(SNAKEMAKE_LOG)
    (tmp_path / "ray.log").write_text(RAY_LOG)
    with taskscope.open(":memory:") as store:
        report = store.ingest(tmp_path)
        assert report.bad_lines == 0 and store.sql("SELECT count(*) AS n FROM bad_lines").n[0] == 0
        files = store.sql("SELECT file, source, note FROM ingested_files").set_index("file")
        assert files.loc["snakemake.log", "note"] == "unknown format"
        assert files.loc["ray.log", "source"] == "timestamped_text"
        assert "snakemake.log: unknown format" in report.notes  # named like a log: the user is told
        assert store.sql("SELECT count(*) AS n FROM events WHERE file = 'snakemake.log'").n[0] == 0


def test_a_timestamped_text_log_becomes_events(tmp_path):
    (tmp_path / "ray.log").write_text(RAY_LOG)
    (tmp_path / "service.txt").write_text(
        "2026-11-23T10:00:00Z start work id=1\n"
        "2026-11-23T12:00:00.250+02:00 start work id=2\n"
        "[1795428000.5] stop work id=1\n"
    )
    with taskscope.open(":memory:") as store:
        store.ingest(tmp_path, utc_offset_seconds=3600.0)
        ray = store.sql("SELECT ts, source, level, message, template, event FROM events WHERE file = 'ray.log' ORDER BY line")
        # naive local times, one hour ahead of UTC; the traceback continues its record
        assert ray.ts.round(3).tolist() == [1795424400.12, 1795424401.004, 1795424402.5, 1795424403.75]
        assert set(ray.source) == {"text"} and ray.level.tolist() == ["INFO", "INFO", "WARNING", "ERROR"]
        assert ray.message[2] == ("WARNING worker.py:2040 -- Task sample-B retried\nTraceback (most recent call last):\n"
                                  '  File "job.py", line 3, in <module>\nValueError: bad input')
        assert ray.template.notna().all() and ray.event.notna().all()
        service = store.sql("SELECT ts, message, template FROM events WHERE file = 'service.txt' ORDER BY line")
        # times with a zone (Z, +02:00) and epoch seconds are taken as they are
        assert service.ts.round(3).tolist() == [1795428000.0, 1795428000.25, 1795428000.5]
        assert service.message[0] == "start work id=1"
        assert service.template[0] == service.template[1] != service.template[2]


def test_a_log_is_recognised_once_it_has_lines(tmp_path):
    """A live run creates its logs empty; they are read once they hold records."""
    folder = tmp_path / "000"
    folder.mkdir()
    log = folder / "parsl.log"
    log.write_text("")
    with taskscope.open(str(tmp_path / "s.duckdb")) as store:
        first = store.ingest(tmp_path)
        assert first.events == 0 and not first.notes
        assert store.sql("SELECT note FROM ingested_files").note[0] == "empty"
        log.write_bytes((corpus_path("parsl-mixed-textlog") / "000" / "parsl.log").read_bytes())
        second = store.ingest(tmp_path)
        assert second.events > 500 and second.bad_lines == 0
        assert store.sql("SELECT source FROM ingested_files").source[0] == "parsl_textlog"


def test_a_log_replaced_by_another_format_is_read_as_that_format(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "app.log"
    parsl_log = (corpus_path("parsl-2025-textlog") / "000" / "database_manager.log").read_text()
    log.write_text(parsl_log)
    with taskscope.open(str(tmp_path / "s.duckdb")) as store:
        first = store.ingest(folder)
        assert first.events == 8 and store.sql("SELECT DISTINCT source FROM ingested_files").source.tolist() == ["parsl_textlog"]
        log.write_text(RAY_LOG * 20)  # another program's log under the same name
        second = store.ingest(folder)
        assert any("now read as timestamped_text" in note for note in second.notes)
        assert set(store.sql("SELECT DISTINCT source FROM events").source) == {"text"}
        assert store.sql("SELECT count(*) AS n FROM events").n[0] == 80
        log.write_text(SNAKEMAKE_LOG * 20)
        third = store.ingest(folder)
        assert store.sql("SELECT count(*) AS n FROM events").n[0] == 0 and third.bad_lines == 0
        row = store.sql("SELECT source, note FROM ingested_files")
        assert row.source.isna().all() and row.note[0] == "unknown format"


def test_a_path_with_nothing_readable_is_one_warning_and_exit_0(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "table.csv").write_text("a,b\n1,2\n")
    (folder / "notes.md").write_text("# notes\n")
    done = run_cli("ingest", str(folder), "--store", str(tmp_path / "s.duckdb"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"warning: nothing taskscope can read in {folder}: 2 files: ")
    assert "table.csv (unknown format)" in done.stderr and "notes.md (unknown format)" in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli("ingest", str(empty), "--store", str(tmp_path / "s.duckdb"))
    assert done.returncode == 0 and done.stderr == f"warning: nothing taskscope can read in {empty}: no files found\n"


def test_recognition_by_content_not_name():
    parsl_record = (corpus_path("parsl-2025-textlog") / "000" / "database_manager.log").read_bytes()[:4000]
    json_record = b'{"created": 1795294503.1, "msg": "hi"}\n' * 3
    cases = {
        ("copy.txt", parsl_record): "parsl_textlog",  # a Parsl log under any name
        ("events.log", json_record): "jsonlines",  # JSON lines named .log
        ("app.db", b"SQLite format 3\x00" + b"\x00" * 100): "monitoring_db",
        ("ray.log", RAY_LOG.encode()): "timestamped_text",
        ("snakemake.log", SNAKEMAKE_LOG.encode()): None,
        ("binary.log", bytes(range(256)) * 4): None,
    }
    for (name, head), expected in cases.items():
        found = recognising_source(Sample(name, head))
        assert (found.name if found else None) == expected, name


def test_a_third_party_source_registered_by_entry_point(tmp_path):
    """A package installed beside taskscope adds a format: found through importlib.metadata,
    as pip would install it (a module and its dist-info with an entry point)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tiny_source.py").write_text(textwrap.dedent('''
        """Reads `TINY v1` files: a message, then `@` and its epoch time, per line."""
        from taskscope.ingest.staging import insert_staged
        from taskscope.sources import Source, StageResult

        def recognise(sample):
            return sample.head.startswith(b"TINY v1\\n")

        def stage_lines(con, table_name, context):
            staged = insert_staged(
                con,
                f"""SELECT CAST(split_part(txt, ' @', 2) AS DOUBLE) AS ts, 'tiny' AS source, ? AS file, line,
                           split_part(txt, ' @', 1) AS message, ?::INTEGER AS file_id
                    FROM {table_name} WHERE line > 1""",
                [context.file, context.file_id],
            )
            return StageResult(events=staged)

        SOURCE = Source(name="tiny", recognise=recognise, stage_lines=stage_lines)
    '''))
    dist_info = site / "tiny_source-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-source\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[taskscope.sources]\ntiny = tiny_source:SOURCE\n")
    (dist_info / "RECORD").write_text("")
    data = tmp_path / "run.tiny"
    data.write_text("TINY v1\ntask sample-A started @1795428000.5\ntask sample-A done @1795428001.5\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), *sys.path]))
    store = tmp_path / "s.duckdb"
    done = run_cli("ingest", str(data), "--store", str(store), "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == 2
    with taskscope.open(str(store), read_only=True) as opened:
        events = opened.sql("SELECT ts, source, message, template FROM events ORDER BY line")
        assert events.message.tolist() == ["task sample-A started", "task sample-A done"]
        assert set(events.source) == {"tiny"} and events.template.notna().all()
        assert opened.sql("SELECT source FROM ingested_files").source[0] == "tiny"
    without = run_cli("ingest", str(data), "--store", str(tmp_path / "plain.duckdb"), "--format", "json")
    assert json.loads(without.stdout)["events"] == 0  # the format is the plug-in's, not taskscope's


def test_a_broken_third_party_source_is_one_error_line(tmp_path):
    dist_info = tmp_path / "broken_source-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-source\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[taskscope.sources]\nbroken = no_such_module:SOURCE\n")
    (tmp_path / "app.log").write_text(RAY_LOG)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    done = run_cli("ingest", str(tmp_path / "app.log"), "--store", str(tmp_path / "s.duckdb"), env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: source 'broken' (no_such_module:SOURCE) cannot be loaded")


def test_sources_declare_what_the_ingest_needs():
    from taskscope.sources import registered_sources

    sources = {source.name: source for source in registered_sources()}
    assert set(sources) >= {"parsl_jsonlog", "parsl_textlog", "jsonlines", "monitoring_db", "timestamped_text"}
    # epoch-time logs before local-time ones, monitoring.db last; generic formats asked last
    assert sources["parsl_jsonlog"].order < sources["parsl_textlog"].order < sources["monitoring_db"].order
    assert list(sources)[-1] == "timestamped_text"
    assert Path(taskscope.__file__).parent.joinpath("ingest", "__init__.py").read_text().count("monitoring_db") == 0


def test_a_python_log_with_tracebacks_is_read_record_by_record(tmp_path):
    """Python's logging with `log.exception`: most lines are traceback lines, yet every record
    is an event, its traceback in its message (such a file was once 'unknown format')."""
    import logging

    path = tmp_path / "pipeline.log"
    logger = logging.getLogger("test_sources.pipeline")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for number in range(20):
            logger.warning("task %d started", number)
            try:
                {}["missing"]
            except KeyError:
                logger.exception("task %d failed", number)
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = path.read_text().splitlines()
    assert sum(1 for line in lines if line.startswith("Traceback")) == 20 and len(lines) > 100  # most lines continue
    with taskscope.open(":memory:") as store:
        report = store.ingest(path)
        events = store.sql("SELECT level, message FROM events ORDER BY line")
    assert report.bad_lines == 0 and report.lines == len(lines)
    assert len(events) == 40 and events.level.tolist() == ["WARNING", "ERROR"] * 20
    failed = events.message[events.level == "ERROR"]
    assert all("Traceback (most recent call last)" in text and text.endswith("KeyError: 'missing'") for text in failed)


def test_a_dask_worker_log_with_a_failed_task_is_read(tmp_path):
    """A real Dask worker's log in its own format: the multi-line 'Compute Failed' report
    continues its record."""
    import logging

    from distributed import Client, LocalCluster

    path = tmp_path / "dask-worker.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))  # Dask's own
    dask_logger = logging.getLogger("distributed.worker")
    dask_logger.addHandler(handler)
    try:
        with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
            futures = client.map(lambda x: 1 / (x - x), range(8))  # each failure's report takes 5 lines
            assert all(future.exception(timeout=60) is not None for future in futures)
    finally:
        dask_logger.removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert "Compute Failed\nKey:" in text  # the report spans lines: most lines continue a record
    records = sum(1 for line in text.splitlines() if line[:4].isdigit())
    assert records * 2 < len(text.splitlines())
    with taskscope.open(":memory:") as store:
        report = store.ingest(path)
        failed = store.sql("SELECT message FROM events WHERE message LIKE '%Compute Failed%'").message
        assert report.bad_lines == 0 and store.sql("SELECT count(*) AS n FROM events").n[0] == records
    assert len(failed) == 8 and all("ZeroDivisionError" in message for message in failed)


def test_a_first_line_longer_than_the_sample_does_not_hide_the_file(tmp_path):
    """A file's kind is told from its first 16 KiB: a longer first line (a config dump, a
    big JSON record) must not make it 'unknown format (no complete line yet)'."""
    line = "2026-12-01 02:00:{:02d},000 INFO app: line {}\n"
    rest = "".join(line.format(number, number) for number in range(1, 6))
    (tmp_path / "long.log").write_text(line.format(0, "x" * 20_000) + rest)
    (tmp_path / "huge.log").write_text(line.format(0, "x" * (2 << 20)) + rest)  # over 1 MiB: kept aside
    (tmp_path / "alone.log").write_text(line.format(0, "x" * (2 << 20)))
    records = "".join(json.dumps({"ts": 1796090400 + n, "message": "y" * (20_000 if n == 0 else 5)}) + "\n"
                      for n in range(6))
    (tmp_path / "json.log").write_text(records)
    with taskscope.open(":memory:") as store:
        report = store.ingest(tmp_path)
        counts = dict(store.sql("SELECT file, count(*) AS n FROM events GROUP BY file").values)
        bad = store.sql("SELECT file, reason FROM bad_lines ORDER BY file").values.tolist()
    assert counts == {"long.log": 6, "huge.log": 5, "json.log": 6}
    assert bad == [["alone.log", "line longer than 1 MiB"], ["huge.log", "line longer than 1 MiB"]]
    assert report.files_read == 4


def test_a_copytruncate_gap_is_skipped_and_the_replaced_events_are_said(tmp_path):
    """logrotate's copytruncate under a program that does not append: the program writes on at
    its old offset, so the truncated file starts with a run of NUL bytes. The lines after the
    gap are read; the note says the gap was skipped and how many earlier events were replaced."""
    log = tmp_path / "live.log"
    log.write_bytes(b"".join(b"2026-12-01 02:00:%02d,000 INFO app: line %d\n" % (n, n) for n in range(30)))
    with taskscope.open(str(tmp_path / "s.duckdb")) as store:
        store.ingest(log)
        size = log.stat().st_size
        with open(log, "r+b") as handle:
            handle.truncate(0)
            handle.seek(size + 100)
            handle.write(b"".join(b"2026-12-01 03:00:%02d,000 INFO app: after %d\n" % (n, n) for n in range(10)))
        report = store.ingest(log)
        messages = store.sql("SELECT message FROM events ORDER BY line").message.tolist()
    assert messages == [f"INFO app: after {n}" for n in range(10)] and report.bad_lines == 0
    note = " ".join(report.notes)
    assert "its 30 earlier events replaced" in note and f"skipped the {size + 100:,} NUL bytes" in note


def test_utf16_text_is_named_and_verbose_lists_every_file_left(tmp_path):
    """A UTF-16 log (PowerShell's `>`) is said to be UTF-16, also when named `.jsonl` (it was
    'a partial line', again at every ingest); `--verbose` lists the files left quietly too."""
    (tmp_path / "ray.log").write_bytes(RAY_LOG.encode("utf-16"))
    (tmp_path / "events.jsonl").write_bytes('{"ts": 1796090400, "message": "a"}\n'.encode("utf-16-le"))
    (tmp_path / "workflow.py").write_text("import parsl\n")
    (tmp_path / "empty.log").write_text("")
    done = run_cli("ingest", str(tmp_path), "--store", str(tmp_path / "s.duckdb"), "--verbose")
    assert done.returncode == 0, done.stderr
    utf16 = "unknown format (UTF-16 text: taskscope reads UTF-8; convert it with iconv -f UTF-16 -t UTF-8)"
    assert f"note: ray.log: {utf16}" in done.stderr and f"note: events.jsonl: {utf16}" in done.stderr
    assert "skipped: workflow.py: unknown format" in done.stderr and "skipped: empty.log: empty" in done.stderr
    assert "partial line" not in done.stderr
    again = run_cli("ingest", str(tmp_path), "--store", str(tmp_path / "s.duckdb"), "--verbose")
    # the store kept in the folder it reads is named for what it is (it was "UTF-16 text")
    assert "skipped: s.duckdb: unknown format (a DuckDB database: a store is not read as an input)" in again.stderr
    assert "s.duckdb: unknown format (UTF-16" not in again.stderr


def test_naive_local_times_are_read_in_the_zone_at_their_own_date(tmp_path):
    # a log written in New York in May (daylight saving, UTC-4) and in December (UTC-5), read on a
    # machine in that zone in any season: each time shifted by the offset at its own date; with
    # --utc-offset, every time by that one offset
    log = tmp_path / "runner.log"
    log.write_text("2026-05-01 12:00:00,000 INFO start a\n2026-12-01 12:00:00,250 INFO start b\n")
    env = {**os.environ, "TZ": "America/New_York"}
    expected = {"INFO start a": 1777651200.0, "INFO start b": 1796144400.25}  # 16:00 and 17:00 UTC
    for store, extra, shift in (("zone.duckdb", [], {}), ("fixed.duckdb", ["--utc-offset", "-5"],
                                                          {"INFO start a": 3600.0})):
        done = run_cli("ingest", str(log), "--store", str(tmp_path / store), *extra, env=env)
        assert done.returncode == 0, done.stderr
        with taskscope.open(str(tmp_path / store), read_only=True) as opened:
            got = dict(opened.con.execute("SELECT message, ts FROM events").fetchall())
        assert got == {message: ts + shift.get(message, 0.0) for message, ts in expected.items()}, (store, got)


def test_two_runinfos_made_in_two_zones_and_ingested_together_each_keep_their_own_offset(text_run, tmp_path):
    """A runinfo's monitoring.db holds naive local times. Its run folders' text logs teach their
    offset (`created` is UTC beside the local `asctime`); ingested in one go beside a runinfo made
    in another zone, each monitoring.db once took the offset the other had taught last (5.5 hours:
    a 16 s run lasted 19,816 s). The truth: each run's monitoring events lie within its own logs'
    first and last UTC times (`created`, written by Python's logging, whatever the zone)."""
    kolkata = make_real_run(tmp_path / "runinfo", zone="Asia/Kolkata", n_inputs=4).parent
    store = str(tmp_path / "both.duckdb")
    with taskscope.open(store) as opened:
        opened.ingest(text_run, kolkata)
        spans = opened.con.execute(
            """SELECT run_id, min(ts) FILTER (WHERE source = 'monitoring'), max(ts) FILTER (WHERE source = 'monitoring'),
                      min(ts) FILTER (WHERE source = 'parsl'), max(ts) FILTER (WHERE source = 'parsl')
               FROM events WHERE run_id IS NOT NULL GROUP BY run_id""").fetchall()
    assert len(spans) == 2, spans
    for run_id, first_seen, last_seen, first_logged, last_logged in spans:
        assert first_seen is not None and first_logged is not None, run_id
        assert first_logged - 5 <= first_seen and last_seen <= last_logged + 5, (run_id, first_seen - first_logged)


def test_a_log_renamed_away_by_rotation_is_read_on_not_again(tmp_path):
    # logrotate without copytruncate (or RotatingFileHandler) renames interchange.log to
    # interchange.log.1 after part of it was read: the store ends as one ingest of the final
    # files, each event once, and the renamed log keeps its component and executor
    run = tmp_path / "000"
    shutil.copytree(corpus_path("parsl-mixed-textlog") / "000", run)
    log = run / "htex_local" / "interchange.log"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[: len(lines) // 2]))
    store = str(tmp_path / "incremental.duckdb")
    with taskscope.open(store) as opened:
        opened.ingest(run)
        log.write_text("".join(lines))
        log.rename(run / "htex_local" / "interchange.log.1")
        report = opened.ingest(run)
        incremental = opened.con.execute(
            "SELECT file, line, event, source, executor_label, task_id FROM events ORDER BY file, line").fetchall()
    assert any("renamed away" in note for note in report.notes), report.notes
    with taskscope.open(str(tmp_path / "fresh.duckdb")) as fresh:
        fresh.ingest(run)
        whole = fresh.con.execute(
            "SELECT file, line, event, source, executor_label, task_id FROM events ORDER BY file, line").fetchall()
    assert incremental == whole
    rotated = [row for row in whole if row[0].endswith("interchange.log.1")]
    assert rotated and {row[3] for row in rotated} == {"interchange"} and {row[4] for row in rotated} == {"htex_local"}


def test_a_logging_records_own_time_level_and_logger_win_over_extras_of_those_names(tmp_path):
    # what WideEventHandler (or any JSON formatter of Python's logging) writes: the record's
    # created/levelname/name, beside a program's extras that happen to be called ts, level, logger
    log = tmp_path / "app.jsonlog"
    records = [
        {"created": 1796664970.418, "levelname": "INFO", "name": "app", "message": "sample measured", "ts": 12},
        {"created": 1796664971.0, "levelname": "WARNING", "name": "app", "message": "risk computed", "level": "high"},
        {"created": 1796664972.0, "levelname": "INFO", "name": "app", "message": "message parsed", "logger": "kafka-7"},
        # a record not from logging keeps reading `ts`, `level` and `logger` first, and `name` is no logger
        {"ts": 1796664973.0, "level": "error", "logger": "svc", "name": "sample-A", "message": "done"},
    ]
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    with taskscope.open(":memory:") as store:
        store.ingest(log)
        rows = store.con.execute("SELECT ts, level, logger, attrs->>'ts', attrs->>'level' FROM events ORDER BY line").fetchall()
    assert rows == [(1796664970.418, "INFO", "app", "12", None), (1796664971.0, "WARNING", "app", None, "high"),
                    (1796664972.0, "INFO", "app", None, None), (1796664973.0, "ERROR", "svc", "1796664973.0", "error")]
