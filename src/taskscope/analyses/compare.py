"""Compare two runs (before/after a code or config change): per step of the common path and
overall, how latency and the rate tasks ended at changed, and whether the change is larger than
run A's own spread.

Rows:

- one per stage of run A's common path (its dominant variant; a stage is a step and the steps
  reached within the clock's resolution after it, see `common_path`): the *time in stage*,
  mean and median over tasks. Each stage is anchored at its first step B also has (same
  source, template and occurrence), and both runs are timed the same way, from a stage's
  anchor to the next stage's (`span_waits`), so the row measures the same stretch of the path
  in both however B's own stages split (B may reach A's one stage in two, when a step that
  came at once in A waits in B). A's stages none of whose steps B has are `only in A` (their
  time is in the stage before them on both sides); B's stages none of whose steps A has are
  `only in B`. Two processes that log within microseconds of each other come in either order
  from run to run: compared step by step, one step would look thousands of percent slower and
  the next 100 % faster;
- `task duration`: first to last event of every task of the run (all variants);
- `end rate`: tasks that reached a final state (done or failed) per second, from the first
  task event to the last end. Not `summary`'s throughput, which counts done tasks only: a run
  whose tasks fail fast ends them at a high rate and completes none.

Significance (the `significant` column): a change counts when run B's median lies outside
run A's interquartile range (p25-p75 over A's tasks) *and* moves by at least `min_change_s`
seconds. The IQR is the spread of A's own tasks, so a change must move the typical task of B
to where only a quarter of A's tasks were; a bootstrap interval of A's median was the other
candidate, but with thousands of tasks it is so narrow that any two runs of unchanged code
differ "significantly" (runs differ from each other more than tasks within a run sample).
`min_change_s` (default 1 ms) keeps microsecond jitter between two adjacent log lines from
counting, and `change_pct` is left empty when A's median is below it (a percentage of a time
the clock cannot tell from zero means nothing). For the end rate (one number per run), A's band is its overall rate scaled by the
relative IQR (p25/median, p75/median) of its rate over ten equal-count slices of its
completions.
"""

from __future__ import annotations

import pandas as pd

from taskscope._sql import connection_of
from taskscope.analyses.common_path import CLOCK_RESOLUTION_S, common_path, span_waits, step_text
from taskscope.analyses.runs import FINAL_STATES, resolve_run

COLUMNS = [
    "position", "step", "metric", "unit", "tasks_a", "tasks_b", "mean_a", "mean_b", "median_a", "median_b",
    "p25_a", "p75_a", "change_median", "change_pct", "significant", "direction",
]


def compare(store, run_a: str, run_b: str, min_change_s: float = 0.001) -> pd.DataFrame:
    """Per step of the common path and overall: latency and end rate of run B against run A.

    `min_change_s` (at least 0; raises ValueError otherwise) only decides which rows count as
    changed: the rows (stages) are the same whatever it is, steps within the clock's resolution
    (`CLOCK_RESOLUTION_S`) of each other forming one stage.

    `direction` is `slower` / `faster` (latency) or `lower` / `higher` (end rate) when the
    change is significant, else `same`; `only in A` / `only in B` for steps one path lacks. See the module docstring for how significance is
    decided.

    >>> compare(store, "000", "001")[["step", "median_a", "median_b", "direction"]]  # doctest: +SKIP
    """
    if not min_change_s >= 0:
        raise ValueError(f"min_change_s must be at least 0, not {min_change_s}")
    con = connection_of(store)
    ids = resolve_run(con, run_a), resolve_run(con, run_b)
    steps = _step_rows(con, *ids, min_change_s)
    overall = [_duration_row(con, *ids, min_change_s), _end_rate_row(con, *ids)]
    return pd.concat([steps, pd.DataFrame(overall)], ignore_index=True)[COLUMNS]


