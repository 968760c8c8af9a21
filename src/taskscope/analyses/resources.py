"""Resources: worker slots (total and busy) over time, the hosts' capacity, and CPU / memory
per task try where monitoring sampled it.

Capacity counts each host once: a host's cores and memory are its own however many managers
(blocks) run on it, and each manager's last report counts once. parsl-visualize sums
`node.worker_count` and `node.cpu_count` over every row of the node table, and monitoring
writes a node row per manager status message, so 2 workers show as 110 (Parsl #4050); two
managers on one 2-core host would show 4 cores even with one row each.

Parsl's resource samples are cumulative for the worker process (and its children), which runs
many tasks one after another: a try's CPU time is the difference between its first and last
sample, unknown when the try has fewer than two samples.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from taskscope.analyses.between import between
from taskscope.analyses.selectors import SelectorError
from taskscope.analyses.utilization import sampled_use, with_capacity

# one row per manager: its last reported capacity (monitoring's node rows, else the
# interchange's registration line, whose text carries cpu_count in releases that send it)
_MANAGERS = r"""
    WITH monitoring AS (
        SELECT manager_id, arg_max(host, ts) AS host, arg_max(block_id, ts) AS block_id,
               arg_max(TRY_CAST(attrs->>'worker_count' AS BIGINT), ts) AS workers,
               arg_max(TRY_CAST(attrs->>'cpu_count' AS BIGINT), ts) AS cpu_cores,
               arg_max(TRY_CAST(attrs->>'total_memory' AS BIGINT), ts) AS memory_bytes,
               min(ts) AS first_ts, max(ts) AS last_ts, 'monitoring' AS origin
        FROM events WHERE run_id = $run AND event = 'manager.status' AND manager_id IS NOT NULL
        GROUP BY manager_id
    ),
    logs AS (
        SELECT manager_id, arg_max(host, ts) AS host, arg_max(block_id, ts) AS block_id,
               arg_max(TRY_CAST(attrs->>'worker_count' AS BIGINT), ts) AS workers,
               arg_max(TRY_CAST(nullif(regexp_extract(message, '''cpu_count'': (\d+)', 1), '') AS BIGINT), ts)
                   AS cpu_cores,
               arg_max(TRY_CAST(nullif(regexp_extract(message, '''total_memory'': (\d+)', 1), '') AS BIGINT), ts)
                   AS memory_bytes,
               min(ts) AS first_ts, max(ts) AS last_ts, 'logs' AS origin
        FROM events WHERE run_id = $run AND event = 'htex.interchange.manager_registration'
              AND manager_id IS NOT NULL
        GROUP BY manager_id
    )
    SELECT * FROM monitoring
    UNION ALL
    SELECT * FROM logs WHERE manager_id NOT IN (SELECT manager_id FROM monitoring)
    ORDER BY first_ts
"""

# total worker slots over time: each manager contributes its worker count while active
_SLOTS = """
    WITH reports AS (
        SELECT manager_id, ts,
               CASE WHEN coalesce(TRY_CAST(attrs->>'active' AS BOOLEAN), true)
                    THEN coalesce(TRY_CAST(attrs->>'worker_count' AS BIGINT), 0) ELSE 0 END AS slots
        FROM events WHERE run_id = $run AND manager_id IS NOT NULL AND (
              (event = 'manager.status' AND $origin = 'monitoring')
           OR (event = 'htex.interchange.manager_registration' AND $origin = 'logs'))
        UNION ALL
        SELECT manager_id, ts, 0 FROM events
        WHERE run_id = $run AND $origin = 'logs' AND event = 'htex.interchange.manager_lost'
    ),
    changes AS (
        SELECT ts, slots - coalesce(lag(slots) OVER (PARTITION BY manager_id ORDER BY ts), 0) AS change
        FROM reports
    )
    SELECT ts, CAST(sum(sum(change)) OVER (ORDER BY ts) AS BIGINT) AS total
    FROM changes GROUP BY ts ORDER BY ts
"""

# per task try: CPU time between its first and last sample (samples are the worker process's
# running totals, user + system, of it and its children) and mean / peak resident memory
_PER_TRY = """
    WITH samples AS (
        SELECT task_id, try_id, ts,
               TRY_CAST(attrs->>'psutil_process_time_user' AS DOUBLE)
                   + coalesce(TRY_CAST(attrs->>'psutil_process_time_system' AS DOUBLE), 0) AS cpu_total_s,
               TRY_CAST(attrs->>'psutil_process_memory_resident' AS DOUBLE) AS resident
        FROM events WHERE run_id = $run AND event = 'task.resource'
    )
    SELECT task_id, try_id, count(cpu_total_s) AS samples,
           CASE WHEN count(cpu_total_s) >= 2
                THEN greatest(arg_max(cpu_total_s, ts) - arg_min(cpu_total_s, ts), 0) END AS cpu_s,
           avg(resident) / 1048576 AS memory_mean_mib,
           max(resident) / 1048576 AS memory_max_mib
    FROM samples
    GROUP BY task_id, try_id
"""

#: how busy slots are counted: (entering, leaving) selectors, first available wins
BUSY_EVENTS = [("htex.worker.received", "htex.worker.finished"),
               ("state:running@monitoring", "state:running_ended@monitoring")]


def managers(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One row per manager: host, block, workers, CPU cores, memory, first/last seen, origin."""
    return con.execute(_MANAGERS, {"run": run_id}).df()


def hosts(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """One row per host: `host`, `managers`, `workers` (the sum of its managers' worker slots),
    `cpu_cores` and `memory_bytes` (the host's own, counted once however many managers it
    runs), `origin`. A manager whose host is unknown is a host of its own.

    >>> hosts(con, run_id)[["host", "managers", "cpu_cores"]]  # doctest: +SKIP
    """
    rows = managers(con, run_id)
    columns = ["host", "managers", "workers", "cpu_cores", "memory_bytes", "origin"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(host=rows.host.fillna("manager " + rows.manager_id.astype(str)))
    per_host = rows.groupby("host", sort=False).agg(
        managers=("manager_id", "size"), workers=("workers", lambda v: v.sum(min_count=1)),
        cpu_cores=("cpu_cores", "max"), memory_bytes=("memory_bytes", "max"),
        origin=("origin", lambda v: ",".join(sorted(set(v)))))
    return per_host.reset_index()[columns]


def capacity(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """Run totals: `hosts`, `managers`, `workers` (each manager's last report once), `cpu_cores`
    and `memory_bytes` (each host once, however many managers or blocks it runs), `origin`.

    >>> capacity(con, run_id)["cpu_cores"]  # doctest: +SKIP
    2
    """
    per_host = hosts(con, run_id)

    def total(column: str):
        return int(per_host[column].sum()) if per_host[column].notna().any() else None

    origins = sorted({origin for text in per_host.origin for origin in text.split(",")})
    return {"hosts": len(per_host), "managers": int(per_host.managers.sum()), "workers": total("workers"),
            "cpu_cores": total("cpu_cores"), "memory_bytes": total("memory_bytes"), "origin": ",".join(origins)}


def slots(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Worker slots over time: `ts`, `total` (from managers), `busy` (tries running on a worker)."""
    origins = set(managers(con, run_id).origin)
    origin = "monitoring" if "monitoring" in origins else "logs"
    total = con.execute(_SLOTS, {"run": run_id, "origin": origin}).df()
    busy = _busy(con, run_id)
    if total.empty and busy.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="float64")})
    merged = pd.concat([total.assign(busy=None), busy.rename(columns={"count": "busy"}).assign(total=None)])
    merged = merged.sort_values("ts", kind="stable").groupby("ts", as_index=False).last()
    return merged[["ts", "total", "busy"]].ffill().fillna(0).infer_objects()  # numbers, not objects


def _busy(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    for event_a, event_b in BUSY_EVENTS:
        try:
            return between(con, event_a, event_b, run_id, per="try")[["ts", "count"]]
        except SelectorError:
            continue
    return pd.DataFrame({"ts": pd.Series(dtype="float64"), "count": pd.Series(dtype="int64")})


def per_task(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """Per monitored try: `samples`, `cpu_s` (user + system between its first and last sample;
    NaN when it has fewer than two samples), `memory_mean_mib`, `memory_max_mib`.

    >>> per_task(con, run_id)[["task_id", "try_id", "samples", "cpu_s"]]  # doctest: +SKIP
    """
    return con.execute(_PER_TRY, {"run": run_id}).df()


def bins(con: duckdb.DuckDBPyConnection, run_id: str, column: str, count: int = 30) -> pd.DataFrame:
    """`per_task`'s `column` in `count` equal-width bins: `low`, `high`, `count`."""
    if column not in ("cpu_s", "memory_mean_mib", "memory_max_mib"):
        raise ValueError(column)
    return con.execute(
        f"""WITH v AS (SELECT {column} AS value FROM ({_PER_TRY}) WHERE {column} IS NOT NULL),
                 r AS (SELECT min(value) AS lo, greatest(max(value) - min(value), 1e-9) / $bins AS width FROM v)
            SELECT lo + b * width AS low, lo + (b + 1) * width AS high, count(*) AS count
            FROM (SELECT least(CAST(floor((value - lo) / width) AS BIGINT), $bins - 1) AS b, lo, width FROM v, r)
            GROUP BY b, lo, width ORDER BY b""",
        {"run": run_id, "bins": count},
    ).df()


def utilization(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """CPU and memory in use over time per host and time bin, beside each host's capacity
    (`taskscope.analyses.utilization.sampled_use` with `capacity_cpu_cores` and
    `capacity_memory_bytes` from `hosts`).

    >>> utilization(con, run_id).groupby("host").cpu_s.sum()  # doctest: +SKIP
    """
    return with_capacity(sampled_use(con, run_id), hosts(con, run_id))


def resources(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, pd.DataFrame]:
    """A run's resources as DataFrames: `capacity` (one row, with `monitored_tries` and
    `cpu_measured_tries`, the tries with two samples or more), `hosts`, `managers`, `slots`, CPU /
    memory histograms (`cpu_bins`, `memory_mean_bins`, `memory_max_bins`) and CPU / memory in use
    over time per host (`utilization`, see `taskscope.analyses.utilization`); what the resources
    page shows (kept in the run's digest).

    >>> resources(con, run_id)["capacity"].workers.iloc[0]  # doctest: +SKIP
    2
    """
    monitored, measured = con.execute(f"SELECT count(*), count(cpu_s) FROM ({_PER_TRY})", {"run": run_id}).fetchall()[0]
    return {
        "capacity": pd.DataFrame([{**capacity(con, run_id), "monitored_tries": int(monitored),
                                   "cpu_measured_tries": int(measured)}]),
        "hosts": hosts(con, run_id),
        "managers": managers(con, run_id),
        "slots": slots(con, run_id),
        "cpu_bins": bins(con, run_id, "cpu_s"),
        "memory_mean_bins": bins(con, run_id, "memory_mean_mib"),
        "memory_max_bins": bins(con, run_id, "memory_max_mib"),
        "utilization": utilization(con, run_id),
    }


#: the executor Parsl's DFK adds for its own work (not one the user configured)
INTERNAL_EXECUTOR = "_parsl_internal"

_INFRASTRUCTURE = f"""
    WITH block_ids AS (
        SELECT DISTINCT executor_label, block_id FROM events WHERE run_id = $run AND block_id IS NOT NULL
    ),
    -- some events (block.scaled_in, manager.status) name a block without its executor: such a
    -- block is a block of its own only when no executor logged a block with that id
    blocks AS (
        SELECT count(*) AS blocks FROM block_ids b
        WHERE executor_label IS NOT NULL
           OR NOT EXISTS (SELECT 1 FROM block_ids l WHERE l.block_id = b.block_id AND l.executor_label IS NOT NULL)
    )
    SELECT count(DISTINCT executor_label) FILTER (WHERE executor_label <> '{INTERNAL_EXECUTOR}') AS executors,
           (SELECT blocks FROM blocks) AS blocks,
           count(DISTINCT manager_id) AS managers_seen,
           count(DISTINCT (manager_id, worker_id)) FILTER (WHERE worker_id IS NOT NULL) AS workers_seen,
           count(DISTINCT host) FILTER (WHERE source <> 'parsl') AS hosts,
           string_agg(DISTINCT executor_label, ', ' ORDER BY executor_label)
               FILTER (WHERE executor_label <> '{INTERNAL_EXECUTOR}') AS executor_labels
    FROM events WHERE run_id = $run
"""


def infrastructure(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """Executors, blocks, managers, worker slots and hosts of a run, each counted once.

    `workers_seen` counts the distinct (manager, worker) slots that logged anything;
    `workers` is the managers' reported capacity (see `capacity`).

    >>> infrastructure(con, run_id)["workers"]  # doctest: +SKIP
    2
    """
    row = con.execute(_INFRASTRUCTURE, {"run": run_id}).df().iloc[0].to_dict()
    totals = capacity(con, run_id)
    return {**row, "managers": max(totals["managers"], int(row["managers_seen"])),
            "workers": totals["workers"], "cpu_cores": totals["cpu_cores"]}
