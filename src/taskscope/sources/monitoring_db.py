"""Parsl's `monitoring.db` (SQLite, written by MonitoringHub): workflow, task, try, status,
resource, node and block rows become events with their ids.

monitoring.db stores naive local times (`datetime.now()`, Parsl #2194); they are converted to
UTC with the offset learned from the run's logs, else the ingesting machine's local offset.
Its rows are updated in place while a run is live (a task's `task_time_returned`, the
workflow's `time_completed`), so a changed database is re-read whole and replaces its
earlier events. In `events.file` each table shows as `monitoring.db#<table>`; `line` is the
SQLite rowid (for `#workflow`, 2*rowid-1 is the start and 2*rowid the end).
"""

from __future__ import annotations

import sqlite3

import duckdb
import pandas as pd

from taskscope._sql import registered
from taskscope.ingest.staging import insert_staged
from taskscope.sources import Sample, Source, StageContext, StageResult

TABLES = ("workflow", "task", "try", "status", "resource", "node", "block")


#: a temporary macro, made for each file read (`_stage_table`): its naive local times as UTC
_LOCAL_EPOCH = "taskscope_local_epoch"


def _local(column: str) -> str:
    """SQL: a naive local time string of monitoring.db as UTC epoch seconds."""
    return f"{_LOCAL_EPOCH}(try_cast({column} AS TIMESTAMP))"


# table -> SELECT over a DataFrame registered as `mon_rows` (with its `rowid`)
_SELECTS: dict[str, str] = {
    "workflow": f"""
        SELECT {_local('time_began')} AS ts, 'workflow.start' AS event, rowid * 2 - 1 AS line,
               run_id, host, 'workflow ' || coalesce(workflow_name, '') || ' began' AS message,
               json_object('workflow_name', workflow_name, 'workflow_version', workflow_version,
                           'user', "user", 'rundir', rundir) AS attrs
        FROM mon_rows
        UNION ALL
        SELECT {_local('time_completed')}, 'workflow.end', rowid * 2, run_id, host,
               'workflow ' || coalesce(workflow_name, '') || ' completed: ' || tasks_completed_count
                   || ' tasks done, ' || tasks_failed_count || ' failed',
               json_object('workflow_name', workflow_name, 'tasks_completed_count', tasks_completed_count,
                           'tasks_failed_count', tasks_failed_count)
        FROM mon_rows WHERE time_completed IS NOT NULL""",
    "task": f"""
        SELECT {_local('task_time_invoked')} AS ts, 'task.info' AS event, rowid AS line, run_id, task_id,
               task_func_name AS app_name,
               'task ' || task_id || ' (' || task_func_name || ') invoked' AS message,
               json_object('task_depends', task_depends, 'task_stdout', task_stdout,
                           'task_stderr', task_stderr, 'task_memoize', task_memoize,
                           'task_time_returned', {_local('task_time_returned')},
                           'task_fail_count', task_fail_count, 'task_fail_cost', task_fail_cost,
                           'task_hashsum', task_hashsum) AS attrs
        FROM mon_rows""",
    # a try Parsl never launched (its task dep_fail) has only its return time, and its fail history
    # (DependencyError): it is `try.not_launched`, timed at its return, so that no launch time is
    # read from it and its failure still counts
    "try": f"""
        SELECT coalesce({_local('task_try_time_launched')}, {_local('task_try_time_returned')}) AS ts,
               CASE WHEN task_try_time_launched IS NULL THEN 'try.not_launched' ELSE 'try.info' END AS event,
               rowid AS line, run_id, task_id,
               try_id, block_id, hostname AS host, task_executor AS executor_label,
               'task ' || task_id || ' try ' || try_id || CASE WHEN task_try_time_launched IS NULL
                   THEN ' ended without being launched' ELSE ' launched on ' || task_executor END AS message,
               json_object('task_try_time_running', {_local('task_try_time_running')},
                           'task_try_time_returned', {_local('task_try_time_returned')},
                           'task_fail_history', task_fail_history) AS attrs
        FROM mon_rows""",
    "status": f"""
        SELECT {_local('timestamp')} AS ts, 'task.state' AS event, rowid AS line, run_id, task_id, try_id,
               task_status_name AS task_state,
               'task ' || task_id || ' try ' || try_id || ' is ' || task_status_name AS message
        FROM mon_rows""",
    "resource": f"""
        SELECT {_local('timestamp')} AS ts, 'task.resource' AS event, rowid AS line, run_id, task_id, try_id,
               psutil_process_pid AS pid,
               'task ' || task_id || ' try ' || try_id || ' resources: rss '
                   || psutil_process_memory_resident || ' B, user ' || psutil_process_time_user || ' s' AS message,
               $psutil_attrs AS attrs
        FROM mon_rows""",
    "node": f"""
        SELECT {_local('timestamp')} AS ts, 'manager.status' AS event, rowid AS line, run_id,
               hostname AS host, uid AS manager_id, block_id,
               'manager ' || uid || ' on ' || hostname || ': ' || worker_count || ' workers, active '
                   || active AS message,
               json_object('cpu_count', cpu_count, 'total_memory', total_memory, 'active', active,
                           'worker_count', worker_count, 'python_v', python_v,
                           'last_heartbeat', {_local('last_heartbeat')}) AS attrs
        FROM mon_rows""",
    "block": f"""
        SELECT {_local('timestamp')} AS ts, 'block.status' AS event, rowid AS line, run_id,
               executor_label, block_id, job_id,
               'block ' || block_id || ' of ' || executor_label || ' (job ' || coalesce(job_id, '?') || ') is '
                   || status AS message,
               json_object('status', status) AS attrs
        FROM mon_rows""",
}


