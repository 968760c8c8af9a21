"""Chrome/Perfetto trace export: a run as a timeline to open in ui.perfetto.dev (or chrome://tracing).

The file is Trace Event Format JSON (object form) with `displayTimeUnit` "ms". Every `ts` and `dur`
is an integer number of **microseconds since the Unix epoch (UTC)**: absolute, so traces of
different runs line up and `ts / 1e6` is the store's `events.ts` again (rounded to the µs).

What is drawn, per run:

- **DFK** process (`run <id> · DFK`): for every task a nestable async slice ("b"/"e", `id2.local`
  = task id) named after its app, from its first DFK state to its final one, holding one child
  slice per DFK state it passed through (`pending`, `launched`, `fail_retryable`, ...), each
  with run/task/try/app in `args`. Perfetto packs the tasks of one app onto shared tracks.
  A task with no final state is drawn up to the run's last event, with `unfinished: true`.
  States are those of `taskscope.analyses.states.states` (the DFK's log, with what releases
  before 2026 did not log inferred), or monitoring.db's for a run whose logs have none.
- **Counter tracks** ("C") on the DFK process for the implicit queues of
  `taskscope.analyses.between.standard_queues`: waiting in DFK, queued in interchange, running
  on worker.
- One **process per HTEX manager** (`run · executor block N · manager ID @ host`) with one
  **thread per worker slot**: a complete event ("X") per try, from `htex.worker.received` to
  `htex.worker.finished` (or, when the worker did not log that, the task's next DFK state
  that ends a try, else its last worker event). No two complete events on one thread overlap:
  a try that would overlap the previous one on its slot goes to an extra "overlapping tries"
  thread of the same manager (never needed when the worker logged its finish).
- **Instant events** ("i") for notable moments: failed tries, exhausted retries, dependency
  failures, lost managers, dead workers, ERROR/CRITICAL records, block launches and scale-ins;
  on the manager they concern, else on the DFK's "notable events" thread.
- Metadata ("M") naming every process and thread and ordering them.

Events with no run id are not drawn (there is nothing to place them under).
"""

from __future__ import annotations

import heapq
from pathlib import Path

import orjson
import pandas as pd

from taskscope._sql import connection_of, of_run, scalar
from taskscope.analyses.between import standard_queues
from taskscope.analyses.runs import FINAL_STATES, resolve_run
from taskscope.analyses.states import states, states_from_monitoring
from taskscope.constants import VERSION
from taskscope.export._atomic import write_atomically
from taskscope.export.summary import ExportSummary, ProgressCallback, report, writable_file

#: events drawn as instants, besides ERROR/CRITICAL records and failed/dep_fail DFK states
NOTABLE_EVENTS = (
    "task.try_failed", "task.retries_exhausted", "task.retry", "task.join_failed", "task.dependency_failed",
    "task.invalid_executor", "htex.manager.worker_died", "htex.manager.task_exception",
    "htex.interchange.manager_lost", "htex.interchange.tasks_cancelled", "block.launched", "block.scaled_in",
)
#: DFK states after which a try is over
TRY_END_STATES = FINAL_STATES + ("fail_retryable",)
#: thread ids inside a process; worker slots start after these
DFK_TASKS_TID, DFK_NOTABLE_TID, MANAGER_EVENTS_TID = 1, 2, 1
#: rows fetched from DuckDB per write
BATCH_ROWS = 100_000

_US = "CAST(round({} * 1e6) AS BIGINT)"


def _us(column: str) -> str:
    """SQL for a seconds column as integer microseconds (exact for the store's µs precision)."""
    return _US.format(column)


def _no_nulls(json_sql: str) -> str:
    """SQL for a JSON object without its null members (a merge patch deletes the keys it sets to null)."""
    return f"json_merge_patch('{{}}', {json_sql})"