def _stages(dominant: pd.DataFrame) -> pd.DataFrame:
    """One row per stage of a dominant variant: `position` (of its first step), `label` (its
    steps' labels joined by " + "), `keys` (its steps' `(source, step_text, occurrence)`, in
    order), `tasks` and the `stage_wait_*` numbers."""
    if dominant.empty:
        return pd.DataFrame(columns=["stage", "position", "label", "keys", "tasks",
                                     "stage_wait_mean", "stage_wait_median", "stage_wait_p25", "stage_wait_p75"])
    keys = [(row.source, step_text(row._asdict()), row.occurrence) for row in dominant.itertuples()]
    keyed = dominant.assign(key=keys)
    return keyed.sort_values("position").groupby("stage", as_index=False).agg(
        position=("position", "first"), label=("label", " + ".join), keys=("key", tuple),
        tasks=("tasks", "first"),
        stage_wait_mean=("stage_wait_mean", "first"), stage_wait_median=("stage_wait_median", "first"),
        stage_wait_p25=("stage_wait_p25", "first"), stage_wait_p75=("stage_wait_p75", "first"))


def _step_rows(con, run_a: str, run_b: str, min_change_s: float) -> pd.DataFrame:
    # stages are what the clock can order, whatever change counts: --min-change judges rows only
    a = _stages(common_path(con, run=run_a, resolution_s=CLOCK_RESOLUTION_S).dominant)
    b = _stages(common_path(con, run=run_b, resolution_s=CLOCK_RESOLUTION_S).dominant)
    a = a[a["stage_wait_mean"].notna()]
    b = b[b["stage_wait_mean"].notna()]
    keys_a = {key for keys in a["keys"] for key in keys}
    keys_b = {key for keys in b["keys"] for key in keys}
    # A's stage is anchored at its first step B has; both runs are timed from anchor to anchor
    anchors = a["keys"].map(lambda keys: next((key for key in keys if key in keys_b), None)).dropna()
    spans_a = _spans(con, run_a, anchors)
    spans_b = _spans(con, run_b, anchors)
    only_a = a.drop(index=anchors.index)
    only_b = b[b["keys"].map(lambda keys: not any(key in keys_a for key in keys))]
    stats = ("mean", "median", "p25", "p75")
    rows = pd.concat([
        pd.DataFrame({"position": a.loc[anchors.index, "position"], "step": a.loc[anchors.index, "label"],
                      "tasks_a": spans_a["tasks"], "tasks_b": spans_b["tasks"],
                      **{f"{name}_a": spans_a[name] for name in stats},
                      "mean_b": spans_b["mean"], "median_b": spans_b["median"]}),
        pd.DataFrame({"position": only_a["position"], "step": only_a["label"], "tasks_a": only_a["tasks"],
                      **{f"{name}_a": only_a[f"stage_wait_{name}"] for name in stats}}),
        pd.DataFrame({"position": only_b["position"] + 1000, "step": only_b["label"], "tasks_b": only_b["tasks"],
                      "mean_b": only_b["stage_wait_mean"], "median_b": only_b["stage_wait_median"]}),
    ], ignore_index=True).assign(metric="time in stage", unit="s")
    rows = _judge(rows, min_change_s, ("slower", "faster"))
    rows.loc[rows["mean_b"].isna(), "direction"] = "only in A"
    rows.loc[rows["mean_a"].isna(), "direction"] = "only in B"
    rows[["tasks_a", "tasks_b"]] = rows[["tasks_a", "tasks_b"]].astype("Float64").astype("Int64")
    rows = rows.sort_values("position").reset_index(drop=True)
    rows["position"] = rows["position"].where(rows["position"] < 1000).astype("Int64")
    return rows


def _spans(con, run: str, anchors: pd.Series) -> pd.DataFrame:
    """`span_waits` of the run from each anchor, indexed as `anchors` is (by A's stage)."""
    spans = span_waits(con, run, anchors.tolist())
    return spans.reindex(range(len(anchors))).set_axis(anchors.index)


