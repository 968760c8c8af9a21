"""What every command shares: consoles, output formats, common options, user-error handling, plots.

A command module defines `register(app)` and is listed in `taskscope.commands.MODULES`.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Callable, Optional

import duckdb
import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from taskscope.analyses.selectors import SelectorError
from taskscope.analyses.series import FieldError
from taskscope.ingest import MissingInputError
from taskscope.plotting import PlotError, save_figure
from taskscope.presenters.format import cell, clock, csv_text, json_bytes, short_clocks
from taskscope.analyses.runs import RunNotFound
from taskscope.relations import RelationError
from taskscope.rules import RuleError
from taskscope.sources import SourceError
from taskscope.store import DEFAULT_STORE, StoreError
from taskscope.store_format import NotAStoreError

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


def url_host(host: str) -> str:
    """`host` as a URL writes it: an IPv6 address in brackets.

    >>> url_host("::1"), url_host("127.0.0.1")
    ('[::1]', '127.0.0.1')
    """
    return f"[{host}]" if ":" in host else host


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
        except (StoreError, MissingInputError, RunNotFound, RuleError, RelationError, SourceError, SelectorError,
                FieldError, PlotError, NotAStoreError) as exc:
            fail(str(exc))
        except duckdb.Error as exc:  # bad SQL from `taskscope sql`, a locked store, ...
            fail(str(exc).splitlines()[0])
        except ImportError as exc:
            if exc.name not in OPTIONAL_MODULES:
                raise
            fail(missing_extra(exc.name))

    return wrapper


#: a table shows at most this many rows unless asked for more (`--limit`, `--format csv`)
TABLE_ROWS = 20
#: the width of a table written to a pipe without $COLUMNS: wide rows rather than folded ones
PIPE_WIDTH = 250
#: a column may be narrowed to this many characters (text wrapped at spaces) to fit beside others
NARROWEST_COLUMN = 16


def table_width() -> int:
    """Columns a table may take: the terminal's (or $COLUMNS), else `PIPE_WIDTH` for a pipe."""
    if os.environ.get("COLUMNS", "").isdigit() or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return PIPE_WIDTH


#: modules a command may need that only an extra installs: module -> extra
OPTIONAL_MODULES = {"httpx": "fleet", "distributed": "fleet", "kaleido": "png", "parsl": "parsl"}


def missing_extra(module: str) -> str:
    """The one line saying which extra installs `module`.

    >>> missing_extra("httpx")
    "this needs httpx, which is not installed: pip install 'taskscope[fleet]'"
    """
    return f"this needs {module}, which is not installed: pip install 'taskscope[{OPTIONAL_MODULES[module]}]'"


def require(module: str) -> None:
    """Fail in one line naming the extra to install when `module` cannot be imported: before
    the slow part of a command, not after it."""
    try:
        importlib.import_module(module)
    except ImportError:
        fail(missing_extra(module))


def print_frame(frame: pd.DataFrame, fmt: OutputFormat, title: str | None = None, *,
                max_rows: int | None = TABLE_ROWS, headers: dict[str, str] | None = None,
                short_times: bool = True, wide: bool = False,
                see_all: str = "--format csv gives every row and column") -> None:
    """Print `frame`: JSON records or CSV (all of it), or a Rich table for a person.

    The table shows the first `max_rows` rows (None: all), its times shortened (see
    `short_clocks`) unless `short_times` is False, and the columns that fit `table_width()`
    (`wide`: every column, as wide as they need), under their `headers` names; one line on
    stderr says what was left out, ending with `see_all` (how to see it).
    """
    if fmt is OutputFormat.json:
        print_json(frame)
    elif fmt is OutputFormat.csv:
        sys.stdout.write(csv_text(frame))
    else:
        shown = frame if max_rows is None else frame.head(max_rows)
        width = table_width()
        table, hidden, natural_width = text_table(shown, title, None if wide else width, headers or {}, short_times)
        Console(width=max(width, natural_width), markup=False).print(table)
        left_out = []
        if len(shown) < len(frame):
            left_out.append(f"showing {len(shown):,} of {len(frame):,} rows")
        if hidden:
            left_out.append(f"{len(hidden)} columns left out to fit {width} columns ({', '.join(hidden)})")
        if left_out:
            err_console.print("; ".join(left_out) + f": {see_all}", highlight=False, soft_wrap=True)


