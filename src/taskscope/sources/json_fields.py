"""How keys of JSON records map to event columns, shared by the JSON-lines sources.

Parsl's JSONLogging writes `parsl.task`, `parsl.dfk`, ... (master and 2026.10.26); the
observability prototype wrote `parsl_task_id`, `htex_task_id`, ...; taskscope's own
handler and generic JSON lines use the column names themselves. The first key present wins.
`attrs` is the record as logged, so every key, consumed here or not, is kept there.
"""

from __future__ import annotations

import json

from taskscope._sql import literal
from taskscope.schema import level_name_sql
from taskscope.time_bounds import EARLIEST_TIME, LATEST_TIME


# column -> candidate keys, in priority order
COLUMN_KEYS: dict[str, list[str]] = {
    "ts": ["ts", "created", "time", "timestamp", "@timestamp", "t"],
    "level": ["level", "levelname", "severity"],
    "logger": ["logger", "name", "logger_name"],
    "event": ["event"],
    # structlog (and loggers like it) write the human message as "event" and no message
    "message": ["message", "formatted", "msg", "event"],
    "host": ["host", "hostname", "parsl.workflow_info.host"],
    "pid": ["pid", "process"],
    "thread": ["thread_name", "threadName", "thread"],
    "run_id": ["run_id", "parsl.dfk", "parsl.workflow_info.run_id", "parsl_dfk"],
    "task_id": ["task_id", "parsl.task", "parsl_task_id"],
    "try_id": ["try_id", "parsl.try", "parsl_try_id"],
    "app_name": ["app_name", "parsl.app_name", "parsl_app_name"],
    "task_state": ["task_state", "parsl.task_state", "parsl_task_status"],
    "executor_label": ["executor_label", "parsl.executor", "parsl.executor.label", "parsl_executor"],
    "executor_task_id": ["executor_task_id", "parsl.executor_task", "parsl_executor_id", "htex_task_id"],
    "block_id": ["block_id"],
    "job_id": ["job_id"],
    "manager_id": ["manager_id"],
    "worker_id": ["worker_id"],
}

# columns of type BIGINT (`thread` is the thread name; the numeric thread id stays in attrs).
# Ids (`task_id`, `executor_task_id`) are text. A value of an integer column that is not an
# integer ("w-1") fills nothing: it is only in attrs, and counted (`unfit_values_sql`).
INTEGER_COLUMNS = {"pid", "try_id"}

#: every candidate key once, in COLUMN_KEYS order (bit p of a used-keys mask is key p, from 1)
ALL_KEYS: list[str] = [key for keys in COLUMN_KEYS.values() for key in keys]


def _value(values_alias: str, key: str) -> str:
    """SQL for one candidate key's string value in the struct `extract_columns_sql` makes."""
    return values_alias + '."' + key.replace('"', '""') + '"'


def extract_columns_sql(text_column: str, values_alias: str = "v",
                        extra_keys: tuple[str, ...] = ()) -> tuple[str, dict[str, str]]:
    """SQL to pull every column's candidate keys out of a JSON text in one parse.

    Returns (`extraction`, `columns`): select `extraction AS v` in an inner query, then
    `columns[name]` over it gives each column (all but `ts`, whose parsing is the caller's).
    `extra_keys` are extracted too, for the caller to read as `values_alias."key"`.
    The extraction is one `json_transform` to a STRUCT of VARCHARs (values as
    `json_extract_string` gives them), ~2x faster than extracting the keys as a list of paths.
    """
    columns: dict[str, str] = {}
    for column, keys in COLUMN_KEYS.items():
        if column == "ts":
            continue
        columns[column] = f"coalesce({', '.join(_fitting(column, _value(values_alias, key)) for key in keys)})"
    columns["level"] = level_name_sql(columns["level"])
    # a record's "event" is its name only beside a message; alone it is the message (structlog's
    # way), and the record is left unnamed for the rules to name it, as a logged message is
    written_message = [_value(values_alias, key) for key in COLUMN_KEYS["message"] if key != "event"]
    columns["event"] = f"CASE WHEN coalesce({', '.join(written_message)}) IS NOT NULL THEN {columns['event']} END"
    structure = json.dumps({key: "VARCHAR" for key in [*ALL_KEYS, *extra_keys]})
    return f"json_transform({text_column}, {literal(structure)})", columns


def _fitting(column: str, value: str) -> str:
    """SQL: the value a candidate key gives `column`, NULL where it does not fit the column's
    type (an integer column takes only an integer written as one: not "w-1", "3.5" or "1e3")."""
    if column not in INTEGER_COLUMNS:
        return value
    return f"CASE WHEN regexp_full_match({value}, '\\s*[-+]?[0-9]{{1,18}}\\s*') THEN CAST({value} AS BIGINT) END"


def unfit_values_sql(values_alias: str = "v") -> str:
    """SQL counting a record's values that did not fit their integer column (kept in attrs).

    >>> "regexp_full_match" in unfit_values_sql()
    True
    """
    terms = [
        f"({_value(values_alias, key)} IS NOT NULL AND {_fitting(column, _value(values_alias, key))} IS NULL)::INTEGER"
        for column in sorted(INTEGER_COLUMNS) for key in COLUMN_KEYS[column]
    ]
    return f"({' + '.join(terms)})"


def ts_candidates_sql(values_alias: str = "v") -> str:
    """SQL expression for the raw (string) time value among the candidate time keys."""
    return f"coalesce({', '.join(_value(values_alias, key) for key in COLUMN_KEYS['ts'])})"


def time_keys_structure_sql() -> str:
    """SQL literal of the `json_transform` structure holding only the candidate time keys
    (what `ts_candidates_sql` reads), for re-reading the time of a few records.

    >>> '"created": "VARCHAR"' in time_keys_structure_sql()
    True
    """
    return literal(json.dumps({key: "VARCHAR" for key in COLUMN_KEYS["ts"]}))


def parse_time_sql(raw: str) -> str:
    """Seconds since the epoch from a JSON time value: epoch seconds, ms, µs or ISO 8601.

    Numbers above 1e11 are read as milliseconds and above 1e14 as microseconds; strings
    without a zone are taken as UTC.
    """
    return f"""CASE
        WHEN try_cast({raw} AS DOUBLE) IS NOT NULL THEN
            CASE WHEN try_cast({raw} AS DOUBLE) > 1e14 THEN try_cast({raw} AS DOUBLE) / 1e6
                 WHEN try_cast({raw} AS DOUBLE) > 1e11 THEN try_cast({raw} AS DOUBLE) / 1e3
                 ELSE try_cast({raw} AS DOUBLE) END
        ELSE epoch(try_cast({raw} AS TIMESTAMPTZ))
    END"""


def time_in_range_sql(ts: str) -> str:
    """SQL: true when epoch seconds `ts` fall in years 1-9999. A record with a time outside
    (1e300, inf) is a bad line: kept, it would break every query that makes `ts` a timestamp."""
    return f"{ts} BETWEEN {EARLIEST_TIME} AND {LATEST_TIME}"
