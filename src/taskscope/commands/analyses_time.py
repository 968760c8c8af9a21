"""CLI commands about time: states, between, queues, series, latency, summary.

Output: `--format json|csv` gives the exact data (every transition of a step function, every
value of a series, every task's latency); the table is for reading, so a long step function is
shown at evenly spaced instants with a note saying so. `--plot FILE.html|FILE.png` draws it.
"""

from __future__ import annotations

from functools import wraps
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import typer

import taskscope
from taskscope.analyses.between import STANDARD_QUEUES, between, missing_queues, standard_queues
from taskscope.analyses.latency import QUANTILES, latency, latency_histogram, stats_of
from taskscope.analyses.selectors import SelectorError
from taskscope.analyses.series import FieldError, group_column, series
from taskscope.analyses.states import sample_steps, states, states_from_monitoring, states_wide
from taskscope.analyses.summary import STATE_COLUMNS, summary
from taskscope.commands.common import (
    FormatOption, OutputFormat, PlotOption, RunOption, StoreOption, err_console, fail, print_frame, print_json, save_plot,
    user_errors,
)
from taskscope.plotting import PlotError, check_plot_path
from taskscope.presenters.format import short_run_id, short_run_ids
from taskscope.schema import natural_sort_key
from taskscope.presenters.figures import (
    elapsed, run_lines_figure, run_steps_figure, summary_figure, values_histogram_figure,
)

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


def _note(text: str) -> None:
    err_console.print(text, highlight=False, soft_wrap=True)


