"""Relate: tie events to the runs, tasks, tries, blocks and hosts they belong to.

Identity is a key sequence. Each step below copies a known id to events that lack it,
through a relation learned from binding events:

- run folder -> run id ("Run id is: ...", `parsl.dfk`), for every event of the folder;
- (run, executor label, executor task id) -> (task, try), from Parsl's launch line
  "Parsl task N try M launched on executor L with executor id K"; the label is part of
  the key, so two HTEX executors whose ids both start at 1 are never confused;
- events naming several executor tasks ("Sent tasks: [4, 5] to manager ...") -> one
  `event_task_links` row per task;
- a worker's events between "Received executor task K" and "All processing finished for
  executor task K" -> executor task K;
- (run, manager id) -> block and host, from the interchange's registration message, the
  manager's folder, or monitoring.db's node table;
- (run, task) -> app name.

The steps repeat until none changes anything (a fixpoint), so an id learned late (a run id
found after the executor logs were read) still reaches every event. An ingest relates only
the runs of the files it read (all of their events, whatever ingest read them). All of it is SQL.
Steps that read a key of `attrs` first test its text for the key's name (a substring test
is far cheaper than parsing the JSON of every event, and a key is never written escaped).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from taskscope._sql import scalar

MAX_ROUNDS = 10

_RUN_DIRS = """
INSERT OR REPLACE INTO run_dirs (run_dir, run_id)
SELECT f.run_dir, arg_max(e.run_id, e.ts) FROM events e JOIN ingested_files f USING (file_id)
WHERE e.run_id IS NOT NULL AND f.run_dir IS NOT NULL AND e.source <> 'monitoring' AND {files}
GROUP BY f.run_dir
"""

def _fill_from_manager(column: str) -> str:
    """SQL giving events of a manager the `column` value known for that (run, manager)."""
    return f"""
        CREATE OR REPLACE TEMP TABLE manager_{column} AS
            SELECT run_id, manager_id, any_value({column}) AS {column} FROM events
            WHERE manager_id IS NOT NULL AND {column} IS NOT NULL AND run_id IS NOT NULL AND {{scope}}
            GROUP BY run_id, manager_id;
        UPDATE events SET {column} = m.{column} FROM manager_{column} m
        WHERE events.{column} IS NULL AND events.manager_id = m.manager_id AND events.run_id = m.run_id
          AND {{scope}}"""


# the steps that read the bindings take a snapshot of the view first: as a subquery, DuckDB
# mis-estimates its size, builds the hash join on `events` and then updates the rows in hash
# order (10x slower on a 3000-task text run)
_SNAPSHOT_BINDINGS = "CREATE OR REPLACE TEMP TABLE bindings_now AS SELECT * FROM bindings;"

# Each step is a template: {scope} is a condition on the columns of `events` (unaliased) that
# keeps the step to the events in scope (see `relate`); {files} does the same for `ingested_files f`.
_STEPS: dict[str, str] = {
    "run_id": """
        UPDATE events SET run_id = r.run_id
        FROM (SELECT f.file_id, d.run_id FROM ingested_files f JOIN run_dirs d USING (run_dir) WHERE {files}) r
        WHERE events.run_id IS NULL AND events.file_id = r.file_id""",
    "single_task_lists": """
        UPDATE events SET executor_task_id = CAST(attrs->>'$.executor_task_ids[0]' AS BIGINT)
        WHERE executor_task_id IS NULL AND contains(attrs::VARCHAR, 'executor_task_ids')
          AND json_array_length(attrs->'$.executor_task_ids') = 1 AND {scope}""",
    "task_links": """
        INSERT INTO event_task_links (file_id, line, run_id, executor_label, executor_task_id)
        SELECT e.file_id, e.line, e.run_id, e.executor_label, CAST(id AS BIGINT)
        FROM (SELECT file_id, line, run_id, executor_label,
                     unnest(CAST(attrs->'$.executor_task_ids' AS BIGINT[])) AS id
              FROM events
              WHERE contains(attrs::VARCHAR, 'executor_task_ids')
                AND json_array_length(attrs->'$.executor_task_ids') > 1 AND run_id IS NOT NULL AND {scope}) e
        ANTI JOIN event_task_links l
            ON l.file_id = e.file_id AND l.line = e.line AND l.executor_task_id = e.id""",
    "link_bindings": _SNAPSHOT_BINDINGS + """
        UPDATE event_task_links SET task_id = b.task_id, try_id = b.try_id
        FROM bindings_now b
        WHERE event_task_links.task_id IS NULL AND event_task_links.run_id = b.run_id
          AND event_task_links.executor_label = b.executor_label
          AND event_task_links.executor_task_id = b.executor_task_id""",
    "worker_intervals": """
        UPDATE events SET executor_task_id = w.executor_task_id
        FROM (
            SELECT r.file_id, r.line AS first_line, r.executor_task_id,
                   coalesce(min(f.line), r.next_received - 1) AS last_line
            FROM (SELECT file_id, line, executor_task_id,
                         lead(line, 1, 9223372036854775807) OVER (PARTITION BY file_id ORDER BY line) AS next_received
                  FROM events WHERE event = 'htex.worker.received' AND {scope}) r
            LEFT JOIN events f ON f.event = 'htex.worker.finished' AND f.file_id = r.file_id
                 AND f.executor_task_id = r.executor_task_id AND f.line > r.line AND f.line < r.next_received
            GROUP BY r.file_id, r.line, r.executor_task_id, r.next_received
        ) w
        WHERE events.executor_task_id IS NULL AND events.source = 'worker'
          AND events.file_id = w.file_id AND events.line > w.first_line AND events.line <= w.last_line""",
    "task_bindings": _SNAPSHOT_BINDINGS + """
        UPDATE events SET task_id = b.task_id, try_id = b.try_id
        FROM bindings_now b
        WHERE events.task_id IS NULL AND events.executor_task_id IS NOT NULL
          AND events.run_id = b.run_id AND events.executor_label = b.executor_label
          AND events.executor_task_id = b.executor_task_id""",
    "manager_block": _fill_from_manager("block_id"),
    "manager_host": _fill_from_manager("host"),
    # the aggregate is materialised first: as a subquery, DuckDB mis-estimates its size and
    # builds the hash join on `events` instead (30x slower on a 3000-task text run)
    "app_name": """
        CREATE OR REPLACE TEMP TABLE task_apps AS
            SELECT run_id, task_id, any_value(app_name) AS app_name FROM events
            WHERE app_name IS NOT NULL AND task_id IS NOT NULL AND run_id IS NOT NULL AND {scope}
            GROUP BY run_id, task_id;
        UPDATE events SET app_name = a.app_name FROM task_apps a
        WHERE events.app_name IS NULL AND events.task_id = a.task_id AND events.run_id = a.run_id AND {scope}""",
}

# a view, so every step sees the bindings as they are after the steps before it
_BINDINGS = """
CREATE OR REPLACE TEMP VIEW bindings AS
SELECT DISTINCT run_id, executor_label, executor_task_id, task_id, try_id FROM events
WHERE event = 'task.launched' AND executor_task_id IS NOT NULL AND run_id IS NOT NULL AND {scope}
"""

# A scoped relate (see `relate`) works on the files of the run folders read (and on files read
# outside any run folder), then also on every file holding events of the runs those files' events
# belong to (a monitoring.db holds rows of many runs; a run's logs may have come in an earlier
# ingest). The scope is written into the SQL as a list of integer file ids (numbers taskscope
# made, not input text), a filter DuckDB can apply while it scans, skipping row groups whose
# file ids are all outside it; a semi-join to a table of ids gives it no such chance.
_FILES_OF_DIRS = """
SELECT file_id FROM ingested_files
WHERE list_contains($files, file_id)
   OR run_dir IN (SELECT run_dir FROM ingested_files WHERE list_contains($files, file_id))