def export_perfetto(
    store, path: str | Path, run: str | None = None, on_progress: ProgressCallback | None = None
) -> ExportSummary:
    """Write `run` (id, prefix or folder name; None: every run) as a Chrome/Perfetto trace JSON.

    Open the file in https://ui.perfetto.dev (drag and drop; it stays in the browser) or
    chrome://tracing to see tasks, tries on worker slots and queue lengths on one timeline. The file
    appears only once complete: when writing fails (a full disk), `path` is left as it was.

    >>> export_perfetto(store, "run.trace.json", run="000").line()  # doctest: +SKIP
    'wrote perfetto to run.trace.json: 3,611 events of 1 run (trace events: 400, ...)'
    """
    con = connection_of(store)
    run_id = resolve_run(con, run)
    path = writable_file(path)
    cur = con.cursor()  # temp tables stay private to this export
    try:
        report(on_progress, "finding tasks, tries and processes")
        counts = _build_tables(cur, run_id)
        report(on_progress, "computing queue lengths")
        counters = _counter_frame(con, run_id)
        cur.register("trace_counters", counters)
        written = _write_trace(cur, path, run_id, on_progress)
        counts["counter_samples"] = len(counters)
        counts["trace_events"] = written
        events = scalar(cur, f"SELECT count(*) FROM events WHERE run_id IS NOT NULL AND {of_run()}",
                        {"run": run_id})
        runs = scalar(cur, "SELECT count(*) FROM trace_runs")
    finally:
        cur.close()
    return ExportSummary("perfetto", path, events, runs, counts)


