"""How keys of JSON records map to event columns, shared by the JSON-lines sources.

Parsl's JSONLogging writes `parsl.task`, `parsl.dfk`, ... (master and 2026.10.26); the
observability prototype wrote `parsl_task_id`, `htex_task_id`, ...; taskscope's own
handler and generic JSON lines use the column names themselves. The first key present wins.
Every key not consumed here is kept in `attrs` under its own name.
"""

from __future__ import annotations

from taskscope._sql import literal


# column -> candidate keys, in priority order
COLUMN_KEYS: dict[str, list[str]] = {
    "ts": ["ts", "created", "time", "timestamp", "@timestamp", "t"],
    "level": ["level", "levelname", "severity"],
    "logger": ["logger", "name", "logger_name"],
    "event": ["event"],
    "message": ["message", "formatted", "msg"],
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

# LogRecord attributes that only restate another one (levelno/levelname, filename/pathname,
# msecs/created, ...) or are always empty in JSON (exc_info): left out of attrs
REDUNDANT_KEYS = ("levelno", "filename", "module", "msecs", "relativeCreated", "exc_info")

# columns of type BIGINT (`thread` is the thread name; the numeric thread id stays in attrs)
INTEGER_COLUMNS = {"pid", "task_id", "try_id", "executor_task_id"}

def _json_path(key: str) -> str:
    return '$."' + key.replace('"', '\\"') + '"'


def extract_columns_sql(text_column: str, values_alias: str = "v") -> tuple[str, dict[str, str]]:
    """SQL to pull every column's candidate keys out of a JSON text in one parse.

    Returns (`extraction`, `columns`): select `extraction AS v` in an inner query, then
    `columns[name]` over it gives each column (all but `ts`, whose parsing is the caller's).
    """
    paths: list[str] = []
    columns: dict[str, str] = {}
    for column, keys in COLUMN_KEYS.items():
        positions = []
        for key in keys:
            paths.append(_json_path(key))
            positions.append(len(paths))
        if column == "ts":
            continue
        value = f"coalesce({', '.join(f'{values_alias}[{p}]' for p in positions)})"
        columns[column] = f"try_cast({value} AS BIGINT)" if column in INTEGER_COLUMNS else value
    path_list = "[" + ", ".join(literal(p) for p in paths) + "]"
    return f"json_extract_string({text_column}, {path_list})", columns


def ts_candidates_sql(values_alias: str = "v") -> str:
    """SQL expression for the raw (string) time value among the candidate time keys."""
    return f"coalesce({', '.join(f'{values_alias}[{i + 1}]' for i in range(len(COLUMN_KEYS['ts'])))})"


def attrs_sql(text_column: str, values_alias: str = "v") -> str:
    """SQL for a JSON object of the record's keys that no column took.

    Only the key a column actually used is left out: a record with both `host` and
    `hostname` keeps `hostname` in attrs. `msg` is kept only when it is a %-template.
    Built as a JSON merge-patch that nulls the used keys: ~3x faster in DuckDB than
    filtering the record's entries as a MAP (benchmarks/ingest_bench.py --profile).
    """
    used = []
    position = 0
    msg_position = None
    for keys in COLUMN_KEYS.values():
        cases = []
        for key in keys:
            position += 1
            msg_position = position if key == "msg" else msg_position
            cases.append(f"WHEN {values_alias}[{position}] IS NOT NULL THEN {literal(key)}")
        used.append(f"CASE {' '.join(cases)} END")
    used.append(f"CASE WHEN strpos({values_alias}[{msg_position}], '%') = 0 THEN 'msg' END")
    used.extend(literal(key) for key in REDUNDANT_KEYS)
    patch = (
        f"to_json(map_from_entries(list_transform(list_distinct(list_filter(list_value({', '.join(used)}), "
        "lambda k: k IS NOT NULL)), lambda k: struct_pack(k := k, v := NULL::JSON))))"
    )
    return f"json_merge_patch({text_column}, {patch})"


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
