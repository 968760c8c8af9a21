"""Tasks: one row per task of a run, and what happened to one task (its cross-log timeline,
tries, stages, dependencies, resource samples and output files).

Each is a function of a DuckDB connection; the work is SQL, Python only picks parameters.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa

from taskscope._sql import of_run, registered
from taskscope.analyses.runs import FINAL_STATES, STATE_ORDER, TASK_STATES, WORKER_STATES
from taskscope.schema import natural_sort_key

# one try's times and place, over the events of one task (`_TRIES`) or of some tasks (`_EARLIER_TRIES`)
_TRY_COLUMNS = """
           min(ts) FILTER (WHERE event IN ('task.launched', 'try.info')) AS launch_ts,
           min(ts) FILTER (WHERE event = 'htex.worker.received' OR task_state = 'running') AS worker_start_ts,
           max(ts) FILTER (WHERE event IN ('htex.worker.finished', 'task.try_failed')
                           OR task_state IN ('running_ended', 'exec_done', 'failed')) AS end_ts,
           any_value(executor_label) AS executor_label, any_value(executor_task_id) AS executor_task_id,
           any_value(block_id) AS block_id, any_value(manager_id) AS manager_id,
           any_value(worker_id) AS worker_id, any_value(host) FILTER (WHERE source <> 'parsl') AS host
"""

# every try but the last of the tasks in `retried` (task_id): what a Gantt draws inside their wait
_EARLIER_TRIES = f"""
    WITH tries AS (
        SELECT task_id, try_id, {_TRY_COLUMNS}
        FROM events SEMI JOIN retried USING (task_id)
        WHERE run_id = $run AND try_id IS NOT NULL
        GROUP BY task_id, try_id
    )
    SELECT * FROM tries
    WHERE try_id < (SELECT max(try_id) FROM tries last WHERE last.task_id = tries.task_id)
    ORDER BY natural_key(task_id), try_id
"""

# The exception a record names: the field a rule or the record itself gives it (`exception_type`,
# `exc_type`), else the type on the exception line of the Python traceback in its `exc_text`
# (what `logger.exception` writes: "RuntimeError: step broke"); an `exc_text` that is no
# traceback ("None") names none. The exception line is the first after the last frame ("  File
# ..." and its indented lines), not the last line: a message may have several lines. A traceback
# without frames ("Traceback ...:\nasyncio.exceptions.CancelledError") names its last line's type.
EXCEPTION_NAMED = r"""
    coalesce(nullif(attrs->>'exception_type', ''), nullif(attrs->>'exc_type', ''),
             CASE WHEN attrs->>'exc_text' LIKE 'Traceback (most recent call last):%' THEN coalesce(
                 nullif(regexp_extract(attrs->>'exc_text',
                                       '(?s)^.*\n  File [^\n]*\n(?:[ \t][^\n]*\n)*([A-Za-z_][\w.]*)(?::|\n|$)', 1), ''),
                 nullif(regexp_extract(attrs->>'exc_text', '\n([A-Za-z_][\w.]*)(?::[^\n]*)?\s*$', 1), ''))
             END)
