"""A whole-run Gantt chart: each task's stages over time, one row per task or per worker slot,
and, for runs with more tasks than a page can draw, the same time aggregated per app or slot.

Stages come from the task table (`taskscope.analyses.tasks.tasks`): `pending` from submit to
launch (waiting for dependencies and an executor), `launched` from launch to the worker's
start (queued in the executor), `running` from the worker's start to the end. A stage whose
start is missing is skipped (the stage before it lasts until the next known time); a task
with no end yet stays open until the last time the run logged. With retries, the launch and
the worker's start are those of the last try.

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


def stage_bounds(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task, each stage's start and end (`<stage>_start`, `<stage>_end`, NaN when the stage
    is skipped) and `open` (no end yet): times never go backwards, so no stage is negative.

    >>> stage_bounds(pd.DataFrame({"submit_ts": [1.0], "launch_ts": [2.0], "worker_start_ts": [None],
    ...                            "end_ts": [5.0]}))[["pending_end", "launched_end", "running_start"]].values.tolist()
    [[2.0, 5.0, nan]]
    """
    times = frame[[column for _, column in STAGES] + ["end_ts"]].astype("float64").to_numpy()
    horizon = np.nanmax(times) if np.isfinite(times).any() else 0.0
    following = np.where(np.isnan(times[:, -1]), horizon, times[:, -1])
    out = np.empty((len(frame), 2 * len(STAGES)))
    for index in range(len(STAGES) - 1, -1, -1):  # last stage first: each ends where the next known one starts
        start = np.where(times[:, index] > following, following, times[:, index])  # never after what follows
        out[:, 2 * index], out[:, 2 * index + 1] = start, np.where(np.isnan(start), np.nan, following)
        following = np.where(np.isnan(start), following, start)
    columns = [f"{name}_{end}" for name, _ in STAGES for end in ("start", "end")]
    return pd.DataFrame(out, columns=columns, index=frame.index).assign(open=frame["end_ts"].isna().to_numpy())


def _rounded(values) -> list:
    """Floats to 6 decimals, NaN as None (JSON has no NaN)."""
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)
            for v in values]


def task_rows(frame: pd.DataFrame, by: str = "task") -> dict:
    """The per-task Gantt of `frame` (a task table): columns of equal length, `task_id`, `app`,
    `state`, `slot`, `row` (the row each task is drawn in: its own, or its slot's) and each
    stage's start and end in seconds since the epoch, plus `rows` (the row labels).

    >>> task_rows(tasks(con, run_id))["task_id"][:3]  # doctest: +SKIP
    ['0', '1', '2']
    """
    bounds = stage_bounds(frame)
    slots = slot_labels(frame)
    if by == "slot":
        labels = sorted(slots.unique().tolist())
        position = {label: i for i, label in enumerate(labels)}
        row = [position[s] for s in slots]
    else:
        labels = frame.task_id.astype(str).tolist()
        row = list(range(len(frame)))
    columns = {"task_id": frame.task_id.astype(str).tolist(),
               "app": frame.app_name.astype("string").fillna("").tolist(),
               "state": frame.final_state.astype("string").fillna("unfinished").tolist(),
               "slot": slots.tolist(), "row": row, "open": bounds.open.tolist()}
    for name, _ in STAGES:
        columns[f"{name}_start"] = _rounded(bounds[f"{name}_start"])
        columns[f"{name}_end"] = _rounded(bounds[f"{name}_end"])
    return {"rows": labels, "tasks": columns}


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


def aggregated(frame: pd.DataFrame, by: str = "app", bins: int | None = None) -> dict:
    """The Gantt of `frame` aggregated per `by` (`app` or `slot`, returned as `group_by`): per
    group its `label`, `tasks`, task count per final state (`states`), and per stage the mean number of its tasks
    in that stage in each of `bins` equal time bins from `start_ts` (width `bin_s`); plus
    `seconds` per stage (the total the bins hold) and `groups_hidden` (groups beyond
    `GROUP_LIMIT`, fewest tasks first).

    >>> aggregated(tasks(con, run_id), by="app")["groups"][0]["label"]  # doctest: +SKIP
    'noop'
    """
    bounds = stage_bounds(frame)
    keys = (frame.app_name.astype("string").fillna("(no app)") if by == "app" else slot_labels(frame)).astype(str)
    codes, labels = pd.factorize(keys, sort=True)
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
    for column, (name, _) in enumerate(STAGES):
        held = _time_in_bins(codes, starts[:, column] - first, ends[:, column] - first, len(labels), bins, width)
        seconds[name] = float(held.sum())
        per_stage[name] = held[shown] / width
    states = pd.DataFrame({"group": codes, "state": frame.final_state.astype("string").fillna("unfinished").to_numpy()})
    states = states.value_counts().sort_index()
    groups = [{"label": str(labels[g]), "tasks": int(counts[g]),
               "states": {str(s): int(n) for s, n in states[g].items()},
               **{name: [round(float(v), 3) for v in per_stage[name][i]] for name, _ in STAGES}}
              for i, g in enumerate(shown)]
    return {"group_by": by, "start_ts": round(first, 6), "bin_s": width, "bins": bins, "groups": groups,
            "groups_hidden": len(order) - len(shown), "seconds": seconds, "tasks": len(frame)}


def gantt(frame: pd.DataFrame, by: str = "task", app: str | None = None, page: int = 1,
          limit: int = TASK_LIMIT) -> dict:
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
        return {**base, "mode": "aggregated", **aggregated(frame, "app" if by == "task" else "slot")}
    pages = max(1, math.ceil(len(frame) / limit))
    page = max(1, min(page, pages))
    chosen = frame.iloc[(page - 1) * limit: page * limit]
    return {**base, "mode": "tasks", "page": page, "pages": pages, "matching": len(frame),
            **task_rows(chosen, by)}
