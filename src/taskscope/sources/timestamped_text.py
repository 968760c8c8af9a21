"""Text logs of any program whose lines start with a time: the generic fallback.

A line that starts with a recognisable time (ISO 8601 with `T` or a space, optional
fraction and zone; `YYYY-MM-DD HH:MM:SS,fff` as Python's logging writes it; epoch seconds)
starts a record; the other lines continue the record before them (a traceback). The rest of
the line is the message, from which the rules mine a template; a level word near its start
(`INFO`, `WARN`, ...) fills `level`. Times without a zone are local: they are converted with
the offset learned from the run's logs, else the ingesting machine's.

>>> looks_timestamped(Sample("ray.log", b"2026-01-02 03:04:05,120\\tINFO worker.py:10 -- started\\n"))
True
"""

from __future__ import annotations

import re

import duckdb

from taskscope._sql import literal, scalar
from taskscope.ingest.staging import insert_staged
from taskscope.schema import level_name_sql
from taskscope.sources import Sample, Source, StageContext, StageResult, share_matching
from taskscope.sources.parsl_textlog import continue_previous_event

# the time at a line's start (optionally in brackets), then a separator, then the message
_STAMP = r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?|\d{10}(?:\.\d+)?)"
LINE_PATTERN = rf"^\[?{_STAMP}\]?(?:[\s:|,;-]+|$)(.*)$"
_LINE = re.compile(LINE_PATTERN, re.DOTALL)
_LEVEL = r"(?:^|[^A-Za-z])(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)(?:[^A-Za-z]|$)"


def looks_timestamped(sample: Sample) -> bool:
    """Whether a text file's first lines are records that start with a time: most of them do,
    or its first line does and a tenth of them do (records followed by tracebacks, or by a
    Dask worker's multi-line "Compute Failed" report, outnumber the time stamps).

    >>> looks_timestamped(Sample("app.log", b"2026-01-02 03:04:05,120 ERROR failed\\nTraceback (most recent call last):\\n"
    ...                                     b'  File "app.py", line 9\\n    work()\\nZeroDivisionError: division by zero\\n'))
    True
    >>> looks_timestamped(Sample("notes.txt", b"Minutes\\n2026-01-02 03:04:05 meeting\\n" + b"text\\n" * 20))
    False
    """
    if not sample.is_text:
        return False
    share = share_matching(sample.lines, _LINE)
    return share >= 0.5 or (share >= 0.1 and bool(_LINE.match(sample.lines[0])))


def stage_lines(con: duckdb.DuckDBPyConnection, table_name: str, context: StageContext) -> StageResult:
    """Stage one event per record of the lines of `table_name`."""
    pattern = literal(LINE_PATTERN)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE text_lines AS
        SELECT line, txt, ts, rest, ts IS NOT NULL AS is_header,
               sum((ts IS NOT NULL)::INTEGER) OVER (ORDER BY line) AS record
        FROM (SELECT line, txt, regexp_extract(txt, {pattern}, 2) AS rest,
                     {_time_sql(f"nullif(regexp_extract(txt, {pattern}, 1), '')", context)} AS ts
              FROM {table_name})"""
    )
    continued = continue_previous_event(con, context)
    orphans = 0 if continued else int(scalar(
        con,
        """INSERT INTO bad_lines SELECT ?, line, 'continuation line before the first record',
                  encode(txt)[1:200], ?::INTEGER
           FROM text_lines WHERE record = 0""",
        [context.file, context.file_id],
    ))
    level = f"nullif(regexp_extract(left(rest, 80), {literal(_LEVEL)}, 1), '')"
    staged = insert_staged(
        con,
        f"""SELECT t.ts, ? AS source, ? AS file, t.line,
                   {level_name_sql(level)} AS level,
                   CASE WHEN c.continuation IS NULL THEN t.rest ELSE t.rest || chr(10) || c.continuation END AS message,
                   ?::INTEGER AS file_id
            FROM text_lines t LEFT JOIN (
                SELECT record, string_agg(txt, chr(10) ORDER BY line) AS continuation
                FROM text_lines WHERE NOT is_header AND record > 0 GROUP BY record
            ) c USING (record)
            WHERE t.is_header""",
        [context.component, context.file, context.file_id],
    )
    return StageResult(events=staged, bad_lines=orphans)


def _time_sql(stamp: str, context: StageContext) -> str:
    """SQL: epoch seconds of the time text `stamp` (naive local times as `context` reads them)."""
    iso = f"replace({stamp}, ',', '.')"
    return f"""CASE WHEN regexp_matches({stamp}, '^\\d{{10}}') THEN try_cast({stamp} AS DOUBLE)
                    WHEN regexp_matches({stamp}, '(Z|[+-]\\d\\d:?\\d\\d)$') THEN epoch(try_cast({iso} AS TIMESTAMPTZ))
                    ELSE {context.local_epoch_sql(f"try_cast({iso} AS TIMESTAMP)")} END"""


# a fallback: asked only when no specific format recognises the file
SOURCE = Source(name="timestamped_text", recognise=looks_timestamped, order=30, stage_lines=stage_lines,
                component="text", fallback=True)
