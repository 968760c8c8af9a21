"""CLI commands about the path tasks take: common-path, bottlenecks, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer

import taskscope
from taskscope.analyses.bottlenecks import KNOWN_STAGES, Bottlenecks, bottlenecks
from taskscope.analyses.common_path import CommonPath, common_path
from taskscope.analyses.compare import compare
from taskscope.analyses.runs import NO_RUN_HINT, task_events_without_run
from taskscope.presenters.figures import bottlenecks_figure, compare_figure, path_figure
from taskscope.presenters.format import short_run_id, short_run_ids
from taskscope.commands.common import (
    FormatOption,
    OutputFormat,
    PlotOption,
    RunOption,
    StoreOption,
    fail,
    print_frame,
    print_json,
    run_option,
    save_plot,
    user_errors,
)

def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("common-path")(user_errors(common_path_command))
    app.command("bottlenecks")(user_errors(bottlenecks_command))
    app.command("compare")(user_errors(compare_command))


# ---------------------------------------------------------------------------------------------
# common-path


def common_path_command(
    run: Optional[str] = RunOption,
    variant: int = typer.Option(1, "--variant", "-v", help="Which variant to show (1: the most common)."),
    top: int = typer.Option(10, "--top", help="Variants listed in the table (0: all)."),
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """Show the common path of tasks as a synthetic average task, and the variants.

    Each line is a step (source and message template) with the mean time since the task's first event; tasks whose steps differ (retries, failures, another executor) form other variants, listed below it. JSON gives {"variants": [...], "steps": [...]}; CSV the steps.

    Example: taskscope common-path --run 000 --variant 2 --plot path.html
    """
    with taskscope.open(store, read_only=True) as opened:
        path = common_path(opened, run=run)
        if path.variants.empty:
            fail(_no_task_events(opened, run))
    if variant not in set(path.variants["variant"]):
        fail(f"no variant {variant}: there are {len(path.variants)} (see the variants table)")
    steps = path.variant_steps(variant)
    if plot is not None:
        save_plot(path_figure(steps, variant), plot)
    if fmt is OutputFormat.json:
        print_json({"variants": path.variants, "steps": steps})
    elif fmt is OutputFormat.csv:
        print_frame(steps, fmt)
    else:
        _print_average_task(path, variant)
        shown = path.variants if top <= 0 else path.variants.head(top)
        print_frame(_short_runs(_as_text(shown, ["duration_mean", "duration_median", "duration_p95"])), fmt,
             f"variants ({len(path.variants)}; {len(shown)} shown)", max_rows=None)


def _print_average_task(path: CommonPath, variant: int) -> None:
    info = path.variants[path.variants["variant"] == variant].iloc[0]
    print(f"=== variant {variant} of {len(path.variants)}: {info.tasks} tasks ({100 * info.share:.1f}%), "
          f"{info.steps} steps, {info.orderings} orderings; e.g. task {info.example_task_id} "
          f"of run {short_run_id(info.example_run_id)} ===")
    print("mean time since the first event: step  (source; median / p95 since the previous step)")
    for step in path.variant_steps(variant).itertuples(index=False):
        previous = "" if pd.isna(step.since_previous_median) else (
            f"; {step.since_previous_median:.6f} s / {step.since_previous_p95:.6f} s")
        template = step.template if step.occurrence == 1 else f"{step.template} (#{step.occurrence})"
        print(f"{step.since_first_mean:.6f} s: {template}  ({step.source}{previous})")


# ---------------------------------------------------------------------------------------------
# bottlenecks


def bottlenecks_command(
    run: Optional[str] = run_option("the latest run"),
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """Rank the steps of the common path by the time tasks wait in them.

    Names the stage (DFK, interchange, manager, worker) that holds tasks longest, or, when no step is one of those (another workflow system), the step, and says whether worker slots sat idle while tasks waited upstream. JSON gives one object with steps, stages and workers; CSV the ranked steps.

    Example: taskscope bottlenecks --run 000 --plot waits.png
    """
    with taskscope.open(store, read_only=True) as opened:
        found = bottlenecks(opened, run=run)
        if found.steps.empty:
            fail(_no_task_events(opened, run))
    if plot is not None:
        save_plot(bottlenecks_figure(found.steps, found.run_id), plot)
    if fmt is OutputFormat.json:
        print_json({
            "run_id": found.run_id, "slowest_stage": found.slowest_stage,
            "workers_idle_while_waiting": found.workers_idle_while_waiting,
            "steps": found.steps, "stages": found.stages, "workers": found.workers,
        })
        return
    if fmt is OutputFormat.csv:
        print_frame(found.steps, fmt)
        return
    shown = found.steps[["rank", "stage", "wait_total_s", "wait_share", "wait_mean_s", "wait_median_s",
                         "wait_p95_s", "tasks", "label"]]
    print_frame(_as_percent(_as_text(shown, ["wait_total_s", "wait_mean_s", "wait_median_s", "wait_p95_s"]),
                            ["wait_share"]), fmt, f"time tasks wait in each step, run {found.run_id}")
    print_frame(_as_percent(_as_text(found.stages, ["wait_total_s"]), ["wait_share"]), fmt, "by stage")
    print(_verdict(found))


def _verdict(found: Bottlenecks) -> str:
    stage = found.stages.iloc[0]
    if stage.stage in KNOWN_STAGES:
        lines = [f"Tasks wait longest in the {stage.stage} ({100 * stage.wait_share:.1f}% of their waiting time)."]
    elif not found.stages_are_sources:  # a source of its own beside the known stages
        share = 100 * stage.wait_share
        lines = [f"Tasks wait longest in steps the {stage.stage} source logged ({share:.1f}% of their waiting time)."]
    else:  # no stage of a known workflow system: name the step, and the source as a source
        step = found.steps.iloc[0]
        lines = [f"Tasks wait longest after {step.label!r} ({100 * step.wait_share:.1f}% of their waiting time)."]
        if len(found.stages) == 1:
            lines.append(f"Every step is logged by the {stage.stage} source: no workflow stages to rank "
                         "(the stage column names the source).")
        else:
            lines.append(f"Steps the {stage.stage} source logged hold {100 * stage.wait_share:.1f}% of the waiting "
                         "(the stage column names the source that logged each step).")
    if found.workers.empty:
        lines.append("No HTEX worker events: worker idleness not measured.")
    else:
        w = found.workers.iloc[0]
        if found.workers_idle_while_waiting:
            lines.append(
                f"Workers sat idle while tasks waited upstream: {w.idle_while_waiting_slot_s:.3f} slot-seconds "
                f"over {w.idle_while_waiting_s:.3f} s ({int(w.slots)} slots, utilisation {100 * w.utilisation:.1f}%)."
            )
        else:
            lines.append(f"No worker slot sat idle while tasks waited upstream ({int(w.slots)} slots, "
                         f"utilisation {100 * w.utilisation:.1f}%).")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# compare


def compare_command(
    run_a: str = typer.Argument(..., help="The run before (id, prefix or folder name)."),
    run_b: str = typer.Argument(..., help="The run after."),
    min_change: float = typer.Option(0.001, "--min-change", min=0.0,
                                     help="Smallest change in seconds that can count as significant (at least 0)."),
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
    plot: Optional[Path] = PlotOption,
) -> None:
    """Compare two runs: time in each step of the common path, task duration and end rate (tasks that ended, done or failed, per second).

    A change is marked significant when run B's median is outside run A's interquartile range and moves by at least --min-change seconds. --min-change changes only which rows count as changed, never the rows: a stage is a step and the steps reached within the clock's resolution (1 ms) after it.

    Example: taskscope compare 000 001 --plot compare.html
    """
    with taskscope.open(store, read_only=True) as opened:
        frame = compare(opened, run_a, run_b, min_change_s=min_change)
    if plot is not None:
        save_plot(compare_figure(frame, run_a, run_b), plot)
    if fmt is not OutputFormat.table:
        print_frame(frame, fmt)
        return
    shown = frame[["position", "step", "unit", "median_a", "median_b", "change_median", "change_pct",
                   "p25_a", "p75_a", "direction"]]
    seconds = shown["unit"] == "s"
    as_seconds = _as_text(shown[seconds], ["median_a", "median_b", "change_median", "p25_a", "p75_a"])
    as_rates = _as_text(shown[~seconds], ["median_a", "median_b", "change_median", "p25_a", "p75_a"], unit=" tasks/s")
    shown = _as_percent(pd.concat([as_seconds, as_rates]).loc[shown.index], ["change_pct"], signed=True)
    print_frame(shown.drop(columns=["unit"]), fmt, f"{run_b} against {run_a} (medians)")
    changed = frame[frame["significant"]]
    print(f"{len(changed)} of {len(frame)} rows changed by more than run A's spread.")


# ---------------------------------------------------------------------------------------------
# output helpers


def _as_text(frame: pd.DataFrame, seconds_columns: list[str], unit: str = " s") -> pd.DataFrame:
    """Seconds columns as fixed-point text with microsecond digits and their unit (tables
    otherwise show 3 decimals, or powers of ten)."""
    frame = frame.copy()
    for column in seconds_columns:
        frame[column] = frame[column].map(lambda v: "" if pd.isna(v) else f"{v:.6f}{unit}")
    return frame


def _as_percent(frame: pd.DataFrame, columns: list[str], signed: bool = False) -> pd.DataFrame:
    """Fractions (`wait_share`) or percentages (`change_pct`, `signed`) as fixed-point text with %."""
    frame = frame.copy()
    for column in columns:
        scale = 1 if signed else 100
        pattern = "{:+,.1f} %" if signed else "{:.1f} %"
        frame[column] = frame[column].map(lambda v: "" if pd.isna(v) else pattern.format(scale * v))
    return frame


def _short_runs(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(example_run_id=short_run_ids(frame["example_run_id"]))


def _no_task_events(opened: taskscope.Store, run: str | None) -> str:
    """Why a path analysis found nothing, and what to do about it."""
    if run is None:
        orphans = task_events_without_run(opened.con)
        if orphans:
            return f"no task events in any run: {orphans:,} events {NO_RUN_HINT}"
    return "no task events" + (f" in run {run}" if run else "") + " (see `taskscope runs`)"
