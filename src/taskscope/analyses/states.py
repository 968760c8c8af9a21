"""States over time: how many tasks are in each DFK state at every moment.

The answer is an exact step function: one row per state whose count changes at a transition,
never a resampling (`resample` exists for plots). Two independent derivations exist and must
agree, which makes each a check on the other:

- `states` reads the state changes the DFK logs (`Task N changing state from A to B`, text or
  JSON). Releases before 2026 log only some of them (`set to pending state`, `completed (launched
  -> exec_done)`); for a run whose logs never record entering `launched`, the missing changes
  are taken from the messages that accompany them: the launch line (`launched`), `marked for
  retry` (`fail_retryable`, then `pending`), `failed after N retry attempts` (`failed`),
  `failed due to dependency failure` (`dep_fail`).
- `states_from_monitoring` reads monitoring.db's status rows (`task.state` events of source
  `monitoring`). Those also hold `running` and `running_ended`, which workers report from
  inside the task and which are not DFK states (a task is `launched` in the DFK the whole
  time), so they are left out: `between(store, "state:running@monitoring",
  "state:running_ended@monitoring")` counts tasks running on workers instead.

Transitions are ordered by time, then by their place in the log (or the monitoring.db row
order), so transitions logged within the same microsecond keep the order they happened in. A
repeated state (the same state entered twice in a row by one task, as when an inferred and a
logged change coincide) is one transition.
"""

from __future__ import annotations

import pandas as pd

from taskscope._sql import connection_of, frame, of_run
from taskscope.analyses.runs import WORKER_STATES, resolve_run

#: at most this many points per line of a chart: a curve of 100k transitions is drawn from
#: evenly spaced samples (see `sampled_steps`)
MAX_POINTS = 400

_LOG_STATE_CHANGES = f"""
    SELECT run_id, task_id, ts, file_id, line, 0 AS sub, task_state AS state
    FROM events
    WHERE event = 'task.state' AND source <> 'monitoring' AND task_state NOT IN {WORKER_STATES}
          AND task_id IS NOT NULL AND run_id IS NOT NULL AND {of_run()}
"""

# Runs whose logs never record entering `launched` (Parsl before 2026) but do log launches.
_LEGACY_RUNS = f"""
    SELECT run_id FROM events
    WHERE run_id IS NOT NULL AND {of_run()} AND source <> 'monitoring'
    GROUP BY run_id
    HAVING count(*) FILTER (WHERE event = 'task.launched') > 0
       AND count(*) FILTER (WHERE event = 'task.state' AND task_state = 'launched') = 0
"""

# The messages that stand for unlogged state changes in those runs; `sub` orders the two
# changes one `marked for retry` line stands for.
_INFERRED_STATE_CHANGES = f"""
    SELECT e.run_id, e.task_id, e.ts, e.file_id, e.line, s.sub, s.state
    FROM events e
    JOIN (VALUES ('task.launched', 0, 'launched'), ('task.retry', 0, 'fail_retryable'),
                 ('task.retry', 1, 'pending'), ('task.retries_exhausted', 0, 'failed'),
                 ('task.dependency_failed', 0, 'dep_fail')) AS s(event, sub, state)
      ON e.event = s.event
    WHERE e.source <> 'monitoring' AND e.task_id IS NOT NULL
          AND e.run_id IN ({_LEGACY_RUNS})
"""

# Runs of a generic stream: no DFK state line at all, its records carry `task_state` themselves
# (a JSON-lines program's `{"task_state": "running", ...}`), whatever each record is named.
_STREAM_RUNS = f"""
    SELECT run_id FROM events
    WHERE run_id IS NOT NULL AND {of_run()} AND source <> 'monitoring'
    GROUP BY run_id
    HAVING count(*) FILTER (WHERE event IN ('task.state', 'task.launched')) = 0
       AND count(*) FILTER (WHERE task_state IS NOT NULL) > 0
"""

_STREAM_STATE_CHANGES = f"""
    SELECT run_id, task_id, ts, file_id, line, 0 AS sub, task_state AS state
    FROM events
    WHERE task_state IS NOT NULL AND source <> 'monitoring'  -- its own states: `running` too
          AND task_id IS NOT NULL AND run_id IN ({_STREAM_RUNS})
"""

_MONITORING_STATE_CHANGES = f"""
    SELECT run_id, task_id, ts, file_id, line, 0 AS sub, task_state AS state
    FROM events
    WHERE event = 'task.state' AND source = 'monitoring' AND task_state NOT IN {WORKER_STATES}
          AND task_id IS NOT NULL AND run_id IS NOT NULL AND {of_run()}
"""


