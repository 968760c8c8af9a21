"""Generic JSON lines: one flat JSON object per line with a time field.

Known keys (see `json_fields.COLUMN_KEYS`) become columns, the rest go to `attrs`. A line
that is not a JSON object, or has no readable time, is kept aside in `bad_lines`.
"""

from __future__ import annotations

import duckdb
import orjson

from taskscope._sql import scalar
from taskscope.ingest.staging import insert_staged
from taskscope.sources import Sample, Source, StageContext, StageResult
from taskscope.sources.json_fields import (
    attrs_patch,
    extract_columns_sql,
    parse_time_sql,
    time_in_range_sql,
    ts_candidates_sql,
    unfit_values_sql,
    used_keys_mask_sql,
)


# the whitespace JSON allows before a value
_JSON_SPACE = "' ' || chr(9) || chr(10) || chr(13)"


# `source` values a file's path gives when it says nothing about the writer: a log copied
# anywhere (`w.jsonlog`) or generic JSON lines. Their records' own `component` (taskscope's
# WideEventLogging writes it on every line) names the source instead.
GENERIC_SOURCES = ("log", "jsonl")


def stage_lines(con: duckdb.DuckDBPyConnection, table_name: str, context: StageContext) -> StageResult:
    """Parse the JSON lines of `table_name` into staging; report unparseable ones."""
    generic = context.component in GENERIC_SOURCES
    extraction, columns = extract_columns_sql("txt", extra_keys=("component",) if generic else ())
    # a path stamp fills a column only where the record itself says nothing
    for name, value in context.stamps.items():
        columns[name] = f"coalesce({columns[name]}, ?::VARCHAR)"
    stamp_params = [context.stamps[name] for name in columns if name in context.stamps]
    select_list = ", ".join(f"{expr} AS {name}" for name, expr in columns.items())
    time_sql = parse_time_sql(ts_candidates_sql())
    # one pass decodes, validates and extracts; good and bad lines are then taken from it
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE json_parsed AS
        SELECT line, txt, ok, CASE WHEN ok THEN {time_sql} END AS ts,
               CASE WHEN ok THEN {used_keys_mask_sql()} END AS used_keys,
               CASE WHEN ok THEN {unfit_values_sql()} END AS values_in_attrs, {select_list},
               {'v."component"' if generic else 'NULL::VARCHAR'} AS record_source FROM (
            SELECT line, txt, ok, CASE WHEN ok THEN {extraction} END AS v FROM (
                -- valid JSON whose first character is `{{` is an object (cheaper than json_type)
                SELECT line, txt, json_valid(txt) AND left(ltrim(txt, {_JSON_SPACE}), 1) = '{{' AS ok
                FROM {table_name}))""",
        stamp_params,
    )
    good_time = time_in_range_sql("ts")
    # records that give the same keys to columns share one attrs patch, built once
    masks = [row[0] for row in con.execute(
        f"SELECT DISTINCT used_keys FROM json_parsed WHERE ok AND {good_time} ORDER BY 1").fetchall()]
    patch = f"CASE used_keys {' '.join('WHEN ? THEN ?' for _ in masks)} END" if masks else "NULL"
    patch_params = [value for mask in masks for value in (mask, attrs_patch(mask))]
    names = ", ".join(columns)
    staged = insert_staged(
        con,
        f"""SELECT ts, coalesce(record_source, ?) AS source, ? AS file, line, {names},
                   json_merge_patch(txt, {patch}) AS attrs, ?::INTEGER AS file_id
            FROM json_parsed WHERE ok AND {good_time}""",
        [context.component, context.file, *patch_params, context.file_id],
    )
    in_attrs = scalar(con, f"SELECT coalesce(sum(values_in_attrs), 0) FROM json_parsed WHERE ok AND {good_time}")
    bad = scalar(
        con,
        f"""INSERT INTO bad_lines
        SELECT ?, line,
               CASE WHEN NOT json_valid(txt) THEN 'invalid JSON'
                    WHEN json_type(txt) <> 'OBJECT' THEN 'JSON value is not an object'
                    WHEN ts IS NULL THEN 'no readable time field'
                    ELSE 'time outside years 1-9999' END,
               encode(txt)[1:200], ?::INTEGER
        FROM json_parsed WHERE NOT ok OR ts IS NULL OR NOT {good_time}""",
        [context.file, context.file_id],
    )
    return StageResult(events=staged, bad_lines=int(bad), values_in_attrs=int(in_attrs))


def is_json_lines(sample: Sample) -> bool:
    """JSON lines by name (`*.jsonl`, `*.ndjson`), or by content: most of the first lines are
    JSON objects, whatever the name (`app.log`).

    >>> is_json_lines(Sample("app.log", b'{"time": 1.5, "msg": "hi"}\\n{"time": 2.5, "msg": "ho"}\\n'))
    True
    """
    if sample.name.endswith((".jsonl", ".ndjson")):
        return True
    if not sample.is_text:
        return False
    objects = sum(1 for line in sample.lines if _is_json_object(line))
    return objects * 2 > len(sample.lines)


def _is_json_object(line: str) -> bool:
    line = line.strip()
    if not (line.startswith("{") and line.endswith("}")):
        return False
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


SOURCE = Source(name="jsonlines", recognise=is_json_lines, order=20, stage_lines=stage_lines, component="jsonl")
