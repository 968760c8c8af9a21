"""Bottlenecks: where on the common path tasks wait longest, and whether workers sat idle
meanwhile.

The time a task *waits in* a step is the time from that step's event to the task's next event
(`until_next` of `taskscope.analyses.common_path`); summed over the tasks of the dominant
variant it ranks the steps. A step's wait belongs to the stage that logged the step (its
`source`): the DFK (`parsl`), the interchange, the manager or the worker (a source of another
system is its own stage: the stages of a `jsonl` stream are just `jsonl`); the wait after
"interchange: Put task onto pending_task_queue" is time queued in the interchange, the wait
after "parsl: initializing state to pending" time in the DFK before launch. One exception: the
wait after the DFK's "Parsl task N try M launched on executor" line (`task.launched`) is the
`executor`'s, though the DFK logged the line: the task has left the DFK, and until the next
step it travels to the interchange, queues there and waits for a worker (or a block to start).
At Parsl's default log levels the interchange logs no line per task, so that whole wait, from
the launch to the worker receiving the task, is the executor's; the DFK's stage ends at the
launch.

Idle workers: worker slots are the distinct (manager_id, worker_id) pairs seen in the run; a
slot is busy from `htex.worker.received` to `htex.worker.finished` of a task. A try is waiting
upstream from when it became ready (its latest entry into `pending`, or the end of its last
dependency if later) until a worker received it. Whenever slots were idle while tries waited,
`min(idle slots, waiting tries)` slot-seconds were lost. Only the time from the first task a
worker received to the last it finished counts: before that the workers were still starting
(block start-up), which is not idleness.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from taskscope._sql import connection_of
from taskscope.analyses.common_path import common_path
from taskscope.analyses.runs import FINAL_STATES, resolve_run

#: the stage of the workflow system that logs each source
STAGES: dict[str, str] = {
    "parsl": "DFK",
    "interchange": "interchange",
    "manager": "manager",
    "worker": "worker",
    "monitoring": "monitoring",
}
#: steps whose wait belongs to another stage than the process that logged them: a launched
#: task is the executor's until the next step, whoever logs that
HANDED_ON: dict[str, str] = {"task.launched": "executor"}
#: the stages of a workflow system taskscope knows; a step any other source logged has that
#: source as its stage (`jsonl`, `text`, `academy`): where it was logged, not a stage of the system
KNOWN_STAGES = frozenset(STAGES.values()) | frozenset(HANDED_ON.values())


@dataclass(frozen=True)
class Bottlenecks:
    """What `bottlenecks` returns.

    `steps`: the dominant variant's steps ranked by `wait_total_s` (seconds tasks spent from
    this step to their next one, summed), with `rank`, `stage`, `label`, `tasks`,
    `wait_mean_s`, `wait_median_s`, `wait_p95_s` and `wait_share` (of all waiting).

    `stages`: wait per stage, longest first (`stage`, `wait_total_s`, `wait_share`, `steps`).

    `workers`: one row: `slots`, `busy_slot_s`, `capacity_slot_s` (slots × first receive to
    last finish), `utilisation`, `idle_while_waiting_slot_s`, `idle_while_waiting_s` (wall
    time with idle slots and waiting tries), `max_waiting`. Empty if the run has no HTEX
    worker events.
    """

    run_id: str | None
    steps: pd.DataFrame
    stages: pd.DataFrame
    workers: pd.DataFrame

    @property
    def slowest_stage(self) -> str | None:
        """The stage where tasks wait longest in total."""
        return None if self.stages.empty else str(self.stages["stage"].iloc[0])

    @property
    def stages_are_sources(self) -> bool:
        """True when no step belongs to a known stage (DFK, executor, interchange, manager,
        worker): the stages are only the sources that logged the steps (a generic stream's
        `jsonl`, Academy's `academy`), and the steps say more than the stages."""
        return not self.stages.empty and not self.stages["stage"].isin(KNOWN_STAGES).any()

    @property
    def workers_idle_while_waiting(self) -> bool | None:
        """Whether worker slots sat idle while tries waited upstream (None: no worker events)."""
        if self.workers.empty:
            return None
        return bool(self.workers["idle_while_waiting_slot_s"].iloc[0] > 0)


def bottlenecks(store, run: str | None = None) -> Bottlenecks:
    """Rank the steps of the common path by the time tasks wait in them; name the stage that
    holds tasks longest; measure worker slots left idle while tasks waited upstream.

    Needs one run: without `run` (or with several runs in the store) the latest run is used.

    >>> found = bottlenecks(store, run="000")                                       # doctest: +SKIP
    >>> found.slowest_stage, found.workers_idle_while_waiting                       # doctest: +SKIP
    ('interchange', False)
    >>> found.steps[["rank", "stage", "wait_total_s", "label"]]                     # doctest: +SKIP
    """
    con = connection_of(store)
    run_id = resolve_run(con, run) if run is not None else latest_run(con)
    dominant = common_path(con, run=run_id).dominant if run_id is not None else pd.DataFrame()
    steps = _ranked_steps(dominant)
    return Bottlenecks(run_id=run_id, steps=steps, stages=_stages(steps), workers=_workers(con, run_id))


def latest_run(con) -> str | None:
    """The run whose events end last."""
    rows = con.execute(
        "SELECT run_id FROM events WHERE run_id IS NOT NULL GROUP BY run_id ORDER BY max(ts) DESC LIMIT 1"
    ).fetchall()
    return rows[0][0] if rows else None


def _ranked_steps(dominant: pd.DataFrame) -> pd.DataFrame:
    columns = ["rank", "stage", "label", "tasks", "wait_total_s", "wait_mean_s", "wait_median_s",
               "wait_p95_s", "wait_share", "position", "source", "event", "template", "occurrence"]
    if dominant.empty:
        return pd.DataFrame(columns=columns)
    waits = dominant[dominant["until_next_total"].notna()].rename(columns={
        "until_next_total": "wait_total_s", "until_next_mean": "wait_mean_s",
        "until_next_median": "wait_median_s", "until_next_p95": "wait_p95_s",
    })
    waits = waits.sort_values(["wait_total_s", "position"], ascending=[False, True]).reset_index(drop=True)
    waits["stage"] = waits["event"].map(HANDED_ON).fillna(waits["source"].map(STAGES)).fillna(waits["source"])
    waits["wait_share"] = waits["wait_total_s"] / waits["wait_total_s"].sum()
    waits["rank"] = range(1, len(waits) + 1)
    return waits[columns]


def _stages(steps: pd.DataFrame) -> pd.DataFrame:
    if steps.empty:
        return pd.DataFrame(columns=["stage", "wait_total_s", "wait_share", "steps"])
    stages = steps.groupby("stage", as_index=False).agg(wait_total_s=("wait_total_s", "sum"), steps=("rank", "count"))
    stages["wait_share"] = stages["wait_total_s"] / stages["wait_total_s"].sum()
    return stages.sort_values("wait_total_s", ascending=False)[["stage", "wait_total_s", "wait_share", "steps"]].reset_index(drop=True)


_WORKERS = f"""
WITH run_events AS (
    SELECT * FROM events WHERE run_id = $run
),
slots AS (
    SELECT count(DISTINCT (manager_id, worker_id)) AS slots FROM run_events WHERE worker_id IS NOT NULL
),
received AS (
    SELECT task_id, try_id, min(ts) AS received_ts FROM run_events
    WHERE event = 'htex.worker.received' AND task_id IS NOT NULL GROUP BY task_id, try_id
),
pending AS (
    SELECT task_id, ts FROM run_events
    WHERE event = 'task.state' AND task_state = 'pending' AND source <> 'monitoring' AND task_id IS NOT NULL
),
task_end AS (
    SELECT task_id, max(ts) AS end_ts FROM run_events
    WHERE event = 'task.state' AND task_state IN {FINAL_STATES} AND source <> 'monitoring' GROUP BY task_id
),
dependencies_done AS (
    SELECT d.task_id, max(e.end_ts) AS ready_ts
    FROM (SELECT task_id, attrs->>'dependency_task_id' AS dependency_task_id
          FROM run_events WHERE event = 'task.dependency') d
    JOIN task_end e ON e.task_id = d.dependency_task_id
    GROUP BY d.task_id
),
waiting AS (
    SELECT r.task_id, r.try_id, r.received_ts,
           greatest(coalesce(max(p.ts), r.received_ts), coalesce(any_value(dd.ready_ts), 0)) AS ready_ts
    FROM received r
    LEFT JOIN pending p ON p.task_id = r.task_id AND p.ts <= r.received_ts
    LEFT JOIN dependencies_done dd ON dd.task_id = r.task_id
    GROUP BY r.task_id, r.try_id, r.received_ts
),
deltas AS (
    SELECT ts, 1 AS busy, 0 AS waiting FROM run_events WHERE event = 'htex.worker.received'
    UNION ALL SELECT ts, -1, 0 FROM run_events WHERE event = 'htex.worker.finished'
    UNION ALL SELECT least(ready_ts, received_ts), 0, 1 FROM waiting
    UNION ALL SELECT received_ts, 0, -1 FROM waiting
),
levels AS (
    SELECT ts,
           sum(busy) OVER ordered AS busy,
           sum(waiting) OVER ordered AS waiting,
           lead(ts) OVER ordered - ts AS dt
    FROM deltas
    WINDOW ordered AS (ORDER BY ts, busy, waiting ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
busy_span AS (
    SELECT min(ts) FILTER (WHERE event = 'htex.worker.received') AS first_ts,
           max(ts) FILTER (WHERE event = 'htex.worker.finished') AS last_ts
    FROM run_events
)
SELECT s.slots,
       sum(l.dt * l.busy) AS busy_slot_s,
       s.slots * (b.last_ts - b.first_ts) AS capacity_slot_s,
       coalesce(sum(l.dt * least(s.slots - l.busy, l.waiting)) FILTER (WHERE idle_while_waiting), 0)
           AS idle_while_waiting_slot_s,
       coalesce(sum(l.dt) FILTER (WHERE idle_while_waiting), 0) AS idle_while_waiting_s,
       max(l.waiting) AS max_waiting
FROM (SELECT *, busy < s.slots AND waiting > 0 AND ts >= b.first_ts AND ts < b.last_ts AS idle_while_waiting
      FROM levels, slots s, busy_span b) l, slots s, busy_span b
WHERE l.dt IS NOT NULL
GROUP BY s.slots, b.first_ts, b.last_ts
"""


def _workers(con, run_id: str | None) -> pd.DataFrame:
    columns = ["slots", "busy_slot_s", "capacity_slot_s", "utilisation", "idle_while_waiting_slot_s",
               "idle_while_waiting_s", "max_waiting"]
    if run_id is None:
        return pd.DataFrame(columns=columns)
    frame = con.execute(_WORKERS, {"run": run_id}).df()
    if frame.empty or not frame["slots"].iloc[0]:
        return pd.DataFrame(columns=columns)
    frame["utilisation"] = frame["busy_slot_s"] / frame["capacity_slot_s"]
    return frame[columns]
