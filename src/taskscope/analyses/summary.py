"""Summary of a run, per app: how many tasks ended how, how many tries it took, what failed and
why, how much time failed tries wasted (badput), how long the run took and how fast tasks
completed over time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from taskscope._sql import connection_of, of_run, registered
from taskscope.analyses.runs import FINAL_STATES, resolve_run
from taskscope.analyses.tasks import FAILED_TRIES, FAILURE_RECORDS, tasks

#: final-state columns of `Summary.apps`, in this order, plus `unfinished`
STATE_COLUMNS = ("exec_done", "memo_done", "failed", "dep_fail")


@dataclass
class Summary:
    """What `summary` returns: four DataFrames, every one with a `run_id` column.

    - `runs`: one row per run: `tasks`, `done` (exec_done + memo_done), `failed` (failed +
      dep_fail), `unfinished`, `tries`, `failed_tries`, `badput_s` (the time failed tries ran),
      `badput_measured_by` (how many failed tries each way measured it: "worker 2, launch 1";
      see `_FAILED_TRIES`), `first_submit_ts`,
      `last_end_ts`, `makespan_s` (first submit to last end), `throughput_per_s` (done / makespan:
      tasks done, not failed; `compare`'s end rate counts both).
    - `apps`: one row per run and app: `tasks`, a count per final state (`exec_done`,
      `memo_done`, `failed`, `dep_fail`, `unfinished`: no final state yet), `tries`,
      `retried_tasks` (tasks that needed more than one try), `failed_tries`, `badput_s` (the time
      failed tries ran: worker received to finished, else monitoring's running to running_ended,
      else launch to failure), `badput_measured_by`, `makespan_s` (the app's first submit to its
      last end), `mean_duration_s` (submit to end, per task).
    - `failures`: one row per run, app and exception type: `failed_tries` (tries that failed
      with it), `tasks` (distinct tasks with at least one such try: a task whose tries failed
      in different ways counts in each of their rows), `tasks_failed` (tasks that ended failed
      with it, their last try's exception: each failed task counts in one row only, so the
      column sums to the tasks that ended `failed`). `failed_tries` and `tasks_failed` sum true
      over rows, for any stream: see `taskscope.analyses.tasks.FAILED_TRIES`.
    - `throughput`: tasks completed (done) per time bin, per run and app: `bin_start_ts`, `bin_s`,
      `completed`, `per_s`.
    """

    runs: pd.DataFrame
    apps: pd.DataFrame
    failures: pd.DataFrame
    throughput: pd.DataFrame


# One row per failed try (`FAILED_TRIES`: which tries failed, with what; `task_rows` is the
# registered frame of `tasks`). Its running time (`wall_s`, what badput adds up) is measured by
# the first of: the worker's receive to finish lines, monitoring's `running` to `running_ended`
# rows, the DFK's launch to failure (which includes the time the try waited for a worker);
# `measured_by` says which, NULL for a try none of them timed (one whose events carry no try id).
_FAILED_TRIES = f"""
    WITH {FAILURE_RECORDS}, {FAILED_TRIES},
    per_try AS (
        SELECT run_id, task_id, try_id,
               min(ts) FILTER (WHERE event = 'task.launched') AS launch_ts,
               min(ts) FILTER (WHERE event = 'try.info') AS monitoring_launch_ts,
               any_value(TRY_CAST(attrs->>'task_try_time_returned' AS DOUBLE)) FILTER (WHERE event = 'try.info')
                   AS monitoring_return_ts,
               min(ts) FILTER (WHERE event = 'htex.worker.received') AS worker_start_ts,
               max(ts) FILTER (WHERE event = 'htex.worker.finished') AS worker_end_ts,
               min(ts) FILTER (WHERE event = 'task.state' AND task_state = 'running' AND source = 'monitoring')
                   AS running_ts,
               max(ts) FILTER (WHERE event = 'task.state' AND task_state = 'running_ended' AND source = 'monitoring')
                   AS running_ended_ts
        FROM events SEMI JOIN failed_tries USING (run_id, task_id, try_id)  -- the failed tries' events only
        WHERE event IN ('task.launched', 'try.info', 'htex.worker.received', 'htex.worker.finished', 'task.state')
              AND task_id IS NOT NULL AND try_id IS NOT NULL AND run_id IS NOT NULL AND {of_run()}
        GROUP BY run_id, task_id, try_id
    ),
    spans AS (
        SELECT f.run_id, f.task_id, f.try_id, f.exception_type, f.fail_ts, p.* EXCLUDE (run_id, task_id, try_id),
               CASE WHEN worker_end_ts >= worker_start_ts THEN 'worker'
                    WHEN running_ended_ts >= running_ts THEN 'monitoring'
                    WHEN fail_ts >= launch_ts OR monitoring_return_ts >= monitoring_launch_ts THEN 'launch'
               END AS measured_by
        FROM failed_tries f LEFT JOIN per_try p USING (run_id, task_id, try_id)
    )
    SELECT run_id, task_id, try_id, exception_type,
           CASE measured_by WHEN 'worker' THEN worker_end_ts - worker_start_ts
                            WHEN 'monitoring' THEN running_ended_ts - running_ts
                            ELSE coalesce(fail_ts - launch_ts, monitoring_return_ts - monitoring_launch_ts)
           END AS wall_s,
           measured_by
    FROM spans
"""


def summary(store, run: str | None = None, bin_s: float | None = None) -> Summary:
    """Per run and per app: outcomes, tries, failure causes, badput, makespan and throughput.

    `bin_s` is the width of the throughput bins (default: a 1-2-5 step giving about 50 bins
    over the run). The task counts are those of `taskscope.analyses.tasks.tasks`.

    >>> result = summary(store, run="000")                          # doctest: +SKIP
    >>> result.apps[["app_name", "tasks", "exec_done", "failed", "badput_s"]]  # doctest: +SKIP
    """
    con = connection_of(store)
    run_id = resolve_run(con, run)
    task_rows = tasks(con, run_id)
    with registered(con, "task_rows", task_rows[["run_id", "task_id", "final_state", "tries"]]):
        failed_tries = con.execute(_FAILED_TRIES, {"run": run_id}).df()
    failed_tries = failed_tries.merge(task_rows[["run_id", "task_id", "app_name", "final_state", "tries"]],
                                      on=["run_id", "task_id"], how="left")
    apps = _apps(task_rows, failed_tries)
    return Summary(
        runs=_runs(task_rows, failed_tries),
        apps=apps,
        failures=_failures(failed_tries),
        throughput=_throughput(task_rows, bin_s),
    )


def _apps(task_rows: pd.DataFrame, failed_tries: pd.DataFrame) -> pd.DataFrame:
    keys = ["run_id", "app_name"]
    rows = task_rows.assign(
        app_name=task_rows.app_name.fillna("(unknown)"),
        outcome=task_rows.final_state.where(task_rows.final_state.isin(FINAL_STATES), "unfinished"),
        retried=task_rows.tries > 1,
        duration_s=task_rows.end_ts - task_rows.submit_ts,
    )
    grouped = rows.groupby(keys, dropna=False)
    apps = grouped.agg(
        tasks=("task_id", "size"), tries=("tries", "sum"), retried_tasks=("retried", "sum"),
        first_submit_ts=("submit_ts", "min"), last_end_ts=("end_ts", "max"), mean_duration_s=("duration_s", "mean"),
    )
    outcomes = pd.crosstab([rows.run_id, rows.app_name], rows.outcome)
    outcomes = outcomes.reindex(columns=[*STATE_COLUMNS, "unfinished"], fill_value=0)
    badput = failed_tries.assign(app_name=failed_tries.app_name.fillna("(unknown)")).groupby(keys).agg(
        failed_tries=("try_id", "size"), badput_s=("wall_s", "sum"), badput_measured_by=("measured_by", _measures))
    apps = apps.join(outcomes).join(badput).reset_index()
    apps = apps.fillna({"failed_tries": 0, "badput_s": 0.0, "badput_measured_by": ""})
    apps["makespan_s"] = apps.last_end_ts - apps.first_submit_ts
    columns = ["run_id", "app_name", "tasks", *STATE_COLUMNS, "unfinished", "tries", "retried_tasks",
               "failed_tries", "badput_s", "badput_measured_by", "makespan_s", "mean_duration_s"]
    return apps[columns].astype({c: "int64" for c in ["tasks", *STATE_COLUMNS, "unfinished", "tries",
                                                      "retried_tasks", "failed_tries"]})


def _runs(task_rows: pd.DataFrame, failed_tries: pd.DataFrame) -> pd.DataFrame:
    rows = task_rows.assign(
        done=task_rows.final_state.isin(["exec_done", "memo_done"]),
        failed=task_rows.final_state.isin(["failed", "dep_fail"]),
        unfinished=~task_rows.final_state.isin(FINAL_STATES),
    )
    runs = rows.groupby("run_id").agg(
        tasks=("task_id", "size"), done=("done", "sum"), failed=("failed", "sum"), unfinished=("unfinished", "sum"),
        tries=("tries", "sum"), first_submit_ts=("submit_ts", "min"), last_end_ts=("end_ts", "max"),
    )
    badput = failed_tries.groupby("run_id").agg(failed_tries=("try_id", "size"), badput_s=("wall_s", "sum"),
                                                badput_measured_by=("measured_by", _measures))
    runs = runs.join(badput).fillna({"failed_tries": 0, "badput_s": 0.0, "badput_measured_by": ""}).reset_index()
    runs["makespan_s"] = runs.last_end_ts - runs.first_submit_ts
    runs["throughput_per_s"] = runs.done / runs.makespan_s.where(runs.makespan_s > 0)
    columns = ["run_id", "tasks", "done", "failed", "unfinished", "tries", "failed_tries", "badput_s",
               "badput_measured_by", "first_submit_ts", "last_end_ts", "makespan_s", "throughput_per_s"]
    return runs[columns].astype({c: "int64" for c in ["tasks", "done", "failed", "unfinished", "tries", "failed_tries"]})


def _measures(measured_by: pd.Series) -> str:
    """How the failed tries' running times were measured: "worker 2, launch 1"."""
    counts = measured_by.fillna("unmeasured").value_counts()
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def _failures(failed_tries: pd.DataFrame) -> pd.DataFrame:
    columns = ["run_id", "app_name", "exception_type", "failed_tries", "tasks", "tasks_failed"]
    if failed_tries.empty:
        return pd.DataFrame(columns=columns)
    rows = failed_tries.assign(
        app_name=failed_tries.app_name.fillna("(unknown)"),
        # a failed task is counted once, under the exception of its last try (the one that failed it)
        failed_task=failed_tries.task_id.where(failed_tries.final_state.isin(["failed", "dep_fail"])
                                               & (failed_tries.try_id == failed_tries.tries - 1)),
    )
    failures = rows.groupby(["run_id", "app_name", "exception_type"]).agg(
        failed_tries=("try_id", "size"), tasks=("task_id", "nunique"), tasks_failed=("failed_task", "nunique"),
    ).reset_index()
    return failures.sort_values(["run_id", "failed_tries"], ascending=[True, False], ignore_index=True)[columns]


def nice_bin(span_s: float, bins: int = 50) -> float:
    """The smallest 1-2-5 step (…, 0.1, 0.2, 0.5, 1, 2, 5, …) that splits `span_s` into at most `bins`.

    >>> nice_bin(10.0)
    0.2
    """
    if not span_s or span_s <= 0 or math.isnan(span_s):
        return 1.0
    raw = span_s / bins
    power = 10.0 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if step * power >= raw:
            return round(step * power, 12)
    return 10 * power


def _throughput(task_rows: pd.DataFrame, bin_s: float | None) -> pd.DataFrame:
    columns = ["run_id", "app_name", "bin_start_ts", "bin_s", "completed", "per_s"]
    frames = []
    for run_id, rows in task_rows.groupby("run_id"):
        done = rows[rows.final_state.isin(["exec_done", "memo_done"]) & rows.end_ts.notna()]
        if done.empty:
            continue
        start = rows.submit_ts.min() if rows.submit_ts.notna().any() else done.end_ts.min()
        width = bin_s or nice_bin(done.end_ts.max() - start)
        bins = ((done.end_ts - start) // width).astype("int64")
        counts = done.assign(app_name=done.app_name.fillna("(unknown)"), bin=bins).groupby(["app_name", "bin"]).size()
        counts = counts.rename("completed").reset_index()
        counts["bin_start_ts"] = start + counts["bin"] * width
        frames.append(counts.assign(run_id=run_id, bin_s=width, per_s=counts.completed / width))
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
