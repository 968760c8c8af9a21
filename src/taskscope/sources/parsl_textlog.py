"""Parsl text logs of every component and release: `parsl.log`, `interchange.log`,
`manager.log`, `worker_N.log`, `database_manager.log`, monitoring router/radio logs.

Each file's record format is recognised from its first lines (see `FORMATS`). A line that
does not start a record continues the one before it (config dumps, tracebacks, the manager's
start-up banner), so a multi-line record becomes one event. Formats that log naive local time
are converted to UTC with the offset learned from a format that logs both (Parsl's
`DEFAULT_FORMAT` writes `%(created)f` beside `%(asctime)s`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from taskscope._sql import literal, scalar
from taskscope.ingest.staging import STAGED, insert_staged
from taskscope.sources import Sample, Source, StageContext, StageResult
from taskscope.sources.parsl_layout import parsl_path_info

_LEVEL = r"(DEBUG|INFO|WARNING|ERROR|CRITICAL)"
_DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@dataclass(frozen=True)
class HeaderSplit:
    """A cheaper way to read a format's header than one regex with captures per line.

    `stamps` (field -> SQL over `txt`) read the leading time fields by position. What follows,
    up to and including the first `marker`, repeats from line to line (process, thread,
    logger, line number, level), so `middle_pattern` parses it once per distinct value; the
    message is the rest. Lines where this does not fit fall back to the format's `pattern`.
    """

    stamps: dict[str, str]
    middle_start: str  # SQL: the character position where the repeating middle begins
    marker: str
    middle_pattern: str


@dataclass(frozen=True)
class TextFormat:
    """A log record header: a regex whose groups are named, in order, by `fields`."""

    name: str
    pattern: str
    fields: tuple[str, ...]
    split: HeaderSplit | None = None


FORMATS: list[TextFormat] = [
    # Parsl DEFAULT_FORMAT (log_utils.py), every component since 2026, parsl.log always:
    # "%(created)f %(asctime)s %(processName)s-%(process)d %(threadName)s-%(thread)d
    #  %(name)s:%(lineno)d %(funcName)s %(levelname)s: %(message)s"
    TextFormat(
        "parsl_default",
        rf"^(\d+\.\d+) ({_DATE}) (.+?)-(\d+) (.+?)-(\d+) (\S+):(\d+) (\S+) {_LEVEL}: ?(.*)$",
        ("created", "asctime", "process_name", "pid", "thread", "thread_ident", "logger", "lineno",
         "func", "level", "message"),
        HeaderSplit(
            stamps={"created": "split_part(txt, ' ', 1)",
                    "asctime": "substr(txt, length(split_part(txt, ' ', 1)) + 2, 19)"},
            middle_start="length(split_part(txt, ' ', 1)) + 22",
            marker=": ",
            middle_pattern=rf"^(.+?)-(\d+) (.+?)-(\d+) (\S+):(\d+) (\S+) {_LEVEL}:$",
        ),
    ),
    # interchange before 2026: "%(asctime)s.%(msecs)03d %(name)s:%(lineno)d
    #  %(processName)s(%(process)d) %(threadName)s %(funcName)s [%(levelname)s] %(message)s"
    TextFormat(
        "interchange_2025",
        rf"^({_DATE}[.,]\d{{3}}) (\S+):(\d+) (.+?)\((\d+)\) (.+?) (\S+) \[{_LEVEL}\] ?(.*)$",
        ("asctime", "logger", "lineno", "process_name", "pid", "thread", "func", "level", "message"),
    ),
    # manager and workers before 2026: "%(asctime)s.%(msecs)03d %(name)s:%(lineno)d
    #  %(process)d %(threadName)s [%(levelname)s]  %(message)s"
    TextFormat(
        "worker_pool_2025",
        rf"^({_DATE}[.,]\d{{3}}) (\S+):(\d+) (\d+) (.+?) \[{_LEVEL}\] {{0,2}}(.*)$",
        ("asctime", "logger", "lineno", "pid", "thread", "level", "message"),
    ),
    # database_manager.log: "%(asctime)s.%(msecs)03d %(name)s:%(lineno)d [%(levelname)s]
    #  [%(threadName)s %(thread)d] %(message)s"
    TextFormat(
        "database_manager",
        rf"^({_DATE}[.,]\d{{3}}) (\S+):(\d+) \[{_LEVEL}\] \[(.+) (\d+)\] ?(.*)$",
        ("asctime", "logger", "lineno", "level", "thread", "thread_ident", "message"),
    ),
    # set_stream_logger: "%(asctime)s %(name)s:%(lineno)d [%(levelname)s]  %(message)s"
    TextFormat(
        "stream",
        rf"^({_DATE}(?:[.,]\d{{3}})?) (\S+):(\d+) \[{_LEVEL}\] {{0,2}}(.*)$",
        ("asctime", "logger", "lineno", "level", "message"),
    ),
]

_ALL_FIELDS = ("created", "asctime", "process_name", "pid", "thread", "thread_ident", "logger",
               "lineno", "func", "level", "message")


def detect_format(sample_lines: list[str]) -> TextFormat | None:
    """The format whose header matches most of `sample_lines`, or None if none matches."""
    best, best_count = None, 0
    for fmt in FORMATS:
        regex = re.compile(fmt.pattern)
        count = sum(1 for line in sample_lines if regex.match(line))
        if count > best_count:
            best, best_count = fmt, count
    return best


_HEADERS = [re.compile(fmt.pattern) for fmt in FORMATS]


def looks_like_parsl_log(sample: Sample) -> bool:
    """Whether a file's first lines are Parsl log records: its first line starts one, or at
    least a third of them do (a record's continuation lines, a config dump or a traceback,
    can outnumber the headers). A Snakemake or Ray log, or any other text, is not.

    >>> looks_like_parsl_log(Sample("x.log", b"2026-11-21 22:36:16.009 dbm:697 [INFO] [MainThread 1] Start\\n"))
    True
    >>> looks_like_parsl_log(Sample("x.log", b"Building DAG of jobs...\\nUsing shell: /usr/bin/bash\\n"))
    False
    """
    lines = sample.lines
    if not sample.is_text:
        return False
    headers = [any(regex.match(line) for regex in _HEADERS) for line in lines]
    return headers[0] or sum(headers) * 3 >= len(headers)


def stage_lines(con: duckdb.DuckDBPyConnection, table_name: str, context: StageContext) -> StageResult:
    """Parse the text log lines of `table_name` into staging, joining multi-line records."""
    sample = [
        row[0]
        for row in con.execute(
            f"SELECT txt FROM {table_name} ORDER BY line LIMIT 200"
        ).fetchall()
    ]
    fmt = context.progress.get("format")
    fmt = (next((f for f in FORMATS if f.name == fmt), None) or detect_format(sample)
           or _format_of_most_headers(con, table_name))
    if fmt is None and context.lines_before:
        # lines a file gained after a record read before (a config dump or a traceback still
        # being written): no line starts a record in any format, so all of them continue it
        _continuation_only(con, table_name)
        continue_previous_event(con, context)
        return StageResult()
    if fmt is None:
        bad = _all_lines_bad(con, table_name, context, "no Parsl log record header in this file")
        return StageResult(bad_lines=bad, note="not a Parsl text log: no known record header")
    context.progress["format"] = fmt.name

    _split_records(con, table_name, fmt)
    continued = continue_previous_event(con, context)
    orphans = scalar(
        con,
        """INSERT INTO bad_lines SELECT ?, line, 'continuation line before the first record',
                  encode(txt)[1:200], ?::INTEGER
           FROM text_lines WHERE record = 0""",
        [context.file, context.file_id],
    ) if not continued else 0

    learned = None
    if "created" in fmt.fields:
        learned = _learn_utc_offset(con)
    staged = insert_staged(con, _records_sql(fmt, context, learned), _record_params(context))
    return StageResult(events=staged, bad_lines=int(orphans), learned_utc_offset=learned)


def _format_of_most_headers(con: duckdb.DuckDBPyConnection, table_name: str) -> TextFormat | None:
    """The format whose headers start most lines of the whole table, or None if no line starts
    a record (the first 200 lines can all continue one record: a long config dump)."""
    counts = [(scalar(con, f"SELECT count(*) FROM {table_name} WHERE regexp_matches(txt, ?)",
                      [header_test(fmt)]), index) for index, fmt in enumerate(FORMATS)]
    count, index = max(counts)
    return FORMATS[index] if count else None


def _continuation_only(con: duckdb.DuckDBPyConnection, table_name: str) -> None:
    """`text_lines` of a table none of whose lines starts a record (all in record 0)."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE text_lines AS
        SELECT line, txt, false AS is_header, 0 AS record, NULL AS h FROM {table_name}""")


def _split_records(con: duckdb.DuckDBPyConnection, table_name: str, fmt: TextFormat) -> None:
    """Number records: a header line starts one, other lines continue the current one.

    `h` is the header's fields as a struct (NULL on continuation lines). A header is found
    with a regex match without captures (RE2's fast DFA); its fields come from the format's
    `HeaderSplit` where it has one, else from one regex with captures per line. The running
    count of headers is a window over (line, is_header) alone, joined back by line: a window
    over the whole rows sorts their text and fields too (the split of the 369k lines of
    benchmarks/ingest_bench.py's text run took 1.44 s that way, 0.93 s this way).
    """
    numbered = f"""
        WITH flags AS (SELECT line, regexp_matches(txt, {literal(header_test(fmt))}) AS is_header FROM {table_name}),
        numbered AS (SELECT line, is_header, sum(is_header::INTEGER) OVER (ORDER BY line) AS record FROM flags)
        SELECT c.line, c.txt, n.is_header, n.record FROM {table_name} c JOIN numbered n USING (line)"""
    # a header's text is in `h` already: only continuation lines keep theirs (half the copy)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE text_lines AS
        SELECT line, CASE WHEN is_header THEN NULL ELSE txt END AS txt, is_header, record, h
        FROM ({_headers_sql(fmt, numbered)})""")


def header_test(fmt: TextFormat) -> str:
    r"""The format's header regex without its trailing message group: a line's header is
    told by its start, and RE2 then stops there instead of scanning to the line's end.

    >>> header_test(TextFormat("stream", r"^(\S+) (INFO|DEBUG): ?(.*)$", ("logger", "level", "message")))
    '^(\\S+) (INFO|DEBUG): ?'
    """
    return fmt.pattern.removesuffix("(.*)$")


def _headers_sql(fmt: TextFormat, lines_sql: str) -> str:
    """SELECT line, txt, is_header, record, h over `lines_sql` (which gives line, txt, is_header, record)."""
    names = "[" + ", ".join(literal(f) for f in fmt.fields) + "]"
    by_regex = f"regexp_extract(txt, {literal(fmt.pattern)}, {names})"
    split = fmt.split
    if split is None:
        return f"SELECT line, txt, is_header, record, CASE WHEN is_header THEN {by_regex} END AS h FROM ({lines_sql})"
    middle_fields = [f for f in fmt.fields if f not in split.stamps and f != "message"]
    middle_names = "[" + ", ".join(literal(f) for f in middle_fields) + "]"
    fields = ", ".join(
        f"{name} := {split.stamps[name]}" if name in split.stamps
        else f"{name} := rest[{len(split.marker) + 1}:]" if name == "message"
        else f"{name} := m.{name}"
        for name in fmt.fields
    )
    return f"""
        WITH cut AS (
            SELECT line, txt, is_header, record, substr(txt, start, cut_at) AS middle, substr(txt, start + cut_at - 1) AS rest
            FROM (SELECT *, {split.middle_start} AS start,
                         strpos(substr(txt, {split.middle_start}), {literal(split.marker)}) AS cut_at
                  FROM ({lines_sql}))
        ),
        middles AS (
            SELECT middle, regexp_extract(middle, {literal(split.middle_pattern)}, {middle_names}) AS m
            FROM (SELECT DISTINCT middle FROM cut WHERE is_header)
        )
        SELECT line, txt, is_header, record,
               CASE WHEN NOT is_header THEN NULL
                    WHEN m.level <> '' THEN struct_pack({fields})
                    ELSE {by_regex} END AS h
        FROM cut LEFT JOIN middles USING (middle)"""


def continue_previous_event(con: duckdb.DuckDBPyConnection, context: StageContext) -> bool:
    """Append lines that continue a record read before (an earlier ingest, or the previous
    chunk of a big file) to that record's event."""
    if context.lines_before == 0:
        return False
    tail = scalar(con, "SELECT string_agg(txt, chr(10) ORDER BY line) FROM text_lines WHERE record = 0")
    if tail is None:
        return True
    # the previous chunk's records are still staged; an earlier ingest's are in events
    for table in (STAGED, "events"):
        updated = scalar(
            con,
            f"""UPDATE {table} SET message = message || chr(10) || ?
                WHERE file_id = ? AND line = (SELECT max(line) FROM {table} WHERE file_id = ?)""",
            [tail, context.file_id, context.file_id],
        )
        if updated:
            break
    return True


def _learn_utc_offset(con: duckdb.DuckDBPyConnection) -> float | None:
    """asctime (local) minus created (UTC), rounded to a quarter hour, from header lines."""
    value = scalar(
        con,
        """SELECT median(epoch(try_strptime(h.asctime, '%Y-%m-%d %H:%M:%S')) - try_cast(h.created AS DOUBLE))
           FROM text_lines WHERE is_header""",
    )
    return None if value is None else round(value / 900.0) * 900.0


def _time_sql(fmt: TextFormat, context: StageContext, learned_offset: float | None) -> str:
    if "created" in fmt.fields:
        return "try_cast(first_h.created AS DOUBLE)"
    local = "try_strptime(replace(first_h.asctime, ',', '.'), ['%Y-%m-%d %H:%M:%S.%g', '%Y-%m-%d %H:%M:%S'])"
    return context.local_epoch_sql(local, learned_offset)


def _records_sql(fmt: TextFormat, context: StageContext, learned_offset: float | None) -> str:
    def field(name: str, cast: str = "") -> str:
        if name not in fmt.fields:
            return "NULL"
        value = f"nullif(first_h.{name}, '')"
        return f"try_cast({value} AS {cast})" if cast else value

    stamps = "".join(f", ${4 + i}::VARCHAR AS {name}" for i, name in enumerate(sorted(context.stamps)))
    attrs = ", ".join(
        f"'{name}', {field(name, cast)}"
        for name, cast in (("process_name", ""), ("thread_ident", "BIGINT"), ("lineno", "BIGINT"),
                           ("func", ""))
        if name in fmt.fields
    )
    return f"""
        SELECT {_time_sql(fmt, context, learned_offset)} AS ts, $1 AS source, $2 AS file, first_line AS line,
               {field('level')} AS level, {field('logger')} AS logger,
               CASE WHEN continuation IS NULL THEN first_h.message
                    ELSE first_h.message || chr(10) || continuation END AS message,
               {field('pid', 'BIGINT')} AS pid, {field('thread')} AS thread,
               json_object({attrs}) AS attrs, $3::INTEGER AS file_id {stamps}
        FROM (
            -- most records are one line: join the few continuation lines to their header
            SELECT t.record, t.line AS first_line, t.h AS first_h, c.continuation
            FROM text_lines t LEFT JOIN (
                SELECT record, string_agg(txt, chr(10) ORDER BY line) AS continuation
                FROM text_lines WHERE NOT is_header AND record > 0 GROUP BY record
            ) c USING (record)
            WHERE t.is_header
        )
    """


def _record_params(context: StageContext) -> list:
    """Parameters of `_records_sql`, in its $n order."""
    stamps = [context.stamps[name] for name in sorted(context.stamps)]
    return [context.component, context.file, context.file_id, *stamps]


def _all_lines_bad(con: duckdb.DuckDBPyConnection, table_name: str, context: StageContext, reason: str) -> int:
    return int(scalar(
        con,
        f"""INSERT INTO bad_lines SELECT ?, line, ?, encode(txt)[1:200], ?::INTEGER
            FROM {table_name}""",
        [context.file, reason, context.file_id],
    ))


SOURCE = Source(
    name="parsl_textlog", recognise=looks_like_parsl_log, order=10, stage_lines=stage_lines,
    from_path=parsl_path_info,
)
