"""Where sources put their records: straight into `events`, named by the rules on the way.

Every source turns its input into a SELECT naming some of the `events` columns (with `event`
and `template` usually left out); `insert_events` pads the rest with NULLs and runs it through
`taskscope.rules.apply_rules_sql`, which names the events and fills ids from the message text,
in the one INSERT that stores them. Each chunk of a file is stored before the next is read, so
continuation lines at the start of a chunk find their record in `events` (a staging table
flushed at the end of the ingest lost them).
"""

from __future__ import annotations

import duckdb

from taskscope._sql import scalar
from taskscope.rules import Rule, apply_rules_sql
from taskscope.schema import EVENT_COLUMNS, EVENT_COLUMN_NAMES


def insert_events(
    con: duckdb.DuckDBPyConnection, select_sql: str, params: list | None, rules: list[Rule]
) -> int:
    """Insert the rows of `select_sql` (which names some of the event columns) into `events`,
    with the rules and templates applied. Columns the SELECT does not produce stay NULL
    unless a rule fills them. Returns the number of rows inserted.

    >>> insert_events(con, "SELECT 1.5 AS ts, 'jsonl' AS source, 'task 7 done' AS message", [], rules)  # doctest: +SKIP
    1
    """
    cursor = con.execute(f"SELECT * FROM ({select_sql}) LIMIT 0", params or [])
    produced = {d[0] for d in cursor.description}
    unknown = produced - set(EVENT_COLUMN_NAMES)
    if unknown:
        raise ValueError(f"source select produces unknown columns {sorted(unknown)}")
    padded = ", ".join(
        name if name in produced else f"NULL::{sql_type} AS {name}" for name, sql_type in EVENT_COLUMNS
    )
    records = f"SELECT {padded} FROM ({select_sql})"
    columns = ", ".join(EVENT_COLUMN_NAMES)
    return int(scalar(con, f"INSERT INTO events ({columns}) {apply_rules_sql(rules, records)}", params))
