"""Reads over the fleet store, each scoped to one account: clusters, computations, events, cost.

Every function takes the caller's `account` and filters every table by it; the API routes and the
pages call these and nothing else.

>>> clusters(db, "physics", since=parse_since("7 days"))[["cluster_id", "user_name", "cost"]]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import time

import pandas as pd

from taskscope.fleet import profiles
from taskscope.fleet.db import FAILURE_FIELDS, FleetDB
from taskscope.fleet.protocol import DEFAULT_SEND_INTERVAL_S, LOST_AFTER_INTERVALS
from taskscope.time_bounds import epoch_since
from taskscope.presenters.format import records

_SINCE_UNITS = {"s": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400,
                "w": 604800, "week": 604800}
#: what `since` takes, as a refusal names it
SINCE_FORMS = ("like '7 days', '12 hours', '2 weeks', '2026-01-31' (UTC) or epoch seconds (0 or more), "
               "or empty for everything")
#: memory is priced per GiB-hour (the protocol's ``price_per_gb_hour``; every page says GiB)
_BYTES_PER_GIB = 2**30

#: one row per cluster of the account with its cost (workers samples integrated as a step function)
CLUSTER_TABLE_SQL = f"""
WITH mine AS (SELECT * FROM clusters WHERE account = $account),
held AS (
    SELECT s.cluster_id, s.n_workers, s.n_threads,
           coalesce(lead(s.ts) OVER (PARTITION BY s.cluster_id ORDER BY s.ts),
                    greatest(coalesce(m.stopped, s.ts), s.ts)) - s.ts AS held_s,
           s.memory_total
    FROM worker_samples s JOIN mine m USING (cluster_id) WHERE s.account = $account),
usage AS (
    SELECT cluster_id, max(n_workers) AS max_workers, max(n_threads) AS max_threads,
           sum(n_threads * held_s) AS core_seconds, sum(memory_total / {_BYTES_PER_GIB} * held_s) AS gb_seconds
    FROM held GROUP BY cluster_id),
work AS (
    SELECT cluster_id, count(DISTINCT computation_id) AS computations FROM computations
    WHERE account = $account GROUP BY cluster_id),
groups AS (
    SELECT cluster_id, sum(n_tasks)::BIGINT AS tasks,
           sum(coalesce(TRY_CAST(states->>'erred' AS BIGINT), 0))::BIGINT AS tasks_failed,
           sum(compute_s) AS compute_s
    FROM task_groups WHERE account = $account GROUP BY cluster_id),
errors AS (SELECT cluster_id, count(*) AS exceptions FROM exceptions WHERE account = $account GROUP BY cluster_id)
SELECT m.cluster_id, m.kind, m.name, m.user_name, m.claimed_user, m.host, m.address, m.dashboard_link,
       coalesce(m.started, m.first_seen) AS started, m.stopped, m.last_seen,
       CASE WHEN m.stopped IS NOT NULL THEN 'stopped'
            WHEN m.kind = 'dask' AND $now - m.last_seen
                 > {LOST_AFTER_INTERVALS} * coalesce(m.send_interval, {DEFAULT_SEND_INTERVAL_S}) THEN 'lost'
            ELSE 'running' END AS state,
       -- a sender clock ahead of the server's (last_seen) must not make a running cluster's duration negative
       greatest(coalesce(m.stopped, m.last_seen) - coalesce(m.started, m.first_seen), 0) AS duration_s,
       coalesce(u.max_workers, p.workers) AS workers, coalesce(u.max_threads, p.cores) AS threads,
       coalesce(w.computations, 0) AS computations,
       coalesce(g.tasks, p.tasks) AS tasks, coalesce(g.tasks_failed, p.tasks_failed) AS tasks_failed,
       coalesce(e.exceptions, 0) AS exceptions,
       coalesce(g.compute_s, p.compute_s) AS compute_s,
       coalesce(u.core_seconds, p.core_seconds) AS core_seconds,
       -- an uploaded run that does not know its core time has no cost (NULL), rather than 0
       coalesce(p.cost, CASE WHEN p.run_id IS NULL OR coalesce(u.core_seconds, p.core_seconds) IS NOT NULL THEN
                coalesce(u.core_seconds, p.core_seconds, 0) / 3600 * m.price_per_core_hour
                + coalesce(u.gb_seconds, 0) / 3600 * m.price_per_gb_hour END) AS cost,
       m.price_per_core_hour, m.price_per_gb_hour, p.run_id, p.workflow_name
