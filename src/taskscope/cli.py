"""The `taskscope` command. Thin: parse options, call the store, print.

Every command takes `--store` (default `taskscope.duckdb` here) and `--format`. Errors a user
can fix (a missing path, an unreadable store, an unknown run) print one line and exit 2.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

import taskscope
from taskscope import commands
from taskscope.analyses.runs import FINAL_STATES, NO_RUN_HINT, task_events_without_run
from taskscope.commands.common import (
    TABLE_ROWS, FormatOption, OutputFormat, StoreOption, WideOption, console, err_console, fail, print_frame,
    run_option, user_errors,
)
from taskscope.ingest import IngestReport, MissingInputError, interrupt_message
from taskscope.analyses.tasks import latest_run_with_task
from taskscope.relations import load_relations
from taskscope.rules import load_rules
from taskscope.presenters.format import UNFINISHED, cell, clock, short_run_id, short_run_ids, with_unfinished

app = typer.Typer(
    help="Observability for Python workflow systems: ingest Parsl runs, then ask what happened.\n\n"
    "Example: taskscope ingest runinfo/ && taskscope runs && taskscope timeline --task 3",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_asked(asked: bool) -> None:
    """`taskscope --version`: print the version and exit, before any command runs."""
    if asked:
        print(f"taskscope {taskscope.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_version_asked, is_eager=True,
                                 help="Print taskscope's version and exit."),
) -> None:
    # options of `taskscope` itself, before the command; the help is the app's
    pass


#: real time zones are within 14 hours of UTC (UTC-12 to UTC+14)
UTC_OFFSET_HOURS = 14


def _utc_offset_given(hours: Optional[float]) -> Optional[float]:
    """Refuse an offset no time zone has (nan, inf, 300) before anything is read or created."""
    if hours is not None and not (math.isfinite(hours) and abs(hours) <= UTC_OFFSET_HOURS):
        fail(f"--utc-offset {hours:g}: give the hours local time was ahead of UTC, a number from "
             f"-{UTC_OFFSET_HOURS} to {UTC_OFFSET_HOURS} (e.g. 2, -5 or 5.5)")
    return hours


@app.command()
@user_errors
def ingest(
    paths: list[Path] = typer.Argument(..., help="runinfo folders, run folders, log files, monitoring.db files, or .gz/.tar.gz/.zip archives of them."),
    store: str = StoreOption,
    rules: Optional[list[Path]] = typer.Option(
        None, "--rules", help="Extra rules TOML file (repeatable); on a store with events, applied again to all of "
        "them. The store keeps it: later ingests (and `taskscope ui PATH`) read with it too."
    ),
    relations: Optional[list[Path]] = typer.Option(
        None, "--relations", help="Extra relations TOML file (repeatable); on a store with events, related again. "
        "The store keeps it, as --rules."
    ),
    forget_rules: bool = typer.Option(
        False, "--forget-rules", help="Forget the rules and relations files the store kept (events they named "
        "keep their names), before this ingest reads anything."
    ),
    utc_offset_hours: Optional[float] = typer.Option(
        None, "--utc-offset", callback=_utc_offset_given, help="Hours (-14 to 14) local time was ahead of UTC "
        "where the run logged naive local times (default: learned from the run's own logs, else this machine's)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every file's note (why it was skipped, what was odd)."),
    fmt: OutputFormat = FormatOption,
) -> None:
    """Read every log taskscope recognises under PATHS into the store (only what is new).

    Inputs are known by their content: Parsl's text and JSON logs, monitoring.db, Academy's JSON
    logs, JSON lines, timestamped text; archives are read in place.

    Example: taskscope ingest runinfo/ --store run.duckdb

    Example: taskscope ingest runinfo.tar.gz --relations mine.toml --store run.duckdb
    """
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise MissingInputError(f"no such file or folder: {', '.join(missing)}")
    try:
        load_rules(rules)  # a bad rules or relations file is an error before the store is created
        load_relations(relations)
        if forget_rules:
            with taskscope.open(store) as opened:
                forgotten = opened.forget_rules()
            err_console.print(f"forgot the rules and relations files {', '.join(forgotten)}" if forgotten
                              else "the store kept no rules or relations files", highlight=False)
        report = _ingest_with_progress(store, paths, rules, relations, utc_offset_hours, fmt)
    except BaseException as exc:  # Ctrl-C: one line and 130 (what was committed is kept), never a traceback
        message = interrupt_message(exc)
        if message is None:
            raise
        err_console.print(message, highlight=False)
        raise typer.Exit(130) from None
    _done_with_work()
    _print_ingest_report(report, fmt, verbose)


def _ingest_with_progress(store: str, paths: list[Path], rules: Optional[list[Path]],
                          relations: Optional[list[Path]], utc_offset_hours: Optional[float], fmt: OutputFormat) -> IngestReport:
    """Ingest with a progress bar on a terminal."""
    with taskscope.open(store) as opened:
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
            console=err_console, transient=True,
            # off the terminal, a transient bar would leave only an empty line in the output
            disable=fmt is not OutputFormat.table or not err_console.is_terminal,
        )
        bar = progress.add_task("ingesting", total=None)
        done: dict[str, int] = {}

        def on_progress(item, bytes_done: int, size: int) -> None:
            done[item.path] = bytes_done
            progress.update(bar, completed=sum(done.values()), description=f"ingesting {Path(item.rel).name}")

        with progress:
            return opened.ingest(
                *paths, rules_files=rules, relations_files=relations, on_progress=on_progress,
                utc_offset_seconds=None if utc_offset_hours is None else utc_offset_hours * 3600,
            )


def _print_ingest_report(report: IngestReport, fmt: OutputFormat, verbose: bool = False) -> None:
    """The summary on stdout; on stderr at most one line for everything that needs a look
    (bad lines, unreadable files, odd files), and with --verbose each note."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(report.as_dict(), default=str) + "\n")
        return
    if fmt is OutputFormat.csv:
        print_frame(pd.DataFrame([ingest_counts(report)]), fmt)
        attention = ingest_attention(report)  # CSV has no room for the notes: say there are some
        if attention:
            err_console.print(attention, highlight=False)
        return
    share = report.relate.joined_share if report.relate else None
    joined = "no executor-side task events" if share is None else f"{share:.1%} of executor-side task events joined to a task"
    console.print(
        f"ingested {report.files_read} files ({report.files_unchanged} unchanged, {report.files_skipped} "
        f"skipped as not logs): {events_summary(report)} from {report.lines:,} lines; {joined}"
        f"{reapplied_summary(report)}",
        highlight=False, soft_wrap=True,  # one line, however long: the terminal wraps it, scripts read it whole
    )
    attention = ingest_attention(report)
    if attention:
        err_console.print(attention, highlight=False)
    for note in report.config_notes:  # a user's own rules and relations: always said
        err_console.print(f"note: {note}", highlight=False)
    if verbose:
        for note in report.notes:
            err_console.print(f"note: {note}", highlight=False)
        for note in report.skipped_notes:
            err_console.print(f"skipped: {note}", highlight=False)