"""

# CTEs ending in `failure_records`: one row per record of a failed try, from any stream: a
# `task.try_failed` event (the DFK's "Task N try M failed with exception of type E", or a rule's)
# or a monitoring.db `try` row with a fail history ("E('message')"), with the `exception_type`
# it names (NULL: none) and `logged` (true for the event). A record without a try id is a
# failure of the try its task was in: the try of the task's latest event before it that has one
# (its first try when none came before); when no event of the task has a try id, its records are
# its tries, numbered 0, 1, ... in time order.
def failure_records_sql(scope: str | None = None) -> str:
    """`FAILURE_RECORDS` over the events that `scope` (a condition on the columns of `events`)
    selects, by default `of_run()`: a task's page reads its own failures, not its whole run's.

    >>> "task_id = $task" in failure_records_sql(of_run() + " AND task_id = $task")
    True
    """
    scope = scope or of_run()
    return fr"""
    failure_events AS (
        SELECT run_id, task_id, try_id, ts, file_id, line, event = 'task.try_failed' AS logged,
               CASE WHEN event = 'task.try_failed' THEN {EXCEPTION_NAMED}
                    ELSE nullif(regexp_extract(attrs->>'task_fail_history', '^\W*([A-Za-z_][\w.]*)\(', 1), '')
               END AS exception_type
        FROM events
        WHERE event IN ('task.try_failed', 'try.info', 'try.not_launched')  -- a filter the scan takes; attrs after it
              AND (event = 'task.try_failed' OR nullif(attrs->>'task_fail_history', '') IS NOT NULL)
              AND task_id IS NOT NULL AND run_id IS NOT NULL AND {scope}
    ),
    tasks_with_unplaced_failures AS (
        SELECT DISTINCT run_id, task_id FROM failure_events WHERE try_id IS NULL
    ),
    placed_failures AS (
        SELECT run_id, task_id, ts, logged, exception_type, coalesce(
                   last_value(try_id IGNORE NULLS) OVER (in_time ROWS UNBOUNDED PRECEDING),
                   min(try_id) OVER (PARTITION BY run_id, task_id),
                   CAST(sum(CAST(is_record AS INTEGER)) OVER (in_time ROWS UNBOUNDED PRECEDING) - 1 AS BIGINT))
                   AS try_id,
               is_record
        FROM (
            SELECT run_id, task_id, try_id, ts, file_id, line, false AS is_record, NULL AS logged,
                   NULL AS exception_type
            FROM events SEMI JOIN tasks_with_unplaced_failures USING (run_id, task_id)
            WHERE try_id IS NOT NULL AND {scope}
            UNION ALL
            SELECT run_id, task_id, NULL, ts, file_id, line, true, logged, exception_type
            FROM failure_events WHERE try_id IS NULL
        )
        WINDOW in_time AS (PARTITION BY run_id, task_id ORDER BY ts, file_id, line)
    ),
    failure_records AS (
        SELECT run_id, task_id, try_id, ts, logged, exception_type FROM failure_events WHERE try_id IS NOT NULL
        UNION ALL
        SELECT run_id, task_id, try_id, ts, logged, exception_type FROM placed_failures WHERE is_record
    )