def stage_file(con: duckdb.DuckDBPyConnection, context: StageContext) -> StageResult:
    """Stage every row of every known table of the monitoring.db at `context.path`."""
    try:
        sqlite = sqlite3.connect(f"file:{context.path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return StageResult(note=f"cannot open as SQLite: {exc}")
    total = 0
    missing, foreign = [], []
    try:
        present = {row[0] for row in sqlite.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not present & set(TABLES):
            return StageResult(note="not a Parsl monitoring database (none of its tables)")
        for table in TABLES:
            if table not in present:
                missing.append(table)
                continue
            rows = pd.read_sql_query(f'SELECT rowid AS rowid, * FROM "{table}"', sqlite)
            problem = _foreign_columns(con, table, rows)
            if problem:
                foreign.append(f"{table} ({problem})")
                continue
            total += _stage_table(con, table, rows, context)
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        return StageResult(events=total, note=f"monitoring.db read stopped: {exc}")
    finally:
        sqlite.close()
    notes = [f"tables missing: {', '.join(missing)}"] if missing else []
    notes += [f"tables not in Parsl's layout, not read: {', '.join(foreign)}"] if foreign else []
    return StageResult(events=total, note="; ".join(notes) or None)


def _foreign_columns(con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame) -> str | None:
    """Why `rows` cannot be read as Parsl's `table` (a column the SELECT needs is missing,
    or of a type it cannot use), or None if they can.

    The SELECT is bound on a cursor of its own: an error in the ingest's transaction would
    abort the whole ingest, here it only leaves this table out.
    """
    probe = con.cursor()
    try:
        probe.register("mon_rows", rows.head(0))
        probe.execute(f"CREATE OR REPLACE TEMP MACRO {_LOCAL_EPOCH}(t) AS epoch(t)")  # a cursor's own
        probe.execute(f"DESCRIBE {_select(table, rows)}", [None, None])
    except duckdb.Error as exc:
        return str(exc).splitlines()[0]
    finally:
        probe.close()
    return None


def _select(table: str, rows: pd.DataFrame) -> str:
    """The staging SELECT of `table` over `mon_rows` (parameters: file, file_id)."""
    psutil = [c for c in rows.columns if c.startswith("psutil_") or c == "resource_monitoring_interval"]
    psutil_attrs = "json_object(" + ", ".join(f"'{c}', \"{c}\"" for c in psutil) + ")"
    select = _SELECTS[table].replace("$psutil_attrs", psutil_attrs)
    return f"""SELECT *, 'monitoring' AS source, $1 || '#{table}' AS file, $2::INTEGER AS file_id
               FROM ({select}) WHERE ts IS NOT NULL"""


def _stage_table(con: duckdb.DuckDBPyConnection, table: str, rows: pd.DataFrame, context: StageContext) -> int:
    if rows.empty:
        return 0
    con.execute(f"CREATE OR REPLACE TEMP MACRO {_LOCAL_EPOCH}(t) AS {context.local_epoch_sql('t')}")
    with registered(con, "mon_rows", rows):
        return insert_staged(con, _select(table, rows), [context.file, context.file_id])


def is_monitoring_db(sample: Sample) -> bool:
    """A `monitoring.db`, or any SQLite file (one that is not Parsl's is noted, not read).

    >>> is_monitoring_db(Sample("results.db", b"SQLite format 3\\x00..."))
    True
    """
    return sample.name == "monitoring.db" or sample.head.startswith(b"SQLite format 3\x00")


# last: it is read whole, and its naive local times use the offset the logs taught
SOURCE = Source(name="monitoring_db", recognise=is_monitoring_db, order=90, stage_file=stage_file,
                component="monitoring")
