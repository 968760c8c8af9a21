"""The usage runs table: one row per run, as `taskscope.usage.reports` computes it, kept in the store.

Every report is an aggregate over runs (a correlator's start and end messages, each field
checked, dated and aged), and deriving a run from its JSON messages is nearly all of a report's
cost: at 1,000,000 runs, tens of seconds per report. So the store keeps the derived runs in the
table `usage_run_facts` (the columns `reports.usage_runs` returns), and the state it reflects in
`usage_rollup_state` (the release-date table it was derived with and the version of its columns, how many usage events it covers)
and `usage_rollup_files` (per events `file`, the last `line` covered). The collector refreshes it
after its commits (`refresh`), and builds it when a store has none (a store written by an older
collector, or events written by anything else).

A report reads the table only when it gives exactly what deriving every run again would
(`runs_source`): the same release-date table, and every usage event either covered or newer than
what is covered (events not yet covered are derived on the fly, with the other messages of their
runs). Anything else (a table derived with another release-date table, events deleted behind the
collector's back) and the report derives every run from the events, as without the table. An
event changed in place (an SQL UPDATE) is not noticed: drop `usage_rollup_state` after one, and
the next `refresh` builds the table again.

>>> import duckdb
>>> con = duckdb.connect(); _ = con.execute("CREATE TABLE events (ts DOUBLE, source VARCHAR, file VARCHAR, "
...     "line BIGINT, event VARCHAR, run_id VARCHAR, attrs JSON)")
>>> refresh(con, derivation.release_dates())
0
"""

from __future__ import annotations

import json

import duckdb
import pandas as pd

from taskscope._sql import scalar
from taskscope.usage import derivation

RUNS_TABLE = "usage_run_facts"
assert derivation.RUNS_TABLE_SOURCE == f"SELECT * FROM {RUNS_TABLE}"
STATE_TABLE = "usage_rollup_state"
FILES_TABLE = "usage_rollup_files"
#: the runs table's columns: a table of another version is built again
TABLE_VERSION = 3

# usage events not covered by the table: in a file it does not know, or after the last line it covers
_UNCOVERED = f"""
SELECT e.run_id FROM events e LEFT JOIN {FILES_TABLE} f ON f.file IS NOT DISTINCT FROM e.file
WHERE e.source = 'usage' AND (f.last_line IS NULL OR e.line > f.last_line)
"""

# the quick check: as many usage events, with the same sum of lines, as when the table was last brought up to date
_QUICK = f"""
SELECT s.releases, (SELECT count(*) FROM events WHERE source = 'usage') = s.events
       AND (SELECT coalesce(sum(line), 0) FROM events WHERE source = 'usage') = s.line_sum
FROM {STATE_TABLE} s
"""

_COUNTS = f"""
SELECT (SELECT count(*) FROM events WHERE source = 'usage'),
       (SELECT count(*) FROM ({_UNCOVERED})),
       (SELECT events FROM {STATE_TABLE}), (SELECT releases FROM {STATE_TABLE})
"""


def releases_key(releases: pd.DataFrame | dict | None) -> str:
    """The release-date table (or its query parameters, `derivation._release_params`) as one text,
    the same for the same table (row order aside), with the version of the runs table's columns.

    >>> releases_key(None)
    '{"columns": 3, "releases": []}'
    """
    params = releases if isinstance(releases, dict) else derivation._release_params(releases)
    rows = sorted(zip(params["release_products"], params["release_versions"], params["release_dates"]))
    return json.dumps({"columns": TABLE_VERSION, "releases": rows})


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = current_schema()",
                       [table]))


def _state(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int | None, str | None] | None:
    """(usage events, of them not covered, covered by the table, its release key); None without a table."""
    if not all(_exists(con, table) for table in (RUNS_TABLE, STATE_TABLE, FILES_TABLE)):
        return None
    return con.execute(_COUNTS).fetchall()[0]


def _unchanged(con: duckdb.DuckDBPyConnection, key: str) -> bool:
    """Whether the table was derived with the release key `key` and the usage events are, by
    count and sum of lines, those it was last brought up to date with (the usual case: one cheap
    scan instead of matching every event against what the table covers)."""
    if not _exists(con, STATE_TABLE):  # (asked first: an error would abort the caller's transaction)
        return False
    rows = con.execute(_QUICK).fetchall()
    return bool(rows) and rows[0][0] == key and bool(rows[0][1])


def _runs_sql(scope: str | None) -> str:
    """`derivation._RUNS` over every usage event, or (`scope`: a query of correlators) over those runs only."""
    if scope is None:
        return derivation._RUNS
    return derivation._RUNS.replace(derivation.RUNS_SCOPE, f"AND run_id IN ({scope})")


#: runs_source's answers per (connection, transaction, release key): reports made in one
#: transaction (`reports.snapshot`) check the table once
_ANSWERS: dict[tuple, str] = {}


def runs_source(con: duckdb.DuckDBPyConnection, releases: pd.DataFrame | dict | None) -> str:
    """SQL giving every run as `derivation._RUNS` derives it under `releases` (the release-date
    table or its parameters), from the runs table when it can say exactly that (see the module's
    docstring), else from the events.

    >>> runs_source(con, None)                      # doctest: +SKIP
    'SELECT * FROM usage_run_facts'
    """
    key = releases_key(releases)
    asked = (id(con), scalar(con, "SELECT txid_current()"), key)  # a new transaction id per autocommit statement
    if asked not in _ANSWERS:
        if len(_ANSWERS) > 64:
            _ANSWERS.clear()
        _ANSWERS[asked] = _source(con, key)
    return _ANSWERS[asked]