def _readable_steps(wide: pd.DataFrame, points: int) -> tuple[pd.DataFrame, str | None]:
    """A step function (one row per change, `run_id`, `ts`, value columns) as a table a person
    reads: all of it when short, else the values in effect at `points` evenly spaced instants."""
    if len(wide) <= TABLE_ROWS:
        shown, note = wide, None
    else:
        shown = sample_steps(wide, points)
        note = (f"{len(wide):,} changes: showing the values in effect at {points} evenly spaced instants "
                "(peaks between them can be missed; --format csv or json gives every change)")
    shown = shown.assign(elapsed_s=elapsed(shown).round(6), run_id=short_run_ids(shown.run_id))
    return shown[["run_id", "ts", "elapsed_s"] + [c for c in shown.columns if c not in ("run_id", "ts", "elapsed_s")]], note


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
        save_plot(run_steps_figure(curve, "tasks", "state", f"tasks per state (from {source})", "tasks"), plot)
    if fmt is not OutputFormat.table:
        print_frame(curve, fmt)
        return
    shown, note = _readable_steps(states_wide(curve).drop(columns=["step"]), points)
    print_frame(shown, fmt, f"tasks per state (from {source})", max_rows=None)
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
        save_plot(run_steps_figure(curve, "count", None, title, _plural(per)), plot)
    if fmt is not OutputFormat.table:
        print_frame(curve, fmt)
        return
    shown, note = _readable_steps(curve, points)
    print_frame(shown, fmt, title, max_rows=None)
    ends = curve.groupby("run_id")["count"].last()
    _note(f"peak: {curve['count'].max()}; at the end: " + ", ".join(f"{short_run_id(run_id)} {count}" for run_id, count in ends.items()))
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

    A queue whose events the logs lack (at Parsl's default log levels the interchange logs no line per task) is left out, with a note on stderr saying which and why. JSON gives {"queues": [every change: run_id, queue, ts, count], "missing": {queue: why}}; CSV every change.

    Example: taskscope queues --run 000 --plot queues.html
    """
    _check_plot_path(plot)
    _check_per(per)
    with taskscope.open(store, read_only=True) as opened:
        curves = standard_queues(opened, run, per)
        missing = missing_queues(opened, run)
    if curves.empty:
        fail("none of the standard queues' events are in the store: " + "; ".join(
            f"{name}: {a} to {b}" for name, (a, b) in STANDARD_QUEUES.items()))
    if plot is not None:
        save_plot(run_steps_figure(curves, "count", "queue", f"{_plural(per)} in each queue", _plural(per)), plot)
    if fmt is OutputFormat.json:
        print_json({"queues": curves, "missing": missing})
        return
    for queue, why in missing.items():
        _note(f"note: {queue!r} left out: {why}")
    if fmt is OutputFormat.csv:
        print_frame(curves, fmt)
        return
    wide = (curves.pivot_table(index=["run_id", "ts"], columns="queue", values="count", aggfunc="last")
            .groupby(level="run_id").ffill().fillna(0).astype("int64"))
    wide.columns.name = None
    shown, note = _readable_steps(wide.reset_index(), points)
    print_frame(shown, fmt, f"{_plural(per)} in each queue", max_rows=None)
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

    The table shows every value when there are few, else per group: count, min, mean, max and the last value. JSON and CSV give every value (run_id, ts, the --by column if given, event, value); the --by column is named after the field, or by_FIELD for run_id, ts, event and value. A --by field that no event has is an error.

    Example: taskscope series psutil_process_memory_resident --by task_id --plot memory.html
    """
    _check_plot_path(plot)
    with taskscope.open(store, read_only=True) as opened:
        values = series(opened, field, run, group_by=by, where=where)
    group = group_column(by) if by else None
    if plot is not None:
        save_plot(run_lines_figure(values, "value", group, field + (f" by {by}" if by else ""),
                                   "seconds since the run's first value", field), plot)
    if fmt is not OutputFormat.table:
        print_frame(values, fmt)
        return
    if len(values) <= TABLE_ROWS:
        print_frame(values.assign(run_id=short_run_ids(values.run_id)), fmt, field, max_rows=None)
        return
    groups = ["run_id", "event"] + ([group] if group else [])
    table = values.groupby(groups, dropna=False).agg(
        count=("value", "size"), first_ts=("ts", "min"), last_ts=("ts", "max"), min=("value", "min"),
        mean=("value", "mean"), max=("value", "max"), last_value=("value", "last"),
    ).reset_index()
    if group:  # task 9 before task 10
        table = table.sort_values(groups, key=lambda column: column.map(natural_sort_key) if column.name == group
                                  else column, kind="stable", ignore_index=True)
    print_frame(table.assign(run_id=short_run_ids(table.run_id)), fmt, f"{field}: {len(values):,} values")
    _note(f"{len(values):,} values summarised per {' and '.join(groups)} (--format csv or json gives every value)")


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

    The table shows count, mean, min, p50/p90/p99 and max, and the histogram, in seconds to the microsecond. JSON gives {"stats": [...], "histogram": [...], "latencies": [...]} (one latency per task); CSV the latencies.

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
        save_plot(values_histogram_figure(latencies, "latency_s", by, bins, f"seconds from {event_a} to {event_b}",
                                          "seconds"), plot)
    if fmt is OutputFormat.json:
        print_json({"stats": stats, "histogram": histogram, "latencies": latencies})
        return
    if fmt is OutputFormat.csv:
        print_frame(latencies, fmt)
        return
    stats = _fixed_seconds(stats, ["mean", "min", *QUANTILES, "max"])
    print_frame(stats.assign(run_id=short_run_ids(stats.run_id)), fmt, f"seconds from {event_a} to {event_b}, per {per}")
    widest = max(int(histogram["count"].max()), 1) if not histogram.empty else 1
    histogram = _fixed_seconds(histogram, ["bin_start", "bin_end"])
    print_frame(histogram.assign(bar=histogram["count"].map(lambda n: "█" * round(40 * n / widest))), fmt, "histogram (seconds)", max_rows=None)


def _fixed_seconds(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Seconds as fixed-point text to the microsecond, as the path analyses print them
    (`0.100000`, never `0.0999999` or `1e-05`); the table's title says they are seconds."""
    return frame.assign(**{column: frame[column].map(lambda v: "" if pd.isna(v) else f"{v:.6f}")
                           for column in columns})


# ---------------------------------------------------------------------------------------------
# summary


SUMMARY_PARTS = ("runs", "apps", "failures", "throughput")
#: the failures table's headers say what each count counts (a task whose tries failed in
#: different ways has a row per exception, but is failed by one: its last try's)
FAILURE_HEADERS = {"failed_tries": "failed tries", "tasks": "tasks with such a try",
                   "tasks_failed": "tasks failed by it (last try)"}
#: table titles that say what a part counts (the others are their names)
SUMMARY_TITLES = {"throughput": "throughput (tasks done per bin)"}


def summary_command(
    run: Optional[str] = RunOption,
    part: Optional[str] = typer.Option(None, "--part", help="Only this table: runs, apps, failures or throughput."),
    bin_s: Optional[float] = typer.Option(None, "--bin", min=0.001, help="Throughput bin width in seconds (default: about 50 bins)."),
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """Per app: tasks by final state, tries, failure causes, badput, makespan and throughput.

    The table shows runs, apps, failures and throughput (done tasks per time bin; its first rows). JSON gives {"runs", "apps", "failures", "throughput"} (or one list with --part); CSV one table (--part, default apps).

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
        save_plot(summary_figure(result.apps, result.throughput, result.runs, [*STATE_COLUMNS, "unfinished"]), plot)
    parts = {name: getattr(result, name) for name in SUMMARY_PARTS}
    if fmt is OutputFormat.json:
        if part:
            print_frame(parts[part], fmt)
        else:
            print_json(parts)
        return
    if fmt is OutputFormat.csv:
        print_frame(parts[part or "apps"], fmt)
        return
    for name in [part] if part else SUMMARY_PARTS:
        frame = parts[name]
        if frame.empty:
            _note(f"{name}: none")
            continue
        frame = frame.assign(run_id=short_run_ids(frame.run_id))
        print_frame(frame, fmt, SUMMARY_TITLES.get(name, name), see_all=f"--part {name} --format csv gives every row and column",
                    headers=FAILURE_HEADERS if name == "failures" else None)