def events_summary(report: IngestReport) -> str:
    """The summary line's events: new ones apart from those a changed file read whole gave again.

    >>> events_summary(IngestReport(events=301, events_read_again=300, files_read_again=["monitoring.db"]))
    '1 new event and 300 read again (monitoring.db changed)'
    """
    if not report.events_read_again:
        return f"{report.events:,} events"
    new = report.events - report.events_read_again
    files = report.files_read_again
    named = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return (f"{new:,} new event{'' if new == 1 else 's'} and {report.events_read_again:,} read again "
            f"({named} changed)")


def ingest_counts(report: IngestReport) -> dict[str, int | bool]:
    """The report's counts, one row of `--format csv` (`--format json` has the notes and the
    relate report's details too).

    >>> ingest_counts(IngestReport(events=5))["events"]
    5
    """
    counts = {key: value for key, value in report.as_dict().items()
              if isinstance(value, int) and key != "relate"}
    relate = report.relate
    counts["notes"] = len(report.notes)
    counts["executor_events"] = relate.executor_events if relate else 0
    counts["executor_events_joined"] = relate.executor_events_joined if relate else 0
    counts["relation_conflicts"] = relate.conflict_count if relate else 0
    return counts


def reapplied_summary(report: IngestReport) -> str:
    """The end of the summary line: the rules and relations files the store kept that this
    ingest read with, those applied again to the stored events, and groups a relation left
    alone because they hold two values.

    >>> reapplied_summary(IngestReport(reapplied=True, reapplied_events=12))
    '; rules and relations applied again to every stored event (12 events named or given ids by rules)'
    """
    text = ""
    if report.remembered_files:
        text += f"; read with the rules and relations this store keeps ({', '.join(report.remembered_files)})"
    if report.reapplied:
        text += (f"; rules and relations applied again to every stored event "
                 f"({report.reapplied_events:,} events named or given ids by rules)")
    conflicts = report.relate.conflict_count if report.relate else 0
    if conflicts:
        text += f"; {conflicts:,} relation conflicts left unchanged"
    return text


