"""CLI commands `usage collect` (the self-hosted usage collector) and `usage report` (its aggregates)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

import taskscope
from taskscope._sql import scalar
from taskscope.commands.common import (
    FormatOption, OutputFormat, StoreOption, console, err_console, fail, print_frame, print_json, url_host,
    user_errors,
)
from taskscope.usage import protocol, reports
from taskscope.usage.collector import Collector

usage_app = typer.Typer(
    help="Opt-in usage tracking: collect Parsl's (or any UsageTracker's) UDP messages, then report on them.\n\n"
    "Example: taskscope usage collect --port 50077 --store usage.duckdb",
    no_args_is_help=True,
)

PROGRESS_SECONDS = 10.0


class Report(str, Enum):
    runs = "runs"
    over_time = "over-time"
    python = "python"
    versions = "versions"
    platforms = "platforms"
    components = "components"
    levels = "levels"
    execution_times = "execution-times"
    task_counts = "task-counts"
    failures = "failures"
    leaderboard = "leaderboard"
    installation_age = "installation-age"
    adoption = "adoption"
    adoption_summary = "adoption-summary"
    totals = "totals"
    unfinished = "unfinished"
    invalid = "invalid"


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.add_typer(usage_app, name="usage")


@usage_app.command("collect")
@user_errors
def collect(
    port: int = typer.Option(50077, "--port", "-p", min=0, max=65535, help="UDP port to listen on (Parsl sends to 50077)."),
    store: str = StoreOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 to accept from other machines."),
    retention_days: Optional[float] = typer.Option(
        None, "--retention-days", min=0, help="Delete usage events, rejected datagrams and spool segments older than this (without it, "
        "spool segments already in the store are deleted after 7 days; the store keeps everything)."),
    spool: Optional[Path] = typer.Option(None, "--spool", help="Spool folder (default: STORE.spool)."),
    max_bytes: int = typer.Option(protocol.MAX_DATAGRAM_BYTES, "--max-bytes", min=1,
                                  help="Datagrams larger than this are rejected as oversized."),
    ui_port: Optional[int] = typer.Option(
        None, "--ui-port", min=0, max=65535, help="Also serve the web dashboard (/usage) on this TCP port, from "
        "this process: the store cannot be opened by `taskscope ui` while the collector writes it."),
    ui_host: str = typer.Option("127.0.0.1", "--ui-host", help="Address the dashboard listens on (a warning "
                                "unless loopback: the dashboard has no login)."),
    releases: Optional[Path] = typer.Option(
        None, "--releases", help="Release dates of products whose versions are not dates, as for `usage report "
        "--releases` (a CSV of product,version,released): the runs table the reports read is derived with it, "
        "and the dashboard (--ui-port) uses it (default: the file TASKSCOPE_USAGE_RELEASES names)."),
    fmt: OutputFormat = FormatOption,
) -> None:
    """Receive usage datagrams until Ctrl-C or SIGTERM: spool each one, then store it (source 'usage').

    Every datagram is appended to the spool before it is parsed; malformed ones are kept in the
    table usage_rejected with the reason; no sender address is stored. Stopping stores everything
    received; a restart stores whatever an earlier run spooled but did not store.

    With --ui-port, the dashboard is served by the collector itself and its pages follow each commit.

    Example: taskscope usage collect --port 50077 --store usage.duckdb --host 0.0.0.0 --retention-days 730

    Example: taskscope usage collect --store usage.duckdb --ui-port 8080   (then http://127.0.0.1:8080/usage)

    Example: taskscope usage collect --store usage.duckdb --releases releases.csv --ui-port 8080
    """
    try:
        release_table = reports.release_dates(releases)
    except ValueError as exc:
        fail(str(exc))
    if releases is not None:  # the dashboard's reports read the same table (reports.release_dates())
        os.environ[reports.RELEASES_VARIABLE] = str(releases.resolve())
    # handlers first: a signal that comes while the store opens still stops the collector cleanly
    stop_requested = threading.Event()
    running: list[Collector] = []

    def on_signal(*_) -> None:
        stop_requested.set()
        for collector in running:
            collector.request_stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    ui_socket = _listen_for_dashboard(ui_host, ui_port) if ui_port is not None else None
    try:
        collector = Collector(store, host=host, port=port, spool_dir=spool, retention_days=retention_days,
                              max_bytes=max_bytes, releases=release_table)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    running.append(collector)
    if stop_requested.is_set():
        collector.request_stop()
    quiet = fmt is not OutputFormat.table
    if not quiet:
        err_console.print(f"collecting usage datagrams on {collector.address[0]}:{collector.address[1]} into "
                          f"{store} (spool {collector.spool_dir}); Ctrl-C to stop", highlight=False)
    if ui_socket is not None:
        url = _serve_dashboard(collector, ui_socket)
        err_console.print(f"usage dashboard on {url}", highlight=False)
        threading.Thread(target=_report_progress, args=(collector,), daemon=True).start()
    collector.serve_forever()
    stats = collector.stats.as_dict()
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(stats) + "\n")
    elif fmt is OutputFormat.csv:
        import pandas as pd  # not imported for the collector's own work

        print_frame(pd.DataFrame([stats]), fmt)  # a dict value (reasons) as JSON text in its cell
    else:
        console.print(_stats_line(stats), highlight=False)


def _listen_for_dashboard(host: str, port: int):
    from taskscope.web.server import listen_tcp  # a second to import (uvicorn): only for --ui-port

    try:
        return listen_tcp(host, port)
    except OSError as exc:
        fail(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}")


def _serve_dashboard(collector, sock) -> str:
    """Serve the web app from this process over the collector's store; return its /usage URL."""
    from taskscope.web.server import serve_beside_collector  # a second to import: only for --ui-port

    host, port = serve_beside_collector(collector, sock).address
    return f"http://{url_host(host)}:{port}/usage"


def _stats_line(stats: dict) -> str:
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(stats["reasons"].items()))
    replayed = f", {stats['replayed']} replayed from the spool" if stats["replayed"] else ""
    return (f"received {stats['received']}{replayed}: {stats['parsed']} stored, {stats['rejected']} rejected"
            + (f" ({reasons})" if reasons else ""))