def _curve_sql(changes: str) -> str:
    """SQL: the step function of per-state task counts from a set of state changes.

    Windows partition on a small integer per run rather than the 36-character run id: about
    a third faster on the 10M-event benchmark store.
    """
    return f"""
    WITH raw AS ({changes}),
    runs AS (SELECT run_id, row_number() OVER (ORDER BY run_id) AS run_key FROM (SELECT DISTINCT run_id FROM raw)),
    changes AS (SELECT r.run_key, c.* EXCLUDE (run_id) FROM raw c JOIN runs r USING (run_id)),
    ordered AS (
        SELECT *, lag(state) OVER (PARTITION BY run_key, task_id ORDER BY ts, file_id, line, sub) AS previous
        FROM changes
    ),
    transitions AS (
        SELECT *, row_number() OVER (PARTITION BY run_key ORDER BY ts, file_id, line, sub, task_id) AS step
        FROM ordered WHERE previous IS DISTINCT FROM state
    ),
    moves AS (
        SELECT run_key, step, ts, task_id, state, 1 AS change FROM transitions
        UNION ALL
        SELECT run_key, step, ts, task_id, previous, -1 FROM transitions WHERE previous IS NOT NULL
    ),
    counted AS (
        SELECT run_key, step, ts, task_id, state, change,
               CAST(sum(change) OVER (PARTITION BY run_key, state ORDER BY step
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS tasks
        FROM moves
    )
    SELECT r.run_id, c.step, c.ts, c.task_id, c.state, c.change, c.tasks
    FROM counted c JOIN runs r USING (run_key)
    ORDER BY c.run_key, c.step, c.change
    """


def states(store, run: str | None = None) -> pd.DataFrame:
    """Tasks in each DFK state over time, from the state changes in the run's logs (a generic
    stream with no DFK state lines: each record's own `task_state`).

    One row per state whose count changes at a transition: `run_id`, `step` (the transition's
    number in its run, 1, 2, ...), `ts` (seconds since the epoch, UTC), `task_id` (the task
    that moved), `state`, `change` (+1 entered, -1 left) and `tasks` (how many tasks are in
    `state` from `ts` until that state's next row). A task's first state has one row, every
    later transition two (the state left, then the state entered). `run` is a run id, prefix
    or folder name; None gives every run, each counted on its own.

    >>> curve = states(store, run="000")                      # doctest: +SKIP
    >>> curve[curve.state == "launched"].tasks.max()          # peak of tasks launched at once  # doctest: +SKIP
    """
    con = connection_of(store)
    changes = f"{_LOG_STATE_CHANGES} UNION ALL {_INFERRED_STATE_CHANGES} UNION ALL {_STREAM_STATE_CHANGES}"
    return frame(con, _curve_sql(changes), {"run": resolve_run(con, run)})


def states_from_monitoring(store, run: str | None = None) -> pd.DataFrame:
    """The same curve as `states`, from monitoring.db's status table (DFK states only).

    Its times are monitoring's own clock reads (a few tens of microseconds after the log
    line), converted from monitoring.db's local time to UTC at ingest.

    >>> states_from_monitoring(store, run="000").tail(3)     # doctest: +SKIP
    """
    con = connection_of(store)
    return frame(con, _curve_sql(_MONITORING_STATE_CHANGES), {"run": resolve_run(con, run)})


def states_wide(curve: pd.DataFrame) -> pd.DataFrame:
    """One row per transition with a column per state: the counts right after it.

    Turns the long output of `states` into the table people read (and compare):
    `run_id`, `step`, `ts`, then one column per state in order of first appearance.

    >>> states_wide(states(store, run="000")).head()          # doctest: +SKIP
    """
    if curve.empty:
        return pd.DataFrame(columns=["run_id", "step", "ts"])
    order = list(dict.fromkeys(curve.state))
    wide = curve.pivot_table(index=["run_id", "step", "ts"], columns="state", values="tasks", aggfunc="last")
    wide = wide.reindex(columns=order).groupby(level="run_id").ffill().fillna(0).astype("int64")
    wide.columns.name = None
    return wide.reset_index()


def resample(curve: pd.DataFrame, points: int = 200) -> pd.DataFrame:
    """The counts in effect at `points` evenly spaced instants of each run (for plots and
    for a table a person can read): `run_id`, `ts`, then one column per state.

    The value at an instant is the count after the last transition at or before it, so the
    peaks between two instants can be missed: use the exact curve for anything but display.

    >>> resample(states(store, run="000"), points=20)         # doctest: +SKIP
    """
    return sample_steps(states_wide(curve).drop(columns=["step"]), points)


def sample_steps(steps: pd.DataFrame, points: int = 200) -> pd.DataFrame:
    """Any step function in wide form (`run_id`, `ts`, value columns; a value holds until the
    run's next row) at `points` evenly spaced instants from each run's first to last row.

    >>> sample_steps(between(store, "task.launched", "htex.worker.received"), points=10)  # doctest: +SKIP
    """
    if steps.empty:
        return steps
    frames = []
    for run_id, rows in steps.groupby("run_id", sort=False):
        start, end = rows.ts.min(), rows.ts.max()
        instants = pd.DataFrame({"ts": [start + (end - start) * i / max(points - 1, 1) for i in range(points)]})
        values = rows.drop(columns=["run_id"]).astype({"ts": "float64"}).sort_values("ts", kind="stable")
        frames.append(pd.merge_asof(instants, values, on="ts", direction="backward").assign(run_id=run_id))
    out = pd.concat(frames, ignore_index=True)
    return out[["run_id", "ts"] + [c for c in out.columns if c not in ("run_id", "ts")]]


def sampled_steps(wide: pd.DataFrame, points: int = MAX_POINTS) -> pd.DataFrame:
    """A wide step function (`ts` and one column per line) at `points` evenly spaced instants
    when it has more rows, else itself: what a chart of it draws.

    >>> len(sampled_steps(pd.DataFrame({"ts": range(1000), "n": range(1000)}), points=10))
    10
    """
    if len(wide) <= points:
        return wide
    return sample_steps(wide.assign(run_id="run"), points).drop(columns=["run_id"]).reset_index(drop=True)