def print_json(document) -> None:
    """Print `document` (a DataFrame, or dicts and lists holding them) as one line of JSON:
    the rows the web's `/api/...` gives for the same question (see `taskscope.presenters.format`)."""
    sys.stdout.write(json_bytes(document).decode() + "\n")


#: floats in this range read as epoch seconds (years 2001 to 2099) in a table
EPOCH_RANGE = (1e9, 4.1e9)


def is_time_column(name: str, values: pd.Series) -> bool:
    """True for a column of times: datetimes, epoch seconds named `ts` or `..._ts`, or floats
    that are all epoch seconds of this century (what `taskscope sql` selects from `events.ts`)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return True
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    if name == "ts" or name.endswith("_ts"):
        return True
    present = values.dropna()
    return (pd.api.types.is_float_dtype(values) and not present.empty
            and bool(present.between(*EPOCH_RANGE, inclusive="left").all()))


def text_table(frame: pd.DataFrame, title: str | None, width: int | None, headers: dict[str, str],
               short_times: bool = True) -> tuple[Table, list[str], int]:
    """`frame` as a Rich table at most `width` characters wide (None: every column, as wide as
    it needs), the headers of the columns left out because they did not fit, and the width the
    kept columns take. Cells wrap at spaces, never inside a word."""
    texts: dict[str, pd.Series] = {}
    days: set[str] = set()
    for column in frame.columns:
        if is_time_column(str(column), frame[column]) and short_times:
            texts[column], day = short_clocks(frame[column])
            days.update([day] if day else [])
        elif is_time_column(str(column), frame[column]):
            texts[column] = frame[column].map(clock)
        else:
            texts[column] = frame[column].map(cell)
    if days:
        title = f"{title or ''} (UTC, {', '.join(sorted(days))})".strip()
    kept, hidden, used = [], [], 0
    for column, values in texts.items():
        header = headers.get(column, str(column))
        natural = max([len(header), *(len(text) for text in values)])
        needed = (natural if width is None else min(natural, max(NARROWEST_COLUMN, len(header)))) + (2 if kept else 0)
        if width is None or used + needed <= width:
            kept.append((column, header))
            used += needed
        else:
            hidden.append(header)
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    for _, header in kept:
        table.add_column(header, overflow="ellipsis")
    for row in zip(*(texts[column] for column, _ in kept)):
        table.add_row(*row)
    return table, hidden, used


def _run_given(value: Optional[str]) -> Optional[str]:
    """An empty `--run ''` is a mistake (an unset variable, say), not "every run"."""
    if value is not None and not value.strip():
        fail("--run is empty: give a run id, a unique prefix of one or a run folder name (see `taskscope runs`), "
             "or leave --run out")
    return value


def run_option(default_meaning: str) -> typer.models.OptionInfo:
    """The `--run` option; `default_meaning` says what leaving it out means ("every run")."""
    return typer.Option(None, "--run", "-r", callback=_run_given,
                        help=f"Run id, unique prefix, or run folder name (default: {default_meaning}).")


RunOption = run_option("every run")
WideOption = typer.Option(False, "--wide", "-w", help="Table: every column, each as wide as it needs "
                          "(not only those that fit the terminal).")
PlotOption = typer.Option(None, "--plot", help="Also write a Plotly chart to FILE.html or FILE.png.")


def save_plot(figure, path: Optional[Path]) -> None:
    """Write a Plotly figure to `path` (.html, self-contained; or .png) and say where."""
    if path is None:
        return
    save_figure(figure, path)
    err_console.print(f"wrote {path}", highlight=False)
