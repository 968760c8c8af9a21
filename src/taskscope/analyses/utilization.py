"""CPU and memory use over time: what the worker processes Parsl's monitoring sampled used,
per host and in total, in equal time bins, beside the hosts' capacity.

Parsl's resource samples are running totals of one worker process (and its children), taken
while it runs a task. The CPU a process used between two of its consecutive samples is the
difference of their totals; it is spread evenly over the time between them and added to the
bins that time overlaps, so the CPU-seconds of all bins add up to the sum of every process's
differences (what the process used before its first sample is unknown and not counted). A
total that falls (the process id was reused by a new process) starts the count again.

Memory: each sample's resident memory holds until the process's next sample (the last one
for one sampling interval); a bin's memory is the time-weighted mean, summed over processes.

A sample's host is the host of its task try (monitoring's try row, else the worker's logs).
`taskscope.analyses.resources.utilization` adds each host's capacity (`with_capacity`).
"""

from __future__ import annotations

import duckdb
import pandas as pd

from taskscope._sql import registered

#: at most this many time bins over the sampled span
MAX_BINS = 300
#: bin widths to pick from (seconds): the smallest that gives at most `MAX_BINS` bins
BIN_WIDTHS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)

# one row per resource sample: its process (host, pid), CPU running total and resident memory,
# and when the same process's next sample came (NULL for its last)
_SAMPLES = """
    WITH samples AS (
        SELECT task_id, try_id, ts,
               coalesce(TRY_CAST(attrs->>'psutil_process_pid' AS BIGINT), pid) AS pid,
               TRY_CAST(attrs->>'psutil_process_time_user' AS DOUBLE)
                   + coalesce(TRY_CAST(attrs->>'psutil_process_time_system' AS DOUBLE), 0) AS cpu_total_s,
               TRY_CAST(attrs->>'psutil_process_memory_resident' AS DOUBLE) AS resident,
               TRY_CAST(attrs->>'resource_monitoring_interval' AS DOUBLE) AS interval_s
        FROM events WHERE run_id = $run AND event = 'task.resource'
    ),
    try_hosts AS (
        SELECT task_id, try_id, coalesce(any_value(host) FILTER (WHERE event = 'try.info'), any_value(host)) AS host
        FROM events
        WHERE run_id = $run AND task_id IS NOT NULL AND try_id IS NOT NULL AND host IS NOT NULL AND source <> 'parsl'
        GROUP BY task_id, try_id
    )
    SELECT coalesce(h.host, 'unknown host') AS host, s.pid, s.ts, s.cpu_total_s, s.resident, s.interval_s
    FROM samples s LEFT JOIN try_hosts h USING (task_id, try_id)
    WHERE s.cpu_total_s IS NOT NULL OR s.resident IS NOT NULL
"""

# per process: the CPU used between consecutive samples (t0 -> t1) and the memory held from
# each sample to the next; then each spread over the bins its span overlaps
_BINNED = """
    WITH steps AS (
        SELECT host, pid, ts,
               lag(ts) OVER w AS prev_ts,
               cpu_total_s - lag(cpu_total_s) OVER w AS cpu_delta,
               resident,
               coalesce(lead(ts) OVER w, ts + coalesce(interval_s, $bin_s)) AS hold_until
        FROM utilization_samples
        WINDOW w AS (PARTITION BY host, pid ORDER BY ts, cpu_total_s)
    ),
    cpu_spans AS (
        SELECT host, prev_ts AS t0, ts AS t1, cpu_delta FROM steps WHERE cpu_delta > 0
    ),
    cpu_bins AS (
        SELECT host, b, CASE WHEN t1 > t0
                             THEN cpu_delta * (least(t1, $start + (b + 1) * $bin_s) - greatest(t0, $start + b * $bin_s))
                                  / (t1 - t0)
                             ELSE cpu_delta END AS cpu_s
        FROM (SELECT *, unnest(range(CAST(floor((t0 - $start) / $bin_s) AS BIGINT),
                                     CAST(floor((t1 - $start) / $bin_s) AS BIGINT) + 1)) AS b FROM cpu_spans)
    ),
    memory_bins AS (
        SELECT host, b, resident * (least(hold_until, $start + (b + 1) * $bin_s) - greatest(ts, $start + b * $bin_s))
                        / $bin_s AS memory_bytes
        FROM (SELECT *, unnest(range(CAST(floor((ts - $start) / $bin_s) AS BIGINT),
                                     CAST(floor((hold_until - $start) / $bin_s) AS BIGINT) + 1)) AS b
              FROM steps WHERE resident IS NOT NULL AND hold_until > ts)
    ),
    processes AS (
        SELECT host, CAST(floor((ts - $start) / $bin_s) AS BIGINT) AS b, count(DISTINCT pid) AS processes
        FROM utilization_samples GROUP BY ALL
    ),
    joined AS (
        SELECT host, b, sum(cpu_s) AS cpu_s, 0.0 AS memory_bytes FROM cpu_bins GROUP BY ALL
        UNION ALL
        SELECT host, b, 0.0, sum(memory_bytes) FROM memory_bins GROUP BY ALL
    )
    SELECT j.host, j.b, sum(j.cpu_s) AS cpu_s, sum(j.memory_bytes) AS memory_bytes,
           coalesce(any_value(p.processes), 0) AS processes
    FROM joined j LEFT JOIN processes p USING (host, b)
    WHERE j.b >= 0 AND j.b < $bins
    GROUP BY j.host, j.b
"""

