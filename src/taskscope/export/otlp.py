"""OTLP/JSON logs export: the store's events as OpenTelemetry log records, for any OTLP consumer
(an OpenTelemetry Collector's `otlpjsonfile` receiver, Grafana Loki, Honeycomb, ...).

The file is JSON Lines (the OTLP file-exporter format): each line one `LogsData` holding up to
`batch` records. Encoding follows OTLP/JSON: lowerCamelCase keys, 64-bit integers as decimal
strings, enums as integers, ids as hex. Mapping of an event:

| event | log record |
|---|---|
| `ts` | `timeUnixNano`: the nearest nanosecond, so `timeUnixNano / 1e9` is `ts` again exactly |
| `level` | `severityText` as logged; `severityNumber` TRACE 1, DEBUG 5, INFO 9, WARNING/WARN 13, ERROR 17, CRITICAL/FATAL 21 (other levels: unset) |
| `message` | `body.stringValue` |
| `event` | `eventName` where it is a canonical name (differs from the template), and an attribute |
| `source`, `host`, `pid` | resource attributes `service.name`, `host.name`, `process.pid` (one resource per process) |
| `logger` | the instrumentation scope name (as OpenTelemetry's Python logging bridge does) |
| every other column (`file`, `line`, `thread`, `run_id`, `task_id`, ..., `worker_id`) | an attribute named after the column, when not null |
| every member of `attrs` | an attribute under its own name (`attrs.NAME` if NAME is also a column), typed: strings `stringValue`, integers `intValue`, floats `doubleValue`, booleans `boolValue`, JSON null an empty value, arrays `arrayValue` and objects `kvlistValue` (values nested deeper than that as their JSON text in `stringValue`) |
| `run_id` when it is a UUID (Parsl's run ids are) | `traceId` (its 32 hex digits): a run is one trace, so a backend groups a run's logs. `spanId` stays empty: taskscope exports no spans to point at |

Records keep the store's order (each file's events together), so a line holds few resources;
consecutive records of one process and logger share one `resourceLogs`/`scopeLogs` entry. Events with no
run are exported too (with no `run_id` attribute and no `traceId`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from taskscope._sql import connection_of, of_run, scalar
from taskscope.analyses.runs import resolve_run
from taskscope.export._atomic import write_atomically
from taskscope.export.summary import ExportSummary, ProgressCallback, report, writable_file
from taskscope.schema import EVENT_COLUMN_NAMES

#: OpenTelemetry SeverityNumber of each Python/Parsl level name (logs data model, "SeverityNumber")
SEVERITY_NUMBERS = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17, "FATAL": 21, "CRITICAL": 21}
#: columns that become attributes, and the AnyValue field for their type
STRING_ATTRIBUTE_COLUMNS = (
    "event", "template", "file", "thread", "run_id", "task_id", "app_name", "task_state", "executor_label",
    "executor_task_id", "block_id", "job_id", "manager_id", "worker_id",
)
INT_ATTRIBUTE_COLUMNS = ("line", "try_id")
#: rows fetched from DuckDB per write (each row is one LogsData line)
BATCH_LINES = 64

# AnyValue of a JSON scalar (arrays and objects as their JSON text). Integers outside int64 and
# non-finite floats cannot be intValue/doubleValue in OTLP/JSON, so they stay text too.
_MACROS = """
CREATE OR REPLACE TEMP MACRO otlp_scalar(j) AS CASE json_type(j)
    WHEN 'VARCHAR' THEN json_object('stringValue', j ->> '$')
    WHEN 'BIGINT' THEN json_object('intValue', CAST(j AS VARCHAR))
    WHEN 'UBIGINT' THEN CASE WHEN TRY_CAST(CAST(j AS VARCHAR) AS BIGINT) IS NOT NULL
                             THEN json_object('intValue', CAST(j AS VARCHAR))
                             ELSE json_object('stringValue', CAST(j AS VARCHAR)) END
    WHEN 'DOUBLE' THEN CASE WHEN isfinite(TRY_CAST(j AS DOUBLE)) THEN json_object('doubleValue', TRY_CAST(j AS DOUBLE))
                            ELSE json_object('stringValue', CAST(j AS VARCHAR)) END
    WHEN 'BOOLEAN' THEN json_object('boolValue', TRY_CAST(j AS BOOLEAN))
    WHEN 'NULL' THEN json('{}')
    ELSE json_object('stringValue', CAST(j AS VARCHAR)) END;