"""
_FILES_OF_RUNS = """
SELECT DISTINCT file_id FROM events WHERE run_id IN (
    SELECT DISTINCT run_id FROM events WHERE list_contains($files, file_id) AND run_id IS NOT NULL)
"""


def _scope_sql(file_ids: set[int] | None) -> dict[str, str]:
    """The conditions the steps' {scope} and {files} placeholders take."""
    if file_ids is None:
        return {"scope": "TRUE", "files": "TRUE"}
    listed = ", ".join(str(int(file_id)) for file_id in sorted(file_ids)) or "NULL"
    return {"scope": f"events.file_id IN ({listed})", "files": f"f.file_id IN ({listed})"}


def _file_ids(con: duckdb.DuckDBPyConnection, sql: str, file_ids: set[int]) -> set[int]:
    return {row[0] for row in con.execute(sql, {"files": sorted(file_ids)}).fetchall()}


@dataclass
class RelateReport:
    """How many rows each step changed, rounds to reach the fixpoint, and join coverage."""

    rounds: int = 0
    changed: dict[str, int] | None = None
    executor_events: int = 0
    executor_events_joined: int = 0

    @property
    def joined_share(self) -> float | None:
        """Share of executor-side task events tied to a DFK task (None if there are none)."""
        if not self.executor_events:
            return None
        return self.executor_events_joined / self.executor_events


def relate(con: duckdb.DuckDBPyConnection, files: list[int] | None = None) -> RelateReport:
    """Propagate identities until nothing changes: over the whole store, or with `files` (the
    file_ids an ingest read) over the runs those files belong to only, so that a small ingest
    into a large store costs what its runs hold, not what the store holds.

    >>> relate(con).joined_share  # doctest: +SKIP
    1.0
    """
    report = RelateReport(changed={name: 0 for name in _STEPS})
    scope = None if files is None else _file_ids(con, _FILES_OF_DIRS, set(files))
    if scope is not None and len(scope) >= int(scalar(con, "SELECT count(*) FROM ingested_files")):
        scope = None  # every file (a first ingest): the filters would only cost
    for round_number in range(1, MAX_ROUNDS + 1):
        where = _scope_sql(scope)
        con.execute(_RUN_DIRS.format(**where))
        changed = 0
        for name, sql in _STEPS.items():
            count = int(scalar(con, sql.format(**where)))
            if name == "run_id":
                if scope is not None:  # now that run ids are filled in, the runs' other files
                    scope |= _file_ids(con, _FILES_OF_RUNS, scope)
                    where = _scope_sql(scope)
                con.execute(_BINDINGS.format(**where))
            report.changed[name] += count
            changed += count
        report.rounds = round_number
        if not changed:
            break
    report.executor_events, report.executor_events_joined = coverage(con)
    return report


def coverage(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(executor-side task events, how many of them carry task_id and try_id).

    An executor-side task event is one from the interchange, a manager or a worker that names
    an executor task (itself, or through `event_task_links` for multi-task messages).
    """
    single = con.execute(
        """SELECT count(*), count(*) FILTER (WHERE task_id IS NOT NULL AND try_id IS NOT NULL)
           FROM events WHERE executor_task_id IS NOT NULL AND source IN ('interchange', 'manager', 'worker')"""
    ).fetchall()[0]
    multi = con.execute(
        """SELECT count(*), count(*) FILTER (WHERE task_id IS NOT NULL AND try_id IS NOT NULL)
           FROM event_task_links"""
    ).fetchall()[0]
    return int(single[0] + multi[0]), int(single[1] + multi[1])