def _report_progress(collector) -> None:
    last = None
    while not collector._done.wait(PROGRESS_SECONDS):
        stats = collector.stats.as_dict()
        if stats != last:
            err_console.print(_stats_line(stats), highlight=False)
            last = stats


@usage_app.command("report")
@user_errors
def report(
    what: Report = typer.Argument(..., help="Which aggregate: " + ", ".join(r.value for r in Report) + "."),
    store: str = StoreOption,
    product: Optional[str] = typer.Option(None, "--product", help="Only this product (e.g. parsl)."),
    period: str = typer.Option("day", "--period", help="over-time: hour, day, week, month, quarter or year."),
    weeks: int = typer.Option(12, "--weeks", min=1, help="adoption: weeks after each version first appeared."),
    since: Optional[str] = typer.Option(None, "--since", help="Only runs dated from this UTC date (2026-01-31) on."),
    until: Optional[str] = typer.Option(None, "--until", help="Only runs dated before this UTC date (2026-07-01)."),
    releases: Optional[Path] = typer.Option(
        None, "--releases", help="Release dates of products whose versions are not dates (Parsl's are): a CSV of "
        "product,version,released (a UTC date), for installation ages, adoption and flagging impossible times "
        "(default: the file TASKSCOPE_USAGE_RELEASES names)."),
    source: Optional[str] = typer.Option(
        None, "--from", help="Fetch the report from a running collector's dashboard (its --ui-port), e.g. "
        "http://127.0.0.1:8080, instead of reading --store."),
    fmt: OutputFormat = FormatOption,
) -> None:
    """Aggregates of the usage messages in the store: runs, versions, platforms, leaderboard, totals, ...

    Examples:

      taskscope usage report leaderboard --store usage.duckdb

      taskscope usage report over-time --period month --since 2025-07-01 --until 2026-07-01 --format csv

      taskscope usage report totals --from http://127.0.0.1:8080   (while `usage collect --ui-port 8080` runs)
    """
    try:  # checked here also for --from: the error names the option, as without it
        bounds = {name: reports.parse_since(text, f"--{name}") if text else None
                  for name, text in (("since", since), ("until", until))}
    except ValueError as exc:
        fail(str(exc))
    if source is not None:
        _report_from(source, what.value, fmt, {"product": product, "period": period, "weeks": weeks,
                                               "since": since, "until": until})
        return
    try:
        release_table = reports.release_dates(releases)
    except ValueError as exc:
        fail(str(exc))
    with taskscope.open(store, read_only=True) as opened:
        if not _has_usage_events(opened):
            fail(f"{store} holds no usage messages (collect them with `taskscope usage collect --store {store}`)")
        try:
            frame = reports.report(opened, what.value, product=product, period=period, weeks=weeks,
                                   releases=release_table, **bounds)
        except ValueError as exc:
            fail(str(exc))
    print_frame(frame, fmt, f"usage: {what.value}")


def _report_from(base_url: str, name: str, fmt: OutputFormat, options: dict) -> None:
    """Print the report `name` as a running collector's dashboard at `base_url` serves it."""
    import urllib.error
    import urllib.parse
    import urllib.request

    import pandas as pd

    query = urllib.parse.urlencode({key: value for key, value in options.items() if value is not None})
    # CSV as the dashboard wrote it, else its JSON rows: typed as the store's report is (a
    # Python version "3.10" stays text, a count stays an integer), which CSV cannot say
    suffix = ".csv" if fmt is OutputFormat.csv else ".json"
    url = f"{base_url.rstrip('/')}/api/usage/{name}{suffix}?{query}"
    if not url.startswith(("http://", "https://")):
        fail(f"--from must be an http:// or https:// address, not {base_url!r}")
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("detail", detail)
        except ValueError:
            pass
        fail(f"{base_url} refused the report {name}: {exc.code} {detail}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot reach {base_url}: {getattr(exc, 'reason', exc)}")
    if fmt is OutputFormat.csv:
        sys.stdout.write(text)
        return
    try:
        rows = json.loads(text)["rows"]
    except (ValueError, KeyError, TypeError):
        fail(f"{base_url} did not answer as a taskscope dashboard: {text[:200]!r}")
    if fmt is OutputFormat.json:
        print_json(rows)
    else:
        print_frame(pd.DataFrame(rows, dtype=object), fmt, f"usage: {name}")


def _has_usage_events(store) -> bool:
    return bool(scalar(store.con, "SELECT count(*) FROM events WHERE source = 'usage'"))