"""


FAILURE_RECORDS = failure_records_sql()

# CTEs ending in `failed_tries`, after `FAILURE_RECORDS` and given `task_rows` (run_id, task_id,
# final_state, tries): one row per failed try (run_id, task_id, try_id, exception_type, fail_ts).
# Its exception is the one its logged record names, else its fail history's, else `unknown`;
# `fail_ts` is when it was logged failing. A task that ended `failed` whose last try has no record
# (a stream that logs only the final state, Academy's action that raised) has that try failed
# too, with the exception its own events' tracebacks name last (`unknown` when none does), so
# every failed task has exactly one failed last try. A `dep_fail` task never ran: none.
def failed_tries_sql(scope: str | None = None) -> str:
    """`FAILED_TRIES` reading the last tries' events among those `scope` (a condition on the
    columns of `events` as `e`) selects, by default `of_run("e.run_id")`: a task's page reads its
    own task's events, not its whole run's (a scan of every event of the run, 0.08 s on a 9,000-task run).

    >>> "e.task_id = $task" in failed_tries_sql(of_run("e.run_id") + " AND e.task_id = $task")
    True
    """
    scope = scope or of_run("e.run_id")
    return f"""
    unrecorded_failures AS (
        SELECT t.run_id, t.task_id, t.tries - 1 AS try_id,
               (SELECT max(f.ts) FROM failure_records f WHERE f.run_id = t.run_id AND f.task_id = t.task_id)
                   AS earlier_failure_ts
        FROM task_rows t
        WHERE t.final_state = 'failed' AND NOT EXISTS (
            SELECT 1 FROM failure_records f
            WHERE f.run_id = t.run_id AND f.task_id = t.task_id AND f.try_id = t.tries - 1)
    ),
    -- the last try's events: those with its try id, and those with none since the task's
    -- earlier tries' failures (not these failures themselves). Materialized, so that the
    -- exception is read from these few events' attrs only, not pushed down to every event's.
    last_try_events AS MATERIALIZED (
        SELECT e.run_id, e.task_id, e.ts, e.file_id, e.line, e.attrs
        FROM events e JOIN unrecorded_failures u ON e.run_id = u.run_id AND e.task_id = u.task_id
        WHERE e.attrs IS NOT NULL AND e.event IS DISTINCT FROM 'task.try_failed' AND {scope}
              AND (e.try_id = u.try_id
                   OR (e.try_id IS NULL AND (u.earlier_failure_ts IS NULL OR e.ts > u.earlier_failure_ts)))
    ),
    exceptions_in_task_events AS (
        SELECT run_id, task_id, arg_max(exception_type, (ts, file_id, line)) AS exception_type
        FROM (SELECT run_id, task_id, ts, file_id, line, {EXCEPTION_NAMED} AS exception_type FROM last_try_events)
        WHERE exception_type IS NOT NULL
        GROUP BY run_id, task_id
    ),
    failed_tries AS (
        SELECT run_id, task_id, try_id,
               coalesce(any_value(exception_type) FILTER (WHERE logged), any_value(exception_type), 'unknown')
                   AS exception_type,
               min(ts) FILTER (WHERE logged) AS fail_ts
        FROM failure_records GROUP BY run_id, task_id, try_id
        UNION ALL
        SELECT u.run_id, u.task_id, u.try_id, coalesce(x.exception_type, 'unknown'), NULL
        FROM unrecorded_failures u LEFT JOIN exceptions_in_task_events x USING (run_id, task_id)
    )
"""


FAILED_TRIES = failed_tries_sql()

# `task_rows` (run_id, task_id, final_state, tries), after `FAILURE_RECORDS` and given `per_task`
# (run_id, task_id, last_try_id) and `states` (run_id, task_id, final_state): `tries` is the last
# try id + 1; without try ids, the failed tries numbered from the failure records, plus the try
# that succeeded when the task ended done
TASK_ROWS = """
    task_rows AS (
        SELECT p.run_id, p.task_id, s.final_state,
               CASE WHEN p.last_try_id IS NOT NULL THEN greatest(p.last_try_id + 1, 1)
                    ELSE greatest(coalesce(r.failed, 0)
                                  + CASE WHEN s.final_state IN ('exec_done', 'memo_done') THEN 1 ELSE 0 END, 1)
               END AS tries
        FROM per_task p LEFT JOIN states s USING (run_id, task_id)
        LEFT JOIN (SELECT run_id, task_id, count(DISTINCT try_id) AS failed FROM failure_records GROUP BY ALL) r
            USING (run_id, task_id)
    )
"""

# One task's tries ($run, $task, its final state $state), for any stream: every try `tasks`
# counts (0 .. tries - 1), with its times and place where its events carry its try id, and each
# failed try's exception as `tasks` and `summary` name it (`FAILED_TRIES`: a failure logged
# without a try id is its task's try's; a failed last try nothing recorded is `unknown` when no
# event names its exception)
_TRIES = f"""
    WITH per_task AS (
        SELECT $run AS run_id, $task AS task_id,
               (SELECT max(try_id) FROM events WHERE run_id = $run AND task_id = $task) AS last_try_id
    ),
    states AS (SELECT $run AS run_id, $task AS task_id, $state AS final_state),
    {failure_records_sql(of_run() + " AND task_id = $task")}, {TASK_ROWS},
    {failed_tries_sql(of_run("e.run_id") + " AND e.task_id = $task")},
    numbered AS (SELECT unnest(range(tries)) AS try_id FROM task_rows),
    placed AS (
        SELECT try_id, {_TRY_COLUMNS},
               any_value(nullif(attrs->>'task_fail_history', '')) FILTER (WHERE event IN ('try.info', 'try.not_launched'))
                   AS fail_history
        FROM events WHERE run_id = $run AND task_id = $task AND try_id IS NOT NULL
        GROUP BY try_id
    ),
    failed AS (SELECT try_id, exception_type FROM failed_tries WHERE run_id = $run AND task_id = $task)
    SELECT try_id, p.* EXCLUDE (try_id, fail_history), f.exception_type, p.fail_history
    FROM numbered LEFT JOIN placed p USING (try_id) LEFT JOIN failed f USING (try_id)
    ORDER BY try_id