def ingest_attention(report: IngestReport) -> str | None:
    """The one line an ingest prints on stderr: a warning when something was kept aside or
    could not be read, else a note about partial lines, else None.

    >>> ingest_attention(IngestReport(bad_lines=3))
    'warning: 3 bad lines kept aside (taskscope sql "SELECT * FROM bad_lines")'
    """
    if report.nothing_readable:
        return f"warning: {report.nothing_readable}"
    problems = []
    if report.bad_lines:
        problems.append(f'{report.bad_lines:,} bad lines kept aside (taskscope sql "SELECT * FROM bad_lines")')
    if report.files_unreadable:
        problems.append(f"{report.files_unreadable} files or folders could not be read")
    if report.values_in_attrs:
        problems.append(f"{report.values_in_attrs:,} values kept in attrs: did not fit their column")
    odd = len(report.notes) - report.files_unreadable
    if odd > 0:
        problems.append(f"{odd} files with a note")
    partial = (f"{report.partial_lines} files end in a partial line, read once complete"
               if report.partial_lines else None)
    if problems:
        hint = "; --verbose lists the notes" if report.notes else ""
        return "warning: " + "; ".join(problems + ([partial] if partial else [])) + hint
    return f"note: {partial}" if partial else None


#: what `runs` shows in a table without --wide (JSON and CSV have every column)
RUN_COLUMNS = ["run_id", "workflow_name", "start_ts", "duration_s", "status", "tasks", "tasks_failed", "events"]
#: what `tasks` shows in a table without --wide, and the shorter headers it uses
TASK_COLUMNS = ["run_id", "task_id", "app_name", "final_state", "tries", "submit_ts", "duration_s",
                "executor_label", "exception_type"]
TASK_HEADERS = {"task_id": "task", "app_name": "app", "final_state": "state", "submit_ts": "submitted",
                "executor_label": "executor", "exception_type": "exception"}


@app.command()
@user_errors
def runs(store: str = StoreOption, wide: bool = WideOption, fmt: OutputFormat = FormatOption) -> None:
    """List the runs in the store.

    Example: taskscope runs --format json
    """
    with taskscope.open(store, read_only=True) as opened:
        frame = opened.runs()
        _say_if_tasks_have_no_run(opened, frame.empty)
    if fmt is OutputFormat.table:
        frame = frame.assign(run_id=short_run_ids(frame.run_id))
        frame = frame if wide else frame[RUN_COLUMNS]
    print_frame(frame, fmt, "runs", wide=wide, headers={"start_ts": "start", "end_ts": "end"},
                see_all="--wide shows every column, --format csv every row")


@app.command()
@user_errors
def tasks(
    run: Optional[str] = run_option("every run"),
    state: Optional[str] = typer.Option(None, "--state", help="Only tasks whose final state is this "
                                        f"({', '.join(FINAL_STATES)} or {UNFINISHED})."),
    app_name: Optional[str] = typer.Option(None, "--app", help="Only tasks of this app."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help=f"Show at most this many (0: all; default: "
                                        f"all, but a table shows the first {TABLE_ROWS})."),
    wide: bool = WideOption,
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
) -> None:
    """List tasks with their app, final state, tries, stage times and where they ran.

    Example: taskscope tasks --run 3f2a --state failed
    """
    with taskscope.open(store, read_only=True) as opened:
        run_id = opened.resolve_run(run)
        frame = with_unfinished(opened.tasks(run_id))
        _say_if_tasks_have_no_run(opened, frame.empty)
    scope = f"run {run_id}" if run_id else "the store"
    if state:  # both checked against every task of the scope, before either filters
        _check_value("state", state, set(FINAL_STATES) | {UNFINISHED} | set(frame.final_state), frame.final_state, scope)
    if app_name:
        _check_value("app", app_name, set(frame.app_name.dropna()), frame.app_name, scope)
    if state:
        frame = frame[frame.final_state == state]
    if app_name:
        frame = frame[frame.app_name == app_name]
    if limit:
        frame = frame.head(limit)
    if fmt is OutputFormat.table:
        if not wide:
            several_runs = frame.run_id.nunique() > 1
            frame = frame[[c for c in TASK_COLUMNS if c != "run_id" or several_runs]]
        frame = frame.assign(run_id=short_run_ids(frame.run_id)) if "run_id" in frame else frame
    title = f"tasks of run {short_run_id(run_id)}" if run_id else "tasks"
    print_frame(frame, fmt, title, max_rows=TABLE_ROWS if limit is None else None, headers=TASK_HEADERS,
                wide=wide, see_all="--limit 0 shows every row, --wide every column, --format csv both")