def _build_tables(cur, run_id: str | None) -> dict[str, int]:
    """Temp tables: runs, DFK states and phases, tasks, worker tries, processes, threads."""
    params = {"run": run_id}
    final = ", ".join(f"'{state}'" for state in FINAL_STATES)
    try_end = ", ".join(f"'{state}'" for state in TRY_END_STATES)
    cur.execute(
        f"""
        CREATE TEMP TABLE trace_runs AS
        SELECT run_id, min(ts) AS start_ts, max(ts) AS end_ts,
               row_number() OVER (ORDER BY min(ts), run_id) AS run_index
        FROM events WHERE run_id IS NOT NULL AND {of_run()}
        GROUP BY run_id
        """,
        params,
    )
    cur.register("trace_state_changes", _state_changes(cur, run_id))
    cur.execute("CREATE TEMP TABLE trace_states AS SELECT run_id, task_id, ts, state, step FROM trace_state_changes")
    cur.unregister("trace_state_changes")
    cur.execute(
        f"""
        CREATE TEMP TABLE trace_apps AS
        SELECT run_id, task_id, any_value(app_name) AS app_name
        FROM events
        WHERE app_name IS NOT NULL AND task_id IS NOT NULL AND run_id IS NOT NULL AND {of_run()}
        GROUP BY run_id, task_id
        """,
        params,
    )
    cur.execute(
        f"""
        CREATE TEMP TABLE trace_phases AS
        SELECT s.run_id, s.task_id, s.state, s.ts AS start_ts,
               coalesce(lead(s.ts) OVER w, CASE WHEN s.state NOT IN ({final}) THEN r.end_ts END) AS end_ts,
               lead(s.ts) OVER w IS NULL AND s.state NOT IN ({final}) AS unfinished,
               coalesce(count(*) FILTER (WHERE s.state = 'fail_retryable')
                        OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS try_id,
               row_number() OVER w AS seq
        FROM trace_states s JOIN trace_runs r USING (run_id)
        WINDOW w AS (PARTITION BY s.run_id, s.task_id ORDER BY s.ts, s.step)
        """
    )
    cur.execute(
        """
        CREATE TEMP TABLE trace_tasks AS
        SELECT p.run_id, p.task_id, a.app_name, min(p.start_ts) AS start_ts,
               max(coalesce(p.end_ts, p.start_ts)) AS end_ts,
               arg_max(p.state, p.seq) AS last_state, bool_or(p.unfinished) AS unfinished,
               max(p.try_id) + 1 AS tries
        FROM trace_phases p LEFT JOIN trace_apps a USING (run_id, task_id)
        GROUP BY p.run_id, p.task_id, a.app_name
        """
    )
    cur.execute(
        f"""
        CREATE TEMP TABLE trace_tries_raw AS
        WITH worker AS (
            SELECT run_id, executor_label, manager_id, worker_id, executor_task_id,
                   min(ts) FILTER (WHERE event = 'htex.worker.received') AS start_ts,
                   min(ts) FILTER (WHERE event = 'htex.worker.finished') AS finished_ts,
                   max(ts) AS last_ts,
                   any_value(task_id) AS task_id, any_value(try_id) AS try_id,
                   any_value(block_id) AS block_id, any_value(host) AS host
            FROM events
            WHERE event IN ('htex.worker.received', 'htex.worker.completed', 'htex.worker.finished')
              AND executor_task_id IS NOT NULL AND run_id IS NOT NULL AND {of_run()}
            GROUP BY run_id, executor_label, manager_id, worker_id, executor_task_id
            HAVING start_ts IS NOT NULL
        ),
        try_end AS (
            SELECT w.run_id, w.executor_label, w.executor_task_id, w.manager_id, w.worker_id,
                   min(s.ts) AS end_ts, arg_min(s.state, s.ts) AS outcome
            FROM worker w JOIN trace_states s
              ON s.run_id = w.run_id AND s.task_id = w.task_id AND s.ts >= w.start_ts AND s.state IN ({try_end})
            GROUP BY ALL
        )
        SELECT w.*, a.app_name, t.outcome,
               coalesce(w.finished_ts, t.end_ts, w.last_ts) AS end_ts,
               CASE WHEN w.finished_ts IS NOT NULL THEN 'htex.worker.finished'
                    WHEN t.end_ts IS NOT NULL THEN 'task state ' || t.outcome
                    ELSE 'last worker event' END AS end_from
        FROM worker w
        LEFT JOIN try_end t USING (run_id, executor_label, executor_task_id, manager_id, worker_id)
        LEFT JOIN trace_apps a USING (run_id, task_id)
        """,
        params,
    )
    cur.execute(
        """
        CREATE TEMP TABLE trace_processes AS
        WITH managers AS (
            SELECT run_id, executor_label, manager_id, min(block_id) AS block_id, min(host) AS host
            FROM trace_tries_raw GROUP BY run_id, executor_label, manager_id
        ),
        all_processes AS (
            SELECT run_id, 'dfk' AS kind, NULL::VARCHAR AS executor_label, NULL::VARCHAR AS manager_id,
                   NULL::VARCHAR AS block_id, NULL::VARCHAR AS host FROM trace_runs
            UNION ALL
            SELECT run_id, 'manager', executor_label, manager_id, block_id, host FROM managers
        )
        SELECT p.*, row_number() OVER (ORDER BY r.run_index, p.kind = 'manager', p.executor_label,
                                                 TRY_CAST(p.block_id AS BIGINT), p.block_id, p.manager_id) AS pid,
               left(p.run_id, 8) || ' · ' || CASE WHEN p.kind = 'dfk' THEN 'DFK'
                   ELSE coalesce(p.executor_label, 'executor') || coalesce(' block ' || p.block_id, '')
                        || ' · manager ' || coalesce(p.manager_id, '?') || coalesce(' @ ' || p.host, '') END
                   AS process_name
        FROM all_processes p JOIN trace_runs r USING (run_id)
        """
    )
    cur.execute(
        f"""
        CREATE TEMP TABLE trace_tries AS
        WITH placed AS (
            SELECT t.*, p.pid, {_us('t.start_ts')} AS start_us, {_us('t.end_ts')} AS end_us,
                   {MANAGER_EVENTS_TID} + dense_rank() OVER (
                       PARTITION BY p.pid ORDER BY TRY_CAST(t.worker_id AS BIGINT) NULLS LAST, t.worker_id) AS slot_tid
            FROM trace_tries_raw t JOIN trace_processes p
              ON p.kind = 'manager' AND p.run_id = t.run_id
             AND p.executor_label IS NOT DISTINCT FROM t.executor_label
             AND p.manager_id IS NOT DISTINCT FROM t.manager_id
        )
        SELECT *, row_number() OVER () AS try_row,
               -- a try that starts before an earlier try on its slot has ended would overlap it
               coalesce(start_us < max(end_us) OVER (PARTITION BY pid, slot_tid ORDER BY start_us, end_us, executor_task_id
                                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS overlaps_earlier
        FROM placed
        """
    )
    _place_overlapping_tries(cur)
    return {
        "tasks": scalar(cur, "SELECT count(*) FROM trace_tasks"),
        "worker_tries": scalar(cur, "SELECT count(*) FROM trace_tries"),
        "processes": scalar(cur, "SELECT count(*) FROM trace_processes"),
        "overlapping_tries": scalar(cur, "SELECT count(*) FROM trace_tries WHERE overlaps_earlier"),
    }


