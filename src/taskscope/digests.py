"""Run digests: what the run, tasks, DAG and resources pages show, computed once per ingest and
kept in the store.

At 100k tasks the summary, states over time, queues and common path of one run, its task
table, dependencies, resources and even its row of the runs table take seconds: too slow to
redo on the first request of every page. `Store.ingest` calls `refresh_digests`, which
computes every section (`SECTIONS`) for every *ended* run whose events changed and stores
each DataFrame as Parquet in the `run_digests` table, keyed by run, section and part, with a
fingerprint of the run's events (`fingerprint`) and one of the store's ingest state
(`store_fingerprint`, free to read: while it matches nothing was ingested since, and the
run's events need no scan). `section` returns the stored parts when a fingerprint still
matches, else computes them (a live run, a store written by an older taskscope, a read-only
store): the result is the same either way.

A run still going is not digested: its events change with every live ingest, and a
digest written every few seconds would only slow the ingest down.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import duckdb
import pandas as pd

from taskscope._sql import scalar
from taskscope.analyses import states as states_module
from taskscope.analyses.between import standard_queues
from taskscope.analyses.common_path import common_path
from taskscope.analyses.resources import infrastructure, resources
from taskscope.analyses.runs import runs
from taskscope.analyses.summary import summary
from taskscope.analyses.tasks import dependency_edges, tasks

#: grows whenever what a section holds changes: digests of another version are stale
DIGEST_VERSION = 8

_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS run_digests (
    run_id VARCHAR, section VARCHAR, part VARCHAR, fingerprint VARCHAR, store_fingerprint VARCHAR, frame BLOB,
    PRIMARY KEY (run_id, section, part)
)
"""

# what changes whenever an ingest adds or relates events of the run
_FINGERPRINT = """
    SELECT concat_ws(':', count(*), count(task_id), count(manager_id), max(ts),
                     (SELECT count(*) FROM event_task_links WHERE run_id = $run))
    FROM events WHERE run_id = $run
"""

# what changes whenever an ingest reads anything (ingested_files is small; count(*) is metadata)
_STORE_FINGERPRINT = """
    SELECT concat_ws(':', count(*), sum(bytes_read), sum(lines_read), sum(events), (SELECT count(*) FROM events))
    FROM ingested_files
"""

_ENDED_RUNS = """
    SELECT DISTINCT run_id FROM events
    WHERE run_id IS NOT NULL AND event IN ('workflow.end', 'workflow.shutdown')
"""


def _states_wide(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    curve = states_module.states(con, run_id)
    if curve.empty:  # no DFK logs: monitoring.db only
        curve = states_module.states_from_monitoring(con, run_id)
    return states_module.states_wide(curve).drop(columns=["run_id", "step"], errors="ignore")


def _queues_wide(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    long = standard_queues(con, run_id)
    if long.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="float64")})
    wide = long.pivot_table(index="ts", columns="queue", values="count", aggfunc="last").sort_index()
    wide.columns.name = None
    return wide.ffill().fillna(0).reset_index()


def run_page_analyses(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, pd.DataFrame]:
    """The run page's analyses of `run_id`, computed now: `infrastructure` (one row),
    `totals`, `apps`, `failures`, `throughput` (see `taskscope.analyses.summary`), `states`
    and `queues` (wide step functions, and `..._sampled` at the instants the page draws),
    `variants` (the 10 most common) and `common_path`.

    >>> run_page_analyses(con, run_id)["apps"][["app_name", "tasks"]]  # doctest: +SKIP
    """
    result = summary(con, run_id)
    path = common_path(con, run_id)
    states, queues = _states_wide(con, run_id), _queues_wide(con, run_id)
    return {
        "infrastructure": pd.DataFrame([infrastructure(con, run_id)]),
        "totals": result.runs,
        "apps": result.apps,
        "failures": result.failures,
        "throughput": result.throughput,
        "states": states,
        "queues": queues,
        "states_sampled": states_module.sampled_steps(states),
        "queues_sampled": states_module.sampled_steps(queues),
        "variants": path.variants.head(10),
        "common_path": path.dominant,
    }


def _run_row(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, pd.DataFrame]:
    return {"row": runs(con, run_id)}


def _task_table(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, pd.DataFrame]:
    return {"tasks": tasks(con, run_id)}


def _dependencies(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, pd.DataFrame]:
    return {"edges": dependency_edges(con, run_id)}


