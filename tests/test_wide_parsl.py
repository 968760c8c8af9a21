"""A real Parsl run logging through taskscope.parsl.WideEventLogging (the `wide_run` fixture)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import taskscope
from checks import assert_executor_events_joined, assert_tasks_match_monitoring

STAMPS_BY_COMPONENT = {
    "parsl": {"component", "host", "run_id", "run_dir"},
    "dbm": {"component", "host", "run_id", "run_dir"},
    "interchange": {"component", "host", "run_id", "run_dir", "executor_label"},
    "manager": {"component", "host", "run_id", "run_dir", "executor_label", "block_id", "manager_id"},
    "worker": {"component", "host", "run_id", "run_dir", "executor_label", "block_id", "manager_id", "worker_id"},
}


def run_ids(runinfo: Path) -> list[str]:
    with sqlite3.connect(runinfo / "monitoring.db") as con:
        return [row[0] for row in con.execute("SELECT run_id FROM workflow")]


def test_every_component_writes_wide_events_with_its_stamps(wide_run):
    (run_id,) = run_ids(wide_run)
    files = sorted((wide_run / "000").rglob("*.jsonlog"))
    components = set()
    for path in files:
        events = [json.loads(line) for line in path.read_text().splitlines()]
        assert events, f"{path} is empty"
        component = events[0]["component"]
        components.add(component)
        for event in events:
            missing = STAMPS_BY_COMPONENT[component] - set(event)
            assert not missing, f"{path}: a line lacks {missing}: {event['message'][:80]}"
            assert event["run_id"] == run_id and event["component"] == component
        if component in ("manager", "worker"):
            assert events[0]["manager_id"] == path.parent.name and events[0]["block_id"] == path.parent.parent.name[6:]
        if component == "worker":
            assert path.name == f"worker_{events[0]['worker_id']}.jsonlog"
    assert components == set(STAMPS_BY_COMPONENT)


def test_wide_run_ingests_fully_joined_and_matches_monitoring(store, wide_run):
    report = store.ingest(wide_run)
    assert report.bad_lines == 0
    assert assert_executor_events_joined(store) > 0
    assert_tasks_match_monitoring(store, wide_run / "monitoring.db")
    sources = set(store.sql("SELECT DISTINCT source FROM events").source)
    assert {"parsl", "interchange", "manager", "worker", "dbm", "monitoring"} <= sources
    task = store.sql("SELECT min(task_id) AS t FROM events WHERE source = 'worker'").t[0]
    journey = store.timeline(task)
    assert {"parsl", "interchange", "manager", "worker"} <= set(journey.source)


def test_stamps_make_path_guessing_unnecessary(tmp_path, wide_run):
    worker_log = next((wide_run / "000").rglob("worker_0.jsonlog"))
    flat = tmp_path / "flat"
    flat.mkdir()
    # names and places that say nothing: the records' own stamps, `component` included, must do
    shutil.copy(worker_log, flat / "copied.jsonlog")
    shutil.copy(wide_run / "000" / "parsl.jsonlog", flat / "dfk.jsonlog")
    joined_sql = "SELECT count(task_id) AS n FROM events WHERE file LIKE ? AND message LIKE '%task%'"
    with taskscope.open(":memory:") as in_place:
        in_place.ingest(wide_run)
        joined_in_place = in_place.sql(joined_sql, ["%worker_0.jsonlog"]).n[0]
    with taskscope.open(":memory:") as store:
        store.ingest(flat)
        missing = store.sql(
            """SELECT count(*) FILTER (WHERE run_id IS NULL OR executor_label IS NULL OR block_id IS NULL
                                       OR manager_id IS NULL OR worker_id IS NULL OR host IS NULL) AS n,
                      count(*) AS total FROM events WHERE file = 'copied.jsonlog'"""
        )
        sources = dict(store.sql("SELECT file, any_value(source) AS source FROM events GROUP BY 1").values)
        joined_flat = store.sql(joined_sql, ["copied.jsonlog"]).n[0]
    assert missing.total[0] > 0 and missing.n[0] == 0
    assert sources == {"copied.jsonlog": "worker", "dfk.jsonlog": "parsl"}
    assert joined_in_place > 0 and joined_flat == joined_in_place


def test_log_config_pickle_loads_in_a_fresh_interpreter(wide_run):
    pickled = next((wide_run / "000").rglob("log_config.pkl"))
    code = ("import pickle, sys; c = pickle.load(open(sys.argv[1], 'rb')); "
            "print(type(c).__module__, type(c).__name__, c.run_id)")
    env = dict(os.environ, PYTHONPATH="")
    done = subprocess.run([sys.executable, "-c", code, str(pickled)], capture_output=True, text=True, env=env,
                          cwd=pickled.parent, timeout=60)
    assert done.returncode == 0, done.stderr
    module, name, run_id = done.stdout.split()
    assert (module, name) == ("taskscope.parsl.logconfig", "WideEventLogging")
    assert [run_id] == run_ids(wide_run)


# ---- Parsl's own loggers on the fast path (FastPathLogger), in every process -------------------

SMALL_RUN = '''
import logging, sys
import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider
from taskscope.parsl import WideEventLogging

run_dir, stats_dir, fast = sys.argv[1], sys.argv[2], sys.argv[3] == "fast"
config = Config(
    executors=[HighThroughputExecutor(label="htex_local", worker_debug=True, cores_per_worker=1, max_workers_per_node=2,
                                      heartbeat_period=1, provider=LocalProvider(init_blocks=1, max_blocks=1))],
    strategy="none", run_dir=run_dir,
    initialize_logging=WideEventLogging(level=logging.DEBUG, fast_loggers=fast, stats_dir=stats_dir),
)

@parsl.python_app
def double(x):
    return 2 * x

with parsl.load(config):
    assert [double(i).result() for i in range(20)] == [2 * i for i in range(20)]
'''


def small_wide_run(base: Path, fast: bool) -> tuple[Path, dict[str, list[dict]]]:
    """A real HTEX run of 20 tasks under WideEventLogging; its runinfo and each process's handler counters."""
    run_dir, stats_dir = base / "runinfo", base / "stats"
    base.mkdir(parents=True)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    done = subprocess.run([sys.executable, "-c", SMALL_RUN, str(run_dir), str(stats_dir), "fast" if fast else "stdlib"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=base)
    assert done.returncode == 0, done.stderr[-3000:]
    stats: dict[str, list[dict]] = {}
    for path in stats_dir.glob("*.json"):
        component = path.name.rsplit("-", 1)[0]
        stats.setdefault("worker" if component.startswith("worker_") else component, []).append(
            json.loads(path.read_text()))
    return run_dir, stats


def task_events(store) -> list[tuple]:
    """What the run's events say about its tasks, in a form two runs of the same workflow share."""
    return sorted(store.sql(
        """SELECT source, logger, level, template, task_id, executor_task_id, count(*) AS n FROM events
           WHERE source IN ('parsl', 'interchange', 'manager', 'worker')
             AND (task_id IS NOT NULL OR executor_task_id IS NOT NULL)
           GROUP BY ALL""").itertuples(index=False))


def test_parsls_own_records_take_the_fast_path_in_every_process_with_the_same_events(tmp_path):
    fast_run, fast_stats = small_wide_run(tmp_path / "fast", fast=True)
    slow_run, slow_stats = small_wide_run(tmp_path / "stdlib", fast=False)
    assert set(fast_stats) >= {"parsl", "interchange", "manager", "worker"}
    for component in ("parsl", "interchange", "manager", "worker"):
        for counters in fast_stats[component]:
            # all but the DFK's lines held until its run id is known, and exceptions (stdlib's path)
            assert counters["fast_path_records"] >= 0.9 * counters["written_records"] > 0, (component, counters)
            assert counters["dropped_records"] == 0
        for counters in slow_stats[component]:
            assert counters["fast_path_records"] == 0 < counters["written_records"], (component, counters)
    by_run = []
    for run_dir in (fast_run, slow_run):
        with taskscope.open(":memory:") as store:
            assert store.ingest(run_dir).bad_lines == 0
            assert store.sql("SELECT count(*) AS n FROM events WHERE message IS NULL OR message = ''").n[0] == 0
            by_run.append(task_events(store))
    assert len(by_run[0]) > 100 and by_run[0] == by_run[1]


# ---- the program's own logging is left as it was -------------------------------------------

CONSOLE_PROGRAM = '''
import logging, sys
logging.basicConfig(level=logging.WARNING)  # the program's console shows warnings and above
import parsl
from parsl.config import Config
from parsl.executors import ThreadPoolExecutor
from taskscope.parsl import WideEventLogging

@parsl.python_app
def double(x):
    return 2 * x

config = Config(executors=[ThreadPoolExecutor(label="threads", max_threads=2)], run_dir=sys.argv[1],
                initialize_logging=WideEventLogging())
with parsl.load(config):
    assert sum(future.result() for future in [double(i) for i in range(10)]) == 90
    logging.getLogger("parsl.dataflow.test").warning("a warning of Parsl's")
parsl_logger = logging.getLogger("parsl")
print(logging.getLevelName(logging.getLogger().level), logging.getLevelName(parsl_logger.level),
      parsl_logger.propagate, [type(handler).__name__ for handler in parsl_logger.handlers])
logging.getLogger("myapp").info("an INFO record of the program's own, below its console's level")
'''


@pytest.mark.slow
def test_wide_event_logging_leaves_the_programs_console_as_it_was(tmp_path):
    """Parsl's DEBUG and INFO records reach the wide-event file, not a console the program set to
    WARNING (they did, 250 lines of them, when the root logger was lowered to DEBUG), and the
    levels are as they were once the DFK is closed."""
    done = subprocess.run([sys.executable, "-c", CONSOLE_PROGRAM, str(tmp_path / "runinfo")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines() == ["WARNING:parsl.dataflow.test:a warning of Parsl's"]
    assert done.stdout.split("\n", 1)[0] == "WARNING NOTSET True ['NullHandler']"
    events = [json.loads(line) for line in (tmp_path / "runinfo" / "000" / "parsl.jsonlog").read_text().splitlines()]
    levels = {event["levelname"] for event in events if event["name"].startswith("parsl.dataflow")}
    assert {"DEBUG", "INFO", "WARNING"} <= levels
    with taskscope.open(":memory:") as store:
        store.ingest(tmp_path / "runinfo")
        done_tasks = store.sql("SELECT count(DISTINCT task_id) AS n FROM events WHERE task_state = 'exec_done'").n[0]
    assert done_tasks == 10