def _judge(rows: pd.DataFrame, min_change: float, words: tuple[str, str]) -> pd.DataFrame:
    numbers = ["mean_a", "mean_b", "median_a", "median_b", "p25_a", "p75_a"]
    rows = rows.astype({column: "float64" for column in numbers})  # a side without numbers holds None
    rows["change_median"] = rows["median_b"] - rows["median_a"]
    rows["change_pct"] = 100 * rows["change_median"] / rows["median_a"].where((rows["median_a"].abs() >= min_change) & (rows["median_a"] != 0))
    outside = (rows["median_b"] < rows["p25_a"]) | (rows["median_b"] > rows["p75_a"])
    rows["significant"] = (outside & (rows["change_median"].abs() >= min_change)).fillna(False).astype(bool)
    up, down = words
    rows["direction"] = "same"
    rows.loc[rows["significant"] & (rows["change_median"] > 0), "direction"] = up
    rows.loc[rows["significant"] & (rows["change_median"] < 0), "direction"] = down
    return rows


_DURATIONS = """
SELECT run_id, task_id, max(ts) - min(ts) AS duration FROM events
WHERE run_id = $run AND task_id IS NOT NULL AND source <> 'monitoring'
GROUP BY run_id, task_id
"""

_DURATION_STATS = f"""
SELECT count(*), avg(duration), median(duration), quantile_cont(duration, 0.25), quantile_cont(duration, 0.75)
FROM ({_DURATIONS})
"""


def _duration_row(con, run_a: str, run_b: str, min_change_s: float) -> dict:
    (n_a, mean_a, median_a, p25_a, p75_a), = con.execute(_DURATION_STATS, {"run": run_a}).fetchall()
    (n_b, mean_b, median_b, _, _), = con.execute(_DURATION_STATS, {"run": run_b}).fetchall()
    row = pd.DataFrame([{
        "position": pd.NA, "step": "task duration (first to last event)", "metric": "latency", "unit": "s",
        "tasks_a": n_a, "tasks_b": n_b, "mean_a": mean_a, "mean_b": mean_b, "median_a": median_a,
        "median_b": median_b, "p25_a": p25_a, "p75_a": p75_a,
    }])
    return _judge(row, min_change_s, ("slower", "faster")).iloc[0].to_dict()


_END_RATE = f"""
WITH ends AS (  -- every task with a final state (as `tasks` counts them), ended as its logs say if they do
    SELECT task_id, coalesce(max(ts) FILTER (WHERE source <> 'monitoring'), max(ts)) AS end_ts FROM events
    WHERE run_id = $run AND task_id IS NOT NULL AND task_state IN {FINAL_STATES}
    GROUP BY task_id
),
span AS (
    SELECT min(ts) AS first_ts FROM events
    WHERE run_id = $run AND task_id IS NOT NULL AND source <> 'monitoring'
),
slices AS (
    SELECT ntile(10) OVER (ORDER BY end_ts) AS slice, end_ts FROM ends
),
slice_rates AS (
    SELECT count(*) / nullif(max(end_ts) - lag(max(end_ts)) OVER (ORDER BY slice), 0) AS rate
    FROM slices GROUP BY slice
)
SELECT (SELECT count(*) FROM ends) AS tasks,
       (SELECT count(*) FROM ends) / nullif((SELECT max(end_ts) FROM ends) - (SELECT first_ts FROM span), 0) AS rate,
       (SELECT quantile_cont(rate, 0.25) / median(rate) FROM slice_rates) AS p25_relative,
       (SELECT quantile_cont(rate, 0.75) / median(rate) FROM slice_rates) AS p75_relative
"""


def _end_rate_row(con, run_a: str, run_b: str) -> dict:
    (n_a, rate_a, p25_relative, p75_relative), = con.execute(_END_RATE, {"run": run_a}).fetchall()
    p25_a, p75_a = (None, None) if rate_a is None or p25_relative is None else (rate_a * p25_relative, rate_a * p75_relative)
    (n_b, rate_b, _, _), = con.execute(_END_RATE, {"run": run_b}).fetchall()
    row = pd.DataFrame([{
        "position": pd.NA, "step": "end rate (tasks ended per second: done or failed)", "metric": "end rate",
        "unit": "tasks/s", "tasks_a": n_a, "tasks_b": n_b, "mean_a": rate_a, "mean_b": rate_b,
        "median_a": rate_a, "median_b": rate_b, "p25_a": p25_a, "p75_a": p75_a,
    }])
    return _judge(row, 0.0, ("higher", "lower")).iloc[0].to_dict()
