"""CLI commands about time: states, between, queues, series, latency, summary.

Output: `--format json|csv` gives the exact data (every transition of a step function, every
value of a series, every task's latency); the table is for reading, so a long step function is
shown at evenly spaced instants with a note saying so. `--plot FILE.html|FILE.png` draws it.
"""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import typer

import taskscope
from taskscope.analyses.between import STANDARD_QUEUES, between, standard_queues
from taskscope.analyses.latency import latency, latency_histogram, stats_of
from taskscope.analyses.selectors import SelectorError
from taskscope.analyses.series import FieldError, series
from taskscope.analyses.states import sample_steps, states, states_from_monitoring, states_wide
from taskscope.analyses.summary import summary
from taskscope.commands.common import (
    FormatOption, OutputFormat, PlotOption, RunOption, StoreOption, clock, emit, err_console, fail, save_plot,
    user_errors,
)
from taskscope.plotting import PlotError, check_plot_path

#: a step function with more rows than this is shown resampled in a table
TABLE_ROWS = 40

PerOption = typer.Option("task", "--per", help="Count tasks or tries (try: only events that carry a try id).")
PointsOption = typer.Option(30, "--points", min=1, help="Instants shown in the table when there are many changes.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("states")(_errors(states_command))
    app.command("between")(_errors(between_command))
    app.command("queues")(_errors(queues_command))
    app.command("series")(_errors(series_command))
    app.command("latency")(_errors(latency_command))
    app.command("summary")(_errors(summary_command))


def _errors(command: Callable) -> Callable:
    """`user_errors`, plus this module's user errors: a bad selector, field or plot file."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (SelectorError, FieldError, PlotError) as exc:
            fail(str(exc))

    return user_errors(wrapper)


def _check_plot_path(plot: Optional[Path]) -> None:
    if plot is not None:
        check_plot_path(plot)


def _check_per(per: str) -> None:
    if per not in ("task", "try"):
        fail(f"--per must be task or try, not {per!r}")


def _plural(per: str) -> str:
    """"tasks" or "tries" for a `--per` value."""
    return {"try": "tries"}.get(per, f"{per}s")


def _write_json(parts: dict[str, pd.DataFrame]) -> None:
    """One JSON object whose values are the record lists of `parts`."""
    sys.stdout.write(json.dumps({name: _records(frame) for name, frame in parts.items()}) + "\n")


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", default_handler=str))


def _note(text: str) -> None:
    err_console.print(text, highlight=False, soft_wrap=True)


def _elapsed(frame: pd.DataFrame, column: str = "ts") -> pd.Series:
    """Seconds since each run's first row (so that runs overlay in one plot)."""
    return frame[column] - frame.groupby("run_id")[column].transform("min")


def _readable_steps(wide: pd.DataFrame, points: int) -> tuple[pd.DataFrame, str | None]:
    """A step function (one row per change, `run_id`, `ts`, value columns) as a table a person
    reads: all of it when short, else the values in effect at `points` evenly spaced instants."""
    if len(wide) <= TABLE_ROWS:
        shown, note = wide, None
    else:
        shown = sample_steps(wide, points)
        note = (f"{len(wide):,} changes: showing the values in effect at {points} evenly spaced instants "
                "(peaks between them can be missed; --format csv or json gives every change)")
    shown = shown.assign(elapsed_s=_elapsed(shown).round(6), ts=shown.ts.map(clock),
                         run_id=shown.run_id.str[:8])
    return shown[["run_id", "ts", "elapsed_s"] + [c for c in shown.columns if c not in ("run_id", "ts", "elapsed_s")]], note


def _step_figure(frame: pd.DataFrame, y: str, color: str | None, title: str, y_title: str):
    """Step lines (the value holds until the next change) over seconds since each run's start."""
    import plotly.express as px

    whole = _whole_run_steps(frame[["run_id", "ts", y] + ([color] if color else [])], y, color)
    data = whole.assign(elapsed_s=_elapsed(whole), run=whole.run_id.str[:8])
    several_runs = data.run.nunique() > 1
    figure = px.line(data, x="elapsed_s", y=y, color=color, line_dash="run" if several_runs else None,
                     line_shape="hv", title=title)
    figure.update_layout(xaxis_title="seconds since the run's first change", yaxis_title=y_title)
    return figure


def _whole_run_steps(frame: pd.DataFrame, y: str, color: str | None) -> pd.DataFrame:
    """The change rows of each line, plus a 0 at its run's first change (before its own first
    change nothing was in it) and its last value held to the run's last change, so that every
    line spans the run instead of starting and stopping at its own changes."""
    keys = ["run_id"] + ([color] if color else [])
    ordered = frame.sort_values("ts", kind="stable")
    span = ordered.groupby("run_id").ts.agg(["min", "max"])
    starts = ordered.groupby(keys, sort=False).head(1)
    starts = starts[starts.ts > starts.run_id.map(span["min"])]
    starts = starts.assign(ts=starts.run_id.map(span["min"]), **{y: 0})
    ends = ordered.groupby(keys, sort=False).tail(1)
    ends = ends.assign(ts=ends.run_id.map(span["max"]))
    return pd.concat([starts, ordered, ends], ignore_index=True).sort_values("ts", kind="stable")


# ---------------------------------------------------------------------------------------------
# states


def states_command(
    run: Optional[str] = RunOption,
    source: str = typer.Option("logs", "--from", help="logs (the DFK's state changes) or monitoring (monitoring.db)."),
    points: int = PointsOption,
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """Tasks in each DFK state over time: an exact step function, one change per transition.

    The table lists every transition (counts per state right after it), or, for long runs, the counts at evenly spaced instants. JSON and CSV give the exact curve: one row per state whose count changes (run_id, step, ts, task_id, state, change, tasks).

    Example: taskscope states --run 000 --plot states.html
    """
    _check_plot_path(plot)
    if source not in ("logs", "monitoring"):
        fail(f"--from must be logs or monitoring, not {source!r}")
    with taskscope.open(store, read_only=True) as opened:
        curve = (states if source == "logs" else states_from_monitoring)(opened, run)
    if curve.empty:
        fail(f"no task state changes in the {source}" + (f" of run {run}" if run else "") + " (see `taskscope runs`)")
    if plot is not None:
        save_plot(_step_figure(curve, "tasks", "state", f"tasks per state (from {source})", "tasks"), plot)
    if fmt is not OutputFormat.table:
        emit(curve, fmt)
        return
    shown, note = _readable_steps(states_wide(curve).drop(columns=["step"]), points)
    emit(shown, fmt, f"tasks per state (from {source})")
    peaks = curve.groupby("state", sort=False)["tasks"].max()
    _note("peak: " + ", ".join(f"{state} {count}" for state, count in peaks.items()))
    if note:
        _note(note)


# ---------------------------------------------------------------------------------------------
# between and queues


def between_command(
    event_a: str = typer.Argument(..., help="Selector of the event that enters: task.launched, state:pending, template:PATTERN, ...@SOURCE."),
    event_b: str = typer.Argument(..., help="Selector of the event that leaves."),
    run: Optional[str] = RunOption,
    per: str = PerOption,
    points: int = PointsOption,
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """How many tasks have passed event A but not yet event B, over time (an implicit queue).

    Selectors: an event name (task.launched, htex.worker.received), state:NAME (a task entering a state), template:PATTERN or message:PATTERN (SQL LIKE), each optionally @SOURCE (state:running@monitoring), and "A | B" for either. JSON and CSV give every change (run_id, ts, count).

    Example: taskscope between htex.interchange.queued htex.interchange.sent --plot queue.png
    """
    _check_plot_path(plot)
    _check_per(per)
    with taskscope.open(store, read_only=True) as opened:
        curve = between(opened, event_a, event_b, run, per)
    if curve.empty:
        fail(f"no {per} passes {event_a!r} and then {event_b!r}" + (f" in run {run}" if run else ""))
    title = f"{_plural(per)} between {event_a} and {event_b}"
    if plot is not None:
        save_plot(_step_figure(curve, "count", None, title, _plural(per)), plot)
    if fmt is not OutputFormat.table:
        emit(curve, fmt)
        return
    shown, note = _readable_steps(curve, points)
    emit(shown, fmt, title)
    ends = curve.groupby("run_id")["count"].last()
    _note(f"peak: {curve['count'].max()}; at the end: " + ", ".join(f"{run_id[:8]} {count}" for run_id, count in ends.items()))
    if note:
        _note(note)


def queues_command(
    run: Optional[str] = RunOption,
    per: str = PerOption,
    points: int = PointsOption,
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """The implicit queues of a Parsl run with HTEX, over time: tasks waiting in the DFK (state:pending to task.launched), queued in the interchange (htex.interchange.queued to htex.interchange.sent) and running on workers (htex.worker.received to htex.worker.finished).

    Queues whose events the logs lack (no interchange debug lines, say) are left out. JSON and CSV give every change (run_id, queue, ts, count).

    Example: taskscope queues --run 000 --plot queues.html
    """
    _check_plot_path(plot)
    _check_per(per)
    with taskscope.open(store, read_only=True) as opened:
        curves = standard_queues(opened, run, per)
    if curves.empty:
        fail("none of the standard queues' events are in the store: " + "; ".join(
            f"{name}: {a} to {b}" for name, (a, b) in STANDARD_QUEUES.items()))
    if plot is not None:
        save_plot(_step_figure(curves, "count", "queue", f"{_plural(per)} in each queue", _plural(per)), plot)
    if fmt is not OutputFormat.table:
        emit(curves, fmt)
        return
    wide = (curves.pivot_table(index=["run_id", "ts"], columns="queue", values="count", aggfunc="last")
            .groupby(level="run_id").ffill().fillna(0).astype("int64"))
    wide.columns.name = None
    shown, note = _readable_steps(wide.reset_index(), points)
    emit(shown, fmt, f"{_plural(per)} in each queue")
    _note("peak: " + ", ".join(f"{queue} {count}" for queue, count in curves.groupby("queue")["count"].max().items()))
    if note:
        _note(note)


# ---------------------------------------------------------------------------------------------
# series


def series_command(
    field: str = typer.Argument(..., help="A numeric column of events or a key of attrs (psutil_process_memory_resident)."),
    by: Optional[str] = typer.Option(None, "--by", help="Group by this column or attrs key (task_id, host, manager_id)."),
    where: Optional[str] = typer.Option(None, "--where", help="Only events matching this selector (task.resource, template:PATTERN, ...@SOURCE)."),
    run: Optional[str] = RunOption,
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """Any numeric field over time, from every event that carries it, optionally per group.

    The table shows every value when there are few, else per group: count, min, mean, max and the last value. JSON and CSV give every value (run_id, ts, the --by column if given, event, value).

    Example: taskscope series psutil_process_memory_resident --by task_id --plot memory.html
    """
    _check_plot_path(plot)
    with taskscope.open(store, read_only=True) as opened:
        values = series(opened, field, run, group_by=by, where=where)
    if plot is not None:
        save_plot(_series_figure(values, field, by), plot)
    if fmt is not OutputFormat.table:
        emit(values, fmt)
        return
    if len(values) <= TABLE_ROWS:
        emit(values.assign(ts=values.ts.map(clock), run_id=values.run_id.str[:8]), fmt, field)
        return
    groups = ["run_id", "event"] + ([by] if by else [])
    table = values.groupby(groups, dropna=False).agg(
        count=("value", "size"), first=("ts", "min"), last=("ts", "max"), min=("value", "min"),
        mean=("value", "mean"), max=("value", "max"), last_value=("value", "last"),
    ).reset_index()
    emit(table.assign(run_id=table.run_id.str[:8], first=table["first"].map(clock), last=table["last"].map(clock)),
         fmt, f"{field}: {len(values):,} values")
    _note(f"{len(values):,} values summarised per {' and '.join(groups)} (--format csv or json gives every value)")


def _series_figure(values: pd.DataFrame, field: str, by: Optional[str]):
    import plotly.express as px

    data = values.assign(elapsed_s=_elapsed(values), run=values.run_id.str[:8])
    figure = px.line(data, x="elapsed_s", y="value", color=by, line_dash="run" if data.run.nunique() > 1 else None,
                     markers=True, title=field + (f" by {by}" if by else ""))
    figure.update_layout(xaxis_title="seconds since the run's first value", yaxis_title=field)
    return figure


# ---------------------------------------------------------------------------------------------
# latency


def latency_command(
    event_a: str = typer.Argument(..., help="Selector of the starting event (task.launched, state:pending, ...)."),
    event_b: str = typer.Argument(..., help="Selector of the ending event."),
    run: Optional[str] = RunOption,
    per: str = PerOption,
    by: Optional[str] = typer.Option(None, "--by", help="Statistics per value of this column of the latency table (app_name)."),
    bins: int = typer.Option(20, "--bins", min=1, help="Histogram bins."),
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """Time from event A to the following event B, per task (or try): statistics and histogram.

    The table shows count, mean, p50/p90/p99 and max, and the histogram. JSON gives {"stats": [...], "histogram": [...], "latencies": [...]} (one latency per task); CSV the latencies.

    Example: taskscope latency task.launched htex.worker.received --by app_name --plot latency.png
    """
    _check_plot_path(plot)
    _check_per(per)
    with taskscope.open(store, read_only=True) as opened:
        latencies = latency(opened, event_a, event_b, run, per)
    if by and by not in latencies.columns:
        fail(f"--by must be one of {', '.join(latencies.columns)}")
    stats = stats_of(latencies, by)
    histogram = latency_histogram(latencies, bins)
    if plot is not None:
        save_plot(_latency_figure(latencies, event_a, event_b, bins, by), plot)
    if fmt is OutputFormat.json:
        _write_json({"stats": stats, "histogram": histogram, "latencies": latencies})
        return
    if fmt is OutputFormat.csv:
        emit(latencies, fmt)
        return
    emit(stats.assign(run_id=stats.run_id.str[:8]), fmt, f"seconds from {event_a} to {event_b}, per {per}")
    widest = max(int(histogram["count"].max()), 1) if not histogram.empty else 1
    emit(histogram.assign(bar=histogram["count"].map(lambda n: "█" * round(40 * n / widest))), fmt, "histogram")


def _latency_figure(latencies: pd.DataFrame, event_a: str, event_b: str, bins: int, by: Optional[str]):
    import plotly.express as px

    figure = px.histogram(latencies.dropna(subset=["latency_s"]), x="latency_s", color=by, nbins=bins,
                          title=f"seconds from {event_a} to {event_b}")
    figure.update_layout(xaxis_title="seconds", yaxis_title="count", bargap=0.05)
    return figure


# ---------------------------------------------------------------------------------------------
# summary


SUMMARY_PARTS = ("runs", "apps", "failures", "throughput")


def summary_command(
    run: Optional[str] = RunOption,
    part: Optional[str] = typer.Option(None, "--part", help="Only this table: runs, apps, failures or throughput."),
    bin_s: Optional[float] = typer.Option(None, "--bin", min=0.001, help="Throughput bin width in seconds (default: about 50 bins)."),
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """Per app: tasks by final state, tries, failure causes, badput, makespan and throughput.

    The table shows runs, apps and failures. JSON gives {"runs", "apps", "failures", "throughput"} (or one list with --part); CSV one table (--part, default apps).

    Example: taskscope summary --run 000 --plot summary.html
    """
    _check_plot_path(plot)
    if part is not None and part not in SUMMARY_PARTS:
        fail(f"--part must be one of {', '.join(SUMMARY_PARTS)}, not {part!r}")
    with taskscope.open(store, read_only=True) as opened:
        result = summary(opened, run, bin_s=bin_s)
    if result.runs.empty:
        fail("no tasks" + (f" in run {run}" if run else "") + " (see `taskscope runs`)")
    if plot is not None:
        save_plot(_summary_figure(result), plot)
    parts = {name: getattr(result, name) for name in SUMMARY_PARTS}
    if fmt is OutputFormat.json:
        if part:
            emit(parts[part], fmt)
        else:
            _write_json(parts)
        return
    if fmt is OutputFormat.csv:
        emit(parts[part or "apps"], fmt)
        return
    for name in [part] if part else ["runs", "apps", "failures"]:
        frame = parts[name]
        if frame.empty:
            _note(f"{name}: none")
            continue
        frame = frame.assign(run_id=frame.run_id.str[:8])
        emit(frame, fmt, name)


def _summary_figure(result):
    """Bars: tasks per app by final state (top); tasks completed per second over time (bottom)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from taskscope.analyses.summary import STATE_COLUMNS

    several_runs = result.apps.run_id.nunique() > 1
    labels = (result.apps.run_id.str[:8] + " " if several_runs else "") + result.apps.app_name
    figure = make_subplots(rows=2, cols=1, subplot_titles=("tasks per app by final state", "tasks completed per second"))
    for state in [*STATE_COLUMNS, "unfinished"]:
        if result.apps[state].any():
            figure.add_trace(go.Bar(x=labels, y=result.apps[state], name=state), row=1, col=1)
    throughput = result.throughput
    if not throughput.empty:
        start = throughput.run_id.map(result.runs.set_index("run_id").first_submit_ts)
        for (run_id, app), rows in throughput.assign(elapsed_s=throughput.bin_start_ts - start).groupby(["run_id", "app_name"]):
            figure.add_trace(go.Bar(x=rows.elapsed_s + rows.bin_s / 2, y=rows.per_s, width=rows.bin_s,
                                    name=(f"{run_id[:8]} " if several_runs else "") + f"{app} completed"), row=2, col=1)
    figure.update_layout(barmode="stack", title="summary")
    figure.update_xaxes(title_text="seconds since the run's first submit", row=2, col=1)
    return figure