FROM mine m LEFT JOIN usage u USING (cluster_id) LEFT JOIN work w USING (cluster_id)
LEFT JOIN groups g USING (cluster_id) LEFT JOIN errors e USING (cluster_id)
LEFT JOIN parsl_runs p ON p.account = $account AND p.cluster_id = m.cluster_id
"""


def parse_since(text: str | float | None, now: float | None = None) -> float | None:
    """`"7 days"`, `"12h"`, `"2 weeks"`, an ISO date/time (UTC) or epoch seconds (0 or more), as epoch
    seconds; None or empty for everything. Anything else raises ValueError naming `since` and the forms
    it takes: a page or the API must refuse it, never read another period instead.

    >>> parse_since("2 days", now=200000.0)
    27200.0
    >>> parse_since("1970-01-02")
    86400.0
    >>> parse_since("-5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: since must be like '7 days', '12 hours', ... or empty for everything, not '-5'
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, (int, float)):
        return epoch_since(str(text), SINCE_FORMS)
    now = time.time() if now is None else now
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*", text.lower())
    if match and match.group(2) in _SINCE_UNITS:
        return now - float(match.group(1)) * _SINCE_UNITS[match.group(2)]
    return epoch_since(text.strip(), SINCE_FORMS)  # epoch seconds or a date, else ValueError


def clusters(db: FleetDB, account: str, since: float | None = None, user: str | None = None,
             cluster_id: str | None = None) -> pd.DataFrame:
    """The account's clusters (Dask and Parsl), newest first, active at or after `since`."""
    sql = (f"SELECT * FROM ({CLUSTER_TABLE_SQL}) WHERE ($since IS NULL OR coalesce(stopped, started + duration_s) >= $since)"
           " AND ($user IS NULL OR user_name = $user) AND ($cluster_id IS NULL OR cluster_id = $cluster_id)"
           " ORDER BY started DESC")
    return db.query(sql, {"account": account, "since": since, "user": user, "cluster_id": cluster_id,
                          "now": time.time()})


def cluster(db: FleetDB, account: str, cluster_id: str) -> dict:
    """One cluster of the account (a row of `clusters` plus versions and config); LookupError if none."""
    table = clusters(db, account, cluster_id=cluster_id)
    if table.empty:
        raise LookupError(f"no cluster {cluster_id}")
    extra = db.query("SELECT python, platform, versions, config FROM clusters WHERE account = ? AND cluster_id = ?",
                     [account, cluster_id]).iloc[0].to_dict()
    return {**records(table)[0], **_decoded(extra, ("versions", "config"))}


def computations(db: FleetDB, account: str, cluster_id: str) -> list[dict]:
    """The cluster's computations, oldest first, each with its code, task groups and ``state``:
    ``finished``, ``running``, or ``interrupted`` (no stop, and its cluster stopped or was lost)."""
    table = clusters(db, account, cluster_id=cluster_id)
    cluster_ended = not table.empty and table.state.iloc[0] != "running"
    found = records(db.query("SELECT computation_id, start, stop, stop - start AS duration_s, code, span_name "
                              "FROM computations WHERE account = ? AND cluster_id = ? ORDER BY start NULLS LAST, ts",
                              [account, cluster_id]))
    groups = records(db.query("SELECT * EXCLUDE (account, cluster_id) FROM task_groups "
                               "WHERE account = ? AND cluster_id = ? ORDER BY start NULLS LAST, name",
                               [account, cluster_id]))
    by_computation: dict[str, list[dict]] = {}
    for group in groups:
        by_computation.setdefault(group.pop("computation_id"), []).append(_decoded(group, ("states", "dependencies")))
    for computation in found:
        _decoded(computation, ("code", "span_name"))
        computation["groups"] = by_computation.get(computation["computation_id"], [])
        computation["state"] = ("finished" if computation["stop"] is not None
                                else "interrupted" if cluster_ended else "running")
    return found


def events(db: FleetDB, account: str, cluster_id: str) -> list[dict]:
    """The cluster's events (allow-listed topics), oldest first."""
    rows = records(db.query("SELECT ts, topic, msg FROM cluster_events WHERE account = ? AND cluster_id = ? ORDER BY ts",
                             [account, cluster_id]))
    return [_decoded(row, ("msg",)) for row in rows]


def exceptions(db: FleetDB, account: str, since: float | None = None, user: str | None = None,
               cluster_id: str | None = None) -> list[dict]:
    """The account's task exceptions with tracebacks, newest first (filters optional)."""
    sql = ("SELECT x.cluster_id, c.user_name, x.ts, x.key, x.task_group, x.exception_text, x.traceback_text, "
           "x.worker, x.computation_id, x.allowed_failures FROM exceptions x JOIN clusters c ON c.account = x.account "
           "AND c.cluster_id = x.cluster_id WHERE x.account = $account AND ($since IS NULL OR x.ts >= $since) "
           "AND ($user IS NULL OR c.user_name = $user) AND ($cluster_id IS NULL OR x.cluster_id = $cluster_id) "
           "ORDER BY x.ts DESC")
    return records(db.query(sql, {"account": account, "since": since, "user": user, "cluster_id": cluster_id}))


def worker_samples(db: FleetDB, account: str, cluster_id: str) -> pd.DataFrame:
    """Workers, threads, memory and task counts over time."""
    return db.query("SELECT * EXCLUDE (account, cluster_id) FROM worker_samples WHERE account = ? AND cluster_id = ? "
                    "ORDER BY ts", [account, cluster_id])


