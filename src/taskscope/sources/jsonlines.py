"""Generic JSON lines: one flat JSON object per line with a time field.

Known keys (see `json_fields.COLUMN_KEYS`) become columns, the rest go to `attrs`. A line
that is not a JSON object, or has no readable time, is kept aside in `bad_lines`.
"""

from __future__ import annotations

import duckdb

from taskscope.ingest.lines import usable_lines_sql
from taskscope.ingest.staging import insert_staged
from taskscope.sources import StageContext, StageResult
from taskscope.sources.json_fields import attrs_sql, extract_columns_sql, parse_time_sql, ts_candidates_sql


def stage_lines(con: duckdb.DuckDBPyConnection, table_name: str, context: StageContext) -> StageResult:
    """Parse the JSON lines of `table_name` into staging; report unparseable ones."""
    extraction, columns = extract_columns_sql("txt")
    # a path stamp fills a column only where the record itself says nothing
    for name, value in context.stamps.items():
        columns[name] = f"coalesce({columns[name]}, ?::VARCHAR)"
    stamp_params = [context.stamps[name] for name in columns if name in context.stamps]
    select_list = ", ".join(f"{expr} AS {name}" for name, expr in columns.items())
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE json_parsed AS
        SELECT line, txt, {extraction} AS v
        FROM ({usable_lines_sql(table_name)})
        WHERE json_valid(txt) AND json_type(txt) = 'OBJECT'"""
    )
    staged = insert_staged(
        con,
        f"""SELECT {parse_time_sql(ts_candidates_sql())} AS ts, ? AS source, ? AS file, line,
                   {select_list}, {attrs_sql('txt')} AS attrs, ?::INTEGER AS file_id
            FROM json_parsed
            WHERE {parse_time_sql(ts_candidates_sql())} IS NOT NULL""",
        [context.component, context.file, *stamp_params, context.file_id],
    )
    bad = con.execute(
        f"""INSERT INTO bad_lines
        SELECT ?, line, reason, CAST(txt AS BLOB)[1:200], ?::INTEGER FROM (
            SELECT line, txt,
                   CASE WHEN NOT json_valid(txt) THEN 'invalid JSON'
                        WHEN json_type(txt) <> 'OBJECT' THEN 'JSON value is not an object'
                        ELSE 'no readable time field' END AS reason
            FROM ({usable_lines_sql(table_name)}) u
            WHERE NOT json_valid(txt) OR json_type(txt) <> 'OBJECT' OR line IN (
                SELECT line FROM json_parsed WHERE {parse_time_sql(ts_candidates_sql())} IS NULL)
        )""",
        [context.file, context.file_id],
    ).fetchone()[0]
    return StageResult(events=staged, bad_lines=int(bad))