#: section name -> the function computing its DataFrames (part name -> frame)
SECTIONS: dict[str, Callable[[duckdb.DuckDBPyConnection, str], dict[str, pd.DataFrame]]] = {
    "row": _run_row, "run": run_page_analyses, "tasks": _task_table, "dag": _dependencies,
    "resources": resources,
}


def fingerprint(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    """A short text that changes whenever an ingest adds or relates events of `run_id`.

    >>> fingerprint(con, run_id)  # doctest: +SKIP
    'v2:2107735:1900012:300010:1764547200.5:0'
    """
    return f"v{DIGEST_VERSION}:{scalar(con, _FINGERPRINT, {'run': run_id})}"


def store_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """A short text that changes whenever an ingest reads anything into the store.

    >>> store_fingerprint(con)  # doctest: +SKIP
    'v2:9:396563968:2567141:2567141:2567141'
    """
    return f"v{DIGEST_VERSION}:{scalar(con, _STORE_FINGERPRINT)}"


def _is_current(con: duckdb.DuckDBPyConnection, run_id: str, stamps: set[tuple[str, str]]) -> bool:
    """True if every stored (run fingerprint, store fingerprint) in `stamps` is still current."""
    run_prints, store_prints = {s[0] for s in stamps}, {s[1] for s in stamps}
    if store_prints == {store_fingerprint(con)}:
        return True
    return run_prints == {fingerprint(con, run_id)}


def stored_section(con: duckdb.DuckDBPyConnection, run_id: str, name: str,
                   parts: Sequence[str] | None = None) -> dict[str, pd.DataFrame] | None:
    """The parts of section `name` (or only `parts` of it) stored for `run_id` if they are
    still current, else None."""
    if not _has_table(con):
        return None
    rows = con.execute("SELECT fingerprint, store_fingerprint, part, frame FROM run_digests "
                       "WHERE run_id = ? AND section = ? AND (? OR list_contains(?::VARCHAR[], part))",
                       [run_id, name, parts is None, list(parts or [])]).fetchall()
    if not rows or not _is_current(con, run_id, {(row[0], row[1]) for row in rows}):
        return None
    if parts is not None and {row[2] for row in rows} != set(parts):
        return None
    return {part: pd.read_parquet(io.BytesIO(frame)) for _, _, part, frame in rows}


def section(con: duckdb.DuckDBPyConnection, run_id: str, name: str,
            parts: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Section `name` (see `SECTIONS`) of `run_id`, or only `parts` of it: the stored parts
    when current, else computed.

    >>> section(con, run_id, "run", ["totals"])["totals"].tasks.iloc[0]  # doctest: +SKIP
    100000
    """
    stored = stored_section(con, run_id, name, parts)
    if stored is not None:
        return stored
    computed = SECTIONS[name](con, run_id)
    return computed if parts is None else {part: computed[part] for part in parts}


def refresh_digests(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Compute and store every section of every ended run whose events changed since its last
    digest; returns those runs. Called at the end of `Store.ingest`, on a writable store.

    >>> refresh_digests(store.con)  # doctest: +SKIP
    ['0a1b...']
    """
    if not _has_table(con):
        # derived data only: a table of another layout (an older taskscope) is rebuilt
        con.execute("DROP TABLE IF EXISTS run_digests")
        con.execute(_TABLE_DDL)
    refreshed, store_print = [], store_fingerprint(con)
    for (run_id,) in con.execute(_ENDED_RUNS).fetchall():
        stored = con.execute("SELECT section, fingerprint, store_fingerprint FROM run_digests WHERE run_id = ?",
                             [run_id]).fetchall()
        complete = {row[0] for row in stored} == set(SECTIONS)
        if complete and {row[2] for row in stored} == {store_print}:
            continue
        current = fingerprint(con, run_id)
        if complete and {row[1] for row in stored} == {current}:  # the ingest added nothing to this run
            con.execute("UPDATE run_digests SET store_fingerprint = ? WHERE run_id = ?", [store_print, run_id])
            continue
        rows = [[run_id, name, part, current, store_print, _parquet(frame)]
                for name, compute in SECTIONS.items() for part, frame in compute(con, run_id).items()]
        con.execute("DELETE FROM run_digests WHERE run_id = ?", [run_id])
        con.executemany("INSERT INTO run_digests VALUES (?, ?, ?, ?, ?, ?)", rows)
        refreshed.append(run_id)
    return refreshed


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _has_table(con: duckdb.DuckDBPyConnection) -> bool:
    """True if the store has a `run_digests` table of this layout."""
    return bool(scalar(con, "SELECT count(*) FROM information_schema.columns "
                            "WHERE table_name = 'run_digests' AND column_name = 'store_fingerprint'"))