"""

# dependencies from the DFK's "Task N has dependency task M" lines and monitoring's task_depends
_DEPENDENCIES = """
    WITH edges AS (
        SELECT task_id, attrs->>'dependency_task_id' AS depends_on
        FROM events WHERE run_id = $run AND event = 'task.dependency'
        UNION
        SELECT task_id, nullif(trim(d), '') FROM (
            SELECT task_id, unnest(string_split(attrs->>'task_depends', ',')) AS d
            FROM events WHERE run_id = $run AND event = 'task.info' AND coalesce(attrs->>'task_depends', '') <> '')
    )
    SELECT DISTINCT task_id, depends_on FROM edges WHERE depends_on IS NOT NULL
    ORDER BY natural_key(task_id), natural_key(depends_on)  -- the same order every time: the digest stores it, pages compare it
"""

# DFK states (logs, else monitoring) and executor-side stages of one task, as intervals
_STAGES = f"""
    WITH has_logs AS (
        SELECT count(*) > 0 AS yes FROM events
        WHERE run_id = $run AND task_id = $task AND event = 'task.state' AND source <> 'monitoring'
    ),
    states AS (
        SELECT ts, task_state, try_id, file_id, line FROM events, has_logs
        WHERE run_id = $run AND task_id = $task AND event = 'task.state' AND task_state NOT IN {WORKER_STATES}
          AND (source <> 'monitoring') = has_logs.yes
    ),
    state_intervals AS (
        SELECT 'DFK state' AS "group", task_state AS label, ts AS start_ts,
               lead(ts) OVER (ORDER BY ts, file_id, line) AS end_ts
        FROM states
    ),
    executor_marks AS (
        SELECT try_id,
               min(ts) FILTER (WHERE event = 'htex.interchange.queued') AS queued_ts,
               min(ts) FILTER (WHERE event = 'htex.interchange.sent') AS sent_ts,
               min(ts) FILTER (WHERE event = 'htex.worker.received' OR task_state = 'running') AS run_ts,
               max(ts) FILTER (WHERE event = 'htex.worker.finished' OR task_state = 'running_ended') AS done_ts
        FROM events WHERE run_id = $run AND task_id = $task GROUP BY try_id
    )
    SELECT "group", label, start_ts, end_ts FROM state_intervals
    WHERE end_ts IS NOT NULL OR label NOT IN {FINAL_STATES}
    UNION ALL
    SELECT 'executor', 'try ' || coalesce(CAST(try_id AS VARCHAR), '?') || ': queued in interchange', queued_ts, sent_ts
    FROM executor_marks WHERE queued_ts IS NOT NULL AND sent_ts IS NOT NULL
    UNION ALL
    SELECT 'executor', 'try ' || coalesce(CAST(try_id AS VARCHAR), '?') || ': running on worker', run_ts, done_ts
    FROM executor_marks WHERE run_ts IS NOT NULL AND done_ts IS NOT NULL
    ORDER BY start_ts
