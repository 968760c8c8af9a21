"""Common path: the sequence of steps tasks go through, grouped into variants.

A *step* is one kind of event in a task's life: its source plus its message template
(`parsl: Task <num> changing state from pending to launched`). The n-th time a task passes
the same step (a retry, a second state change to `pending`) is a step of its own
(`occurrence` 2, 3, ...), so retried tasks have more steps than tasks that ran once.

A *variant* is the set of steps a task went through. Tasks with the same steps form one
variant, however their events interleave: events logged by different processes within
microseconds of each other (the interchange's "Sent tasks" and the manager's "Got executor
tasks") come in either order, and a strict ordering would split one path into dozens of
variants that differ only by those races. This is the prototype `findcommon`'s sorted-key
comparison; each variant still reports how many distinct orderings its tasks had
(`orderings`). Steps in a variant are listed in the order of their mean time since the task's
first event, which gives the synthetic "average task" of the observability report.

Left out as per-task noise: the `task.stdout` / `task.stderr` redirection lines and
monitoring resource samples (`task.resource`). Events from `monitoring.db` repeat the DFK's
state changes with the database's timestamps, so they are used only for runs whose logs were
not ingested (pass `sources=` to choose explicitly).

Events that name several tasks (`event_task_links`, the interchange's `Sent tasks: [4, 5]`)
count for every task they name, as in `taskscope.analyses.tasks.timeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from taskscope._sql import connection_of, of_run
from taskscope.analyses.runs import resolve_run

#: events that say nothing about where a task is (and vary in number from task to task)
NOISE_EVENTS: tuple[str, ...] = ("task.stdout", "task.stderr", "task.resource")
#: how close two steps logged by different processes can be and still be told apart: Parsl's
#: text logs have millisecond times, and two processes' clocks agree no better
CLOCK_RESOLUTION_S = 0.001


@dataclass(frozen=True)
class CommonPath:
    """What `common_path` returns.

    `variants`: one row per variant, most common first (`variant` 1 is the common path):
    tasks, share of tasks, steps, orderings (distinct time orders of those steps among its
    tasks), runs, apps, duration (first to last step) mean/median/p95 in seconds, and an
    example task (`example_run_id`, `example_task_id`) to look at with `taskscope timeline`.

    `steps`: one row per (variant, step) in order of mean time since the task's first event:
    `position`, `source`, `event`, `template`, `occurrence`, `label`, `tasks`, and in seconds
    the mean/median/p95 of `since_first` (since the task's first step), `since_previous` (since
    the task's own previous step, in time order) and `until_next` (to the task's next step:
    the time tasks wait in this step), plus `until_next_p25`/`until_next_p75` and
    `until_next_total` (the sum over the variant's tasks). A task's time at a step is never
    before its time at the step the order puts ahead of it: a step logged earlier than that
    (by another process, within the clock's resolution) counts as reached with it, so no time
    is negative. `stage` numbers the variant's stages: a step reached within
    `resolution_s` (median) of the step before it is in that step's stage; `stage_wait_mean`,
    `_median`, `_p25`, `_p75`, `_p95`, `_total` are the time from the stage's first step to the
    next stage's (the same on every step of the stage).
    """

    variants: pd.DataFrame
    steps: pd.DataFrame

    def variant_steps(self, variant: int = 1) -> pd.DataFrame:
        """The steps of one variant (1 = the most common), in order."""
        return self.steps[self.steps["variant"] == variant].reset_index(drop=True)

    @property
    def dominant(self) -> pd.DataFrame:
        """The steps of the most common variant."""
        return self.variant_steps(1)


# Per task event: its step key, time since the task's first step, and times to its neighbours.
_TASK_STEPS = f"""
WITH direct AS (
    SELECT run_id, task_id, ts, file_id, line, source, event, template FROM events
    WHERE task_id IS NOT NULL AND run_id IS NOT NULL AND {of_run()}
      AND NOT list_contains($excluded, coalesce(event, ''))
),
linked AS (
    SELECT l.run_id, l.task_id, e.ts, e.file_id, e.line, e.source, e.event, e.template
    FROM event_task_links l JOIN events e ON e.file_id = l.file_id AND e.line = l.line
    WHERE e.task_id IS NULL AND {of_run("l.run_id")}
      AND NOT list_contains($excluded, coalesce(e.event, ''))
),
runs_with_logs AS (
    SELECT DISTINCT run_id FROM direct WHERE source <> 'monitoring'
),
kept AS (
    SELECT * FROM (SELECT * FROM direct UNION ALL SELECT * FROM linked)
    WHERE CASE WHEN $sources IS NULL
               THEN source <> 'monitoring' OR run_id NOT IN (SELECT run_id FROM runs_with_logs)
               ELSE list_contains($sources, source) END
),
step_ids AS (
    SELECT source, step_text, any_value(event) AS event, any_value(template) AS template,
           row_number() OVER (ORDER BY source, step_text) AS step_id
    FROM (SELECT source, coalesce(template, event, '') AS step_text, event, template FROM kept)
    GROUP BY source, step_text
),
task_steps AS (
    -- tasks keyed by one integer (a hash of run and task id): sorting on it is much cheaper than on text
    SELECT hash(k.run_id, k.task_id) AS task_key, k.run_id, k.task_id, k.ts, s.step_id,
           row_number() OVER in_time AS position,
           k.ts - first_value(k.ts) OVER in_time AS since_first,
           row_number() OVER (PARTITION BY hash(k.run_id, k.task_id), s.step_id ORDER BY k.ts, k.file_id, k.line)
               AS occurrence
    FROM kept k JOIN step_ids s ON s.source = k.source AND s.step_text = coalesce(k.template, k.event, '')
    WINDOW in_time AS (PARTITION BY hash(k.run_id, k.task_id) ORDER BY k.ts, k.file_id, k.line)
),
task_variants AS (
    SELECT task_key, any_value(run_id) AS run_id, any_value(task_id) AS task_id,
           hash(list(step_id ORDER BY step_id)) AS signature,
           hash(list(step_id ORDER BY position)) AS ordering,
           count(*) AS steps, max(since_first) AS duration
    FROM task_steps GROUP BY task_key
),
variants AS (
    SELECT signature, count(*) AS tasks, count(*) / sum(count(*)) OVER () AS share, any_value(steps) AS steps,
           count(DISTINCT ordering) AS orderings, count(DISTINCT run_id) AS runs,
           avg(duration) AS duration_mean, median(duration) AS duration_median,
           quantile_cont(duration, 0.95) AS duration_p95,
           arg_min(run_id, (run_id, natural_key(task_id))) AS example_run_id,
           arg_min(task_id, (run_id, natural_key(task_id))) AS example_task_id,
           row_number() OVER (ORDER BY count(*) DESC, min((run_id, natural_key(task_id)))) AS variant
    FROM task_variants tv GROUP BY signature
)
"""

# Per task of each variant: its time at every step of the variant's order (`reached_ts`).
_CANONICAL_STEPS = (
    _TASK_STEPS
    + """,
variant_steps AS (
    SELECT ts.task_key, ts.ts, ts.step_id, ts.position, ts.occurrence, ts.since_first, v.variant
    FROM task_steps ts JOIN task_variants tv USING (task_key) JOIN variants v USING (signature)
),
step_order AS (
    -- the variant's order of steps: by mean rank in the tasks' own time order (a Borda count)
    SELECT variant, step_id, occurrence,
           row_number() OVER (PARTITION BY variant ORDER BY avg(position), avg(since_first), step_id) AS canonical
    FROM variant_steps GROUP BY variant, step_id, occurrence
),
ordered_steps AS (
    -- a task's time at each step of the variant's order: a step logged before the step the
    -- order puts ahead of it (another process, within the clock's resolution) is reached
    -- with it, so no wait is negative
    SELECT vs.*, so.canonical, vs.ts - vs.since_first AS first_ts,
           max(vs.ts) OVER (PARTITION BY vs.task_key ORDER BY so.canonical
                            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS reached_ts
    FROM variant_steps vs JOIN step_order so USING (variant, step_id, occurrence)
),
canonical_steps AS (
    SELECT * REPLACE (reached_ts - first_ts AS since_first),
           reached_ts - lag(reached_ts) OVER in_order AS since_previous,
           lead(reached_ts) OVER in_order - reached_ts AS until_next
    FROM ordered_steps
    WINDOW in_order AS (PARTITION BY task_key ORDER BY canonical)
)"""
)

_VARIANTS_AND_STEPS = (
    _CANONICAL_STEPS
    + """,
step_stats AS (
    SELECT variant, step_id, occurrence, any_value(canonical) AS position, count(*) AS tasks,
           avg(since_first) AS since_first_mean, median(since_first) AS since_first_median,
           quantile_cont(since_first, 0.95) AS since_first_p95,
           avg(since_previous) AS since_previous_mean, median(since_previous) AS since_previous_median,
           quantile_cont(since_previous, 0.95) AS since_previous_p95,
           avg(until_next) AS until_next_mean, median(until_next) AS until_next_median,
           quantile_cont(until_next, [0.25, 0.75, 0.95]) AS until_next_quartiles,
           sum(until_next) AS until_next_total
    FROM canonical_steps
    GROUP BY variant, step_id, occurrence
),
step_stages AS (
    -- a step reached within the clock's resolution of the step before it (median over the
    -- variant's tasks) is part of that step's stage
    SELECT variant, step_id, occurrence,
           CAST(sum(CASE WHEN since_previous_median IS NULL OR since_previous_median > $resolution THEN 1 ELSE 0 END)
                OVER (PARTITION BY variant ORDER BY position) AS BIGINT) AS stage
    FROM step_stats
),
task_stage_waits AS (
    -- per task: from the stage's first step to the next stage's first step
    SELECT cs.task_key, st.variant, st.stage, sum(cs.until_next) AS wait
    FROM canonical_steps cs JOIN step_stages st USING (variant, step_id, occurrence)
    GROUP BY cs.task_key, st.variant, st.stage
),
stage_stats AS (
    SELECT variant, stage, avg(wait) AS stage_wait_mean, median(wait) AS stage_wait_median,
           quantile_cont(wait, [0.25, 0.75, 0.95]) AS stage_wait_quartiles, sum(wait) AS stage_wait_total
    FROM task_stage_waits GROUP BY variant, stage
),
named_stats AS (
    SELECT st.*, si.source, si.event, si.template, sg.stage, ss.stage_wait_mean, ss.stage_wait_median,
           ss.stage_wait_quartiles, ss.stage_wait_total
    FROM step_stats st JOIN step_ids si USING (step_id)
    JOIN step_stages sg USING (variant, step_id, occurrence)
    JOIN stage_stats ss USING (variant, stage)
)
SELECT s.variant, s.position,
       s.source, s.event, s.template, s.occurrence,
       s.source || ': ' || coalesce(s.template, s.event, '')
           || CASE WHEN s.occurrence > 1 THEN ' (#' || s.occurrence || ')' ELSE '' END AS label,
       s.tasks,
       s.since_first_mean, s.since_first_median, s.since_first_p95,
       s.since_previous_mean, s.since_previous_median, s.since_previous_p95,
       s.until_next_mean, s.until_next_median,
       s.until_next_quartiles[1] AS until_next_p25, s.until_next_quartiles[2] AS until_next_p75,
       s.until_next_quartiles[3] AS until_next_p95, s.until_next_total,
       s.stage, s.stage_wait_mean, s.stage_wait_median,
       s.stage_wait_quartiles[1] AS stage_wait_p25, s.stage_wait_quartiles[2] AS stage_wait_p75,
       s.stage_wait_quartiles[3] AS stage_wait_p95, s.stage_wait_total,
       v.tasks AS variant_tasks, v.share AS variant_share,
       v.steps AS variant_steps, v.orderings, v.runs,
       v.duration_mean, v.duration_median, v.duration_p95, v.example_run_id, v.example_task_id
FROM named_stats s JOIN variants v USING (variant)
ORDER BY s.variant, position
"""
)


_VARIANT_COLUMNS = {
    "variant_tasks": "tasks", "variant_share": "share", "variant_steps": "steps", "orderings": "orderings",
    "runs": "runs", "duration_mean": "duration_mean", "duration_median": "duration_median",
    "duration_p95": "duration_p95", "example_run_id": "example_run_id", "example_task_id": "example_task_id",
}


def common_path(
    store,
    run: str | None = None,
    exclude_events: Sequence[str] = NOISE_EVENTS,
    sources: Sequence[str] | None = None,
    resolution_s: float = CLOCK_RESOLUTION_S,
) -> CommonPath:
    """The variants of the task path and, per variant, the timing of every step.

    Use it to see what a typical task goes through and where its time goes; `variants`
    shows how many tasks took another path (retries, failures, another executor).
    `run` is a run id, prefix or folder name; None pools the tasks of every run (the
    steps are templates, so runs of the same workflow share variants). `exclude_events`
    are canonical event names left out; `sources` (e.g. `["parsl", "interchange"]`)
    keeps only those sources (default: every source, monitoring.db only where there are
    no logs). `resolution_s` is the clock's resolution: steps reached within it of each
    other form one stage.

    >>> path = common_path(store, run="000")                          # doctest: +SKIP
    >>> path.variants[["variant", "tasks", "share", "steps"]]         # doctest: +SKIP
    >>> path.dominant[["since_first_mean", "label"]]                  # doctest: +SKIP
    """
    con = connection_of(store)
    params = {
        "run": resolve_run(con, run),
        "excluded": list(exclude_events),
        "sources": None if sources is None else list(sources),
        "resolution": resolution_s,
    }
    rows = con.execute(_VARIANTS_AND_STEPS, params).df()
    variant_level = list(_VARIANT_COLUMNS)
    variants = (
        rows.groupby("variant", sort=True)[variant_level].first().rename(columns=_VARIANT_COLUMNS).reset_index()
    )
    steps = rows.drop(columns=variant_level)
    return CommonPath(variants=variants, steps=steps.reset_index(drop=True))


_SPAN_WAITS = (
    _CANONICAL_STEPS
    + """,
anchors AS (
    SELECT unnest($anchors, recursive := true)
),
dominant_steps AS (
    SELECT cs.task_key, cs.canonical, cs.reached_ts, si.source, si.step_text, cs.occurrence
    FROM canonical_steps cs JOIN step_ids si USING (step_id)
    WHERE cs.variant = 1
),
task_ends AS (
    SELECT task_key, max(reached_ts) AS end_ts FROM dominant_steps GROUP BY task_key
),
anchored AS (
    -- per task: from each anchor to the next anchor it reached, the last one to its last step
    SELECT a.span, coalesce(lead(d.reached_ts) OVER (PARTITION BY d.task_key ORDER BY d.canonical), e.end_ts)
                   - d.reached_ts AS wait
    FROM dominant_steps d
    JOIN anchors a ON a.source = d.source AND a.step_text = d.step_text AND a.occurrence = d.occurrence
    JOIN task_ends e USING (task_key)
)
SELECT span, count(*) AS tasks, avg(wait) AS mean, median(wait) AS median,
       quantile_cont(wait, 0.25) AS p25, quantile_cont(wait, 0.75) AS p75
FROM anchored GROUP BY span ORDER BY span
"""
)


def step_text(source_row) -> str:
    """A step's text as steps are keyed: its template, else its event name, else ''.

    >>> step_text({"template": None, "event": "task.state"})
    'task.state'
    """
    for column in ("template", "event"):
        value = source_row[column]
        if value is not None and not pd.isna(value):
            return value
    return ""


def span_waits(
    store,
    run: str,
    anchors: Sequence[tuple[str, str, int]],
    exclude_events: Sequence[str] = NOISE_EVENTS,
) -> pd.DataFrame:
    """Per anchor step, how long the run's common-path tasks took from it to the next anchor
    they reached (the last anchor: to the task's last step), in seconds.

    `anchors` are step keys `(source, step_text, occurrence)` (`step_text` as `step_text`
    gives it). Returns one row per anchor the run's common path has, indexed by the anchor's
    position in `anchors`: `tasks`, `mean`, `median`, `p25`, `p75`. It measures the same span
    of the path in two runs whose stages split differently, which `compare` needs.

    >>> span_waits(store, "000", [("parsl", "Task <num> submitted for App <name>", 1)])  # doctest: +SKIP
    """
    con = connection_of(store)
    params = {
        "run": resolve_run(con, run),
        "excluded": list(exclude_events),
        "sources": None,
        "anchors": [{"span": index, "source": source, "step_text": text, "occurrence": occurrence}
                    for index, (source, text, occurrence) in enumerate(anchors)],
    }
    if not anchors:
        return pd.DataFrame(columns=["tasks", "mean", "median", "p25", "p75"])
    return con.execute(_SPAN_WAITS, params).df().set_index("span")
