"""The staging table: where sources put parsed records before rules and templates run.

Every source turns its input into rows of `staged` (the `events` columns, with `event` and
`template` usually still empty); `taskscope.rules` then names the events and fills ids
from message text, and the rows move to `events` in one INSERT.
"""

from __future__ import annotations

import duckdb

from taskscope._sql import scalar
from taskscope.schema import EVENT_COLUMNS, EVENT_COLUMN_NAMES

STAGED = "staged"

#: staging-only column: how many of a record's values did not fit their typed column (a
#: `pid` of "w-1"), NULL for none; summed and cleared by `taken_values_in_attrs`
_VALUES_IN_ATTRS = "values_in_attrs"


def create_staging(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the empty temporary staging table."""
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type in [*EVENT_COLUMNS, (_VALUES_IN_ATTRS, "INTEGER")])
    con.execute(f"CREATE OR REPLACE TEMP TABLE {STAGED} ({columns})")


def insert_staged(con: duckdb.DuckDBPyConnection, select_sql: str, params: list | None = None) -> int:
    """Insert the rows of `select_sql` (which names some of the event columns) into staging.

    Columns the SELECT does not produce stay NULL. Returns the number of rows inserted.
    """
    names = ", ".join(_produced_columns(con, select_sql, params))
    return int(scalar(con, f"INSERT INTO {STAGED} ({names}) SELECT {names} FROM ({select_sql})", params))


#: select_sql -> the columns it produces (every staging SELECT names its columns in its text):
#: a source issues the same SELECT for every chunk, and planning it (a 48-key `json_transform`)
#: took ~10 ms a time
_PRODUCED: dict[str, list[str]] = {}
_PRODUCED_KEPT = 256


def _produced_columns(con: duckdb.DuckDBPyConnection, select_sql: str, params: list | None) -> list[str]:
    if select_sql not in _PRODUCED:
        cursor = con.execute(f"SELECT * FROM ({select_sql}) LIMIT 0", params or [])
        produced = [d[0] for d in cursor.description]
        unknown = set(produced) - {*EVENT_COLUMN_NAMES, _VALUES_IN_ATTRS}
        if unknown:
            raise ValueError(f"staging select produces unknown columns {sorted(unknown)}")
        if len(_PRODUCED) >= _PRODUCED_KEPT:
            _PRODUCED.clear()
        _PRODUCED[select_sql] = produced
    return _PRODUCED[select_sql]


def taken_values_in_attrs(con: duckdb.DuckDBPyConnection) -> int:
    """How many values the records staged since the last call kept only in `attrs` (they did not
    fit their typed column); the count is taken, so each value is counted once.

    >>> taken_values_in_attrs(con)  # doctest: +SKIP
    2
    """
    count = scalar(con, f"SELECT coalesce(sum({_VALUES_IN_ATTRS}), 0) FROM {STAGED} WHERE {_VALUES_IN_ATTRS} > 0")
    if count:
        con.execute(f"UPDATE {STAGED} SET {_VALUES_IN_ATTRS} = NULL WHERE {_VALUES_IN_ATTRS} > 0")
    return int(count)
