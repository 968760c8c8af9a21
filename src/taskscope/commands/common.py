"""What every command shares: consoles, output formats, common options, user-error handling, plots.

A command module defines `register(app)` and is listed in `taskscope.commands.MODULES`.
"""

from __future__ import annotations

import math
import sys
from datetime import datetime, timezone
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Callable, Optional

import duckdb
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from taskscope.analyses.selectors import SelectorError
from taskscope.analyses.series import FieldError
from taskscope.ingest import MissingInputError
from taskscope.plotting import PlotError
from taskscope.analyses.runs import RunNotFound
from taskscope.rules import RuleError
from taskscope.store import DEFAULT_STORE, StoreError

# a pipe gets wide lines rather than a table folded to 80 columns
# markup off: what these print is data (file names, log text, app names) in which `[/tmp]` or
# `[red]` is text, not a style; colour is given as Text styles instead
console = Console(width=None if sys.stdout.isatty() else 250, markup=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 250, markup=False)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


StoreOption = typer.Option(DEFAULT_STORE, "--store", "-s", help="DuckDB store file.")
FormatOption = typer.Option(OutputFormat.table, "--format", "-f", help="table, json or csv.")


def fail(message: str) -> None:
    """Print `message` as one red line on stderr and exit with status 2."""
    one_line = " ".join(message.split())
    err_console.print(Text.assemble(("error:", "red"), f" {one_line}"), highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def user_errors(command: Callable) -> Callable:
    """Turn the errors a user can fix into one line on stderr and exit code 2."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (StoreError, MissingInputError, RunNotFound, RuleError, SelectorError, FieldError, PlotError) as exc:
            fail(str(exc))
        except duckdb.Error as exc:  # bad SQL from `taskscope sql`, a locked store, ...
            fail(str(exc).splitlines()[0])

    return wrapper


def emit(frame: pd.DataFrame, fmt: OutputFormat, title: str | None = None) -> None:
    """Print `frame` as a Rich table, JSON records or CSV."""
    if fmt is OutputFormat.json:
        sys.stdout.write(frame.to_json(orient="records", date_format="iso", default_handler=str) + "\n")
    elif fmt is OutputFormat.csv:
        sys.stdout.write(frame.to_csv(index=False))
    else:
        console.print(rich_table(frame, title))


def cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    if isinstance(value, float):
        if abs(value) < 1e9:
            return f"{value:.3f}"
        # epoch seconds of 2001-2099 read as times; anything larger (1e300, inf) stays a number
        return clock(value) if value < 4.1e9 else f"{value:g}"
    return str(value)


def clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def rich_table(frame: pd.DataFrame, title: str | None) -> Table:
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in frame.columns:
        table.add_column(str(column), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(cell(v) for v in row))
    return table


RunOption = typer.Option(None, "--run", "-r", help="Run id, unique prefix, or run folder name (default: every run).")
PlotOption = typer.Option(None, "--plot", help="Also write a Plotly chart to FILE.html or FILE.png.")


def save_plot(figure, path: Optional[Path]) -> None:
    """Write a Plotly figure to `path` (.html, self-contained; or .png) and say where."""
    if path is None:
        return
    from taskscope.plotting import save_figure

    save_figure(figure, path)
    err_console.print(f"wrote {path}", highlight=False)
