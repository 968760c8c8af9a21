"""Ingest of the real Parsl runs in tests/corpus (three releases' log formats)."""

from __future__ import annotations

import sqlite3

import pytest

from checks import assert_executor_events_joined, assert_tasks_match_monitoring
from conftest import corpus_path
from taskscope.templates import template_of


def test_every_executor_side_task_event_is_joined(store, corpus_run):
    report = store.ingest(corpus_run)
    joined = assert_executor_events_joined(store)
    assert joined > 0
    assert report.relate.joined_share == 1.0
    assert report.bad_lines == 0


def test_tasks_have_monitoring_db_final_states(ingested_corpus_run):
    store, corpus_run = ingested_corpus_run
    assert_tasks_match_monitoring(store, corpus_run / "monitoring.db")


def test_every_event_of_a_run_folder_has_the_run_id(ingested_corpus_run):
    store, corpus_run = ingested_corpus_run
    without = store.sql("SELECT file, count(*) AS n FROM events WHERE run_id IS NULL GROUP BY 1")
    assert without.empty, without


@pytest.mark.parametrize("name", ["parsl-htex-jsonlog", "parsl-2025-textlog"])
def test_debug_timeline_spans_dfk_interchange_and_worker(store, name):
    """These runs have DEBUG interchange logs; a task's timeline crosses the components."""
    store.ingest(corpus_path(name))
    timeline = store.timeline(task_id=3)
    assert {"parsl", "interchange", "manager", "worker", "monitoring"} <= set(timeline.source)
    assert timeline.ts.is_monotonic_increasing
    assert timeline.since_first_s.iloc[0] == 0.0
    launch = timeline[timeline.event == "task.launched"]
    received = timeline[timeline.event == "htex.worker.received"]
    assert launch.executor_task_id.iloc[0] == received.executor_task_id.iloc[0]


def test_monitoring_times_are_converted_to_utc(ingested_corpus_run):
    """monitoring.db's naive local times line up with the logs' epoch times (same task, same state)."""
    store, corpus_run = ingested_corpus_run
    gaps = store.sql(
        """SELECT abs(l.ts - m.ts) AS gap FROM
             (SELECT run_id, task_id, min(ts) AS ts FROM events WHERE source = 'parsl' AND event = 'task.state'
                AND task_state = 'pending' GROUP BY ALL) l
           JOIN (SELECT run_id, task_id, min(ts) AS ts FROM events WHERE source = 'monitoring'
                AND event = 'task.state' AND task_state = 'pending' GROUP BY ALL) m USING (run_id, task_id)"""
    )
    assert len(gaps) > 5
    assert gaps.gap.max() < 1.0


def test_text_log_records_keep_their_continuation_lines(store):
    store.ingest(corpus_path("parsl-mixed-textlog"))
    config = store.sql("SELECT message FROM events WHERE message LIKE 'Starting DataFlowKernel with config%'")
    assert len(config) == 1
    assert "retries=2" in config.message[0] and config.message[0].count("\n") > 20
    files = store.sql("SELECT file, lines_read, events FROM ingested_files WHERE file LIKE '%parsl.log'")
    assert files.events[0] < files.lines_read[0]


def test_old_2025_formats_are_parsed_with_ids_from_the_path(store):
    store.ingest(corpus_path("parsl-2025-textlog"))
    by_source = store.sql(
        """SELECT source, min(logger) AS logger, count(*) FILTER (WHERE level IS NULL) AS no_level,
                  count(*) FILTER (WHERE executor_label = 'htex_old') AS labelled, count(*) AS n
           FROM events WHERE source IN ('interchange', 'manager', 'worker') GROUP BY 1"""
    ).set_index("source")
    assert by_source.loc["interchange", "logger"] == "interchange"
    assert by_source.loc["worker", "logger"] == "worker_log"
    assert (by_source.no_level == 0).all()
    assert (by_source.labelled == by_source.n).all()
    workers = store.sql("SELECT DISTINCT block_id, manager_id, worker_id FROM events WHERE source = 'worker'")
    assert set(workers.worker_id) == {"0", "1"}
    assert set(workers.block_id) == {"0"} and set(workers.manager_id) == {"b2e01b97597d"}


def test_launch_binding_matches_monitoring_tries(ingested_corpus_run):
    store, corpus_run = ingested_corpus_run
    with sqlite3.connect(corpus_run / "monitoring.db") as con:
        tries = con.execute("SELECT count(*) FROM try").fetchone()[0]
    launched = store.sql("SELECT count(*) AS n FROM events WHERE event = 'task.launched'").n[0]
    assert launched == tries