def worker_changes(db: FleetDB, account: str, cluster_id: str) -> list[dict]:
    """Workers added and removed, with their versions."""
    rows = records(db.query("SELECT * EXCLUDE (account, cluster_id) FROM worker_changes WHERE account = ? "
                             "AND cluster_id = ? ORDER BY ts", [account, cluster_id]))
    return [_decoded(row, ("versions",)) for row in rows]


def version_mismatches(db: FleetDB, account: str, cluster_id: str) -> list[dict]:
    """Packages whose versions differ between scheduler, workers and client."""
    rows = records(db.query("SELECT ts, package, versions FROM version_mismatches WHERE account = ? AND cluster_id = ? "
                             "ORDER BY package, ts", [account, cluster_id]))
    return [_decoded(row, ("versions",)) for row in rows]


def idle_intervals(db: FleetDB, account: str, cluster_id: str) -> list[dict]:
    """Intervals with no task processing (stop None while still idle)."""
    return records(db.query("SELECT start, stop, stop - start AS duration_s FROM idle_intervals WHERE account = ? "
                             "AND cluster_id = ? ORDER BY start", [account, cluster_id]))


def profile(db: FleetDB, account: str, cluster_id: str, computation_id: str | None = None) -> dict:
    """The cluster's statistical profile, or one computation's, merged into one tree of frames:
    ``{"computation_id", "profiles" (trees merged), "nodes" (see `profiles.flat_nodes`), "hottest"}``.

    A computation's profile is the one the plugin sent for it; the cluster's is its periodic profiles,
    else (none sent) its computations' summed.
    """
    rows = db.query("SELECT computation_id, data FROM profiles WHERE account = ? AND cluster_id = ? "
                    "AND ((? IS NULL) OR computation_id = ?) ORDER BY start",
                    [account, cluster_id, computation_id, computation_id])
    if computation_id is None and rows.computation_id.isna().any():
        rows = rows[rows.computation_id.isna()]
    nodes = profiles.flat_nodes(profiles.merged_tree([json.loads(data) for data in rows.data if data]))
    return {"computation_id": computation_id, "profiles": len(rows), "nodes": nodes,
            "hottest": profiles.hottest(nodes)}


def profiled_computations(db: FleetDB, account: str, cluster_id: str) -> set[str | None]:
    """Computation ids with a profile of their own (None: the cluster has periodic profiles)."""
    found = db.query("SELECT DISTINCT computation_id FROM profiles WHERE account = ? AND cluster_id = ?",
                     [account, cluster_id])
    return {None if pd.isna(value) else value for value in found.computation_id}


def parsl_run(db: FleetDB, account: str, cluster_id: str) -> dict | None:
    """The Parsl run summary of a `kind: parsl` cluster, else None."""
    rows = records(db.query("SELECT * EXCLUDE (account, cluster_id) FROM parsl_runs WHERE account = ? "
                             "AND cluster_id = ?", [account, cluster_id]))
    if not rows:
        return None
    run = _decoded(rows[0], ("apps", "failures"))
    # runs stored before a field existed lack it: every failure has every field, None when unknown
    run["failures"] = [{field: failure.get(field) for field in FAILURE_FIELDS} for failure in run["failures"] or []]
    return run


def rejected(db: FleetDB, account: str, limit: int = 100) -> list[dict]:
    """The account's refused batches, newest first: when, status, reason, size and the start of the body."""
    rows = records(db.query("SELECT received, token_user, status, reason, size, body FROM rejected_batches "
                            "WHERE account = ? ORDER BY received DESC LIMIT ?", [account, limit]))
    for row in rows:
        row["body"] = None if row["body"] is None else bytes(row["body"])[:1024].decode("utf-8", "replace")
    return rows


def team_weeks(db: FleetDB, account: str, since: float | None = None) -> pd.DataFrame:
    """Per member and week (of each cluster's start, UTC): cluster (wall-clock) hours, core-hours held
    (worker threads × time, a Parsl run's cores × wall time), compute hours (task compute time summed
    over threads: core-hours too), cost, clusters."""
    sql = (f"SELECT user_name, strftime(date_trunc('week', to_timestamp(started)), '%Y-%m-%d') AS week, "
           f"count(*) AS clusters, sum(duration_s) / 3600 AS cluster_hours, sum(core_seconds) / 3600 AS core_hours, "
           f"sum(compute_s) / 3600 AS compute_hours, "
           f"sum(cost) AS cost FROM ({CLUSTER_TABLE_SQL}) WHERE $since IS NULL OR started >= $since "
           f"GROUP BY ALL ORDER BY week, user_name")
    return db.query(sql, {"account": account, "since": since, "now": time.time()})


def _decoded(row: dict, columns: tuple[str, ...]) -> dict:
    for column in columns:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row
