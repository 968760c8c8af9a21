"""Relate: tie events to the runs, tasks, tries, blocks and hosts they belong to.

Identity is a key sequence. Each step copies a known id to events that lack it, through a
relation learned from other events. The relations are data (`parsl.toml` beside this module,
plus a user's files; see `taskscope.relations`); two steps are built in because they are not of
the three kinds:

- run folder -> run id ("Run id is: ...", `parsl.dfk`), for every event of the folder;
- events naming several executor tasks ("Sent tasks: [4, 5] to manager ...") -> one
  `event_task_links` row per task (or the task itself when the list holds one); a `binds`
  relation over the links' columns ties those rows to tasks as it ties events.

The steps repeat until none changes anything (a fixpoint), so an id learned late (a run id
found after the executor logs were read) still reaches every event. An ingest relates only
the runs of the files it read (all of their events, whatever ingest read them). All of it is SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from taskscope._sql import scalar
from taskscope.relations import Relation, load_relations
from taskscope.relations.steps import Fields, Step, compile_relation

MAX_ROUNDS = 10

_RUN_DIRS = """
INSERT OR REPLACE INTO run_dirs (run_dir, run_id)
SELECT f.run_dir, arg_max(e.run_id, e.ts) FROM events e JOIN ingested_files f USING (file_id)
WHERE e.run_id IS NOT NULL AND f.run_dir IS NOT NULL AND e.source <> 'monitoring' AND {files}
GROUP BY f.run_dir
"""

_RUN_ID = """
UPDATE events SET run_id = r.run_id
FROM (SELECT f.file_id, d.run_id FROM ingested_files f JOIN run_dirs d USING (run_dir) WHERE {files}) r
WHERE events.run_id IS NULL AND events.file_id = r.file_id"""


def _task_list_steps(id_type: str, link_id_type: str) -> list[Step]:
    """The built-in steps for lists of executor task ids (a rule's `executor_task_ids` group).

    A key of `attrs` is read only where the text of `attrs` names it (a substring test is far
    cheaper than parsing the JSON of every event, and a key is never written escaped)."""
    single = """
        UPDATE events SET executor_task_id = CAST(attrs->>'$.executor_task_ids[0]' AS {id_type})
        WHERE executor_task_id IS NULL AND contains(attrs::VARCHAR, 'executor_task_ids')
          AND json_array_length(attrs->'$.executor_task_ids') = 1 AND {scope}""".replace("{id_type}", id_type)
    links = f"""
        INSERT INTO event_task_links (file_id, line, run_id, executor_label, executor_task_id)
        SELECT e.file_id, e.line, e.run_id, e.executor_label, e.id
        FROM (SELECT file_id, line, run_id, executor_label,
                     CAST(unnest(CAST(attrs->'$.executor_task_ids' AS VARCHAR[])) AS {link_id_type}) AS id
              FROM events
              WHERE contains(attrs::VARCHAR, 'executor_task_ids')
                AND json_array_length(attrs->'$.executor_task_ids') > 1 AND run_id IS NOT NULL AND {{scope}}) e
        ANTI JOIN event_task_links l
            ON l.file_id = e.file_id AND l.line = e.line AND l.executor_task_id = e.id"""
    return [
        Step("single task lists", "", (single,), None, frozenset({"attrs", "executor_task_id"}),
             frozenset({"executor_task_id"})),
        Step("task links", "", (links,), None, frozenset({"attrs", "run_id", "executor_label"}),
             frozenset({"event_task_links"})),
    ]


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
    """The conditions that stand for `{scope}` (on `events`) and `{files}` (on `ingested_files f`)."""
    if file_ids is None:
        return {"scope": "TRUE", "files": "TRUE"}
    listed = ", ".join(str(int(file_id)) for file_id in sorted(file_ids)) or "NULL"
    return {"scope": f"events.file_id IN ({listed})", "files": f"f.file_id IN ({listed})"}


def _fill(sql: str, where: dict[str, str]) -> str:
    for name, condition in where.items():
        sql = sql.replace("{" + name + "}", condition)
    return sql


def _file_ids(con: duckdb.DuckDBPyConnection, sql: str, file_ids: set[int]) -> set[int]:
    return {row[0] for row in con.execute(sql, {"files": sorted(file_ids)}).fetchall()}


def column_types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column name -> SQL type of `table` in the store behind `con`."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
        "AND table_schema = 'main'", [table]
    ).fetchall()
    return dict(rows)


@dataclass
class RelateReport:
    """How many rows each step changed, rounds to reach the fixpoint, groups a relation left
    alone because they hold two values (`conflicts`), and join coverage."""

    rounds: int = 0
    changed: dict[str, int] | None = None
    conflicts: dict[str, int] = field(default_factory=dict)
    executor_events: int = 0
    executor_events_joined: int = 0

    @property
    def joined_share(self) -> float | None:
        """Share of executor-side task events tied to a DFK task (None if there are none)."""
        if not self.executor_events:
            return None
        return self.executor_events_joined / self.executor_events

    @property
    def conflict_count(self) -> int:
        return sum(self.conflicts.values())


def compile_steps(con: duckdb.DuckDBPyConnection, relations: list[Relation]) -> list[Step]:
    """The built-in steps then those of `relations`, as SQL for the store behind `con`."""
    types = column_types(con, "events")
    link_types = column_types(con, "event_task_links")
    steps = _task_list_steps(types.get("executor_task_id", "VARCHAR"), link_types.get("executor_task_id", "VARCHAR"))
    fields = Fields(types)
    for number, relation in enumerate(relations, start=1):
        steps += compile_relation(relation, number, fields)
    return steps


def relate(con: duckdb.DuckDBPyConnection, files: list[int] | None = None,
           relations: list[Relation] | None = None) -> RelateReport:
    """Propagate identities until nothing changes: over the whole store, or with `files` (the
    file_ids an ingest read) over the runs those files belong to only, so that a small ingest
    into a large store costs what its runs hold, not what the store holds. `relations` default
    to the shipped ones (`load_relations()`).

    >>> relate(con).joined_share  # doctest: +SKIP
    1.0
    """
    steps = compile_steps(con, load_relations() if relations is None else relations)
    report = RelateReport(changed={"run_id": 0, **{step.name: 0 for step in steps}})
    # the steps after the first round run only when what they read changed (see `_Changes`)
    scope = None if files is None else _file_ids(con, _FILES_OF_DIRS, set(files))
    if scope is not None and len(scope) >= int(scalar(con, "SELECT count(*) FROM ingested_files")):
        scope = None  # every file (a first ingest): the filters would only cost
    changes = _Changes()
    for round_number in range(1, MAX_ROUNDS + 1):
        where = _scope_sql(scope)
        con.execute(_fill(_RUN_DIRS, where))
        changed = int(scalar(con, _fill(_RUN_ID, where)))
        report.changed["run_id"] += changed
        changes.record(frozenset({"run_id"}) if changed else frozenset())
        if scope is not None:  # now that run ids are filled in, the runs' other files
            wider = scope | _file_ids(con, _FILES_OF_RUNS, scope)
            if wider != scope:
                scope, where = wider, _scope_sql(wider)
                changes.forget_runs()
        for number, step in enumerate(steps):
            if not changes.must_run(number, step):
                continue
            count = _run_step(con, step, where, report)
            changes.ran(number, step, count)
            report.changed[step.name] += count
            changed += count
        report.rounds = round_number
        if not changed:
            break
    report.executor_events, report.executor_events_joined = coverage(con)
    return report


class _Changes:
    """Which columns changed since each step last ran: a step whose inputs did not change since
    would change nothing, so the rounds after the first run only the steps that can learn more."""

    def __init__(self) -> None:
        self.clock = 0
        self.changed_at: dict[str, int] = {}
        self.seen_at: dict[int, int] = {}  # step number -> clock when it last saw its inputs

    def record(self, columns: frozenset[str]) -> None:
        if columns:
            self.clock += 1
            self.changed_at.update(dict.fromkeys(columns, self.clock))

    def forget_runs(self) -> None:
        """The scope grew: every step sees new events."""
        self.seen_at.clear()

    def must_run(self, number: int, step: Step) -> bool:
        seen = self.seen_at.get(number)
        return seen is None or any(self.changed_at.get(column, 0) > seen for column in step.reads)

    def ran(self, number: int, step: Step, count: int) -> None:
        before = self.clock
        self.record(step.writes if count else frozenset())
        self.seen_at[number] = self.clock if step.idempotent else before


def _run_step(con: duckdb.DuckDBPyConnection, step: Step, where: dict[str, str], report: RelateReport) -> int:
    """Run one step; return the rows it changed. Its conflicts are those of the latest round
    (the last round, at the fixpoint, sees the final state)."""
    if step.learn:
        con.execute(_fill(step.learn, where))
    count = sum(int(scalar(con, _fill(update, where)) or 0) for update in step.updates)
    if step.conflicts:
        conflicts = int(scalar(con, step.conflicts))
        if conflicts:
            report.conflicts[step.name] = conflicts
        else:
            report.conflicts.pop(step.name, None)
    return count


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
