"""A whole-run Gantt chart: each task's stages over time, one row per task or per worker slot,
and, for runs with more tasks than a page can draw, the same time aggregated per app or slot.

Stages come from the task table (`taskscope.analyses.tasks.tasks`): `pending` from submit to
launch (waiting for dependencies and an executor), `launched` from launch to the worker's
start (queued in the executor), `running` from the worker's start to the end. A stage whose
start is missing is skipped (the stage before it lasts until the next known time); a task
with no end yet stays open until the last time the run logged. With retries, the launch and
the worker's start are those of the last try, and each earlier try (`earlier_tries`) is drawn
inside the task's wait with its own launched and running stages: the wait is `pending` only
outside them.

Aggregated, each group (app or slot) has equal time bins holding the mean number of its tasks
in each stage during the bin (task-seconds in the stage within the bin / bin width), exact
rather than sampled: the bins of a stage add up to the stages' total time.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: stages in order: (name, the task table's column where it starts)
STAGES = (("pending", "submit_ts"), ("launched", "launch_ts"), ("running", "worker_start_ts"))
#: at most this many tasks are drawn one by one; above it the Gantt is aggregated
TASK_LIMIT = 2000
#: an aggregated Gantt holds about this many (group, bin) cells at most
CELL_BUDGET = 30_000
#: aggregated rows shown at most (the groups with most tasks)
GROUP_LIMIT = 500


def slot_labels(frame: pd.DataFrame) -> pd.Series:
    """The worker slot each task (its last try) ran in: `manager/worker`, else what is known of
    where it ran (host, executor), else `unknown`.

    >>> slot_labels(pd.DataFrame({"manager_id": ["m1", None], "worker_id": ["0", None],
    ...                           "host": [None, None], "executor_label": ["htex", "threads"]})).tolist()
    ['m1/0', 'threads']
    """
    def text(column: str) -> pd.Series:
        return frame[column].astype("string") if column in frame else pd.Series(pd.NA, index=frame.index, dtype="string")

    slot = text("manager_id") + "/" + text("worker_id")
    return slot.fillna(text("host")).fillna(text("executor_label")).fillna("unknown").astype(str)


def stage_bounds(frame: pd.DataFrame, stages: tuple[tuple[str, str], ...] = STAGES) -> pd.DataFrame:
    """Per task (or try), each stage's start and end (`<stage>_start`, `<stage>_end`, NaN when the
    stage is skipped) and `open` (no end yet): times never go backwards, so no stage is negative.

    >>> stage_bounds(pd.DataFrame({"submit_ts": [1.0], "launch_ts": [2.0], "worker_start_ts": [None],
    ...                            "end_ts": [5.0]}))[["pending_end", "launched_end", "running_start"]].values.tolist()
    [[2.0, 5.0, nan]]
    """
    times = frame[[column for _, column in stages] + ["end_ts"]].astype("float64").to_numpy()
    horizon = np.nanmax(times) if np.isfinite(times).any() else 0.0
    following = np.where(np.isnan(times[:, -1]), horizon, times[:, -1])
    out = np.empty((len(frame), 2 * len(stages)))
    for index in range(len(stages) - 1, -1, -1):  # last stage first: each ends where the next known one starts
        start = np.where(times[:, index] > following, following, times[:, index])  # never after what follows
        out[:, 2 * index], out[:, 2 * index + 1] = start, np.where(np.isnan(start), np.nan, following)
        following = np.where(np.isnan(start), following, start)
    columns = [f"{name}_{end}" for name, _ in stages for end in ("start", "end")]
    return pd.DataFrame(out, columns=columns, index=frame.index).assign(open=frame["end_ts"].isna().to_numpy())


#: the stages of an earlier try, drawn inside its task's wait
TRY_STAGES = STAGES[1:]


def try_bounds(frame: pd.DataFrame, tries: pd.DataFrame | None) -> pd.DataFrame:
    """The earlier tries (`taskscope.analyses.tasks.earlier_tries`) of the tasks of `frame` with
    `task` (the task's position in `frame`), `try_id`, `slot` and each try stage's start and end,
    kept inside the task's wait (`pending` of `stage_bounds`): a try with no end known lasts
    until the task's last launch. Empty when there are none.

    >>> try_bounds(frame, earlier_tries(con, run_id, ["7"]))[["task", "try_id"]]  # doctest: +SKIP
    """
    columns = ["task", "try_id", "slot"] + [f"{name}_{end}" for name, _ in TRY_STAGES for end in ("start", "end")]
    if tries is None or tries.empty:
        return pd.DataFrame(columns=columns)
    position = pd.Series(np.arange(len(frame)), index=frame.task_id.astype(str).to_numpy())
    tries = tries[tries.task_id.astype(str).isin(position.index)].reset_index(drop=True)
    task = position.loc[tries.task_id.astype(str)].to_numpy()
    wait = stage_bounds(frame).iloc[task]
    low, high = wait.pending_start.to_numpy(), wait.pending_end.to_numpy()
    times = tries[["launch_ts", "worker_start_ts", "end_ts"]].to_numpy(dtype="float64", copy=True)
    times[:, 2] = np.where(np.isnan(times[:, 2]), high, times[:, 2])
    # inside the wait (fmax/fmin: a task with no known submit or launch bounds nothing); NaN stays
    # NaN: a stage not known
    times = np.where(np.isnan(times), np.nan, np.fmin(np.fmax(times, low[:, None]), high[:, None]))
    clipped = pd.DataFrame(times, columns=["launch_ts", "worker_start_ts", "end_ts"])
    bounds = stage_bounds(clipped, TRY_STAGES).drop(columns="open")
    return pd.concat([pd.DataFrame({"task": task, "try_id": tries.try_id.to_numpy(),
                                    "slot": slot_labels(tries).to_numpy()}), bounds], axis=1)[columns]


def _rounded(values) -> list:
    """Floats to 6 decimals, NaN as None (JSON has no NaN)."""
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)
            for v in values]


def task_rows(frame: pd.DataFrame, by: str = "task", tries: pd.DataFrame | None = None) -> dict:
    """The per-task Gantt of `frame` (a task table): columns of equal length, `task_id`, `app`,
    `state`, `slot`, `row` (the row each task is drawn in: its own, or its slot's; per slot, None
    for a task that never ran on a worker, as a dep_fail task, and no row is its) and each
    stage's start and end in seconds since the epoch, plus `rows` (the row labels) and `tries`:
    the earlier tries (`try_bounds` of `tries`) as columns `task` (a position in the task
    columns), `try_id`, `slot`, `row` and their stages' starts and ends. A task's `pending`
    runs from its submission to its last try's launch; its earlier tries lie inside it.

    >>> task_rows(tasks(con, run_id))["tasks"]["task_id"][:3]  # doctest: +SKIP
    ['0', '1', '2']
    """
    bounds = stage_bounds(frame)
    slots = slot_labels(frame)
    earlier = try_bounds(frame, tries)
    if by == "slot":  # a slot's row holds what ran in it: a try that never ran (dep_fail) is in none
        ran, try_ran = bounds.running_start.notna().tolist(), earlier.running_start.notna().tolist()
        labels = sorted({s for s, r in zip(slots, ran) if r} | {s for s, r in zip(earlier.slot, try_ran) if r})
        position = {label: i for i, label in enumerate(labels)}
        row = [position[s] if r else None for s, r in zip(slots, ran)]
        try_row = [position[s] if r else None for s, r in zip(earlier.slot, try_ran)]
    else:
        labels = frame.task_id.astype(str).tolist()
        row = list(range(len(frame)))
        try_row = earlier.task.tolist()
    columns = {"task_id": frame.task_id.astype(str).tolist(),
               "app": frame.app_name.astype("string").fillna("").tolist(),
               "state": frame.final_state.astype("string").fillna("unfinished").tolist(),
               "slot": slots.tolist(), "row": row, "open": bounds.open.tolist()}
    for name, _ in STAGES:
        columns[f"{name}_start"] = _rounded(bounds[f"{name}_start"])
        columns[f"{name}_end"] = _rounded(bounds[f"{name}_end"])
    try_columns = {"task": [int(t) for t in earlier.task], "try_id": [int(t) for t in earlier.try_id],
                   "slot": earlier.slot.tolist(), "row": try_row}
    for name, _ in TRY_STAGES:
        try_columns[f"{name}_start"] = _rounded(earlier[f"{name}_start"])
        try_columns[f"{name}_end"] = _rounded(earlier[f"{name}_end"])
    return {"rows": labels, "tasks": columns, "tries": try_columns}


def _time_in_bins(group: np.ndarray, start: np.ndarray, end: np.ndarray, groups: int, bins: int,
                  width: float) -> np.ndarray:
    """Seconds each (group, bin) spends inside the intervals [start, end) (offsets from the
    first bin's start), exact: partial bins at both ends, whole bins between."""
    keep = ~(np.isnan(start) | np.isnan(end)) & (end > start)
    group, start, end = group[keep], start[keep], end[keep]
    first = np.minimum((start // width).astype(np.int64), bins - 1)
    last = np.minimum((end // width).astype(np.int64), bins - 1)
    cells = groups * (bins + 1)

    def add(column: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.bincount(group * (bins + 1) + column, weights, minlength=cells)

    same = first == last
    partial = np.where(same, end - start, (first + 1) * width - start)
    seconds = add(first, partial) + add(last, np.where(same, 0.0, end - last * width))
    whole = add(np.where(same, first, first + 1), np.where(same, 0.0, width)) - add(last, np.where(same, 0.0, width))
    held = seconds.reshape(groups, bins + 1) + np.cumsum(whole.reshape(groups, bins + 1), axis=1)
    return held[:, :bins]


def aggregated(frame: pd.DataFrame, by: str = "app", bins: int | None = None,
               tries: pd.DataFrame | None = None) -> dict:
    """The Gantt of `frame` aggregated per `by` (`app` or `slot`, returned as `group_by`): per
    group its `label`, `tasks`, task count per final state (`states`), and per stage the mean number of its tasks
    in that stage in each of `bins` equal time bins from `start_ts` (width `bin_s`); plus
    `seconds` per stage (the total the bins hold) and `groups_hidden` (groups beyond
    `GROUP_LIMIT`, fewest tasks first); per slot, a task that never ran on a worker (a dep_fail
    task) is in no group. Earlier tries (`tries`, see `try_bounds`) count in their
    launched and running stages (per slot: in the slot they ran in), and not in their task's wait.

    >>> aggregated(tasks(con, run_id), by="app")["groups"][0]["label"]  # doctest: +SKIP
    'noop'
    """
    if by == "slot":  # a slot holds the tasks that ran in it: one that never ran on a worker is in none
        frame = frame[stage_bounds(frame).running_start.notna().to_numpy()]
    bounds = stage_bounds(frame)
    earlier = try_bounds(frame, tries)
    keys = (frame.app_name.astype("string").fillna("(no app)") if by == "app" else slot_labels(frame)).astype(str)
    try_keys = keys.iloc[earlier.task.to_numpy(dtype=np.int64)] if by == "app" else earlier.slot.astype(str)
    codes, labels = pd.factorize(pd.concat([keys, try_keys], ignore_index=True), sort=True)
    codes, try_codes = codes[:len(frame)], codes[len(frame):]
    counts = np.bincount(codes, minlength=len(labels))
    order = np.lexsort((np.arange(len(labels)), -counts))  # most tasks first, then by label
    shown = order[:GROUP_LIMIT]
    bins = bins or max(20, min(200, CELL_BUDGET // max(1, len(shown))))
    starts = bounds[[f"{name}_start" for name, _ in STAGES]].to_numpy()
    ends = bounds[[f"{name}_end" for name, _ in STAGES]].to_numpy()
    first = float(np.nanmin(starts)) if np.isfinite(starts).any() else 0.0
    last = float(np.nanmax(ends)) if np.isfinite(ends).any() else first
    width = max(last - first, 1e-6) / bins
    per_stage, seconds = {}, {}

    def held(group: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        return _time_in_bins(group, start - first, end - first, len(labels), bins, width)

    for column, (name, _) in enumerate(STAGES):
        time_held = held(codes, starts[:, column], ends[:, column])
        if name in dict(TRY_STAGES):
            time_held = time_held + held(try_codes, earlier[f"{name}_start"].to_numpy(float),
                                         earlier[f"{name}_end"].to_numpy(float))
        else:  # the wait, less the earlier tries inside it (they lie within it: see try_bounds)
            task_codes = codes[earlier.task.to_numpy(dtype=np.int64)]
            span_start = earlier.launched_start.fillna(earlier.running_start).to_numpy(float)
            span_end = earlier.running_end.fillna(earlier.launched_end).to_numpy(float)
            time_held = np.maximum(time_held - held(task_codes, span_start, span_end), 0.0)
        seconds[name] = float(time_held.sum())
        per_stage[name] = time_held[shown] / width
    states = pd.DataFrame({"group": codes, "state": frame.final_state.astype("string").fillna("unfinished").to_numpy()})
    states = states.value_counts().sort_index()
    with_tasks = set(states.index.get_level_values(0))  # a slot may hold only earlier tries
    groups = [{"label": str(labels[g]), "tasks": int(counts[g]),
               "states": {str(s): int(n) for s, n in states[g].items()} if g in with_tasks else {},
               **{name: [round(float(v), 3) for v in per_stage[name][i]] for name, _ in STAGES}}
              for i, g in enumerate(shown)]
    return {"group_by": by, "start_ts": round(first, 6), "bin_s": width, "bins": bins, "groups": groups,
            "groups_hidden": len(order) - len(shown), "seconds": seconds, "tasks": len(frame)}


def gantt(frame: pd.DataFrame, by: str = "task", app: str | None = None, page: int = 1,
          limit: int = TASK_LIMIT, tries: pd.DataFrame | None = None) -> dict:
    """The Gantt of a run's task table: one bar per task (`mode` `tasks`; rows per task or per
    worker slot, `by`) when it has at most `limit` tasks or one app is chosen (its tasks
    `limit` to a page), else aggregated per app (`by` `task`) or per slot (`mode` `aggregated`).

    >>> gantt(tasks(con, run_id))["mode"]  # doctest: +SKIP
    'tasks'
    """
    by = by if by in ("task", "slot") else "task"
    total = len(frame)
    if app is not None:
        frame = frame[frame.app_name.astype("string") == app]
    base = {"by": by, "app": app, "run_tasks": total, "limit": limit}
    if app is None and len(frame) > limit:
        return {**base, "mode": "aggregated", **aggregated(frame, "app" if by == "task" else "slot", tries=tries)}
    pages = max(1, math.ceil(len(frame) / limit))
    page = max(1, min(page, pages))
    chosen = frame.iloc[(page - 1) * limit: page * limit]
    return {**base, "mode": "tasks", "page": page, "pages": pages, "matching": len(frame),
            **task_rows(chosen, by, tries)}