def _place_overlapping_tries(cur) -> None:
    """Give each try its thread (`tid`): its worker slot, or for the (rare) tries that would
    overlap an earlier one there, an extra lane of the manager chosen greedily so lanes never
    overlap. The tries that stay on a slot start after every earlier try of the slot has ended,
    so slots never overlap either."""
    overlapping = cur.execute(
        """SELECT t.try_row, t.pid, t.start_us, t.end_us, m.max_slot_tid
           FROM trace_tries t
           JOIN (SELECT pid, max(slot_tid) AS max_slot_tid FROM trace_tries GROUP BY pid) m USING (pid)
           WHERE t.overlaps_earlier ORDER BY t.pid, t.start_us, t.end_us"""
    ).df()
    lanes = []
    for pid, group in overlapping.groupby("pid", sort=False):
        ends: list[tuple[int, int]] = []  # (end_us, lane) of each lane's last try
        next_lane = 0
        for row in group.itertuples(index=False):
            if ends and ends[0][0] <= row.start_us:
                _, lane = heapq.heappop(ends)
            else:
                next_lane += 1
                lane = next_lane
            heapq.heappush(ends, (row.end_us, lane))
            lanes.append((row.try_row, int(row.max_slot_tid) + lane, lane))
    frame = pd.DataFrame(lanes, columns=["try_row", "lane_tid", "lane"]).astype("int64")
    cur.register("trace_lanes", frame)
    cur.execute(
        """CREATE TEMP TABLE trace_threads AS
           SELECT DISTINCT pid, slot_tid AS tid, 'worker ' || coalesce(worker_id, '?') AS thread_name FROM trace_tries
           UNION ALL
           SELECT DISTINCT t.pid, l.lane_tid, 'overlapping tries ' || l.lane
           FROM trace_lanes l JOIN trace_tries t USING (try_row)"""
    )
    cur.execute(
        """ALTER TABLE trace_tries ADD COLUMN tid BIGINT;
           UPDATE trace_tries SET tid = coalesce(
               (SELECT l.lane_tid FROM trace_lanes l WHERE l.try_row = trace_tries.try_row), slot_tid)"""
    )
    cur.unregister("trace_lanes")


def _state_changes(con, run_id: str | None) -> pd.DataFrame:
    """Every DFK state each task entered (run_id, task_id, ts, state, step), as `states` finds
    them in the logs (inferring what releases before 2026 did not log); for runs without state
    changes in their logs, as monitoring.db recorded them."""
    columns = ["run_id", "task_id", "ts", "state", "step"]
    logged = states(con, run_id)
    logged = logged[logged.change > 0][columns]
    monitored = states_from_monitoring(con, run_id)
    monitored = monitored[(monitored.change > 0) & ~monitored.run_id.isin(set(logged.run_id))][columns]
    return pd.concat([logged, monitored], ignore_index=True)


def _counter_frame(con, run_id: str | None) -> pd.DataFrame:
    """The standard queue lengths (run_id, queue, ts, count) to draw as counter tracks."""
    return standard_queues(con, run_id)[["run_id", "queue", "ts", "count"]]


