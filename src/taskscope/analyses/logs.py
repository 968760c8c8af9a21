"""The log explorer's search: the events of the store filtered on any column (exact values,
cast to the column's type, never pasted into SQL) and a substring of the message, one page at a time.

>>> where_clause({"manager_id": "36094ce03926"}, "Sent tasks")
('"manager_id" = TRY_CAST(? AS VARCHAR) AND contains(lower(message), lower(?))', ['36094ce03926', 'Sent tasks'])
"""

from __future__ import annotations

import math

import duckdb

from taskscope.schema import EVENT_COLUMNS

#: columns a filter may name, with their SQL type (user values are cast, never pasted)
FILTERABLE: dict[str, str] = {name: sql_type for name, sql_type in EVENT_COLUMNS
                              if name not in ("ts", "attrs", "file_id")}
#: what a search returns of each event, in this order
SHOWN = ["ts", "source", "level", "event", "message", "run_id", "task_id", "try_id", "app_name", "task_state",
         "executor_label", "executor_task_id", "block_id", "job_id", "manager_id", "worker_id", "host", "pid",
         "thread", "logger", "template", "file", "line"]
#: the columns a table of events may show, in this order ("file:line" is the two in one)
COLUMNS = [c for c in SHOWN if c not in ("file", "line")] + ["file:line"]
#: the columns shown unless others are chosen: readable side by side in a 1366 px window
DEFAULT_COLUMNS = ["ts", "source", "level", "event", "message", "run_id", "task_id", "file:line"]
MAX_PER_PAGE = 1000


def choose_columns(requested: list[str], filters: dict[str, str]) -> list[str]:
    """The table's columns, in `COLUMNS` order: `requested` (names, or comma-separated names;
    unknown ones left out) or else `DEFAULT_COLUMNS` plus the columns filtered on (their value
    stays in view); always the message.

    >>> choose_columns([], {"manager_id": "36094ce03926"})
    ['ts', 'source', 'level', 'event', 'message', 'run_id', 'task_id', 'manager_id', 'file:line']
    >>> choose_columns(["ts,level", "file:line", "nonsense"], {})
    ['ts', 'level', 'message', 'file:line']
    """
    named = {name for value in requested for name in value.split(",")}
    chosen = named & set(COLUMNS) or set(DEFAULT_COLUMNS) | (set(filters) & set(COLUMNS))
    return [c for c in COLUMNS if c in chosen | {"message"}]


def where_clause(filters: dict[str, str], text: str | None) -> tuple[str, list]:
    """SQL condition and parameters for `filters` (column -> value, exact) and `text` (a
    case-insensitive substring of the message)."""
    conditions, params = [], []
    for column, value in filters.items():
        if column not in FILTERABLE:
            raise ValueError(f"cannot filter on {column!r}; columns: {', '.join(FILTERABLE)}")
        conditions.append(f'"{column}" = TRY_CAST(? AS {FILTERABLE[column]})')
        params.append(value)
    if text:
        conditions.append("contains(lower(message), lower(?))")
        params.append(text)
    return (" AND ".join(conditions) or "true"), params


def search(con: duckdb.DuckDBPyConnection, filters: dict[str, str], text: str | None = None,
           page: int = 1, per_page: int = 100, newest_first: bool = False) -> dict:
    """One page of matching events in time order: `rows`, `total`, `page`, `pages`.

    >>> search(con, {"manager_id": "36094ce03926"}, "Sent tasks")["total"]  # doctest: +SKIP
    """
    where, params = where_clause(filters, text)
    total = con.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchall()[0][0]
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    pages = max(1, math.ceil(total / per_page))
    page = max(1, min(page, pages))
    order = "DESC" if newest_first else "ASC"
    rows = con.execute(
        f"""SELECT {", ".join(f'"{c}"' for c in SHOWN)}, attrs FROM events WHERE {where}
            ORDER BY ts {order}, file {order}, line {order} LIMIT ? OFFSET ?""",
        [*params, per_page, (page - 1) * per_page],
    ).df()
    return {"rows": rows, "total": int(total), "page": page, "pages": pages, "per_page": per_page}
