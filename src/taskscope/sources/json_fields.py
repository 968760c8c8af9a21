"""How keys of JSON records map to event columns, shared by the JSON-lines sources.

Parsl's JSONLogging writes `parsl.task`, `parsl.dfk`, ... (master and 2026.10.26); the
observability prototype wrote `parsl_task_id`, `htex_task_id`, ...; taskscope's own
handler and generic JSON lines use the column names themselves. The first key present wins.
`attrs` is the record as logged, so every key, consumed here or not, is kept there.
"""

from __future__ import annotations

import json

import duckdb

from taskscope._sql import literal
from taskscope.schema import level_name_sql
from taskscope.time_bounds import EARLIEST_TIME, LATEST_TIME


# column -> candidate keys, in priority order. A record Python's logging wrote (`created`,
# `levelname`, `name`) is timed, levelled and named by those: a program's own `extra={"ts": ...}`
# or `{"level": "high"}` is data, kept in attrs (see `_LOGGING_NAME` for `name`)
COLUMN_KEYS: dict[str, list[str]] = {
    "ts": ["created", "ts", "time", "timestamp", "@timestamp", "t"],
    "level": ["levelname", "level", "severity"],
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
    # `name` is the logger only beside `levelname` (Python's logging wrote the record); elsewhere a
    # `logger` key comes first, as `name` is as likely a thing's name as a logger's
    logging_record = f"{_value(values_alias, 'levelname')} IS NOT NULL"
    columns["logger"] = (f"CASE WHEN {logging_record} THEN coalesce({_value(values_alias, 'name')}, {columns['logger']}) "
                         f"ELSE {columns['logger']} END")
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


#: text columns that hold a name or an id: a JSON array, object or boolean is none (it stays in
#: attrs, counted); a number is one, as its text
ID_COLUMNS = ("run_id", "task_id", "executor_task_id", "app_name", "task_state", "executor_label",
              "block_id", "job_id", "manager_id", "worker_id")
#: Python's numbered levels (`levelno`), as JSON formatters of its logging write them
PYTHON_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def refit_staged(con: duckdb.DuckDBPyConnection, staged: str, file_id: int | None, lines_before: int) -> None:
    """Fix the rows of `staged` a chunk of JSON lines just gave (after line `lines_before` of
    file `file_id`) whose level is a number or whose id is no id (see `refit_staged_sql`)."""
    update = refit_staged_sql(staged)
    # an UPDATE that changes no row still costs as much as the parse of a few thousand lines
    if con.execute(f"SELECT EXISTS (SELECT 1 FROM {staged} {update[update.index('WHERE'):]})",
                   [file_id, lines_before]).fetchall()[0][0]:
        con.execute(update, [file_id, lines_before])


def refit_staged_sql(staged: str) -> str:
    """An UPDATE of the rows of `staged` a chunk of JSON lines just gave (parameters: file_id,
    the line before the chunk's first) whose level is a number or whose id is no id.

    - a level written as a number reads as Python numbers its levels (`"level": 40` is ERROR;
      one it does not name is "Level 25", as `logging.getLevelName` says), unless another
      candidate key names it (`"levelname": "ERROR"` beside it);
    - an id column holding a JSON array, object or boolean (`"task_id": [1, 2]`) takes the next
      candidate key's value instead, or none; the value stays in `attrs` and is counted;
    - an id written as a whole number in a float's form (`11.0`, `1e3`) is that integer's text
      (`'11'`, `'1000'`), as the same id written `11` is; the string `"11.0"` stays as written.

    Such rows are rare, so they are found by a cheap test of the columns and fixed apart: done
    in the parse, the same expressions cost 15 % more CPU on every row of a 369k-line ingest.

    >>> "json_type" in refit_staged_sql("staged")
    True
    """
    fixes, counts, tests = [], [], []
    level_paths = [_path(key) for key in COLUMN_KEYS["level"]]
    named = ", ".join(f"CASE WHEN json_type(attrs, {path}) = 'VARCHAR' AND try_cast(attrs->>{path} AS DOUBLE) IS NULL "
                      f"THEN attrs->>{path} END" for path in level_paths)
    number = f"try_cast(coalesce({', '.join(f'attrs->>{path}' for path in level_paths)}) AS DOUBLE)"
    cases = " ".join(f"WHEN {level} THEN '{name}'" for level, name in PYTHON_LEVELS.items())
    by_number = f"CASE {number} {cases} ELSE 'Level ' || regexp_replace({number}::VARCHAR, '\\.0$', '') END"
    numeric_level = "ascii(level) BETWEEN 48 AND 57"
    fixes.append(f"level = CASE WHEN {numeric_level} THEN {level_name_sql(f'coalesce({named}, {by_number})')} ELSE level END")
    tests.append(numeric_level)
    for column in ID_COLUMNS:
        # what json_transform makes of an array, an object or a boolean (a string may read so too)
        test = f"(ascii({column}) IN (91, 123) OR {column} IN ('true', 'false'))"
        paths = [_path(key) for key in COLUMN_KEYS[column]]
        scalars = ", ".join(f"CASE WHEN json_type(attrs, {path}) IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE') "
                            f"THEN attrs->>{path} END" for path in paths)
        # a whole number written as a float (`11.0`, `1e3`) names the task `11`, `1000`, as an
        # integer would: json_transform writes such a number with a trailing ".0"
        whole_float = f"suffix({column}, '.0')"
        written_as_number = " OR ".join(f"(json_type(attrs, {path}) = 'DOUBLE' AND attrs->>{path} = {column})"
                                        for path in paths)
        fixes.append(f"{column} = CASE WHEN {test} THEN coalesce({scalars}) "
                     f"WHEN {whole_float} AND regexp_full_match({column}, '-?[0-9]{{1,18}}\\.0') "
                     f"AND ({written_as_number}) THEN left({column}, -2) ELSE {column} END")
        composite = " + ".join(f"coalesce(json_type(attrs, {path}) IN ('ARRAY', 'OBJECT', 'BOOLEAN'), false)::INTEGER"
                               for path in paths)
        counts.append(f"CASE WHEN {test} THEN {composite} ELSE 0 END")
        tests.extend([test, whole_float])
    return f"""UPDATE {staged} SET {', '.join(fixes)},
                   values_in_attrs = nullif(coalesce(values_in_attrs, 0) + {' + '.join(counts)}, 0)
               WHERE file_id IS NOT DISTINCT FROM ?::INTEGER AND line > ? AND ({' OR '.join(tests)})"""


def _path(key: str) -> str:
    """A JSON path literal naming `key` at the top of a record (dots in it are its own)."""
    return literal("$." + json.dumps(key))


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
    without a zone are taken as UTC. Rounded to the microsecond, the precision of `events.ts`
    (Python's `created` is a double: 1796686992.7558203).
    """
    return f"""round(CASE
        WHEN try_cast({raw} AS DOUBLE) IS NOT NULL THEN
            CASE WHEN try_cast({raw} AS DOUBLE) > 1e14 THEN try_cast({raw} AS DOUBLE) / 1e6
                 WHEN try_cast({raw} AS DOUBLE) > 1e11 THEN try_cast({raw} AS DOUBLE) / 1e3
                 ELSE try_cast({raw} AS DOUBLE) END
        ELSE epoch(try_cast({raw} AS TIMESTAMPTZ))
    END, 6)"""


def time_in_range_sql(ts: str) -> str:
    """SQL: true when epoch seconds `ts` fall in years 1-9999. A record with a time outside
    (1e300, inf) is a bad line: kept, it would break every query that makes `ts` a timestamp."""
    return f"{ts} BETWEEN {EARLIEST_TIME} AND {LATEST_TIME}"