def _event_queries() -> list[str]:
    """SQL for each kind of trace event, each row one JSON object as text."""
    final = ", ".join(f"'{state}'" for state in FINAL_STATES)
    notable = ", ".join(f"'{name}'" for name in NOTABLE_EVENTS)
    dfk_pid = "(SELECT dfk.pid FROM trace_processes dfk WHERE dfk.kind = 'dfk' AND dfk.run_id = {}.run_id)"
    task_slices = f"""
        WITH slices AS (
            SELECT {dfk_pid.format('t')} AS pid, t.task_id, 0 AS seq, 'b' AS ph, {_us('t.start_ts')} AS ts_us,
                   coalesce(t.app_name, 'task') AS name,
                   json_object('run_id', t.run_id, 'task_id', t.task_id, 'app_name', t.app_name,
                               'final_state', CASE WHEN t.last_state IN ({final}) THEN t.last_state END,
                               'tries', t.tries, 'unfinished', t.unfinished) AS args
            FROM trace_tasks t
            UNION ALL
            SELECT {dfk_pid.format('t')}, t.task_id, 2147483647, 'e', {_us('t.end_ts')},
                   coalesce(t.app_name, 'task'), NULL
            FROM trace_tasks t
            UNION ALL
            SELECT {dfk_pid.format('p')}, p.task_id, 2 * p.seq - 1, 'b', {_us('p.start_ts')}, p.state,
                   json_object('run_id', p.run_id, 'task_id', p.task_id, 'try_id', p.try_id, 'app_name', a.app_name,
                               'state', p.state, 'unfinished', p.unfinished)
            FROM trace_phases p LEFT JOIN trace_apps a USING (run_id, task_id) WHERE p.end_ts IS NOT NULL
            UNION ALL
            SELECT {dfk_pid.format('p')}, p.task_id, 2 * p.seq, 'e', {_us('p.end_ts')}, p.state, NULL
            FROM trace_phases p WHERE p.end_ts IS NOT NULL
        )
        SELECT CAST(CASE WHEN ph = 'b'
            THEN json_object('name', name, 'cat', 'dfk', 'ph', ph, 'ts', ts_us, 'pid', pid, 'tid', {DFK_TASKS_TID},
                             'id2', json_object('local', task_id), 'args', {_no_nulls('args')})
            ELSE json_object('name', name, 'cat', 'dfk', 'ph', ph, 'ts', ts_us, 'pid', pid, 'tid', {DFK_TASKS_TID},
                             'id2', json_object('local', task_id)) END AS VARCHAR)
        FROM slices ORDER BY pid, natural_key(task_id), seq"""
    tries = f"""
        SELECT CAST(json_object(
            'name', CASE WHEN task_id IS NULL THEN 'executor task ' || executor_task_id
                         ELSE coalesce(app_name, 'task') || ' · task ' || task_id || ' try ' || coalesce(try_id, 0) END,
            'cat', 'worker', 'ph', 'X', 'ts', start_us, 'dur', end_us - start_us, 'pid', pid, 'tid', tid,
            'args', {_no_nulls('''json_object('run_id', run_id, 'task_id', task_id, 'try_id', try_id, 'app_name', app_name,
                                'executor_label', executor_label, 'executor_task_id', executor_task_id,
                                'block_id', block_id, 'manager_id', manager_id, 'worker_id', worker_id,
                                'host', host, 'outcome', outcome, 'end', end_from)''')}) AS VARCHAR)
        FROM trace_tries ORDER BY pid, tid, start_us"""
    instants = f"""
        WITH notable AS (
            SELECT e.ts, e.event, e.message, e.level, e.source, e.file, e.line, e.run_id, e.task_id, e.try_id,
                   e.executor_label, e.block_id, e.manager_id, e.worker_id, e.attrs->>'exception_type' AS exception_type
            FROM events e
            WHERE e.run_id IN (SELECT run_id FROM trace_runs)
              AND (e.event IN ({notable}) OR e.level IN ('ERROR', 'CRITICAL'))
            UNION ALL
            SELECT s.ts, 'task ' || s.state, NULL, NULL, NULL, NULL, NULL, s.run_id, s.task_id, NULL,
                   NULL, NULL, NULL, NULL, NULL
            FROM trace_states s WHERE s.state IN ('failed', 'dep_fail')
        )
        SELECT CAST(json_object(
            'name', CASE WHEN n.event LIKE '% %' AND n.event NOT LIKE 'task %' THEN left(n.event, 80) ELSE n.event END,
            'cat', 'notable', 'ph', 'i', 's', 't', 'ts', {_us('n.ts')},
            'pid', coalesce(m.pid, {dfk_pid.format('n')}),
            'tid', CASE WHEN m.pid IS NULL THEN {DFK_NOTABLE_TID} ELSE {MANAGER_EVENTS_TID} END,
            'args', {_no_nulls('''json_object('message', left(n.message, 2000), 'level', n.level, 'source', n.source,
                                'file', n.file, 'line', n.line, 'run_id', n.run_id, 'task_id', n.task_id,
                                'try_id', n.try_id, 'executor_label', n.executor_label, 'block_id', n.block_id,
                                'manager_id', n.manager_id, 'worker_id', n.worker_id,
                                'exception_type', n.exception_type)''')}) AS VARCHAR)
        FROM notable n
        LEFT JOIN trace_processes m ON m.kind = 'manager' AND m.run_id = n.run_id AND m.manager_id = n.manager_id
             AND m.executor_label IS NOT DISTINCT FROM coalesce(n.executor_label, m.executor_label)
        ORDER BY n.ts"""
    counters = f"""
        SELECT CAST(json_object('name', c.queue, 'cat', 'queues', 'ph', 'C', 'ts', {_us('c.ts')},
                                'pid', p.pid, 'tid', {DFK_TASKS_TID}, 'args', json_object('tasks', c.count)) AS VARCHAR)
        FROM trace_counters c JOIN trace_processes p ON p.kind = 'dfk' AND p.run_id = c.run_id
        ORDER BY p.pid, c.queue, c.ts"""
    return [task_slices, tries, instants, counters]