def test_reingest_adds_nothing(store, corpus_run):
    first = store.ingest(corpus_run)
    before = store.sql("SELECT count(*) AS n FROM events").n[0]
    second = store.ingest(corpus_run)
    assert second.events == 0 and second.files_unchanged == first.files_read
    assert store.sql("SELECT count(*) AS n FROM events").n[0] == before
    duplicates = store.sql("SELECT file, line FROM events GROUP BY 1, 2 HAVING count(*) > 1")
    assert duplicates.empty


def test_messages_that_differ_only_in_ids_share_a_template(store):
    store.ingest(corpus_path("parsl-htex-jsonlog"))
    templates = store.sql(
        """SELECT DISTINCT template FROM events
           WHERE message IN ('Standard out for task 0 will not be redirected.',
                             'Standard out for task 7 will not be redirected.')"""
    )
    assert templates.template.tolist() == ["Standard out for task <num> will not be redirected."]
    assert template_of("Standard out for task 7 will not be redirected.") == templates.template[0]


def test_dependencies_and_failures_are_read(store):
    store.ingest(corpus_path("parsl-htex-jsonlog"))
    deps = store.sql("SELECT task_id, attrs->>'dependency_task_id' AS dep FROM events WHERE event = 'task.dependency'")
    assert len(deps) == 5
    failed = store.tasks()
    failed = failed[failed.final_state == "failed"]
    assert set(failed.app_name) == {"boom"} and set(failed.exception_type) == {"ValueError"}


def test_naive_local_times_of_old_formats_line_up_with_epoch_times(store):
    """2025 interchange/worker logs have local times only: each task's worker start follows its
    DFK launch by less than the run's length, never precedes it."""
    store.ingest(corpus_path("parsl-2025-textlog"), utc_offset_seconds=None)
    gaps = store.sql(
        """SELECT w.ts - l.ts AS gap FROM
             (SELECT run_id, task_id, try_id, ts FROM events WHERE event = 'task.launched') l
           JOIN (SELECT run_id, task_id, try_id, ts FROM events WHERE event = 'htex.worker.received') w
           USING (run_id, task_id, try_id)"""
    )
    assert len(gaps) == 15
    assert gaps.gap.min() >= 0 and gaps.gap.max() < 10


def _shift_local_times(folder, hours: int) -> None:
    """Rewrite every naive local time of a copied run as if its machine were at UTC+hours."""
    import re
    from datetime import datetime, timedelta

    stamp = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")

    def shift(match):
        moved = datetime.strptime(match.group().decode(), "%Y-%m-%d %H:%M:%S") + timedelta(hours=hours)
        return moved.strftime("%Y-%m-%d %H:%M:%S").encode()

    for path in folder.rglob("*.log"):
        path.write_bytes(stamp.sub(shift, path.read_bytes()))
    with sqlite3.connect(folder / "monitoring.db") as con:
        for table, column in [("status", "timestamp"), ("task", "task_time_invoked"), ("try", "task_try_time_launched"),
                              ("workflow", "time_began"), ("workflow", "time_completed"), ("node", "timestamp"),
                              ("block", "timestamp"), ("resource", "timestamp")]:
            con.execute(f'UPDATE "{table}" SET {column} = datetime({column}, ?) || substr({column}, 20)',
                        [f"+{hours} hours"])


def test_utc_offset_is_learned_from_the_run_logs(store, tmp_path):
    """A run made at UTC+3 (local times 3 h ahead of its epoch times) still lines up in UTC."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(corpus_path("parsl-2025-textlog"), run)
    _shift_local_times(run, 3)
    store.ingest(run)
    gaps = store.sql(
        """SELECT w.ts - l.ts AS gap FROM
             (SELECT task_id, try_id, ts FROM events WHERE event = 'task.launched') l
           JOIN (SELECT task_id, try_id, ts FROM events WHERE event = 'htex.worker.received') w USING (task_id, try_id)"""
    )
    assert len(gaps) == 15 and gaps.gap.min() >= 0 and gaps.gap.max() < 10
    monitoring_gap = store.sql(
        """SELECT max(abs(l.ts - m.ts)) AS gap FROM
             (SELECT task_id, min(ts) AS ts FROM events WHERE source = 'parsl' AND task_state = 'pending' GROUP BY 1) l
           JOIN (SELECT task_id, min(ts) AS ts FROM events WHERE source = 'monitoring' AND task_state = 'pending'
                 GROUP BY 1) m USING (task_id)"""
    ).gap[0]
    assert monitoring_gap < 1.0