def _source(con: duckdb.DuckDBPyConnection, wanted: str) -> str:
    if _unchanged(con, wanted):
        return f"SELECT * FROM {RUNS_TABLE}"
    state = _state(con)
    if state is None:
        return derivation._RUNS
    total, uncovered, covered, key = state
    if key != wanted or covered is None or total != covered + uncovered:
        return derivation._RUNS
    if uncovered == 0:
        return f"SELECT * FROM {RUNS_TABLE}"
    touched = f"SELECT DISTINCT run_id FROM ({_UNCOVERED}) WHERE run_id IS NOT NULL"
    return (f"SELECT * FROM {RUNS_TABLE} WHERE correlator NOT IN ({touched}) "
            f"UNION ALL ({_runs_sql(touched)})")


def _params(releases: pd.DataFrame | None) -> dict:
    return {"tolerance": derivation.TIME_TOLERANCE_SECONDS, "parsl_born": derivation.PARSL_BORN,
            **derivation._release_params(releases)}


def _rebuild(con: duckdb.DuckDBPyConnection, releases: pd.DataFrame | None) -> None:
    con.execute(f"DROP TABLE IF EXISTS {RUNS_TABLE}")
    con.execute(f"CREATE TABLE {RUNS_TABLE} AS SELECT * FROM ({derivation._RUNS}) ORDER BY ts", _params(releases))
    con.execute(f"CREATE OR REPLACE TABLE {STATE_TABLE} (releases VARCHAR, events BIGINT, line_sum HUGEINT)")
    con.execute(f"INSERT INTO {STATE_TABLE} VALUES (?, (SELECT count(*) FROM events WHERE source = 'usage'), 0)",
                [releases_key(releases)])
    con.execute(f"CREATE OR REPLACE TABLE {FILES_TABLE} (file VARCHAR, last_line BIGINT)")
    _cover_files(con)


def _extend(con: duckdb.DuckDBPyConnection, releases: pd.DataFrame | None) -> None:
    """Derive again the runs that have uncovered events (with all their messages), and cover them."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE usage_touched AS SELECT DISTINCT run_id FROM ({_UNCOVERED}) "
                "WHERE run_id IS NOT NULL")
    added = scalar(con, f"SELECT count(*) FROM ({_UNCOVERED})")
    con.execute(f"DELETE FROM {RUNS_TABLE} WHERE correlator IN (SELECT run_id FROM usage_touched)")
    con.execute(f"INSERT INTO {RUNS_TABLE} SELECT * FROM ({_runs_sql('SELECT run_id FROM usage_touched')})",
                _params(releases))
    _cover_files(con)
    con.execute(f"UPDATE {STATE_TABLE} SET events = events + ?", [added])
    con.execute("DROP TABLE usage_touched")


def _cover_files(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"UPDATE {STATE_TABLE} SET line_sum = (SELECT coalesce(sum(line), 0) FROM events WHERE source = 'usage')")
    con.execute(f"DELETE FROM {FILES_TABLE}")
    con.execute(f"INSERT INTO {FILES_TABLE} SELECT file, max(line) FROM events WHERE source = 'usage' GROUP BY file")


def refresh(con: duckdb.DuckDBPyConnection, releases: pd.DataFrame | None) -> int:
    """Bring the runs table up to date with the store's usage events under `releases` (the
    release-date table), in one transaction: build it when missing, derived with other release
    dates, or not a true account of the events (some were deleted), else derive again the runs
    with events it does not cover yet. Returns how many events it newly covers.

    >>> refresh(store.con, derivation.release_dates())          # doctest: +SKIP
    0
    """
    con.execute("BEGIN TRANSACTION")
    try:
        state = _state(con)
        if state is None or state[3] != releases_key(releases) or state[2] is None or state[0] != state[2] + state[1]:
            _rebuild(con, releases)
            added = state[0] if state is not None else scalar(con, "SELECT count(*) FROM events WHERE source = 'usage'")
        else:
            added = state[1]
            if added:
                _extend(con, releases)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return added


def rederive(con: duckdb.DuckDBPyConnection, releases: pd.DataFrame | None, correlators: list[str]) -> None:
    """Inside the caller's transaction, just after it deleted usage events of `correlators`
    (retention): their runs derived again from what is left, and the table said to cover every
    event it did not say was uncovered. Nothing when the store has no runs table.

    >>> rederive(con, None, ["c1"])                  # doctest: +SKIP
    """
    state = _state(con)
    if state is None or not correlators:
        return
    con.execute("CREATE OR REPLACE TEMP TABLE usage_touched AS SELECT DISTINCT unnest(?::VARCHAR[]) AS run_id",
                [correlators])
    con.execute(f"DELETE FROM {RUNS_TABLE} WHERE correlator IN (SELECT run_id FROM usage_touched)")
    con.execute(f"INSERT INTO {RUNS_TABLE} SELECT * FROM ({_runs_sql('SELECT run_id FROM usage_touched')})",
                _params(releases))
    con.execute("DROP TABLE usage_touched")
    total, uncovered = state[0], state[1]
    con.execute(f"UPDATE {STATE_TABLE} SET events = ?", [total - uncovered])
    if not uncovered:
        _cover_files(con)  # (the sum of lines: what the quick check compares)


__all__ = ["RUNS_TABLE", "rederive", "refresh", "releases_key", "runs_source"]
