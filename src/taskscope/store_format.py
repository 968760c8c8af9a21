"""What a store file is: recognising one before DuckDB opens it, and its schema version.

A store records its schema version in `taskscope_meta` (key `schema_version`). A store made
before versions were recorded (version 1: `task_id` and `executor_task_id` were BIGINT) is
migrated in place when it is opened for writing: the ids become text (`358` -> `'358'`), every
event stays as it was, and the run digests are dropped so that they are computed again.

A file given as a store is checked by its first bytes before DuckDB sees it: DuckDB would take
a SQLite file for an attached SQLite database and try to download its extension.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

#: the version this release writes; `migrate` brings older stores to it
SCHEMA_VERSION = 2

#: a DuckDB file has this at byte 8 (after its header checksum)
DUCKDB_MAGIC = b"DUCK"
_DUCKDB_MAGIC_OFFSET = 8
_SQLITE_MAGIC = b"SQLite format 3\x00"

_META_DDL = "CREATE TABLE IF NOT EXISTS taskscope_meta (key VARCHAR PRIMARY KEY, value VARCHAR)"

# (table, column) whose type version 1 had as BIGINT and version 2 has as VARCHAR
_IDS_AS_TEXT = [
    ("events", "task_id"),
    ("events", "executor_task_id"),
    ("event_task_links", "task_id"),
    ("event_task_links", "executor_task_id"),
]


class NotAStoreError(ValueError):
    """A file given as a store that is not a DuckDB file (a SQLite database, a log, ...)."""


#: what the refusal of a SQLite file suggests instead, for taskscope's own store
MONITORING_DB_HINT = "to read a Parsl monitoring.db, ingest it: taskscope ingest monitoring.db"


def check_store_file(path: str | Path, what: str = "taskscope store",
                     sqlite_hint: str | None = MONITORING_DB_HINT) -> None:
    """Raise NotAStoreError when `path` exists and is not a DuckDB file; a missing path (a
    store still to be made) and ":memory:" pass. `what` names the kind of store in the message.

    >>> check_store_file("/etc/hostname")  # doctest: +SKIP
    Traceback (most recent call last):
    NotAStoreError: /etc/hostname is not a taskscope store (not a DuckDB file)
    """
    if str(path) == ":memory:":
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise NotAStoreError(f"{path} is a folder, not a store file") from None
    except OSError as exc:
        raise NotAStoreError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if head.startswith(_SQLITE_MAGIC):
        hint = f" ({sqlite_hint})" if sqlite_hint else ""
        raise NotAStoreError(f"{path} is a SQLite database, not a {what}{hint}")
    if head[_DUCKDB_MAGIC_OFFSET:_DUCKDB_MAGIC_OFFSET + len(DUCKDB_MAGIC)] != DUCKDB_MAGIC:
        problem = "an empty file" if not head else "not a DuckDB file"
        raise NotAStoreError(f"{path} is not a {what} ({problem})")


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}


def stored_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version of the store behind `con`: None for an empty database, 1 for a
    store made before versions were recorded."""
    tables = _tables(con)
    if "taskscope_meta" in tables:
        row = con.execute("SELECT value FROM taskscope_meta WHERE key = 'schema_version'").fetchall()
        if row:
            return int(row[0][0])
    return 1 if "events" in tables else None


def needs_migration(con: duckdb.DuckDBPyConnection) -> bool:
    """True when the store behind `con` was made by an older release."""
    version = stored_version(con)
    return version is not None and version < SCHEMA_VERSION


def migrate(con: duckdb.DuckDBPyConnection) -> int | None:
    """Bring the store behind `con` to SCHEMA_VERSION in one transaction and record the
    version; returns the version it had (None for a new store).

    >>> migrate(duckdb.connect("old.duckdb"))  # doctest: +SKIP
    1
    """
    version = stored_version(con)
    con.execute("BEGIN TRANSACTION")
    try:
        if version is not None and version < 2:
            _ids_as_text(con)
        con.execute(_META_DDL)
        con.execute("INSERT OR REPLACE INTO taskscope_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return version


def _ids_as_text(con: duckdb.DuckDBPyConnection) -> None:
    """Version 1 -> 2: task and executor task ids become text; digests made from integer ids go."""
    tables = _tables(con)
    for table, column in _IDS_AS_TEXT:
        if table in tables:
            con.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET DATA TYPE VARCHAR")
    if "run_digests" in tables:
        con.execute("DELETE FROM run_digests")