CREATE OR REPLACE TEMP MACRO otlp_pointer(name) AS '/' || replace(replace(name, '~', '~0'), '/', '~1');
CREATE OR REPLACE TEMP MACRO otlp_any(j) AS CASE json_type(j)
    WHEN 'ARRAY' THEN json_object('arrayValue', json_object('values',
        list_transform(json_extract(j, '$[*]'), lambda element: otlp_scalar(element))))
    WHEN 'OBJECT' THEN json_object('kvlistValue', json_object('values',
        list_transform(json_keys(j), lambda member: {'key': member, 'value': otlp_scalar(json_extract(j, otlp_pointer(member)))})))
    ELSE otlp_scalar(j) END;
"""


def export_otlp(
    store, path: str | Path, run: str | None = None, batch: int = 1000, on_progress: ProgressCallback | None = None
) -> ExportSummary:
    """Write the events of `run` (id, prefix or folder name; None: every event) to `path` as
    OTLP/JSON logs: JSON Lines, one `LogsData` of up to `batch` records per line.

    Use it to load a run into an OpenTelemetry backend, e.g. with the Collector's
    `otlpjsonfile` receiver. The file appears only once complete: when writing fails (a full
    disk), `path` is left as it was.

    >>> export_otlp(store, "run.otlp.jsonl", run="000").line()  # doctest: +SKIP
    'wrote otlp to run.otlp.jsonl: 3,611 events of 1 run (lines: 4, resources: 9)'
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    con = connection_of(store)
    run_id = resolve_run(con, run)
    path = writable_file(path)
    cur = con.cursor()  # macros stay private to this export
    try:
        cur.execute(_MACROS)
        where, params = _where(run_id)
        events = scalar(cur, f"SELECT count(*) FROM events {where}", params)
        total_lines = -(-events // batch)
        report(on_progress, "building log records", 0, total_lines)
        resources = dict(cur.execute(_RESOURCES_SQL, {"run": run_id}).fetchall())
        lines = 0
        with write_atomically(path) as out:
            query = cur.sql(_records_sql(), params={"run": run_id})
            for chunk in _chunks(query.to_arrow_reader(batch * BATCH_LINES), batch):
                out.write(_logs_data_line(chunk, resources))
                lines += 1
                if lines % BATCH_LINES == 0 or lines == total_lines:
                    report(on_progress, "writing LogsData lines", lines, total_lines)
        runs = scalar(cur, f"SELECT count(DISTINCT run_id) FROM events {where}", params)
    finally:
        cur.close()
    return ExportSummary("otlp", path, events, runs, {"lines": lines, "resources": len(resources)})


def _chunks(reader, size: int):
    """Arrow batches of any size re-cut into tables of `size` rows (the last may be shorter)."""
    pending: list = []
    pending_rows = 0
    for record_batch in reader:
        pending.append(record_batch)
        pending_rows += record_batch.num_rows
        while pending_rows >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            pending, pending_rows = table.slice(size).to_batches(), pending_rows - size
    if pending_rows:
        yield pa.Table.from_batches(pending)


def _logs_data_line(chunk, resources: dict[int, str]) -> bytes:
    """One `LogsData` JSON line from a table of (resource key, scope JSON, record JSON) rows.

    Records stay in store order; each run of rows with the same resource and scope becomes one
    `scopeLogs` entry of one `resourceLogs` entry (events of one file are stored together, so
    runs are long). The cut points are found with numpy; Python only joins text.
    """
    resource_keys = chunk.column("resource_key").to_numpy()
    scopes = chunk.column("scope").to_pylist()
    records = chunk.column("record").to_pylist()
    scope_codes = chunk.column("scope").dictionary_encode().combine_chunks().indices.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, (resource_keys[1:] != resource_keys[:-1]) | (scope_codes[1:] != scope_codes[:-1])])
    ends = np.r_[starts[1:], len(records)]
    parts = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        parts.append(
            f'{{"resource":{resources[int(resource_keys[start])]},"scopeLogs":[{{"scope":{scopes[start]},'
            f'"logRecords":[{",".join(records[start:end])}]}}]}}'
        )
    return f'{{"resourceLogs":[{",".join(parts)}]}}\n'.encode()