"""

_RESOURCES = """
    SELECT ts, try_id,
           TRY_CAST(attrs->>'psutil_process_memory_resident' AS DOUBLE) / 1048576 AS memory_resident_mib,
           TRY_CAST(attrs->>'psutil_process_time_user' AS DOUBLE) AS cpu_user_s,
           TRY_CAST(attrs->>'psutil_process_time_system' AS DOUBLE) AS cpu_system_s,
           TRY_CAST(attrs->>'psutil_process_cpu_percent' AS DOUBLE) AS cpu_percent,
           -- the samples are the worker process's running totals: the try's CPU time so far is
           -- the total minus the total at its first sample
           TRY_CAST(attrs->>'psutil_process_time_user' AS DOUBLE)
               + coalesce(TRY_CAST(attrs->>'psutil_process_time_system' AS DOUBLE), 0)
               - first_value(TRY_CAST(attrs->>'psutil_process_time_user' AS DOUBLE)
                             + coalesce(TRY_CAST(attrs->>'psutil_process_time_system' AS DOUBLE), 0))
                     OVER (PARTITION BY try_id ORDER BY ts) AS cpu_since_first_s
    FROM events WHERE run_id = $run AND task_id = $task AND event = 'task.resource' ORDER BY ts
"""

_STREAMS = r"""
    SELECT 'stdout' AS stream, nullif(attrs->>'task_stdout', '') AS path FROM events
    WHERE run_id = $run AND task_id = $task AND event = 'task.info'
    UNION ALL
    SELECT 'stderr', nullif(attrs->>'task_stderr', '') FROM events
    WHERE run_id = $run AND task_id = $task AND event = 'task.info'
    UNION ALL
    SELECT CASE event WHEN 'task.stdout' THEN 'stdout' ELSE 'stderr' END,
           nullif(regexp_extract(message, 'redirected to (.+)$', 1), '')
    FROM events WHERE run_id = $run AND task_id = $task AND event IN ('task.stdout', 'task.stderr')