COLUMNS = ["host", "bin_start_ts", "bin_s", "cpu_s", "cpu_cores", "memory_bytes", "processes",
           "capacity_cpu_cores", "capacity_memory_bytes"]


def bin_width(span_s: float, interval_s: float | None = None, max_bins: int = MAX_BINS) -> float:
    """The bin width for a sampled span: the smallest of `BIN_WIDTHS` that gives at most
    `max_bins` bins and is no shorter than the sampling interval.

    >>> bin_width(30, 2)
    2
    >>> bin_width(3600, 1)
    15
    """
    least = max(span_s / max_bins, interval_s or 0)
    return next((width for width in BIN_WIDTHS if width >= least), BIN_WIDTHS[-1] * (1 + int(least // BIN_WIDTHS[-1])))


def sampled_use(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """CPU and memory the sampled worker processes used, per host and time bin: `host`,
    `bin_start_ts`, `bin_s`, `cpu_s` (CPU-seconds used in the bin), `cpu_cores` (its mean:
    `cpu_s / bin_s`), `memory_bytes` (time-weighted mean resident memory) and `processes`
    (worker processes sampled in the bin). Every host has every bin; empty when the run has no
    resource samples.

    >>> sampled_use(con, run_id).groupby("host").cpu_s.sum()  # doctest: +SKIP
    """
    columns = COLUMNS[:7]
    samples = con.execute(_SAMPLES, {"run": run_id}).df()
    if samples.empty:
        return pd.DataFrame({column: pd.Series(dtype="object" if column == "host" else "float64")
                             for column in columns})
    first, last, interval = samples.ts.min(), samples.ts.max(), samples.interval_s.median()
    interval = None if pd.isna(interval) else float(interval)
    width = float(bin_width(last - first + (interval or 0), interval))
    count = int((last + (interval or width) - first) // width) + 1
    with registered(con, "utilization_samples", samples):  # the JSON fields read once
        binned = con.execute(_BINNED, {"start": first, "bin_s": width, "bins": count}).df()
    grid = pd.MultiIndex.from_product([sorted(binned.host.unique()), range(count)], names=["host", "b"])
    frame = binned.set_index(["host", "b"]).reindex(grid, fill_value=0).reset_index()
    frame = frame.assign(bin_start_ts=first + frame.b * width, bin_s=width, cpu_cores=frame.cpu_s / width)
    return frame[columns].astype({"processes": "int64"})


def with_capacity(use: pd.DataFrame, hosts: pd.DataFrame) -> pd.DataFrame:
    """`sampled_use` with each host's `capacity_cpu_cores` and `capacity_memory_bytes` from
    `hosts` (`taskscope.analyses.resources.hosts`: `host`, `cpu_cores`, `memory_bytes`).

    >>> with_capacity(sampled_use(con, run_id), hosts(con, run_id))  # doctest: +SKIP
    """
    capacity = hosts[["host", "cpu_cores", "memory_bytes"]].rename(
        columns={"cpu_cores": "capacity_cpu_cores", "memory_bytes": "capacity_memory_bytes"})
    return use.merge(capacity, on="host", how="left")[COLUMNS]


def utilization_totals(per_host: pd.DataFrame) -> pd.DataFrame:
    """`taskscope.analyses.resources.utilization` summed over hosts per bin: `bin_start_ts`, `bin_s`, `cpu_s`, `cpu_cores`,
    `memory_bytes`, `processes`, `capacity_cpu_cores`, `capacity_memory_bytes` (each host once).

    >>> utilization_totals(resources.utilization(con, run_id)).cpu_s.sum()  # doctest: +SKIP
    """
    columns = [c for c in COLUMNS if c != "host"]
    if per_host.empty:
        return pd.DataFrame({column: pd.Series(dtype="float64") for column in columns})
    totals = per_host.groupby(["bin_start_ts", "bin_s"], as_index=False).agg(
        cpu_s=("cpu_s", "sum"), memory_bytes=("memory_bytes", "sum"), processes=("processes", "sum"),
        capacity_cpu_cores=("capacity_cpu_cores", lambda v: v.sum(min_count=1)),
        capacity_memory_bytes=("capacity_memory_bytes", lambda v: v.sum(min_count=1)))
    return totals.assign(cpu_cores=totals.cpu_s / totals.bin_s)[columns]