def _where(run_id: str | None) -> tuple[str, list]:
    return ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])


def _attributes_sql() -> str:
    """SQL for an event's attribute list (key/AnyValue structs), null columns left out."""
    items = [
        f"CASE WHEN {name} IS NOT NULL THEN {{'key': '{name}', 'value': json_object('stringValue', {name})}} END"
        for name in STRING_ATTRIBUTE_COLUMNS
    ] + [
        f"CASE WHEN {name} IS NOT NULL THEN {{'key': '{name}', 'value': json_object('intValue', CAST({name} AS VARCHAR))}} END"
        for name in INT_ATTRIBUTE_COLUMNS
    ]
    columns = ", ".join(f"'{name}'" for name in EVENT_COLUMN_NAMES)
    # (lambda parameters are named apart: a macro's body is pasted in, so a shared name would be captured)
    from_attrs = f"""coalesce(list_transform(json_keys(attrs), lambda attr_key: {{
        'key': CASE WHEN attr_key IN ({columns}) THEN 'attrs.' || attr_key ELSE attr_key END,
        'value': otlp_any(json_extract(attrs, otlp_pointer(attr_key)))}}), [])"""
    return f"list_concat(list_filter([{', '.join(items)}], lambda a: a IS NOT NULL), {from_attrs})"


_RESOURCE_KEY = "hash(source, host, pid)"

#: resource key -> the OTLP `Resource` JSON of each process (source, host, pid) of the export
_RESOURCES_SQL = f"""
    SELECT DISTINCT {_RESOURCE_KEY},
           CAST(json_object('attributes', list_filter([
               {{'key': 'service.name', 'value': json_object('stringValue', coalesce(source, 'unknown'))}},
               CASE WHEN host IS NOT NULL THEN {{'key': 'host.name', 'value': json_object('stringValue', host)}} END,
               CASE WHEN pid IS NOT NULL
                    THEN {{'key': 'process.pid', 'value': json_object('intValue', CAST(pid AS VARCHAR))}} END
           ], lambda a: a IS NOT NULL)) AS VARCHAR)
    FROM events WHERE {of_run()}
"""


def _records_sql() -> str:
    """SQL: per event (in store order) its resource key, scope JSON and OTLP `LogRecord` JSON
    (parameter `$run`: a run id or NULL for every event)."""
    severity = " ".join(f"WHEN '{level}' THEN {number}" for level, number in SEVERITY_NUMBERS.items())
    return f"""
    SELECT {_RESOURCE_KEY} AS resource_key,
           CAST(json_merge_patch('{{}}', json_object('name', logger)) AS VARCHAR) AS scope,
           CAST(json_merge_patch('{{}}', json_object(
               -- whole seconds and fraction apart: ts * 1e9 as a DOUBLE would lose the last ~100 ns
               'timeUnixNano', CAST(CAST(floor(ts) AS BIGINT) * 1000000000
                                    + CAST(round((ts - floor(ts)) * 1e9) AS BIGINT) AS VARCHAR),
               'severityNumber', CASE upper(level) {severity} END,
               'severityText', level,
               'body', CASE WHEN message IS NOT NULL THEN json_object('stringValue', message) END,
               'eventName', CASE WHEN event IS DISTINCT FROM template THEN event END,
               'traceId', CASE WHEN TRY_CAST(run_id AS UUID) IS NOT NULL
                               THEN replace(lower(CAST(TRY_CAST(run_id AS UUID) AS VARCHAR)), '-', '') END,
               'attributes', {_attributes_sql()})) AS VARCHAR) AS record
    FROM events WHERE {of_run()}
    """
