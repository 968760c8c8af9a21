"""The store's tables. The `events` columns are a public contract (see DESIGN.md).

Besides `events` the store keeps:

- `ingested_files`: every file (or monitoring.db table) seen, how far it was read, and what came of it;
- `bad_lines`: lines that could not be parsed, kept with file, line, reason and their first 200 bytes;
- `run_dirs`: which run folder belongs to which Parsl run id;
- `event_task_links`: events that name several tasks at once (the interchange's
  "Sent tasks: [4, 5] to manager ..."), one row per (event, task);
- `user_files`: the rules and relations files a user gave, which every later ingest reads too
  (see `taskscope.remembered`);
- `taskscope_meta`: the store's schema version (see `taskscope.store_format`).

Task ids are text (`'358'`, `'sample-A'`, a UUID): ids are names. Where tasks are listed they
are ordered with the `natural_key` macro (`'9'` before `'10'`, see `NATURAL_KEY_MACRO`).
"""

from __future__ import annotations

import re

import duckdb

from taskscope.store_format import migrate

# (name, SQL type) in contract order. Internal columns come after the public ones.
EVENT_COLUMNS: list[tuple[str, str]] = [
    ("ts", "DOUBLE"),
    ("source", "VARCHAR"),
    ("file", "VARCHAR"),
    ("line", "BIGINT"),
    ("level", "VARCHAR"),
    ("logger", "VARCHAR"),
    ("event", "VARCHAR"),
    ("template", "VARCHAR"),
    ("message", "VARCHAR"),
    ("host", "VARCHAR"),
    ("pid", "BIGINT"),
    ("thread", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("task_id", "VARCHAR"),
    ("try_id", "BIGINT"),
    ("app_name", "VARCHAR"),
    ("task_state", "VARCHAR"),
    ("executor_label", "VARCHAR"),
    ("executor_task_id", "VARCHAR"),
    ("block_id", "VARCHAR"),
    ("job_id", "VARCHAR"),
    ("manager_id", "VARCHAR"),
    ("worker_id", "VARCHAR"),
    ("attrs", "JSON"),
    # internal: which ingested file the event came from (joins to ingested_files.file_id)
    ("file_id", "INTEGER"),
]

EVENT_COLUMN_NAMES = [name for name, _ in EVENT_COLUMNS]

_DDL = f"""
CREATE TABLE IF NOT EXISTS events (
    {", ".join(f"{name} {sql_type}" for name, sql_type in EVENT_COLUMNS)}
);
CREATE SEQUENCE IF NOT EXISTS file_id_seq START 1;
CREATE TABLE IF NOT EXISTS ingested_files (
    file_id INTEGER PRIMARY KEY DEFAULT nextval('file_id_seq'),
    path VARCHAR UNIQUE,          -- absolute path (for monitoring.db tables: path#table)
    file VARCHAR,                 -- path relative to what was ingested, as in events.file
    source VARCHAR,               -- source module that read it; NULL when skipped
    run_dir VARCHAR,              -- absolute path of the run folder it belongs to, if any
    size BIGINT,                  -- bytes (rows for monitoring.db tables) when last read
    bytes_read BIGINT DEFAULT 0,  -- offset of the first byte not yet ingested (max rowid for tables)
    lines_read BIGINT DEFAULT 0,
    events BIGINT DEFAULT 0,
    bad_lines BIGINT DEFAULT 0,
    pending_bytes BIGINT DEFAULT 0,  -- a partial last line waiting for its newline
    note VARCHAR,                 -- why a file was skipped, or what was odd about it
    ingested_at TIMESTAMP DEFAULT current_timestamp,
    head BLOB                     -- its first bytes, to tell a grown file from a replaced one
);
CREATE TABLE IF NOT EXISTS bad_lines (
    file VARCHAR, line BIGINT, reason VARCHAR, head BLOB, file_id INTEGER
);
CREATE TABLE IF NOT EXISTS run_dirs (
    run_dir VARCHAR PRIMARY KEY, run_id VARCHAR, utc_offset_seconds DOUBLE
);
CREATE TABLE IF NOT EXISTS event_task_links (
    file_id INTEGER, line BIGINT, run_id VARCHAR, executor_label VARCHAR,
    executor_task_id VARCHAR, task_id VARCHAR, try_id BIGINT
);
CREATE TABLE IF NOT EXISTS user_files (
    kind VARCHAR NOT NULL,      -- 'rules' or 'relations'
    path VARCHAR NOT NULL,      -- the absolute path it was given as (its key)
    text VARCHAR NOT NULL,      -- its content when last given
    added BIGINT NOT NULL,      -- the order files were first given in (their rules are tried in it)
    PRIMARY KEY (kind, path)
);
"""


# A task id's sort key: each run of digits becomes its length (3 digits) and its digits without
# leading zeros, so that numbers order by value inside any text ('9' < '10', 'sample-2' <
# 'sample-10') and text orders as text. An id that is all digits (Parsl's) takes the same key
# without splitting (3x faster to sort 100k ids). `natural_sort_key` is the same in Python.
NATURAL_KEY_MACRO = r"""
CREATE OR REPLACE MACRO natural_key(t) AS CASE
    WHEN regexp_full_match(CAST(t AS VARCHAR), '[0-9]+')
    THEN lpad(CAST(length(ltrim(CAST(t AS VARCHAR), '0')) AS VARCHAR), 3, '0') || ltrim(CAST(t AS VARCHAR), '0')
    ELSE array_to_string(list_transform(
        regexp_extract_all(CAST(t AS VARCHAR), '[0-9]+|[^0-9]+'),
        lambda x: CASE WHEN regexp_matches(x, '^[0-9]')
                  THEN lpad(CAST(length(ltrim(x, '0')) AS VARCHAR), 3, '0') || ltrim(x, '0') ELSE x END), '')
    END
"""

_DIGIT_RUNS = re.compile(r"[0-9]+|[^0-9]+")


def level_name_sql(value: str) -> str:
    """SQL: a level as the events contract names it (DEBUG, INFO, WARNING, ERROR, CRITICAL) from
    how loggers write it: structlog's "info", "warn", Java's "FATAL". Other names are kept, upper-cased.

    >>> import duckdb
    >>> duckdb.sql(f"SELECT {level_name_sql(repr('warn'))}").fetchall()
    [('WARNING',)]
    """
    upper = f"upper({value})"
    return f"CASE {upper} WHEN 'WARN' THEN 'WARNING' WHEN 'FATAL' THEN 'CRITICAL' ELSE {upper} END"


def natural_sort_key(text: object) -> str:
    """The `natural_key` macro's value, in Python (for the few lists sorted outside SQL).

    >>> sorted(["10", "9", "sample-10", "sample-2"], key=natural_sort_key)
    ['9', '10', 'sample-2', 'sample-10']
    """
    parts = _DIGIT_RUNS.findall(str(text))
    return "".join(f"{len(p.lstrip('0')):03d}{p.lstrip('0')}" if p[0].isdigit() else p for p in parts)


def define_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Define the macros taskscope's SQL uses (`natural_key`) in the store behind `con`.

    They are stored in the file, not temporary: DuckDB's temporary objects belong to one
    connection, and the analyses often run on a cursor of it (or a read-only connection).
    Made once per store (a changed definition needs a new schema version, see store_format).
    """
    present = con.execute("SELECT count(*) FROM duckdb_functions() "
                          "WHERE function_name = 'natural_key' AND schema_name = 'main'").fetchall()[0][0]
    if not present:
        con.execute(NATURAL_KEY_MACRO)


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table of the store if it does not exist yet, migrating a store made by an
    older release first (idempotent)."""
    migrate(con)
    con.execute(_DDL)
    define_macros(con)
    # stores made before `head` existed gain it (NULL: those files are not checked until read again)
    con.execute("ALTER TABLE ingested_files ADD COLUMN IF NOT EXISTS head BLOB")
