"""Inputs are known by content: each source recognises its files, the rest are listed, not misread.

A `*.log` is a Parsl log only if its lines are Parsl records; a text log of any program whose
lines start with a time becomes generic events; anything else is listed as "unknown format"
and makes no bad lines. Other packages add sources through the `taskscope.sources` entry points.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import taskscope
from conftest import corpus_path, run_cli
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
