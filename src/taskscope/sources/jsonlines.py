"""Generic JSON lines: one flat JSON object per line with a time field.

Known keys (see `json_fields.COLUMN_KEYS`) fill columns; `attrs` is the record as logged. A line
that is not a JSON object, or has no readable time, is kept aside in `bad_lines`.
"""

from __future__ import annotations

import duckdb
import orjson

from taskscope._sql import scalar
from taskscope.ingest.staging import STAGED, insert_staged, taken_values_in_attrs
from taskscope.sources import Sample, Source, StageContext, StageResult
from taskscope.sources.json_fields import (
    extract_columns_sql,
    parse_time_sql,
    refit_staged,
    time_in_range_sql,
    time_keys_structure_sql,
    ts_candidates_sql,
    unfit_values_sql,
)


# valid JSON whose first character other than JSON's whitespace is `{` is an object: cheaper
# than json_type (a second parse), and than ltrim, which copies every line to look at one byte
_IS_OBJECT = "(starts_with(txt, '{') OR regexp_matches(txt, '^[ \\t\\n\\r]*\\{'))"


# `source` values a file's path gives when it says nothing about the writer: a log copied
# anywhere (`w.jsonlog`) or generic JSON lines. Their records' own `component` (taskscope's
# WideEventLogging writes it on every line) names the source instead.
GENERIC_SOURCES = ("log", "jsonl")


def stage_lines(con: duckdb.DuckDBPyConnection, table_name: str, context: StageContext) -> StageResult:
    """Parse the JSON lines of `table_name` into staging; report unparseable ones.

    One statement decodes, validates and extracts each record straight into staging (no
    intermediate table: storing the parsed record costs more than parsing it). `attrs` is the
    record as logged. Lines that did not reach staging are then the bad ones.
    """
    generic = context.component in GENERIC_SOURCES
    extraction, columns = extract_columns_sql("txt", extra_keys=("component",) if generic else ())
    # a path stamp fills a column only where the record itself says nothing
    for name, value in context.stamps.items():
        columns[name] = f"coalesce({columns[name]}, ?::VARCHAR)"
    stamp_params = [context.stamps[name] for name in columns if name in context.stamps]
    select_list = ", ".join(f"{expr} AS {name}" for name, expr in columns.items())
    names = ", ".join(columns)
    staged = insert_staged(
        con,
        f"""SELECT ts, coalesce(record_source, ?) AS source, ? AS file, line, {names},
                   txt::JSON AS attrs, ?::INTEGER AS file_id, nullif(values_in_attrs, 0) AS values_in_attrs
            FROM (
                SELECT line, txt, {parse_time_sql(ts_candidates_sql())} AS ts, {unfit_values_sql()} AS values_in_attrs,
                       {select_list}, {'v."component"' if generic else 'NULL::VARCHAR'} AS record_source
                FROM (SELECT line, txt, {extraction} AS v FROM {table_name}
                      WHERE json_valid(txt) AND {_IS_OBJECT}))
            WHERE {time_in_range_sql("ts")}""",
        [context.component, context.file, context.file_id, *stamp_params],
    )
    refit_staged(con, STAGED, context.file_id, context.lines_before)
    in_attrs = taken_values_in_attrs(con)
    if staged == scalar(con, f"SELECT count(*) FROM {table_name}"):
        return StageResult(events=staged, values_in_attrs=in_attrs)
    time_sql = parse_time_sql(ts_candidates_sql(f"(json_transform(txt, {time_keys_structure_sql()}))"))
    bad = scalar(
        con,
        f"""INSERT INTO bad_lines
        SELECT ?, line,
               CASE WHEN NOT json_valid(txt) THEN 'invalid JSON'
                    WHEN json_type(txt) <> 'OBJECT' THEN 'JSON value is not an object'
                    WHEN {time_sql} IS NULL THEN 'no readable time field'
                    ELSE 'time outside years 1-9999' END,
               encode(txt)[1:200], ?::INTEGER
        FROM {table_name} ANTI JOIN (SELECT line FROM {STAGED} WHERE file = ? AND file_id IS NOT DISTINCT FROM ?::INTEGER) s
        USING (line)""",
        [context.file, context.file_id, context.file, context.file_id],
    )
    return StageResult(events=staged, bad_lines=int(bad), values_in_attrs=int(in_attrs))


def is_json_lines(sample: Sample) -> bool:
    """JSON lines by name (`*.jsonl`, `*.ndjson`), or by content: most of the first lines are
    JSON objects, whatever the name (`app.log`).

    >>> is_json_lines(Sample("app.log", b'{"time": 1.5, "msg": "hi"}\\n{"time": 2.5, "msg": "ho"}\\n'))
    True
    """
    if sample.name.endswith((".jsonl", ".ndjson")):
        return not sample.is_utf16  # told apart, so that the user is told why it is not read
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