def _metadata_events(cur) -> list[dict]:
    """process_name/thread_name (and sort index) events for every process and thread."""
    events: list[dict] = []
    processes = cur.execute("SELECT pid, kind, process_name FROM trace_processes ORDER BY pid").fetchall()
    for pid, kind, name in processes:
        events.append({"name": "process_name", "ph": "M", "ts": 0, "pid": pid, "tid": 0, "args": {"name": name}})
        events.append({"name": "process_sort_index", "ph": "M", "ts": 0, "pid": pid, "tid": 0, "args": {"sort_index": pid}})
        fixed = (
            [(DFK_TASKS_TID, "tasks"), (DFK_NOTABLE_TID, "notable events")]
            if kind == "dfk" else [(MANAGER_EVENTS_TID, "manager events")]
        )
        for tid, thread in fixed:
            events.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": {"name": thread}})
    for pid, tid, thread in cur.execute("SELECT pid, tid, thread_name FROM trace_threads ORDER BY pid, tid").fetchall():
        events.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": {"name": thread}})
        events.append({"name": "thread_sort_index", "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    return events


def _write_trace(cur, path: Path, run_id: str | None, on_progress: ProgressCallback | None = None) -> int:
    """Stream the trace to `path` (it appears only once complete); the number of trace events written."""
    queries = _event_queries()
    total = sum(scalar(cur, f"SELECT count(*) FROM ({sql})") for sql in queries)
    other = {
        "generator": f"taskscope {VERSION}",
        "time_unit": "ts and dur are microseconds since the Unix epoch (UTC)",
        "run_id": run_id,
    }
    written = 0
    with write_atomically(path) as out:
        out.write(b'{"displayTimeUnit":"ms","otherData":' + orjson.dumps(other) + b',\n"traceEvents":[\n')
        metadata = _metadata_events(cur)
        total += len(metadata)
        out.write(b",\n".join(orjson.dumps(event) for event in metadata))
        written += len(metadata)
        for sql in queries:
            reader = cur.sql(sql).to_arrow_reader(BATCH_ROWS)
            for batch in reader:
                rows = batch.column(0).to_pylist()
                if not rows:
                    continue
                if written:
                    out.write(b",\n")
                out.write(",\n".join(rows).encode())
                written += len(rows)
                report(on_progress, "writing trace events", written, total)
        out.write(b"\n]}\n")
    return written