def _say_if_tasks_have_no_run(opened: taskscope.Store, listed_nothing: bool) -> None:
    """A note on stderr when a list came out empty while events name tasks with no run."""
    if listed_nothing:
        orphans = task_events_without_run(opened.con)
        if orphans:
            err_console.print(f"note: {orphans:,} events {NO_RUN_HINT}", highlight=False)


def _check_value(option: str, value: str, known: set[str], present: pd.Series, scope: str) -> None:
    """Fail in one line, naming the values that exist, when `value` of `--option` is none of `known`."""
    if value not in known:
        values = sorted(present.dropna().astype(str).unique())
        listed = ", ".join(values[:30]) + (f" and {len(values) - 30} more" if len(values) > 30 else "")
        fail(f"no task in {scope} has {option} {value!r}; the {option}s there are: {listed or 'none'}")


@app.command()
@user_errors
def timeline(
    task: str = typer.Option(..., "--task", "-t", help="Task id, as the workflow system names it (Parsl's DFK task id: 358)."),
    run: Optional[str] = run_option("the latest run with the task"),
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
) -> None:
    """Show one task's journey across every log: DFK, interchange, manager, worker, monitoring.

    Example: taskscope timeline --task 358
    """
    with taskscope.open(store, read_only=True) as opened:
        run_id = opened.resolve_run(run)
        note = None
        if run_id is None:
            run_id, count = latest_run_with_task(opened.con, task)
            if count > 1:
                note = f"({count} runs have a task {task}; showing the latest. Choose with --run)"
        frame = opened.timeline(task, run_id)
    if frame.empty:
        fail(f"no events for task {task}" + (f" in run {run_id}" if run_id else ""))
    if fmt is not OutputFormat.table:
        print_frame(frame, fmt)
        return
    print(f"=== About task {task} ===")
    print(f"run {run_id or '(none: its events name no run)'}" + (f"  {note}" if note else ""))
    for row in frame.itertuples(index=False):
        where = f"{cell(row.process) or '-'}/{cell(row.thread) or '-'}"
        print(f"{clock(row.ts)}  +{row.since_first_s:9.6f}  {where}  {row.message}  ({row.source})")


@app.command()
@user_errors
def sql(
    query: str = typer.Argument(..., help="SQL over the store's tables: events, ingested_files, bad_lines, "
                                "run_dirs, event_task_links, files_to_relate, run_digests, taskscope_meta, "
                                "user_files."),
    store: str = StoreOption,
    fmt: OutputFormat = FormatOption,
) -> None:
    """Run SQL over the store (read-only); several statements (separated by ;) each print their result.

    Example: taskscope sql "SELECT source, count(*) FROM events GROUP BY 1"
    """
    with taskscope.open(store, read_only=True) as opened:
        statements = [statement.query.strip() for statement in opened.con.extract_statements(query)]
        if not statements:
            fail("the query is empty")
        if len(statements) > 1 and fmt is not OutputFormat.table:
            fail(f"the query holds {len(statements)} statements and --format {fmt.value} prints one result: "
                 "run them one at a time (the table format shows each)")
        results = [opened.sql(statement) for statement in statements]
    for number, (statement, frame) in enumerate(zip(statements, results), 1):
        if len(statements) > 1:
            console.print(f"{'' if number == 1 else chr(10)}-- {number}/{len(statements)}: {statement}",
                          highlight=False, soft_wrap=True)
        print_frame(frame, fmt, short_times=False)  # SQL is for exact answers: whole times


commands.register_all(app)


#: set by `main`: this process is the `taskscope` command, so its signal handling is ours
_running_as_command = False


def _done_with_work() -> None:
    """From here on the command only prints and exits: a Ctrl-C now (while it prints, or in the
    0.2 s Python takes to tear down its modules) would kill it after it succeeded, with no
    message (exit -2), click's "Aborted!" or a traceback from threading's shutdown. So the
    command's process ignores it; a test calling the app in its own process keeps its handler."""
    if _running_as_command:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def main() -> None:
    """Entry point of the `taskscope` script."""
    global _running_as_command
    _running_as_command = True
    try:
        app()
    finally:
        _done_with_work()


if __name__ == "__main__":
    main()