"""


def tasks(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> pd.DataFrame:
    """One row per task: app, final state, tries, why it failed, the times of its stages, where it ran.

    `exception_type` is the exception of the task's last try (the one that decided its fate),
    empty when that try did not fail: a task that failed and then succeeded on a retry has
    none, a task that ended `failed` always has one. `earlier_exceptions` lists the exceptions
    of its failed tries before the last, in try order ("RuntimeError, KeyError"). Both come
    from `task.try_failed` events (the DFK's "failed with exception of type" lines), else
    monitoring.db's fail history, else, for a failed last try nothing recorded, the traceback
    in the task's own events (`exc_text`); `unknown` when none names the type (see
    `FAILURE_RECORDS` and `FAILED_TRIES`). `tries` is the last try id + 1; a task whose
    events carry no try id has its failure records as tries, plus one if it ended done.
    Times are seconds since the epoch (UTC); `duration_s` is submit to end. `executor_label`,
    `block_id`, `manager_id`, `worker_id` and `host` are those of its last try. Rows are in
    natural task order (`natural_key`: '9' before '10') within each run: the task pages rely on it.
    """
    return con.execute(
        f"""
        WITH states AS ({TASK_STATES}),
        per_task AS (
            SELECT run_id, task_id,
                   any_value(app_name) AS app_name,
                   max(try_id) AS last_try_id,
                   min(ts) FILTER (WHERE event IN ('task.submitted', 'task.info')
                                   OR task_state IN ('unsched', 'pending')) AS submit_ts,
                   max(ts) FILTER (WHERE event IN ('task.launched', 'try.info')
                                   OR (event = 'task.state' AND task_state = 'launched')) AS launch_ts,
                   max(ts) FILTER (WHERE event = 'htex.worker.received'
                                   OR (event = 'task.state' AND task_state = 'running')) AS worker_start_ts,
                   max(ts) FILTER (WHERE task_state IN {FINAL_STATES}) AS end_ts,
                   arg_max(executor_label, coalesce(try_id, -1)) FILTER (WHERE executor_label IS NOT NULL) AS executor_label,
                   arg_max(block_id, coalesce(try_id, -1)) FILTER (WHERE block_id IS NOT NULL) AS block_id,
                   arg_max(manager_id, coalesce(try_id, -1)) FILTER (WHERE manager_id IS NOT NULL) AS manager_id,
                   arg_max(worker_id, coalesce(try_id, -1)) FILTER (WHERE worker_id IS NOT NULL) AS worker_id,
                   arg_max(host, coalesce(try_id, -1)) FILTER (WHERE host IS NOT NULL AND source <> 'parsl') AS host
            FROM events
            WHERE task_id IS NOT NULL AND run_id IS NOT NULL AND {of_run()}
            GROUP BY run_id, task_id
        ),
        {FAILURE_RECORDS}, {TASK_ROWS}, {FAILED_TRIES},
        failures AS (
            SELECT f.run_id, f.task_id,
                   -- the last try's exception: none when the last try did not fail (a retry succeeded)
                   any_value(f.exception_type) FILTER (WHERE f.try_id = t.tries - 1) AS exception_type,
                   string_agg(f.exception_type, ', ' ORDER BY f.try_id) FILTER (WHERE f.try_id < t.tries - 1)
                       AS earlier_exceptions
            FROM failed_tries f JOIN task_rows t USING (run_id, task_id)
            GROUP BY f.run_id, f.task_id
        )
        SELECT p.run_id, p.task_id, p.app_name, t.final_state, t.tries, f.exception_type, f.earlier_exceptions,
               p.submit_ts, p.launch_ts, p.worker_start_ts, p.end_ts,
               round(p.end_ts - p.submit_ts, 6) AS duration_s,
               p.executor_label, p.block_id, p.manager_id, p.worker_id, p.host
        FROM per_task p JOIN task_rows t USING (run_id, task_id)
        LEFT JOIN failures f USING (run_id, task_id)
        ORDER BY p.run_id, natural_key(p.task_id), p.task_id  -- a tie ("7", "007") in one order every time
        """,
        {"run": run_id},
    ).df()


def earlier_tries(con: duckdb.DuckDBPyConnection, run_id: str, task_ids: list[str]) -> pd.DataFrame:
    """Every try but the last of the tasks `task_ids` of `run_id` (those with more than one try):
    `task_id`, `try_id`, its `launch_ts`, `worker_start_ts` and `end_ts` (the worker's finish or
    the DFK's note of the failure), and where it ran (`executor_label`, `block_id`, `manager_id`,
    `worker_id`, `host`), in natural task order, then by try.

    >>> earlier_tries(con, run_id, ["12"])[["task_id", "try_id"]].values.tolist()  # doctest: +SKIP
    [['12', 0]]
    """
    with registered(con, "retried", pa.table({"task_id": pa.array([str(t) for t in task_ids], pa.string())})):
        return con.execute(_EARLIER_TRIES, {"run": run_id}).df()


def latest_run_with_task(con: duckdb.DuckDBPyConnection, task_id: str | int) -> tuple[str | None, int]:
    """(the most recent run that has `task_id`, how many runs have it)."""
    rows = con.execute(
        """SELECT run_id FROM events WHERE task_id = ? AND run_id IS NOT NULL
           GROUP BY run_id ORDER BY max(ts) DESC""",
        [str(task_id)],
    ).fetchall()
    return (rows[0][0] if rows else None), len(rows)


def timeline(con: duckdb.DuckDBPyConnection, task_id: str | int, run_id: str | None = None) -> pd.DataFrame:
    """Every event of one task across all sources, in time order, with time since the first.

    Without `run_id`, the most recent run that has the task is used; when no run has it, its
    events that name no run (generic JSON lines, a program's own `bind(task_id=...)`).

    >>> timeline(con, task_id=358)[["since_first_s", "source", "message"]]  # doctest: +SKIP
    """
    if run_id is None:
        run_id, _ = latest_run_with_task(con, task_id)
    # the run's events (`= $run`: a filter DuckDB pushes into the scan), else those naming no run
    in_run = "{}run_id = $run" if run_id is not None else "{}run_id IS NULL AND $run IS NULL"
    return con.execute(
        f"""
        WITH hits AS (
            SELECT * FROM events WHERE {in_run.format('')} AND task_id = $task
            UNION ALL
            SELECT e.* FROM event_task_links l JOIN events e ON e.file_id = l.file_id AND e.line = l.line
            WHERE {in_run.format('l.')} AND l.task_id = $task AND e.task_id IS NULL
        )
        SELECT ts, ts - min(ts) OVER () AS since_first_s, source, file, line, level, event, message,
               coalesce(attrs->>'process_name', attrs->>'processName', CAST(pid AS VARCHAR)) AS process,
               pid, thread, host, run_id, task_id, try_id, executor_label, executor_task_id,
               block_id, manager_id, worker_id
        FROM hits ORDER BY ts, file, line
        """,
        {"run": run_id, "task": str(task_id)},
    ).df()


def dependency_edges(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Every dependency of a run: `task_id` waited for `depends_on` (from the DFK's "Task N has
    dependency task M" lines and monitoring's `task_depends`), in a stable order.

    >>> dependency_edges(con, run_id).head(2)  # doctest: +SKIP
    """
    return con.execute(_DEPENDENCIES, {"run": run_id}).df()


def dependencies(edges: pd.DataFrame, task_id: str | int) -> dict[str, list[str]]:
    """`depends_on` (tasks this one waited for) and `dependents` (tasks that waited for it),
    from the run's `edges` (see `dependency_edges`), in natural order.

    >>> dependencies(pd.DataFrame({"task_id": ["2", "3", "3"], "depends_on": ["1", "2", "10"]}), "3")
    {'depends_on': ['2', '10'], 'dependents': []}
    """
    task_id = str(task_id)
    return {"depends_on": sorted(set(edges.depends_on[edges.task_id == task_id]), key=natural_sort_key),
            "dependents": sorted(set(edges.task_id[edges.depends_on == task_id]), key=natural_sort_key)}


def task_detail(con: duckdb.DuckDBPyConnection, run_id: str, task_id: str | int,
                edges: pd.DataFrame | None = None) -> dict:
    """Everything known about one task of `run_id` (a full id): `app_name`, `final_state`,
    `tries` (each try `tasks` counts, with its exception if it failed: see `_TRIES`),
    `dependencies`, `stages` (intervals), `resources` (monitoring's samples), `streams`
    (stdout/stderr paths) and its `timeline`. `edges`: the run's `dependency_edges` when the
    caller already has them. Raises LookupError when the run has no such task.

    >>> task_detail(con, run_id, 3)["final_state"]  # doctest: +SKIP
    'exec_done'
    """
    task_id = str(task_id)
    params = {"run": run_id, "task": task_id}
    events = timeline(con, task_id, run_id)
    if events.empty:
        raise LookupError(f"run {run_id} has no task {task_id}")
    streams = con.execute(_STREAMS, params).df().dropna().drop_duplicates()
    final_state = _final_state(con, run_id, task_id)
    return {
        "run_id": run_id, "task_id": task_id,
        "app_name": _app_name(con, run_id, task_id),
        "final_state": final_state,
        "tries": con.execute(_TRIES, {**params, "state": final_state}).df(),
        "dependencies": dependencies(dependency_edges(con, run_id) if edges is None else edges, task_id),
        "stages": con.execute(_STAGES, params).df(),
        "resources": con.execute(_RESOURCES, params).df(),
        "streams": streams,
        "timeline": events,
    }


def _app_name(con: duckdb.DuckDBPyConnection, run_id: str, task_id: str) -> str | None:
    rows = con.execute("SELECT any_value(app_name) FROM events WHERE run_id = ? AND task_id = ?",
                       [run_id, task_id]).fetchall()
    return rows[0][0] if rows else None


def _final_state(con: duckdb.DuckDBPyConnection, run_id: str, task_id: str) -> str:
    rows = con.execute(
        f"""SELECT arg_max(task_state, {STATE_ORDER}) FROM events WHERE run_id = ? AND task_id = ?
            AND task_state IS NOT NULL AND task_state NOT IN {WORKER_STATES}""",
        [run_id, task_id]).fetchall()
    return (rows[0][0] if rows else None) or "unfinished"
