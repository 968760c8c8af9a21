"""CLI command `export`: the store as Parquet, a Perfetto trace, or OTLP/JSON logs.

Here `--format` names the export format (what file is written), not the table/json/csv output
format of the other commands; `--json` prints the one-line summary as JSON instead.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import taskscope
from taskscope.commands.common import RunOption, StoreOption, console, err_console, fail, user_errors
from taskscope.export.otlp import export_otlp
from taskscope.export.parquet import export_parquet
from taskscope.export.perfetto import export_perfetto
from taskscope.export.summary import ExportError, ExportSummary, writable_file


class ExportFormat(str, Enum):
    parquet = "parquet"
    perfetto = "perfetto"
    otlp = "otlp"


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("export")(export_command)


@user_errors
def export_command(
    export_format: ExportFormat = typer.Option(
        ..., "--format", "-f", case_sensitive=False,
        help="What to write: parquet (a FOLDER of Parquet files partitioned by run), perfetto (a Chrome/Perfetto "
        "trace JSON FILE for ui.perfetto.dev) or otlp (an OTLP/JSON logs FILE, JSON Lines).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder (parquet) or file (perfetto, otlp) to write."),
    run: Optional[str] = RunOption,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in --out (parquet) or "
                                   "the file --out (perfetto, otlp)."),
    batch: int = typer.Option(1000, "--batch", min=1, help="otlp: log records per LogsData line."),
    store: str = StoreOption,
    json_summary: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Export the store (or one run) for other tools: Parquet, a Perfetto trace, or OTLP/JSON logs.

    Examples:

      taskscope export --format parquet --out export/            # every run, one folder per run

      taskscope export --format perfetto --out run.trace.json --run 000   # open in ui.perfetto.dev

      taskscope export --format otlp --out run.otlp.jsonl --run 3f2a
    """
    if export_format is not ExportFormat.parquet:
        try:  # a folder, a missing folder or no permission first: --overwrite would not help
            writable_file(out)
        except ExportError as exc:
            fail(str(exc))
        if out.exists() and not overwrite:
            fail(f"{out} already exists: pass --overwrite to replace it, or choose another file")
    try:
        with taskscope.open(store, read_only=True) as opened, _progress(json_summary) as progress:
            bar = progress.add_task(f"exporting {export_format.value}", total=None)

            def on_progress(description: str, done: int, total: int | None) -> None:
                progress.update(bar, description=description, completed=done, total=total)

            summary = _export(opened, export_format, out, run, overwrite, batch, on_progress)
    except ExportError as exc:
        fail(str(exc))
    except OSError as exc:  # the disk filled, a permission changed mid-way, ...
        fail(f"cannot write {out}: {exc.strerror or exc}")
    _print_summary(summary, json_summary)


def _export(store, export_format: ExportFormat, out: Path, run, overwrite: bool, batch: int, on_progress) -> ExportSummary:
    if export_format is ExportFormat.parquet:
        return export_parquet(store, out, run, overwrite=overwrite, on_progress=on_progress)
    if export_format is ExportFormat.perfetto:
        return export_perfetto(store, out, run, on_progress=on_progress)
    return export_otlp(store, out, run, batch=batch, on_progress=on_progress)


def _progress(quiet: bool) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True, disable=quiet or not err_console.is_terminal,
    )


def _print_summary(summary: ExportSummary, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(summary.as_dict()) + "\n")
    else:
        console.print(summary.line(), highlight=False, soft_wrap=True)
