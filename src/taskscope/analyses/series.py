"""Series: any numeric field over time, from whichever events carry it.

A field is a column of `events` (`pid`, `executor_task_id`, ...) or a key of `attrs`: the
psutil fields of monitoring.db's resource rows (`psutil_process_memory_resident`), a
manager's `worker_count`, or any number a component logs with a rule that names it (a rules
TOML group like `(?P<pending_tasks>\\d+)` puts `pending_tasks` in `attrs`). Values that are
not numbers are skipped.
"""

from __future__ import annotations

import difflib

import duckdb
import pandas as pd

from taskscope._sql import connection_of, of_run
from taskscope.analyses.runs import resolve_run
from taskscope.analyses.selectors import parse_selector
from taskscope.schema import EVENT_COLUMNS

_COLUMN_TYPES = dict(EVENT_COLUMNS)
_NUMERIC_TYPES = ("DOUBLE", "BIGINT", "INTEGER")


class FieldError(ValueError):
    """A field that no event carries, or that is not numeric."""


def _value_sql(field: str, param: str) -> str:
    """SQL for `field` as a number: a numeric column, or an attrs key (bound as `$param`)."""
    if field in _COLUMN_TYPES and field != "attrs":
        if _COLUMN_TYPES[field] not in _NUMERIC_TYPES:
            raise FieldError(f"column {field!r} is not numeric ({_COLUMN_TYPES[field]}); give a number field, "
                             f"or use it with --by")
        return f"CAST({field} AS DOUBLE)"
    return f"try_cast(json_extract_string(attrs, ${param}) AS DOUBLE)"


def _label_sql(field: str, param: str) -> str:
    """SQL for `field` as a text label (for grouping): any column, or an attrs key."""
    if field in _COLUMN_TYPES and field != "attrs":
        return field
    return f"json_extract_string(attrs, ${param})"


#: the columns `series` always returns; a `group_by` of one of these names gets `by_` before it
OUTPUT_COLUMNS = ("run_id", "ts", "event", "value")


def group_column(group_by: str) -> str:
    """The name of the column that holds `group_by`'s values in a `series` frame: the field's own
    name, or `by_FIELD` when that is one of the frame's own columns (`--by event` groups by the
    event's name, `--by value` by an attrs key `value`, not by the number the series holds).

    >>> group_column("task_id"), group_column("run_id")
    ('task_id', 'by_run_id')
    """
    return f"by_{group_by}" if group_by in OUTPUT_COLUMNS else group_by


def _json_path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def series(store, field: str, run: str | None = None, group_by: str | None = None,
           where: str | None = None) -> pd.DataFrame:
    """Every value of the numeric `field` over time: `run_id`, `ts`, (`group_by`'s value in a
    column named after it, see `group_column`), `event` (which kind of event carried it), `value`.

    `where` is an event selector (e.g. "task.resource", "template:ready workers%") that
    restricts which events count. Raises `FieldError` if no selected event carries a numeric
    `field`, or if `group_by` is neither a column of `events` nor a key of any event's attrs in
    the run (both with close field names as hints), `SelectorError` for a bad `where`.

    >>> series(store, "psutil_process_memory_resident", run="000", group_by="task_id")  # doctest: +SKIP
    >>> series(store, "worker_count", where="manager.status@monitoring")                 # doctest: +SKIP
    """
    con = connection_of(store)
    run_id = resolve_run(con, run)
    if not field or not field.strip():
        raise FieldError("empty field name")
    params: dict = {"run": run_id}
    value = _value_sql(field, "field_path")
    if "$field_path" in value:
        params["field_path"] = _json_path(field)
    group = ""
    if group_by:
        label = _label_sql(group_by, "group_path")
        if "$group_path" in label:
            params["group_path"] = _json_path(group_by)
        group = f"{label} AS group_value, "
    condition = "TRUE"
    if where:
        selector = parse_selector(where, "where")
        condition = selector.sql
        params.update(selector.params)
    frame = con.execute(
        f"""
        SELECT run_id, ts, {'group_value, ' if group_by else ''}event, value FROM (
            SELECT run_id, ts, {group}event, {value} AS value, file_id, line
            FROM events
            WHERE ({condition}) AND {of_run()}
        ) WHERE value IS NOT NULL
        ORDER BY run_id, ts, file_id, line
        """,
        params,
    ).df()
    if frame.empty:
        raise FieldError(f"no events carry a numeric field {field!r}" + (f" among {where!r}" if where else "")
                         + (f" in run {run_id}" if run_id else "") + _field_hint(con, field))
    if group_by:
        if frame["group_value"].isna().all():
            _check_group_field(con, group_by, run_id)
        frame = frame.rename(columns={"group_value": group_column(group_by)})
    return frame


def _check_group_field(con: duckdb.DuckDBPyConnection, group_by: str, run_id: str | None) -> None:
    """Raise `FieldError` when `group_by` is neither a column of `events` nor a key of any attrs of
    the run: a misspelt --by would otherwise give one empty group (checked only then: it scans)."""
    if group_by in _COLUMN_TYPES:
        return
    found = con.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {of_run()} AND json_exists(attrs, $path) LIMIT 1)",
        {"run": run_id, "path": _json_path(group_by)},
    ).fetchall()[0][0]
    if not found:
        raise FieldError(f"no event has a field {group_by!r} to group by" + (f" in run {run_id}" if run_id else "")
                         + _field_hint(con, group_by, numeric=False))


def _field_hint(con: duckdb.DuckDBPyConnection, field: str, numeric: bool = True) -> str:
    """Close (numeric) field names, for the error message (scans the attrs keys, so only on error)."""
    keys = [row[0] for row in con.execute(
        "SELECT DISTINCT unnest(json_keys(attrs)) FROM events WHERE attrs IS NOT NULL"
    ).fetchall()]
    columns = [name for name, kind in EVENT_COLUMNS if (kind in _NUMERIC_TYPES or not numeric) and name != "attrs"]
    # a name that is both an attrs key and a column (a JSON record's own `try_id`) is offered once
    close = difflib.get_close_matches(field, list(dict.fromkeys(keys + columns)), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""
