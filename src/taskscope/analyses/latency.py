"""Latency from one event to another, per task or per try: how long tasks take to get from A
to B (submit to launch, interchange to worker, received to finished), its statistics and its
histogram.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from taskscope._sql import connection_of, of_run
from taskscope.analyses.between import tagged_events_sql
from taskscope.analyses.runs import resolve_run
from taskscope.analyses.selectors import Selector

#: the quantiles `latency_stats` reports
QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


def latency(store, event_a: str | Selector, event_b: str | Selector, run: str | None = None,
            per: str = "task") -> pd.DataFrame:
    """Per task (or try), the time from its first `event_a` to the first `event_b` at or after it.

    Columns: `run_id`, `task_id`, (`try_id` with `per="try"`), `app_name`, `a_ts`, `b_ts`,
    `latency_s` (rounded to the microsecond, the precision of `ts`: 0.1, not the 0.0999999
    two epoch-seconds doubles differ by). Entities that reached A but not (yet) B are kept
    with `b_ts` and `latency_s` empty (NaN), so a stuck stage shows rather than vanishes. Events are selectors (see
    `taskscope.analyses.selectors`); raises `SelectorError` if one matches no event.

    >>> latency(store, "task.launched", "htex.worker.received", run="000").latency_s.median()  # doctest: +SKIP
    """
    con = connection_of(store)
    run_id = resolve_run(con, run)
    tagged, params = tagged_events_sql(con, event_a, event_b, run_id, per)
    entity = ["run_id", "task_id"] + (["try_id"] if per == "try" else [])
    keys = ", ".join(entity)
    join_keys = " AND ".join(f"b.{key} = a.{key}" for key in entity)
    return con.execute(
        f"""
        WITH tagged AS ({tagged}),
        first_a AS (SELECT {keys}, min(ts) AS a_ts FROM tagged WHERE tag = 'a' GROUP BY {keys}),
        -- the first B at or after A; when every B of the task was logged before its A (another
        -- process logged receiving it a millisecond before the DFK logged launching it), the last
        -- of them: a negative latency, not a task "without B"
        paired AS (
            SELECT a.*, coalesce(min(b.ts) FILTER (WHERE b.ts >= a.a_ts), max(b.ts)) AS b_ts
            FROM first_a a LEFT JOIN tagged b ON {join_keys} AND b.tag = 'b'
            GROUP BY ALL
        ),
        apps AS (
            SELECT run_id, task_id, any_value(app_name) AS app_name FROM events
            WHERE app_name IS NOT NULL AND event IN ('task.submitted', 'task.info')
                  AND {of_run()}
            GROUP BY run_id, task_id
        )
        SELECT p.{keys.replace(', ', ', p.')}, apps.app_name, p.a_ts, p.b_ts, round(p.b_ts - p.a_ts, 6) AS latency_s
        FROM paired p LEFT JOIN apps USING (run_id, task_id)
        ORDER BY {', '.join('natural_key(p.task_id)' if key == 'task_id' else f'p.{key}' for key in entity)}
        """,
        {**params, "run": run_id},
    ).df()


def stats_of(frame: pd.DataFrame, by: str | list[str] | None = None) -> pd.DataFrame:
    """Statistics of a `latency` frame: `count` (pairs with a B), `without_b`, `mean`, `min`,
    `p50`, `p90`, `p99` (linear interpolation, pandas' default), `max`, all in seconds; one row
    per run, or per run and `by` (e.g. "app_name"; `run_id` is always a group, so `by="run_id"`
    is per run).

    >>> stats_of(latency(store, "state:pending", "state:exec_done"), by="app_name")  # doctest: +SKIP
    """
    extra = [by] if isinstance(by, str) else list(by or [])
    groups = list(dict.fromkeys(["run_id", *extra]))  # each once, in order

    def one(values: pd.Series) -> pd.Series:
        done = values.dropna()
        row = {"count": len(done), "without_b": int(values.isna().sum()), "mean": done.mean(), "min": done.min()}
        row.update({name: done.quantile(q) if len(done) else np.nan for name, q in QUANTILES.items()})
        row["max"] = done.max()
        return pd.Series(row)

    if frame.empty:
        return pd.DataFrame(columns=groups + ["count", "without_b", "mean", "min", *QUANTILES, "max"])
    stats = frame.groupby(groups, dropna=False)["latency_s"].apply(one).unstack().reset_index()
    return stats.astype({"count": "int64", "without_b": "int64"})


def latency_stats(store, event_a: str | Selector, event_b: str | Selector, run: str | None = None,
                  per: str = "task", by: str | list[str] | None = None) -> pd.DataFrame:
    """`stats_of(latency(...), by)`: count, mean, p50/p90/p99 and max of the time from A to B.

    >>> latency_stats(store, "htex.worker.received", "htex.worker.finished", run="000")  # doctest: +SKIP
    """
    return stats_of(latency(store, event_a, event_b, run, per), by)


def latency_histogram(frame: pd.DataFrame, bins: int = 30) -> pd.DataFrame:
    """Histogram of a `latency` frame's `latency_s`: `bin_start`, `bin_end` (seconds), `count`,
    over equal-width bins from the smallest to the largest latency (all runs together).

    >>> latency_histogram(latency(store, "task.launched", "state:exec_done"), bins=20)  # doctest: +SKIP
    """
    values = frame["latency_s"].dropna().to_numpy(dtype="float64")
    if values.size == 0:
        return pd.DataFrame({"bin_start": [], "bin_end": [], "count": pd.Series([], dtype="int64")})
    counts, edges = np.histogram(values, bins=bins)
    return pd.DataFrame({"bin_start": edges[:-1], "bin_end": edges[1:], "count": counts.astype("int64")})
